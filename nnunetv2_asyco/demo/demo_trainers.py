"""The demo's training budget (``nnUNetv2_asyco_demo``): every method gets the same epochs x iterations.

The demo scores held-out test cases itself, so nnU-Net's final validation is skipped.
"""
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo
from nnunetv2_asyco.training.cps import nnUNetTrainerCPS
from nnunetv2_asyco.training.labeled_only import nnUNetTrainerLabeledOnly
from nnunetv2_asyco.training.mean_teacher import nnUNetTrainerMeanTeacher

DEMO_EPOCHS, DEMO_ITERATIONS, DEMO_VAL_ITERATIONS = 20, 50, 2


class DemoBudget:
    training_epochs = DEMO_EPOCHS
    training_iterations_per_epoch = DEMO_ITERATIONS
    validation_iterations_per_epoch = DEMO_VAL_ITERATIONS

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("demo trainer: final validation skipped (the demo scores its held-out test cases)")


class nnUNetTrainerLabeledOnly_demo(DemoBudget, nnUNetTrainerLabeledOnly):
    pass


class nnUNetTrainerMeanTeacher_demo(DemoBudget, nnUNetTrainerMeanTeacher):
    pass


class nnUNetTrainerCPS_demo(DemoBudget, nnUNetTrainerCPS):
    pass


class nnUNetTrainerAsyCo_demo(DemoBudget, nnUNetTrainerAsyCo):
    pass
