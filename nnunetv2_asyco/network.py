"""The two-branch AsyCo network: two nnU-Net U-Nets whose heads can be swapped.

Each branch is a stock ``PlainConvUNet`` / ``ResidualEncoderUNet`` built from
the plans. Both decoders have the same channel count per stage, so a head
(``decoder.seg_layers[i]``, a 1x1 conv) of one branch can read the decoder
features of the other:

- default path:   O_AA = H_A(F_A), O_BB = H_B(F_B)
- remapped path:  O_AB = H_B(F_A), O_BA = H_A(F_B)

``forward(x)`` is the inference path nnU-Net's predictor uses: the ensemble of
both branches' default paths. ``forward(x, remap_plan=...)`` is the training
path (``x_b=...``: branch B's own view of the batch, ``nnunetv2_asyco.branch_views``);
everything the losses need is computed inside ``forward`` so that DDP
synchronises gradients and torch.compile applies.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

DIRECTIONS = ("AB", "BA")  # AB: A's features through B's heads; BA: B's features through A's heads


@dataclass(frozen=True)
class RemapPlan:
    """Which remapped paths take part in one training step.

    ``scales[direction]`` lists the deep-supervision scales (0 = full
    resolution) at which that remapped path is computed. An empty tuple means
    the direction is off this step.
    """
    scales: Dict[str, Tuple[int, ...]] = field(default_factory=lambda: {"AB": (), "BA": ()})

    def active(self, direction: str) -> Tuple[int, ...]:
        return tuple(self.scales.get(direction, ()))

    @property
    def any_active(self) -> bool:
        return any(len(v) > 0 for v in self.scales.values())

    @classmethod
    def every_path(cls, num_scales: int) -> "RemapPlan":
        """Both directions at every scale: the one plan the training forward is called with (one compiled graph)."""
        return cls({d: tuple(range(num_scales)) for d in DIRECTIONS})


@dataclass
class BranchOutputs:
    """Everything one branch produces in a training forward pass.

    ``default[s]``: logits of the branch's own head at scale s (0 = full res).
    ``remapped[s]``: logits of the *other* branch's head on this branch's
    features, only at the scales the remap plan activates (else missing).
    ``features[s]``: decoder features at scale s; ``bottleneck``: deepest encoder features.
    """
    default: List[torch.Tensor]
    remapped: Dict[int, torch.Tensor]
    features: List[torch.Tensor]
    bottleneck: torch.Tensor


def select_remapped(outputs: "BranchOutputs", plan: RemapPlan, direction: str) -> "BranchOutputs":
    """``outputs`` with only the remapped paths that ``plan`` activates for ``direction`` (the step's draw).

    The training forward computes every remapped head (1x1 convolutions) at every scale, so its graph never depends
    on the draw; the draw is applied here, outside the forward. A path that is dropped takes no part in any loss
    term, so losses and gradients equal those of a forward that computed only the drawn paths.
    """
    active = plan.active(direction)
    missing = [s for s in active if s not in outputs.remapped]
    if missing:
        raise ValueError(f"The remap plan asks for {direction} at scales {missing}, which the forward did not compute.")
    return BranchOutputs(default=outputs.default, remapped={s: outputs.remapped[s] for s in active},
                         features=outputs.features, bottleneck=outputs.bottleneck)


def training_outputs(network: nn.Module, x_a: torch.Tensor, x_b: Optional[torch.Tensor], remap_plan: RemapPlan,
                     forward_plan: Optional[RemapPlan] = None) -> Tuple["BranchOutputs", "BranchOutputs"]:
    """The training forward of ``network`` (a TwoBranchNetwork, possibly DDP/compiled), then the step's draw.

    ``forward_plan`` (default: ``remap_plan``) names the remapped paths the forward computes. Passing the same
    ``forward_plan`` every step (every path the schedule may draw) gives torch.compile one graph for all draws;
    ``select_remapped`` then keeps the drawn paths (``remap_plan``) outside the forward.
    """
    out_a, out_b = network(x_a, remap_plan=remap_plan if forward_plan is None else forward_plan, x_b=x_b)
    return select_remapped(out_a, remap_plan, "AB"), select_remapped(out_b, remap_plan, "BA")


def _run(module: nn.Module, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """Apply ``module``; with ``checkpointed`` its activations are recomputed in backward instead of stored."""
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


def encoder_skips(encoder: nn.Module, x: torch.Tensor, checkpointed: bool = False) -> List[torch.Tensor]:
    """A ``PlainConvEncoder`` / ``ResidualEncoder`` forward returning every stage's output (its skips)."""
    if getattr(encoder, "stem", None) is not None:
        x = _run(encoder.stem, x, checkpointed)
    skips = []
    for stage in encoder.stages:
        x = _run(stage, x, checkpointed)
        skips.append(x)
    return skips


def _up_and_merge(transpconv: nn.Module, stage: nn.Module, lres_input: torch.Tensor,
                  skip: torch.Tensor) -> torch.Tensor:
    """One decoder stage without its head: upsample, concatenate the skip, convolve."""
    return stage(torch.cat((transpconv(lres_input), skip), 1))


def decoder_features(decoder: nn.Module, skips: List[torch.Tensor], checkpointed: bool = False) -> List[torch.Tensor]:
    """Run a dynamic_network_architectures ``UNetDecoder`` without its heads.

    Returns the decoder features per stage, full resolution first, which is
    the order nnU-Net's deep-supervision outputs use.
    """
    lres_input = skips[-1]
    features = []
    for s in range(len(decoder.stages)):
        args = (decoder.transpconvs[s], decoder.stages[s], lres_input, skips[-(s + 2)])
        if checkpointed and torch.is_grad_enabled():
            x = checkpoint(_up_and_merge, *args, use_reentrant=False)
        else:
            x = _up_and_merge(*args)
        features.append(x)
        lres_input = x
    return features[::-1]


def head_for_scale(decoder: nn.Module, scale: int) -> nn.Module:
    """The segmentation head of ``decoder`` for deep-supervision scale ``scale`` (0 = full res)."""
    return decoder.seg_layers[len(decoder.seg_layers) - 1 - scale]


def check_heads_interchangeable(branch_a: nn.Module, branch_b: nn.Module) -> None:
    """Remapping needs equal feature widths per decoder stage; say so clearly otherwise."""
    for name, net in (("A", branch_a), ("B", branch_b)):
        if not hasattr(net, "encoder") or not hasattr(net, "decoder") or not hasattr(net.decoder, "seg_layers"):
            raise TypeError(
                f"Branch {name} is a {type(net).__name__}, which is not an encoder/decoder U-Net with "
                f"decoder.seg_layers (PlainConvUNet or ResidualEncoderUNet). AsyCo needs those to swap heads; "
                f"use nnU-Net's default or residual-encoder plans.")
    widths_a = [l.in_channels for l in branch_a.decoder.seg_layers]
    widths_b = [l.in_channels for l in branch_b.decoder.seg_layers]
    if widths_a != widths_b:
        raise ValueError(f"The branches' decoder widths differ ({widths_a} vs {widths_b}); heads cannot be "
                         f"remapped between them. Give both branches the same features_per_stage.")


class TwoBranchNetwork(nn.Module):
    """Both AsyCo branches in one module (one checkpoint, one ``forward``).

    ``output_activation`` is ``"softmax"`` for label training and ``"sigmoid"``
    for nnU-Net's region training; it decides how the inference ensemble
    averages probabilities. nnU-Net's predictor builds the network without
    knowing the dataset, so the choice is also stored in the state dict (the
    ``sigmoid_outputs`` buffer) and restored from the checkpoint.
    """

    def __init__(self, branch_a: nn.Module, branch_b: nn.Module, output_activation: str = "softmax",
                 activation_checkpointing: bool = False):
        super().__init__()
        check_heads_interchangeable(branch_a, branch_b)
        self.branch_a = branch_a
        self.branch_b = branch_b
        # memory mode: recompute encoder/decoder stage activations in backward (training path only)
        self.activation_checkpointing = activation_checkpointing
        self.register_buffer("sigmoid_outputs", torch.tensor(False))
        self.set_output_activation(output_activation)

    def set_output_activation(self, output_activation: str) -> None:
        if output_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"output_activation must be 'softmax' or 'sigmoid', got {output_activation!r}")
        self.output_activation = output_activation
        self.sigmoid_outputs.fill_(output_activation == "sigmoid")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.output_activation = "sigmoid" if bool(self.sigmoid_outputs) else "softmax"

    # nnU-Net toggles deep supervision through network.decoder; we have two.
    @property
    def deep_supervision(self) -> bool:
        return self.branch_a.decoder.deep_supervision

    def set_deep_supervision(self, enabled: bool) -> None:
        self.branch_a.decoder.deep_supervision = enabled
        self.branch_b.decoder.deep_supervision = enabled

    @property
    def num_scales(self) -> int:
        return len(self.branch_a.decoder.seg_layers)

    def forward(self, x: torch.Tensor, remap_plan: Optional[RemapPlan] = None, x_b: Optional[torch.Tensor] = None):
        if remap_plan is None:
            return self.ensemble(x)
        return self.training_paths(x, remap_plan, x_b)

    # ---- inference: branch ensemble -------------------------------------------------
    def ensemble(self, x: torch.Tensor):
        """Average both branches' probabilities and return them as logits.

        Softmax: log of the mean probability (softmax of it gives the mean back).
        Sigmoid: logit of the mean probability.
        """
        out_a = self.branch_a(x)
        out_b = self.branch_b(x)
        if isinstance(out_a, (list, tuple)):
            return [self._average_as_logits(a, b) for a, b in zip(out_a, out_b)]
        return self._average_as_logits(out_a, out_b)

    def _average_as_logits(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        dtype = logits_a.dtype
        a, b = logits_a.float(), logits_b.float()
        if self.output_activation == "softmax":
            # log(mean(p_a, p_b)) computed stably in log space
            mean_log_prob = torch.logsumexp(torch.stack((a.log_softmax(1), b.log_softmax(1))), 0) - torch.log(
                torch.tensor(2.0, device=a.device))
            return mean_log_prob.to(dtype)
        p = 0.5 * (torch.sigmoid(a) + torch.sigmoid(b))
        p = p.clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p)).to(dtype)

    # ---- training: default and remapped paths --------------------------------------
    def training_paths(self, x: torch.Tensor, remap_plan: RemapPlan,
                       x_b: Optional[torch.Tensor] = None) -> Tuple[BranchOutputs, BranchOutputs]:
        """Both branches' outputs; branch B reads ``x_b`` when given (its own view of the batch), else ``x``."""
        feats_a, bottleneck_a = self._features(self.branch_a, x)
        feats_b, bottleneck_b = self._features(self.branch_b, x if x_b is None else x_b)
        dec_a, dec_b = self.branch_a.decoder, self.branch_b.decoder
        out_a = BranchOutputs(
            default=[head_for_scale(dec_a, s)(f) for s, f in enumerate(feats_a)],
            remapped={s: head_for_scale(dec_b, s)(feats_a[s]) for s in remap_plan.active("AB")},
            features=feats_a, bottleneck=bottleneck_a)
        out_b = BranchOutputs(
            default=[head_for_scale(dec_b, s)(f) for s, f in enumerate(feats_b)],
            remapped={s: head_for_scale(dec_a, s)(feats_b[s]) for s in remap_plan.active("BA")},
            features=feats_b, bottleneck=bottleneck_b)
        return out_a, out_b

    def _features(self, branch: nn.Module, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        skips = encoder_skips(branch.encoder, x, self.activation_checkpointing)
        return decoder_features(branch.decoder, skips, self.activation_checkpointing), skips[-1]


def unwrap(network: nn.Module) -> nn.Module:
    """The module itself, without nnU-Net's DDP and torch.compile wrappers (the order nnU-Net applies them)."""
    module = network.module if isinstance(network, DistributedDataParallel) else network
    return module._orig_mod if isinstance(module, OptimizedModule) else module
