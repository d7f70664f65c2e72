"""nnUNetTrainerLabeledOnly: stock nnU-Net training on the labeled subset (the lower bound).

Without a recorded subset (and without ``nnUNet_asyco_seed``) it trains exactly like nnUNetTrainer.
"""
from nnunetv2_asyco.training.package_trainer import PackageTrainer


class nnUNetTrainerLabeledOnly(PackageTrainer):
    pass
