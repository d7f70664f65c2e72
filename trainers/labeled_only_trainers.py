"""nnUNetTrainerLabeledOnly and its short-run variants (re-exported from the installed package)."""
from nnunetv2_asyco.training import labeled_only as _labeled_only

globals().update({k: v for k, v in vars(_labeled_only).items() if k.startswith("nnUNetTrainerLabeledOnly")})
