"""Hierarchical consistency terms of AsyCo and the ramp-up weight.

(i)   branch-output consistency: the two branches' default outputs agree
      (O_AA vs O_BB);
(ii)  inter-head consistency: two heads on the *same* decoder features agree
      (O_AA vs O_AB, O_BB vs O_BA);
(iii) representation consistency: intermediate features of A and B agree.

Every term is computed in float32 (they are small sums of squares that
fp16 would round away) and works for softmax (labels) and sigmoid (nnU-Net
regions) outputs. All "soft" terms are zero when the two sides are identical.
"""
import math
from typing import Dict, Sequence

import torch
import torch.nn.functional as F


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    logits = logits.float()
    return torch.softmax(logits, 1) if activation == "softmax" else torch.sigmoid(logits)


def probability_mse(logits_p: torch.Tensor, logits_q: torch.Tensor, activation: str) -> torch.Tensor:
    """Mean squared difference of the two predictions' probabilities (gradient to both sides)."""
    return F.mse_loss(probabilities(logits_p, activation), probabilities(logits_q, activation))


def class_balanced_mse(logits_p: torch.Tensor, logits_q: torch.Tensor, activation: str,
                       smooth: float = 1.0) -> torch.Tensor:
    """Squared probability difference per class, divided by the class's own probability mass, averaged over classes.

    Plain MSE averages over every voxel, so a disagreement on a small structure is a tiny share of it; here each
    class counts equally (like nnU-Net's Dice loss: summed over batch and space, background channel of softmax
    outputs left out). Equals 1 - soft Dice with squared denominators, so it is zero when the sides are identical.
    """
    p, q = probabilities(logits_p, activation), probabilities(logits_q, activation)
    if activation == "softmax":
        p, q = p[:, 1:], q[:, 1:]
    dims = [0] + list(range(2, p.ndim))
    per_class = ((p - q) ** 2).sum(dims) / ((p ** 2).sum(dims) + (q ** 2).sum(dims) + smooth)
    return per_class.mean()


# soft branch-output terms by mode (gradient to both branches); "cps" is the hard-label alternative
SOFT_BRANCH_OUTPUT_TERMS = {"soft": probability_mse, "class_balanced": class_balanced_mse}
BRANCH_OUTPUT_MODES = tuple(SOFT_BRANCH_OUTPUT_TERMS) + ("cps",)


def pseudo_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, activation: str,
                      confidence_threshold: float = 0.0) -> torch.Tensor:
    """Loss of ``student_logits`` against hard pseudo-labels of ``teacher_logits`` (no gradient to the teacher).

    Softmax: cross-entropy with the teacher's argmax. Sigmoid: binary
    cross-entropy with the teacher's thresholded probabilities per region.
    Voxels where the teacher's confidence is below ``confidence_threshold`` are
    left out.
    """
    student = student_logits.float()
    with torch.no_grad():
        p_teacher = probabilities(teacher_logits, activation)
    if activation == "softmax":
        confidence, target = p_teacher.max(1)
        per_voxel = F.cross_entropy(student, target, reduction="none")
    else:
        target = (p_teacher > 0.5).float()
        confidence = torch.where(target > 0, p_teacher, 1 - p_teacher)
        per_voxel = F.binary_cross_entropy_with_logits(student, target, reduction="none")
    mask = (confidence >= confidence_threshold).float()
    return (per_voxel * mask).sum() / mask.sum().clamp_min(1.0)


def cross_pseudo_supervision(logits_a: torch.Tensor, logits_b: torch.Tensor, activation: str,
                             confidence_threshold: float = 0.0) -> torch.Tensor:
    """Each branch learns from the other's hard pseudo-labels (Chen et al., CPS), averaged over both directions."""
    return 0.5 * (pseudo_label_loss(logits_a, logits_b, activation, confidence_threshold)
                  + pseudo_label_loss(logits_b, logits_a, activation, confidence_threshold))


def branch_output_consistency(default_a: Sequence[torch.Tensor], default_b: Sequence[torch.Tensor],
                              scale_weights: Sequence[float], activation: str, mode: str = "soft",
                              confidence_threshold: float = 0.0) -> torch.Tensor:
    """(i) O_AA vs O_BB at every scale with a non-zero weight."""
    if mode not in BRANCH_OUTPUT_MODES:
        raise ValueError(f"Unknown branch-output consistency mode {mode!r}; choose one of {BRANCH_OUTPUT_MODES}.")
    total = default_a[0].new_zeros((), dtype=torch.float32)
    for s, w in enumerate(scale_weights):
        if w == 0:
            continue
        if mode == "cps":
            term = cross_pseudo_supervision(default_a[s], default_b[s], activation, confidence_threshold)
        else:
            term = SOFT_BRANCH_OUTPUT_TERMS[mode](default_a[s], default_b[s], activation)
        total = total + w * term
    return total


def inter_head_consistency(default_a: Sequence[torch.Tensor], remapped_a: Dict[int, torch.Tensor],
                           default_b: Sequence[torch.Tensor], remapped_b: Dict[int, torch.Tensor],
                           scale_weights: Sequence[float], activation: str) -> torch.Tensor:
    """(ii) O_AA vs O_AB and O_BB vs O_BA at the scales where the remapped path is active.

    Normalised by the weight of the active scales so that the term's size does
    not depend on how many remapped paths a step happens to draw.
    """
    total = default_a[0].new_zeros((), dtype=torch.float32)
    active_weight = 0.0
    for default, remapped in ((default_a, remapped_a), (default_b, remapped_b)):
        for s, logits in remapped.items():
            w = scale_weights[s]
            if w == 0:
                continue
            total = total + w * probability_mse(default[s], logits, activation)
            active_weight += w
    return total / active_weight if active_weight > 0 else total


def cosine_disagreement(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity along channels, averaged over batch and space."""
    return (1 - F.cosine_similarity(feat_a.float(), feat_b.float(), dim=1, eps=1e-6)).mean()


def representation_consistency(features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor],
                               weights: Sequence[float]) -> torch.Tensor:
    """(iii) weighted mean of per-stage cosine disagreement between A's and B's features."""
    total = features_a[0].new_zeros((), dtype=torch.float32)
    weight_sum = 0.0
    for fa, fb, w in zip(features_a, features_b, weights):
        if w == 0:
            continue
        total = total + w * cosine_disagreement(fa, fb)
        weight_sum += w
    return total / weight_sum if weight_sum > 0 else total


def sigmoid_rampup(progress: float, rampup_fraction: float) -> float:
    """Laine & Aila's exp(-5 (1 - t)^2) ramp-up, t = progress / rampup_fraction clipped to [0, 1].

    ``progress`` is the fraction of training done (0..1). A ``rampup_fraction``
    of 0 switches the ramp-up off (weight 1 from the start).
    """
    if rampup_fraction <= 0:
        return 1.0
    t = min(max(progress / rampup_fraction, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
