"""Loss plumbing every method shares.

A training batch is [labeled; unlabeled] along the batch axis: the first
``n_labeled`` rows have targets. Outputs are lists of logits per
deep-supervision scale (full resolution first).
"""
from typing import Callable, List, Sequence

import torch

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

CONSISTENCY_SCALES = ("all", "full_res")


def supervised_loss(loss: Callable, logits: Sequence[torch.Tensor], target) -> torch.Tensor:
    """nnU-Net's own loss (deep-supervised Dice+CE, or its region loss) on a list of logits per scale."""
    return loss(list(logits) if isinstance(loss, DeepSupervisionWrapper) else logits[0], target)


def labeled_rows(logits: Sequence[torch.Tensor], n_labeled: int) -> List[torch.Tensor]:
    return [x[:n_labeled] for x in logits]


def supervised_loss_of_both_branches(loss: Callable, default_a: Sequence[torch.Tensor],
                                     default_b: Sequence[torch.Tensor], target, n_labeled: int) -> torch.Tensor:
    """L_sup(A) + L_sup(B) on the labeled rows of each branch's default outputs."""
    return (supervised_loss(loss, labeled_rows(default_a, n_labeled), target)
            + supervised_loss(loss, labeled_rows(default_b, n_labeled), target))


def first_consistency_row(consistency_on_labeled: bool, n_labeled: int) -> int:
    """Consistency uses rows from here on: all rows, or only the unlabeled ones."""
    return 0 if consistency_on_labeled else n_labeled


def consistency_scale_weights(loss: Callable, consistency_scales: str, num_scales: int) -> List[float]:
    """Consistency weight per deep-supervision scale (0 = full resolution), shared by every method.

    "all": nnU-Net's deep-supervision weights (normalised; the coarsest ~0); "full_res": the output only.
    """
    if consistency_scales not in CONSISTENCY_SCALES:
        raise ValueError(f"consistency_scales must be one of {CONSISTENCY_SCALES}, got {consistency_scales!r}")
    if isinstance(loss, DeepSupervisionWrapper) and consistency_scales == "all":
        return [float(w) for w in loss.weight_factors]
    return [1.0] + [0.0] * (num_scales - 1)
