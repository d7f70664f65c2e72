"""Micro-batching memory mode: one AsyCo step as several smaller forward/backward passes with accumulated gradients.

A step's rows are [labeled; unlabeled]; every row goes through both branches, so the default mode holds
activations of 2 x (labeled + unlabeled) samples at once, about 4x nnU-Net's labeled batch. Here the rows are
split into micro-batches of ``size`` rows (each through both branches, so the consistency terms between the
branches stay per sample), and each micro-batch's loss is backpropagated before the next one is computed.
With ``size`` = half of nnU-Net's batch, a micro-batch holds as many sample-activations as nnU-Net's step.

Which terms are per sample, and what changes:

- the supervised loss is nnU-Net's Dice + CE. CE is a mean over voxels (per sample, equal patch sizes) and the
  deep-supervision sum is linear, so weighting a micro-batch's loss by its share of the labeled rows gives the
  full step's loss. nnU-Net's Dice is per sample with ``batch_dice`` False; with ``batch_dice`` True (nnU-Net's
  2d, and 3d_fullres when a 3d_lowres exists) Dice pools intersection and sums over the batch before the ratio,
  a batch-level term: micro-batching then pools over each micro-batch's labeled rows instead (the batch Dice of
  a smaller batch), the only change to the objective in this mode's default setting. CE with an ignore label
  averages over the non-ignored voxels of the whole batch, so there too rows are weighted by count, not by
  their non-ignored voxels;
- branch-output ("soft"), inter-head and representation consistency are means over samples and voxels (the
  inter-head normalisation depends on the step's draw, which all micro-batches share): exact. The
  ``class_balanced`` branch-output term (sums over the batch) and ``cps`` with a confidence threshold (divides
  by the confident voxels of the batch) are batch-level, pooled per micro-batch here;
- views (``branch_views``) are drawn once for the whole step before it is split; the mixed view
  (``perturbed_mixed``) pastes boxes between samples of the batch and is refused in this mode.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from nnunetv2_asyco.network import RemapPlan, training_outputs
from nnunetv2_asyco.shared_losses import first_consistency_row


@dataclass(frozen=True)
class MicroBatch:
    start: int  # rows start:stop of the step's [labeled; unlabeled] batch
    stop: int
    n_labeled: int  # its labeled rows (they come first)
    supervised_share: float  # its share of the step's labeled rows: the weight of its supervised loss
    consistency_share: float  # its share of the rows consistency applies to: the weight of its consistency terms


def split_rows(n_labeled: int, n_rows: int, size: int, consistency_on_labeled: bool) -> List[MicroBatch]:
    """Consecutive micro-batches of at most ``size`` rows and the weights that make their losses sum to the step's."""
    if size < 1:
        raise ValueError(f"micro-batch size must be at least 1, got {size}")
    first = first_consistency_row(consistency_on_labeled, n_labeled)
    n_consistency = n_rows - first
    batches = []
    for start in range(0, n_rows, size):
        stop = min(start + size, n_rows)
        labeled = max(0, min(stop, n_labeled) - start)
        consistency_rows = stop - max(start, first) if stop > first else 0
        batches.append(MicroBatch(start, stop, labeled, labeled / n_labeled if n_labeled else 0.0,
                                  consistency_rows / n_consistency if n_consistency else 0.0))
    return batches


def target_rows(target, start: int, stop: int):
    """Rows of nnU-Net's target (one tensor, or one per deep-supervision scale)."""
    return [t[start:stop] for t in target] if isinstance(target, list) else target[start:stop]


@dataclass
class MicroBatchedStep:
    total: torch.Tensor  # the step's loss (detached): the sum of the micro-batches' weighted losses
    terms: Dict[str, torch.Tensor]  # the step's terms (detached), each the weighted sum over micro-batches
    finite: bool  # False: a micro-batch's loss was not finite; later micro-batches were not computed


def micro_batched_backward(network: torch.nn.Module, objective, x_a: torch.Tensor, x_b: Optional[torch.Tensor],
                           target, n_labeled: int, remap_plan: RemapPlan, forward_plan: Optional[RemapPlan],
                           consistency_weight: float, size: int, backward: Callable[[torch.Tensor], None],
                           forward_context: Callable = torch.enable_grad) -> MicroBatchedStep:
    """Forward and ``backward`` per micro-batch; the gradients accumulate in the parameters' ``.grad``.

    ``objective``: an ``AsyCoObjective``; ``forward_context``: e.g. nnU-Net's autocast, entered per micro-batch
    around the forward and the terms (the weighted sum is formed in float32 outside it, as in the full step).
    """
    total = torch.zeros((), dtype=torch.float32, device=x_a.device)
    sums: Dict[str, torch.Tensor] = {}
    for mb in split_rows(n_labeled, x_a.shape[0], size, objective.options.consistency_on_labeled):
        with forward_context():
            out_a, out_b = training_outputs(network, x_a[mb.start:mb.stop],
                                            None if x_b is None else x_b[mb.start:mb.stop], remap_plan, forward_plan)
            terms = objective.terms(out_a, out_b, target_rows(target, mb.start, mb.start + mb.n_labeled),
                                    mb.n_labeled)
        weighted = {name: value.float() * (mb.supervised_share if name == "supervised" else mb.consistency_share)
                    for name, value in terms.items()}
        loss = objective.combine(weighted, consistency_weight)
        for name, value in weighted.items():
            sums[name] = sums.get(name, 0) + value.detach()
        total = total + loss.detach()
        if not torch.isfinite(loss):
            return MicroBatchedStep(total, sums, finite=False)
        backward(loss)
    return MicroBatchedStep(total, sums, finite=True)
