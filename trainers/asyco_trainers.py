"""nnUNetTrainerAsyCo, its short runs and memory modes (re-exported from the installed package)."""
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo  # noqa: F401
from nnunetv2_asyco.training.variants.memory_modes import (  # noqa: F401
    nnUNetTrainerAsyCo_halfUnlabeled, nnUNetTrainerAsyCo_lowMemory, nnUNetTrainerAsyCo_microBatch)
from nnunetv2_asyco.training.variants.training_length import (  # noqa: F401
    nnUNetTrainerAsyCo_1epoch, nnUNetTrainerAsyCo_5epochs, nnUNetTrainerAsyCo_10epochs, nnUNetTrainerAsyCo_20epochs,
    nnUNetTrainerAsyCo_50epochs, nnUNetTrainerAsyCo_100epochs, nnUNetTrainerAsyCo_250epochs,
    nnUNetTrainerAsyCo_500epochs, nnUNetTrainerAsyCo_smoke)
