"""nnUNetTrainerMeanTeacher (Mean Teacher baseline) and its short-run variants (re-exported from the installed package)."""
from nnunetv2_asyco.training import mean_teacher as _mean_teacher

globals().update({k: v for k, v in vars(_mean_teacher).items() if k.startswith("nnUNetTrainerMeanTeacher")})
