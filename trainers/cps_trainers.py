"""nnUNetTrainerCPS and its short runs (re-exported from the installed package)."""
from nnunetv2_asyco.training.cps import nnUNetTrainerCPS  # noqa: F401
from nnunetv2_asyco.training.variants.training_length import (  # noqa: F401
    nnUNetTrainerCPS_1epoch, nnUNetTrainerCPS_5epochs, nnUNetTrainerCPS_10epochs, nnUNetTrainerCPS_20epochs,
    nnUNetTrainerCPS_50epochs, nnUNetTrainerCPS_100epochs, nnUNetTrainerCPS_250epochs, nnUNetTrainerCPS_500epochs,
    nnUNetTrainerCPS_smoke)
