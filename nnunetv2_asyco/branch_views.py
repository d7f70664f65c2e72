"""Per-branch views of the unlabeled samples: asymmetry between the branches' inputs.

With both branches reading the same batch, the branches (and the heads on
shared features) come to agree within a few epochs and the consistency terms
fall to a few hundredths of the supervised loss or less
(benchmarks/results/cpu_3000its/notes.md): agreement on identical inputs is
reached and then has nothing left to teach. With perturbed views each branch
reads its own, independently perturbed copy of the unlabeled samples, so
branch-output and representation consistency ask for agreement *across
perturbations*, which does not come for free once the weights agree.
Inter-head consistency is unchanged: its two heads read one branch's features.

Every perturbation keeps the geometry (voxel i of one view is voxel i of the
other), so the voxel-wise consistency terms stay meaningful. Values are on
nnU-Net's normalised intensities (z-scores; CT too, after clipping), per sample:

- intensity: ``x * (1 + U(-contrast, contrast)) + U(-shift, shift) + N(0, noise_std)``;
- cutout: with probability ``cutout_p``, one box whose sides are
  ``U(cutout_size)`` of the patch's is set to 0 (the normalised mean);
- mixed views (``mix_side``): in each step one branch reads a CutMix of the
  unlabeled samples and the other branch's outputs are mixed to match
  (``nnunetv2_asyco.view_mixing``): geometry differs, alignment is restored
  before any consistency term.

Labeled samples are not touched: both branches' supervised loss sees the same
nnU-Net-augmented batch, as the baselines do.
"""
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional, Tuple

import torch

from nnunetv2_asyco.view_mixing import ViewMix, draw_view_mix


@dataclass(frozen=True)
class ViewPerturbation:
    contrast: float = 0.0
    shift: float = 0.0
    noise_std: float = 0.0
    cutout_p: float = 0.0
    cutout_size: Tuple[float, float] = (0.2, 0.5)  # box side as a fraction of the patch side, drawn per axis
    mix_side: Optional[Tuple[float, float]] = None  # CutMix box side (fraction per axis) of the mixed views, or off

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A perturbed copy of the batch ``x`` (b, c, *spatial); ``x`` itself is left unchanged."""
        per_sample = (x.shape[0],) + (1,) * (x.ndim - 1)
        out = x
        if self.contrast > 0:
            out = out * (1 + (torch.rand(per_sample, device=x.device, dtype=x.dtype) * 2 - 1) * self.contrast)
        if self.shift > 0:
            out = out + (torch.rand(per_sample, device=x.device, dtype=x.dtype) * 2 - 1) * self.shift
        if self.noise_std > 0:
            out = out + torch.randn_like(x) * self.noise_std
        if self.cutout_p > 0:
            out = cutout(out if out is not x else x.clone(), self.cutout_p, self.cutout_size)
        return out


def cutout(x: torch.Tensor, p: float, size: Tuple[float, float]) -> torch.Tensor:
    """Set one random box per sample (with probability ``p``) to 0, in place on ``x``; returns ``x``."""
    spatial = x.shape[2:]
    for i in range(x.shape[0]):
        if float(torch.rand(())) >= p:
            continue
        box = []
        for n in spatial:
            side = max(1, int(round(n * float(torch.empty(()).uniform_(*size)))))
            start = int(torch.randint(0, n - side + 1, ()))
            box.append(slice(start, start + side))
        x[(i, slice(None)) + tuple(box)] = 0
    return x


# trainer option ``branch_views`` -> the perturbation each branch's copy of the unlabeled samples gets
_INTENSITY = ViewPerturbation(contrast=0.25, shift=0.25, noise_std=0.15)
BRANCH_VIEWS = {
    "shared": None,  # both branches read the same batch (the paper's setting)
    "perturbed": _INTENSITY,
    "perturbed_cutout": replace(_INTENSITY, cutout_p=0.5),
    "perturbed_mixed": replace(_INTENSITY, mix_side=(0.3, 0.7)),  # box of 9-49% of the patch
}


def view_perturbation(name: str) -> Optional[ViewPerturbation]:
    if name not in BRANCH_VIEWS:
        raise ValueError(f"branch_views must be one of {tuple(BRANCH_VIEWS)}, got {name!r}")
    return BRANCH_VIEWS[name]


class BranchInputs(NamedTuple):
    """One step's inputs: [labeled; unlabeled] per branch (``x_b`` None: B reads ``x_a``), and the mixing if any."""
    x_a: torch.Tensor
    x_b: Optional[torch.Tensor]
    mix: Optional[ViewMix]  # -> ``mix.align(out_a, out_b)`` before the consistency terms


def branch_inputs(data: torch.Tensor, unlabeled: torch.Tensor,
                  perturbation: Optional[ViewPerturbation]) -> BranchInputs:
    """Inputs of branch A and branch B for one step (``perturbation``: ``view_perturbation(branch_views)``)."""
    if perturbation is None:
        return BranchInputs(torch.cat((data, unlabeled)), None, None)
    view_a, view_b = perturbation(unlabeled), perturbation(unlabeled)
    mix = None
    if perturbation.mix_side is not None:
        mix = draw_view_mix(data.shape[0], unlabeled, perturbation.mix_side)
        if mix.mixed_branch == "A":
            view_a = mix.boxes.apply(view_a)
        else:
            view_b = mix.boxes.apply(view_b)
    return BranchInputs(torch.cat((data, view_a)), torch.cat((data, view_b)), mix)
