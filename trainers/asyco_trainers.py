"""nnUNetTrainerAsyCo, its ablations and short-run variants (re-exported from the installed package)."""
from nnunetv2_asyco.training import asyco_variants as _variants
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo  # noqa: F401

globals().update({k: v for k, v in vars(_variants).items() if k.startswith("nnUNetTrainerAsyCo")})
