"""What every trainer of this package adds to stock nnUNetTrainer.

- the labeled subset of the fold, when one is recorded (``LabeledSubsetSplitMixin``);
- seeded training on request (``nnUNet_asyco_seed``, ``SeededTrainingMixin``);
- a training length set by class attributes, so that a short-run variant is a
  two-line subclass (``nnUNetTrainerAsyCo_5epochs``: ``training_epochs = 5``).
"""
from typing import Optional

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco.seeding import training_seed
from nnunetv2_asyco.training.labeled_subset_split import LabeledSubsetSplitMixin
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
