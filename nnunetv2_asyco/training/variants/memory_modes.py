"""AsyCo trainers that trade step time or unlabeled samples for memory."""
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo


class nnUNetTrainerAsyCo_lowMemory(nnUNetTrainerAsyCo):
    """Activation checkpointing of every encoder/decoder stage of both branches: stage activations are recomputed
    in backward instead of stored."""
    activation_checkpointing = True


class nnUNetTrainerAsyCo_halfUnlabeled(nnUNetTrainerAsyCo):
    """One unlabeled patch per two labeled ones (unlabeled_batch_ratio 0.5)."""
    unlabeled_batch_ratio = 0.5
