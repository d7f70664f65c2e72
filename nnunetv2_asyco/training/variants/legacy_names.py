"""Short-run names of ablation and memory-mode trainers, made on request.

Before version 0.2 every trainer had generated short-run variants
(``nnUNetTrainerAsyCo_noRemap_5epochs``, ``..._smoke``). Model folders carry
such names, and nnU-Net looks the class up by name to predict, so they still
resolve: :func:`legacy_trainer` builds the class when asked (the trainer
folder's ``legacy_trainer_names`` module forwards unknown names here) instead
of defining ~250 classes on every trainer search.
"""
import re
from typing import Dict, Optional

from nnunetv2_asyco.training.variants.ablations import ablation_trainers
from nnunetv2_asyco.training.variants.memory_modes import nnUNetTrainerAsyCo_halfUnlabeled, nnUNetTrainerAsyCo_lowMemory

LEGACY_EPOCHS = (1, 5, 10, 20, 50, 100, 250, 500)
# suffix -> (epochs, iterations per epoch, validation iterations per epoch); None keeps nnU-Net's
SMOKE = (2, 4, 2)
NAME = re.compile(r"^(?P<base>nnUNetTrainer\w+?)_(?:(?P<epochs>\d+)epochs?|(?P<smoke>smoke))$")

_made: Dict[str, type] = {}


def legacy_bases() -> Dict[str, type]:
    return {c.__name__: c for c in ablation_trainers() + [nnUNetTrainerAsyCo_lowMemory, nnUNetTrainerAsyCo_halfUnlabeled]}


def legacy_trainer(name: str) -> Optional[type]:
    """The class an earlier version named ``name`` (same behaviour), or None if there was none."""
    if name in _made:
        return _made[name]
    match = NAME.match(name)
    if match is None:
        return None
    base = legacy_bases().get(match.group("base"))
    if base is None:
        return None
    if match.group("smoke"):
        epochs, iterations, val_iterations = SMOKE
    else:
        epochs, iterations, val_iterations = int(match.group("epochs")), None, None
        if epochs not in LEGACY_EPOCHS or name != f"{base.__name__}_{epochs}epoch{'' if epochs == 1 else 's'}":
            return None
    _made[name] = type(name, (base,), {"training_epochs": epochs, "training_iterations_per_epoch": iterations,
                                       "validation_iterations_per_epoch": val_iterations, "__module__": __name__})
    return _made[name]
