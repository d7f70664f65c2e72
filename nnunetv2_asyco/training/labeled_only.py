"""nnUNetTrainerLabeledOnly: stock nnU-Net training on the labeled subset (the lower bound).

Without a recorded subset it trains exactly like nnUNetTrainer.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco.training.labeled_subset_split import LabeledSubsetSplitMixin
from nnunetv2_asyco.training.variants.training_length import demo_variant, epoch_variants


class nnUNetTrainerLabeledOnly(LabeledSubsetSplitMixin, nnUNetTrainer):
    pass


globals().update(epoch_variants(nnUNetTrainerLabeledOnly, __name__))
globals().update(demo_variant(nnUNetTrainerLabeledOnly, __name__))
