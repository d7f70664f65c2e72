"""Trainer names of earlier versions (short runs of ablations), built when nnU-Net asks for them by name."""
from nnunetv2_asyco.training.variants.legacy_names import legacy_trainer


def __getattr__(name: str):
    cls = legacy_trainer(name)
    if cls is None:
        raise AttributeError(name)
    return cls
