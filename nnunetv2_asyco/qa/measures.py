"""Per-voxel uncertainty measures, computed from probabilities (channel axis 0).

Branch disagreement: the Jensen-Shannon divergence between branch A's and branch B's class probabilities, in
bits, so it lies in [0, 1]: 0 where both branches give the same distribution, 1 where both are certain of
different classes. For nnU-Net's region training (one sigmoid per region) it is the mean over regions of the
binary JSD. JSD is symmetric (neither branch is the reference) and bounded, unlike KL divergence.

TTA spread (the single-network baseline): the variance over nnU-Net's mirrored predictions of each class
probability, summed over classes (softmax) or averaged over regions (sigmoid).
"""
import math

import torch

BRANCHES, TTA = "branches", "tta"
MEASURES = (BRANCHES, TTA)
_LOG2 = math.log(2.0)


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Class (softmax) or region (sigmoid) probabilities of logits with channels first, in float32."""
    logits = logits.float()
    return torch.softmax(logits, 0) if activation == "softmax" else torch.sigmoid(logits)


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    # 0 * log 0 = 0: xlogy handles it without a clamp that would bias confident voxels
    return -torch.special.xlogy(p, p) / _LOG2


def jensen_shannon(p_a: torch.Tensor, p_b: torch.Tensor, activation: str) -> torch.Tensor:
    """Per-voxel JSD in bits between two probability tensors (C, *spatial) -> (*spatial), in [0, 1]."""
    if activation == "softmax":
        m = 0.5 * (p_a + p_b)
        jsd = _entropy_bits(m).sum(0) - 0.5 * (_entropy_bits(p_a).sum(0) + _entropy_bits(p_b).sum(0))
    else:
        def binary(p):
            return _entropy_bits(p) + _entropy_bits(1 - p)
        jsd = (binary(0.5 * (p_a + p_b)) - 0.5 * (binary(p_a) + binary(p_b))).mean(0)
    return jsd.clamp_(0.0, 1.0)  # rounding can give -1e-7 or 1 + 1e-7


def mirror_spread(probs: torch.Tensor, activation: str, channel_dim: int = 0) -> torch.Tensor:
    """TTA spread from probabilities stacked over mirrors on dim 0: (M, ..., C at ``channel_dim`` + 1, ...).

    Returns the spread without the mirror and channel axes (the population variance over the M mirrors).
    """
    var = probs.float().var(0, unbiased=False)
    return var.sum(channel_dim) if activation == "softmax" else var.mean(channel_dim)
