"""The demo's trainers (nnUNetv2_asyco_demo), re-exported from the installed package."""
from nnunetv2_asyco.demo.demo_trainers import (  # noqa: F401
    nnUNetTrainerAsyCo_demo, nnUNetTrainerCPS_demo, nnUNetTrainerLabeledOnly_demo, nnUNetTrainerMeanTeacher_demo)
