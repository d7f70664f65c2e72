"""AsyCo trainers that trade step time or unlabeled samples for memory."""
from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo


class nnUNetTrainerAsyCo_lowMemory(nnUNetTrainerAsyCo):
    """Activation checkpointing of every encoder/decoder stage of both branches: stage activations are recomputed
    in backward instead of stored."""
    activation_checkpointing = True


class nnUNetTrainerAsyCo_microBatch(nnUNetTrainerAsyCo):
    """The step in micro-batches of half nnU-Net's batch (each through both branches) with accumulated gradients:
    about nnU-Net's activation memory. What the automatic choice (memory_mode "auto") switches to on a GPU where
    the default mode does not fit; see nnunetv2_asyco.micro_batching for the one batch-level term it changes."""
    memory_mode = "micro_batch"


class nnUNetTrainerAsyCo_halfUnlabeled(nnUNetTrainerAsyCo):
    """One unlabeled patch per two labeled ones (unlabeled_batch_ratio 0.5)."""
    unlabeled_batch_ratio = 0.5
