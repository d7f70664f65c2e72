"""Build the two branches from nnU-Net plans, optionally with a different encoder in branch B.

Asymmetry between A and B is always at least a different random
initialisation (each branch is initialised by nnU-Net's own He init, drawn one
after the other). ``branch_b_encoder`` can also give B a different encoder
type with the same stage widths, so heads stay interchangeable:

- ``"same"``: B uses the plans' architecture (default);
- ``"residual"``: B is a ``ResidualEncoderUNet`` (residual blocks, same widths/strides);
- ``"plain"``: B is a ``PlainConvUNet`` (for residual-encoder plans).
"""
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
BRANCH_B_ENCODERS = ("same", "residual", "plain")


def _as_residual(kwargs: dict) -> dict:
    kwargs = dict(kwargs)
    if "n_conv_per_stage" in kwargs:
        kwargs["n_blocks_per_stage"] = kwargs.pop("n_conv_per_stage")
    kwargs.pop("nonlin_first", None)
    return kwargs


def _as_plain(kwargs: dict) -> dict:
    kwargs = dict(kwargs)
    if "n_blocks_per_stage" in kwargs:
        kwargs["n_conv_per_stage"] = kwargs.pop("n_blocks_per_stage")
    for residual_only in ("block", "bottleneck_channels", "stem_channels"):
        kwargs.pop(residual_only, None)
    return kwargs


def architecture_for_branch_b(configuration_manager: ConfigurationManager, branch_b_encoder: str):
    """(class name, kwargs) for branch B."""
    name = configuration_manager.network_arch_class_name
    kwargs = configuration_manager.network_arch_init_kwargs
    if branch_b_encoder not in BRANCH_B_ENCODERS:
        raise ValueError(f"branch_b_encoder must be one of {BRANCH_B_ENCODERS}, got {branch_b_encoder!r}")
    if branch_b_encoder == "residual":
        return RESIDUAL, _as_residual(kwargs)
    if branch_b_encoder == "plain":
        return PLAIN, _as_plain(kwargs)
    return name, kwargs


def build_branches(configuration_manager: ConfigurationManager, num_input_channels: int, num_output_channels: int,
                   enable_deep_supervision: bool, branch_b_encoder: str = "same"):
    req_import = configuration_manager.network_arch_init_kwargs_req_import
    branch_a = get_network_from_plans(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs, req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)
    name_b, kwargs_b = architecture_for_branch_b(configuration_manager, branch_b_encoder)
    req_import_b = [k for k in req_import if k in kwargs_b]
    branch_b = get_network_from_plans(name_b, kwargs_b, req_import_b, num_input_channels, num_output_channels,
                                      allow_init=True, deep_supervision=enable_deep_supervision)
    return branch_a, branch_b
