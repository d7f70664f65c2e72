"""nnUNetTrainerCPS (cross pseudo-supervision baseline) and its short-run variants (re-exported from the installed package)."""
from nnunetv2_asyco.training import cps as _cps

globals().update({k: v for k, v in vars(_cps).items() if k.startswith("nnUNetTrainerCPS")})
