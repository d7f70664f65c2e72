"""Ablation and control trainers (nnunetv2_asyco/training/variants/ablations.py), re-exported by name."""
from nnunetv2_asyco.training.variants.ablations import ablation_trainers

globals().update({cls.__name__: cls for cls in ablation_trainers()})
