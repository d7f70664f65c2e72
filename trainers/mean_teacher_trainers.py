"""nnUNetTrainerMeanTeacher and its short runs (re-exported from the installed package)."""
from nnunetv2_asyco.training.mean_teacher import nnUNetTrainerMeanTeacher  # noqa: F401
from nnunetv2_asyco.training.variants.training_length import (  # noqa: F401
    nnUNetTrainerMeanTeacher_1epoch, nnUNetTrainerMeanTeacher_5epochs, nnUNetTrainerMeanTeacher_10epochs,
    nnUNetTrainerMeanTeacher_20epochs, nnUNetTrainerMeanTeacher_50epochs, nnUNetTrainerMeanTeacher_100epochs,
    nnUNetTrainerMeanTeacher_250epochs, nnUNetTrainerMeanTeacher_500epochs, nnUNetTrainerMeanTeacher_smoke)
