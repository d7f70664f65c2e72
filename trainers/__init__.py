"""Thin trainer modules for nnU-Net's trainer search.

Point nnU-Net here with ``export nnUNet_extTrainer="$(nnUNetv2_asyco_trainer_dir)"``.
nnU-Net imports every module of this folder as a top-level module and drops it
from ``sys.modules`` afterwards, so these modules only re-export classes that
live in the installed ``nnunetv2_asyco`` package.
"""
