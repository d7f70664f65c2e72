"""Short-run variants of the four trainers, named like nnU-Net's own (``nnUNetTrainer_5epochs``).

Each sets the training length through ``PackageTrainer``'s class attributes
(``training_epochs``; iterations per epoch stay nnU-Net's 250). ``_smoke`` runs
2 epochs of 4 iterations (2 validation iterations): the whole pipeline in
seconds, to check a set-up end to end.
"""
from nnunetv2_asyco.training.labeled_only import nnUNetTrainerLabeledOnly
from nnunetv2_asyco.training.mean_teacher import nnUNetTrainerMeanTeacher
from nnunetv2_asyco.training.cps import nnUNetTrainerCPS
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo


# ---- LabeledOnly --------------------------------------------------------------------------------
class nnUNetTrainerLabeledOnly_1epoch(nnUNetTrainerLabeledOnly):
    training_epochs = 1


class nnUNetTrainerLabeledOnly_5epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 5


class nnUNetTrainerLabeledOnly_10epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 10


class nnUNetTrainerLabeledOnly_20epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 20


class nnUNetTrainerLabeledOnly_50epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 50


class nnUNetTrainerLabeledOnly_100epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 100


class nnUNetTrainerLabeledOnly_250epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 250


class nnUNetTrainerLabeledOnly_500epochs(nnUNetTrainerLabeledOnly):
    training_epochs = 500


class nnUNetTrainerLabeledOnly_smoke(nnUNetTrainerLabeledOnly):
    training_epochs, training_iterations_per_epoch, validation_iterations_per_epoch = 2, 4, 2


# ---- MeanTeacher --------------------------------------------------------------------------------
class nnUNetTrainerMeanTeacher_1epoch(nnUNetTrainerMeanTeacher):
    training_epochs = 1


class nnUNetTrainerMeanTeacher_5epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 5


class nnUNetTrainerMeanTeacher_10epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 10


class nnUNetTrainerMeanTeacher_20epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 20


class nnUNetTrainerMeanTeacher_50epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 50


class nnUNetTrainerMeanTeacher_100epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 100


class nnUNetTrainerMeanTeacher_250epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 250


class nnUNetTrainerMeanTeacher_500epochs(nnUNetTrainerMeanTeacher):
    training_epochs = 500


class nnUNetTrainerMeanTeacher_smoke(nnUNetTrainerMeanTeacher):
    training_epochs, training_iterations_per_epoch, validation_iterations_per_epoch = 2, 4, 2


# ---- CPS ----------------------------------------------------------------------------------------
class nnUNetTrainerCPS_1epoch(nnUNetTrainerCPS):
    training_epochs = 1


class nnUNetTrainerCPS_5epochs(nnUNetTrainerCPS):
    training_epochs = 5


class nnUNetTrainerCPS_10epochs(nnUNetTrainerCPS):
    training_epochs = 10


class nnUNetTrainerCPS_20epochs(nnUNetTrainerCPS):
    training_epochs = 20


class nnUNetTrainerCPS_50epochs(nnUNetTrainerCPS):
    training_epochs = 50


class nnUNetTrainerCPS_100epochs(nnUNetTrainerCPS):
    training_epochs = 100


class nnUNetTrainerCPS_250epochs(nnUNetTrainerCPS):
    training_epochs = 250


class nnUNetTrainerCPS_500epochs(nnUNetTrainerCPS):
    training_epochs = 500


class nnUNetTrainerCPS_smoke(nnUNetTrainerCPS):
    training_epochs, training_iterations_per_epoch, validation_iterations_per_epoch = 2, 4, 2


# ---- AsyCo --------------------------------------------------------------------------------------
class nnUNetTrainerAsyCo_1epoch(nnUNetTrainerAsyCo):
    training_epochs = 1


class nnUNetTrainerAsyCo_5epochs(nnUNetTrainerAsyCo):
    training_epochs = 5


class nnUNetTrainerAsyCo_10epochs(nnUNetTrainerAsyCo):
    training_epochs = 10


class nnUNetTrainerAsyCo_20epochs(nnUNetTrainerAsyCo):
    training_epochs = 20


class nnUNetTrainerAsyCo_50epochs(nnUNetTrainerAsyCo):
    training_epochs = 50


class nnUNetTrainerAsyCo_100epochs(nnUNetTrainerAsyCo):
    training_epochs = 100


class nnUNetTrainerAsyCo_250epochs(nnUNetTrainerAsyCo):
    training_epochs = 250


class nnUNetTrainerAsyCo_500epochs(nnUNetTrainerAsyCo):
    training_epochs = 500


class nnUNetTrainerAsyCo_smoke(nnUNetTrainerAsyCo):
    training_epochs, training_iterations_per_epoch, validation_iterations_per_epoch = 2, 4, 2
