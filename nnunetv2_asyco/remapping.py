"""Dynamic decoder-head remapping: which remapped paths take part in a step.

The abstract says features are "dynamically" remapped to non-default heads.
Our reading, kept as named options on the trainer:

- ``"per_direction"`` (default): each direction (AB, BA) is switched on
  independently with probability ``p_remap`` for the step; when on, it covers
  every deep-supervision scale.
- ``"per_scale"``: each (direction, scale) pair is drawn independently with
  probability ``p_remap``.
- ``"always"``: both directions at every scale, every step (static remapping).
- ``"off"``: no remapped paths (the ablation).

Draws use a dedicated ``numpy`` generator so that the schedule is
reproducible and does not disturb nnU-Net's own random streams.
"""
from typing import Sequence

import numpy as np

from nnunetv2_asyco.network import DIRECTIONS, RemapPlan

REMAP_SCHEDULES = ("per_direction", "per_scale", "always", "off")


class RemapSchedule:
    def __init__(self, schedule: str, p_remap: float, scales: Sequence[int], seed: int = 0):
        if schedule not in REMAP_SCHEDULES:
            raise ValueError(f"Unknown remap schedule {schedule!r}; choose one of {REMAP_SCHEDULES}.")
        if not 0.0 <= p_remap <= 1.0:
            raise ValueError(f"p_remap must lie in [0, 1], got {p_remap}.")
        self.schedule = schedule
        self.p_remap = p_remap
        self.scales = tuple(scales)
        self.rng = np.random.default_rng(seed)

    def draw(self) -> RemapPlan:
        if self.schedule == "off":
            return RemapPlan({d: () for d in DIRECTIONS})
        if self.schedule == "always":
            return RemapPlan({d: self.scales for d in DIRECTIONS})
        if self.schedule == "per_direction":
            return RemapPlan({d: self.scales if self.rng.random() < self.p_remap else () for d in DIRECTIONS})
        return RemapPlan({d: tuple(s for s in self.scales if self.rng.random() < self.p_remap) for d in DIRECTIONS})

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
