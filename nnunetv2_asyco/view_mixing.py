"""Mixed views: one branch reads a CutMix of the unlabeled samples, the other branch's outputs are mixed to match.

Intensity perturbations (``nnunetv2_asyco.branch_views``) leave the anatomy
where it is; a branch can agree with the other by matching local appearance.
A mixed view also breaks the *context*: in each step one branch, drawn at
random (the mixed branch), reads unlabeled sample i with a box pasted from
sample j of the same batch. The other branch reads the samples unmixed, and
its outputs (every scale, the remapped paths, the decoder features and the
bottleneck) are mixed with the same boxes afterwards, so that voxel k of the
two branches again shows the same anatomy and every voxel-wise consistency
term applies unchanged. The mixed branch must therefore segment a structure
as it would in its own context, from a view where the surroundings are
someone else's (the idea behind CPS's CutMix variant, here without an extra
forward pass: the unmixed branch's outputs are the targets and are computed
anyway).

Boxes are stored as fractions of each spatial axis, so the same box gives a
mask at every deep-supervision scale (rounded to that scale's grid).
Labeled samples are never mixed.
"""
from dataclasses import dataclass, field
from typing import Sequence, Tuple

import torch

from nnunetv2_asyco.network import BranchOutputs

BRANCHES = ("A", "B")


@dataclass(frozen=True)
class CutMixBoxes:
    """One box per sample (start and end as fractions of each spatial axis) and the sample it is filled from."""
    starts: torch.Tensor  # (n, spatial dims), float
    ends: torch.Tensor  # (n, spatial dims), float
    partner: torch.Tensor  # (n,), long: box of sample i is taken from sample partner[i]
    # masks already built, per (grid, device): a step mixes ~4 tensors per deep-supervision scale
    _masks: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def draw(cls, num_samples: int, spatial_dims: int, side: Tuple[float, float]) -> "CutMixBoxes":
        """Box sides ``U(side)`` of each axis at a uniform position; partner = the next sample of the batch."""
        sides = torch.empty(num_samples, spatial_dims).uniform_(*side)
        starts = torch.rand(num_samples, spatial_dims) * (1 - sides)
        partner = torch.roll(torch.arange(num_samples), -1)  # a batch of one mixes with itself: a no-op
        return cls(starts, starts + sides, partner)

    def mask(self, spatial_shape: Sequence[int], device: torch.device) -> torch.Tensor:
        """Boolean (n, 1, *spatial_shape): True inside each sample's box, on this grid."""
        key = (tuple(spatial_shape), str(device))
        if key not in self._masks:
            self._masks[key] = self._build_mask(tuple(spatial_shape)).to(device)
        return self._masks[key]

    def _build_mask(self, spatial_shape: Tuple[int, ...]) -> torch.Tensor:
        n = self.starts.shape[0]
        mask = torch.zeros((n, 1) + tuple(spatial_shape), dtype=torch.bool)
        for i in range(n):
            box = []
            for axis, size in enumerate(spatial_shape):
                start = min(int(round(float(self.starts[i, axis]) * size)), size - 1)
                end = max(start + 1, int(round(float(self.ends[i, axis]) * size)))
                box.append(slice(start, end))
            mask[(i, 0) + tuple(box)] = True
        return mask

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Each sample of ``x`` (n, c, *spatial) with its box filled from its partner; ``x`` is not modified."""
        return torch.where(self.mask(x.shape[2:], x.device), x[self.partner.to(x.device)], x)


@dataclass(frozen=True)
class ViewMix:
    """The mixing of one step: which branch read mixed samples, and where in the batch they are."""
    boxes: CutMixBoxes
    mixed_branch: str  # "A" or "B"
    first: int  # index of the first unlabeled sample in the batch

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its unlabeled rows (from ``first`` on) mixed; the labeled rows are kept."""
        return torch.cat((x[:self.first], self.boxes.apply(x[self.first:])))

    def align(self, out_a: BranchOutputs, out_b: BranchOutputs) -> Tuple[BranchOutputs, BranchOutputs]:
        """Mix the unmixed branch's outputs so that both branches' outputs show the same anatomy voxel by voxel."""
        if self.mixed_branch == "A":
            return out_a, self.mix_outputs(out_b)
        return self.mix_outputs(out_a), out_b

    def mix_outputs(self, out: BranchOutputs) -> BranchOutputs:
        return BranchOutputs(default=[self.mix(o) for o in out.default],
                             remapped={s: self.mix(o) for s, o in out.remapped.items()},
                             features=[self.mix(f) for f in out.features], bottleneck=self.mix(out.bottleneck))


def draw_view_mix(num_labeled: int, unlabeled: torch.Tensor, side: Tuple[float, float]) -> ViewMix:
    """The mixing of one step: fresh boxes, and the mixed branch drawn with equal odds."""
    boxes = CutMixBoxes.draw(unlabeled.shape[0], unlabeled.ndim - 2, side)
    return ViewMix(boxes, BRANCHES[int(torch.randint(0, 2, ()))], num_labeled)
