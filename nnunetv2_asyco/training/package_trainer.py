"""What every trainer of this package adds to stock nnUNetTrainer.

- the labeled subset of the fold, when one is recorded (``LabeledSubsetSplitMixin``);
- seeded training on request (``nnUNet_asyco_seed``, ``SeededTrainingMixin``);
- a training length set by class attributes, so that a short-run variant is a
  two-line subclass (``nnUNetTrainerAsyCo_5epochs``: ``training_epochs = 5``);
- checkpoints written once and atomically, with the run's labeled subset in them,
  and ``--c`` refused on another subset.
"""
from typing import Optional

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco import nnunet_compat
from nnunetv2_asyco.seeding import training_seed
from nnunetv2_asyco.training.labeled_subset_split import SUBSET_KEY, LabeledSubsetSplitMixin
from nnunetv2_asyco.training.seeded_training import SeededTrainingMixin


class PackageTrainer(SeededTrainingMixin, LabeledSubsetSplitMixin, nnUNetTrainer):
    # None keeps nnU-Net's value (1000 epochs of 250 iterations, 50 validation iterations)
    training_epochs: Optional[int] = None
    training_iterations_per_epoch: Optional[int] = None
    validation_iterations_per_epoch: Optional[int] = None

    # nnU-Net records the init arguments from this signature (inspect), so it must be spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        training_seed()  # a malformed nnUNet_asyco_seed fails now, before any folder or data is touched
        if self.training_epochs is not None:
            self.num_epochs = self.training_epochs
        if self.training_iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.training_iterations_per_epoch
        if self.validation_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.validation_iterations_per_epoch

    # ---- checkpoints: nnU-Net's dict plus our entries, one atomic write -------------------------
    def checkpoint_entries(self) -> dict:
        """Entries written beside nnU-Net's keys (subclasses add theirs)."""
        subset = self.labeled_subset_of_run if hasattr(self, "labeled_subset_of_run") else self.subset_of_run()
        return {SUBSET_KEY: subset}

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = nnunet_compat.nnunet_checkpoint(self)
        checkpoint.update(self.checkpoint_entries())
        nnunet_compat.atomic_torch_save(checkpoint, filename)

    def check_checkpoint(self, checkpoint: dict, filename: str) -> None:
        """Raise before anything is loaded when the checkpoint cannot continue this run."""
        self.check_subset_of_checkpoint(checkpoint, filename)

    def after_checkpoint_loaded(self, checkpoint: dict) -> None:
        """Restore what nnU-Net's load_checkpoint does not know about."""

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # nnUNetTrainer.load_checkpoint only works with a file name (2.8.x), so the file is read twice
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError("load_checkpoint expects a checkpoint file path")
        checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        # checked before anything is loaded: a refused checkpoint leaves the trainer as it was
        self.check_checkpoint(checkpoint, filename_or_checkpoint)
        super().load_checkpoint(filename_or_checkpoint)
        self.after_checkpoint_loaded(checkpoint)
