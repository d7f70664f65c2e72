"""nnUNetTrainerLabeledOnly and its short runs (re-exported from the installed package)."""
from nnunetv2_asyco.training.labeled_only import nnUNetTrainerLabeledOnly  # noqa: F401
from nnunetv2_asyco.training.variants.training_length import (  # noqa: F401
    nnUNetTrainerLabeledOnly_1epoch, nnUNetTrainerLabeledOnly_5epochs, nnUNetTrainerLabeledOnly_10epochs,
    nnUNetTrainerLabeledOnly_20epochs, nnUNetTrainerLabeledOnly_50epochs, nnUNetTrainerLabeledOnly_100epochs,
    nnUNetTrainerLabeledOnly_250epochs, nnUNetTrainerLabeledOnly_500epochs, nnUNetTrainerLabeledOnly_smoke)
