"""The AsyCo objective: supervised loss on default and remapped paths plus hierarchical consistency.

Kept apart from the trainer so that it can be used (and tested, e.g. under
DDP) with nothing but a two-branch module's outputs and nnU-Net's loss.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunetv2_asyco.consistency import (BRANCH_OUTPUT_MODES, branch_output_consistency, inter_head_consistency,
                                        representation_consistency)
from nnunetv2_asyco.network import BranchOutputs
from nnunetv2_asyco.shared_losses import (CONSISTENCY_SCALES, consistency_scale_weights, first_consistency_row,
                                          supervised_loss_of_both_branches)

REPRESENTATION_LAYERS = ("decoder", "bottleneck", "decoder+bottleneck")
TERMS = ("supervised", "branch_output", "inter_head", "representation")


@dataclass(frozen=True)
class AsyCoOptions:
    """The loss options of one AsyCo run. Their defaults (and what each means) are nnUNetTrainerAsyCo's attributes."""
    supervise_remapped_paths: bool
    weight_branch_output: float
    weight_inter_head: float
    weight_representation: float
    branch_output_mode: str
    confidence_threshold: float
    representation_layers: str
    consistency_scales: str
    consistency_on_labeled: bool

    def __post_init__(self):
        for name, value, allowed in (("representation_layers", self.representation_layers, REPRESENTATION_LAYERS),
                                     ("consistency_scales", self.consistency_scales, CONSISTENCY_SCALES),
                                     ("branch_output_mode", self.branch_output_mode, BRANCH_OUTPUT_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


class AsyCoObjective:
    """Loss terms of one step from the two branches' outputs on [labeled; unlabeled] samples.

    ``supervised_loss`` is nnU-Net's loss as the trainer builds it (a
    ``DeepSupervisionWrapper`` around Dice+CE / Dice+BCE, or the bare loss
    without deep supervision); ``activation`` is "softmax" or "sigmoid".
    """

    def __init__(self, supervised_loss: Callable, activation: str, options: AsyCoOptions):
        self.loss = supervised_loss
        self.activation = activation
        self.options = options
        self.deep_supervision = isinstance(supervised_loss, DeepSupervisionWrapper)

    # ---- weights per deep-supervision scale ---------------------------------------------
    def scale_weights(self, num_scales: int) -> List[float]:
        return consistency_scale_weights(self.loss, self.options.consistency_scales, num_scales)

    # ---- supervised part ------------------------------------------------------------------------
    def supervised_remapped(self, remapped: Dict[int, torch.Tensor], target, n_labeled: int) -> Optional[torch.Tensor]:
        """nnU-Net's loss on the active scales of a remapped path, normalised by their weight."""
        targets = target if isinstance(target, list) else [target]
        weights = [float(w) for w in self.loss.weight_factors] if self.deep_supervision else [1.0]
        base_loss = self.loss.loss if self.deep_supervision else self.loss
        total, weight_sum = None, 0.0
        for s, logits in remapped.items():
            if weights[s] == 0:
                continue
            term = weights[s] * base_loss(logits[:n_labeled], targets[s])
            total = term if total is None else total + term
            weight_sum += weights[s]
        return total / weight_sum if total is not None else None

    # ---- all terms -----------------------------------------------------------------------------
    def terms(self, out_a: BranchOutputs, out_b: BranchOutputs, target, n_labeled: int) -> Dict[str, torch.Tensor]:
        """The unweighted terms; a micro-batch (``nnunetv2_asyco.micro_batching``) may have no labeled rows, or no
        rows that consistency applies to: that part is then zero."""
        o = self.options
        zero = out_a.default[0].new_zeros((), dtype=torch.float32)
        supervised = zero
        if n_labeled > 0:
            supervised = supervised_loss_of_both_branches(self.loss, out_a.default, out_b.default, target, n_labeled)
        if o.supervise_remapped_paths and n_labeled > 0:
            for remapped in (out_a.remapped, out_b.remapped):
                extra = self.supervised_remapped(remapped, target, n_labeled)
                if extra is not None:
                    supervised = supervised + extra

        first = first_consistency_row(o.consistency_on_labeled, n_labeled)
        if first >= out_a.default[0].shape[0]:
            return {"supervised": supervised, "branch_output": zero, "inter_head": zero, "representation": zero}
        a, b = consistency_samples(out_a, first), consistency_samples(out_b, first)
        weights = self.scale_weights(len(a.default))
        return {
            "supervised": supervised,
            "branch_output": branch_output_consistency(a.default, b.default, weights, self.activation,
                                                       o.branch_output_mode, o.confidence_threshold)
            if o.weight_branch_output > 0 else zero,
            "inter_head": inter_head_consistency(a.default, a.remapped, b.default, b.remapped, weights,
                                                 self.activation) if o.weight_inter_head > 0 else zero,
            "representation": self.representation(a, b, weights) if o.weight_representation > 0 else zero,
        }

    def representation(self, a: BranchOutputs, b: BranchOutputs, weights: List[float]) -> torch.Tensor:
        layers = self.options.representation_layers
        feats_a, feats_b, w = [], [], []
        if "decoder" in layers:
            feats_a += a.features
            feats_b += b.features
            w += weights
        if "bottleneck" in layers:
            feats_a.append(a.bottleneck)
            feats_b.append(b.bottleneck)
            w.append(1.0 if layers == "bottleneck" else max(weights))
        return representation_consistency(feats_a, feats_b, w)

    def combine(self, terms: Dict[str, torch.Tensor], consistency_weight: float) -> torch.Tensor:
        o = self.options
        consistency = (o.weight_branch_output * terms["branch_output"] + o.weight_inter_head * terms["inter_head"]
                       + o.weight_representation * terms["representation"])
        return terms["supervised"] + consistency_weight * consistency


def consistency_samples(out: BranchOutputs, first: int) -> BranchOutputs:
    """The samples consistency is computed on: all (first = 0) or only the unlabeled ones."""
    if first == 0:
        return out
    return BranchOutputs(default=[o[first:] for o in out.default],
                         remapped={s: o[first:] for s, o in out.remapped.items()},
                         features=[f[first:] for f in out.features], bottleneck=out.bottleneck[first:])
