"""nnUNetTrainerCPS: cross pseudo-supervision (Chen et al., CVPR 2021) in nnU-Net, a benchmark baseline.

Two U-Nets A and B built from the plans (the same ``TwoBranchNetwork`` as
AsyCo, with no head remapping) are trained together:

    L = L_sup(A) + L_sup(B) + weight_cps * lambda(t) * L_cps

- ``L_sup``: nnU-Net's own loss (deep-supervised Dice+CE, or the region loss)
  on each branch's default outputs of the labeled part of the batch.
- ``L_cps``: each branch learns from the other's hard pseudo-labels
  (cross-entropy with the other's argmax; binary cross-entropy with its
  thresholded sigmoid for region datasets), no gradient through the
  pseudo-labels, averaged over both directions
  (``nnunetv2_asyco.consistency.cross_pseudo_supervision``). The paper sums the
  two directions, so ``weight_cps = 1.0`` here equals the paper's lambda = 0.5.
- ``lambda(t)``: the shared ramp-up of ``nnUNetTrainerSemiSupervised``.

Choices, as class attributes (variants change one of them):

- ``cps_on_labeled = True``: CPS on labeled + unlabeled samples, as in the paper.
- ``consistency_scales = "full_res"``: CPS on the full-resolution output only,
  as in the paper (which has no deep supervision); ``"all"`` adds every
  deep-supervision scale with nnU-Net's weights, like AsyCo's default.
- ``confidence_threshold = 0.0``: pseudo-labels of every voxel count (the paper
  uses no threshold).
- ``branch_views = "shared"``: both branches read the same batch, as in the
  paper; ``_perturbedViews`` gives each its own perturbed view of the unlabeled
  samples (``nnunetv2_asyco.branch_views``), ``_perturbedMixedViews`` adds
  the mixed views (``nnunetv2_asyco.view_mixing``).

Prediction is the ensemble of both branches (``TwoBranchNetwork.forward``),
so ``nnUNetv2_predict -tr nnUNetTrainerCPS`` works unchanged, exactly as for AsyCo.
"""
from typing import Dict

import torch

from nnunetv2_asyco.consistency import branch_output_consistency
from nnunetv2_asyco.network import RemapPlan
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised
from nnunetv2_asyco.training.two_branch import TwoBranchTrainerMixin
from nnunetv2_asyco.training.variants.training_length import demo_variant, epoch_variants


class nnUNetTrainerCPS(TwoBranchTrainerMixin, nnUNetTrainerSemiSupervised):
    weight_cps: float = 1.0
    cps_on_labeled: bool = True
    consistency_scales: str = "full_res"
    confidence_threshold: float = 0.0

    loss_terms = ("supervised", "cps")

    def compute_loss_terms(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> Dict[str, torch.Tensor]:
        n_labeled = data.shape[0]
        out_a, out_b = self.branch_outputs(data, unlabeled, RemapPlan())
        supervised = self.supervised_loss([o[:n_labeled] for o in out_a.default], target) + \
            self.supervised_loss([o[:n_labeled] for o in out_b.default], target)

        if self.weight_cps == 0:
            return {"supervised": supervised, "cps": supervised.new_zeros((), dtype=torch.float32)}
        first = 0 if self.cps_on_labeled else n_labeled
        logits_a = [o[first:] for o in out_a.default]
        logits_b = [o[first:] for o in out_b.default]
        cps = branch_output_consistency(logits_a, logits_b, self.scale_weights(len(logits_a)), self.activation,
                                        mode="cps", confidence_threshold=self.confidence_threshold)
        return {"supervised": supervised, "cps": cps}

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["supervised"] + self.consistency_weight() * self.weight_cps * terms["cps"]


class nnUNetTrainerCPS_perturbedViews(nnUNetTrainerCPS):
    """Each branch reads its own perturbed copy of the unlabeled samples (the control for AsyCo's same option)."""
    branch_views = "perturbed"


class nnUNetTrainerCPS_perturbedMixedViews(nnUNetTrainerCPS):
    """Perturbed views plus AsyCo's mixed views: pseudo-labels from the unmixed branch, mixed (CPS's CutMix idea)."""
    branch_views = "perturbed_mixed"


for _base in (nnUNetTrainerCPS, nnUNetTrainerCPS_perturbedViews, nnUNetTrainerCPS_perturbedMixedViews):
    globals().update(epoch_variants(_base, __name__))
del _base
globals().update(demo_variant(nnUNetTrainerCPS, __name__))
