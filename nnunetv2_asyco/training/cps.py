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

- ``consistency_on_labeled = True``: CPS on labeled + unlabeled samples, as in the paper.
- ``consistency_scales = "full_res"``: CPS on the full-resolution output only,
  as in the paper (which has no deep supervision); ``"all"`` adds every
  deep-supervision scale with nnU-Net's weights, like AsyCo's default.
- ``confidence_threshold = 0.0``: pseudo-labels of every voxel count (the paper
  uses no threshold).
- ``branch_views = "shared"``: both branches read the same batch, as in the
  paper (``nnUNetTrainerCPS_perturbedViews`` in ``variants/ablations.py`` is
  the control with AsyCo's per-branch views).

Prediction is the ensemble of both branches (``TwoBranchNetwork.forward``),
so ``nnUNetv2_predict -tr nnUNetTrainerCPS`` works unchanged, exactly as for AsyCo.
"""
from typing import Dict

import torch

from nnunetv2_asyco.consistency import branch_output_consistency
from nnunetv2_asyco.network import RemapPlan
from nnunetv2_asyco.shared_losses import first_consistency_row, supervised_loss_of_both_branches
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised
from nnunetv2_asyco.training.two_branch import TwoBranchTrainerMixin


class nnUNetTrainerCPS(TwoBranchTrainerMixin, nnUNetTrainerSemiSupervised):
    weight_cps: float = 1.0
    consistency_on_labeled: bool = True
    consistency_scales: str = "full_res"
    confidence_threshold: float = 0.0

    loss_terms = ("supervised", "cps")

    def compute_loss_terms(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> Dict[str, torch.Tensor]:
        n_labeled = data.shape[0]
        out_a, out_b = self.branch_outputs(data, unlabeled, RemapPlan())
        supervised = supervised_loss_of_both_branches(self.loss, out_a.default, out_b.default, target, n_labeled)
        if self.weight_cps == 0:
            return {"supervised": supervised, "cps": supervised.new_zeros((), dtype=torch.float32)}
        first = first_consistency_row(self.consistency_on_labeled, n_labeled)
        logits_a = [o[first:] for o in out_a.default]
        logits_b = [o[first:] for o in out_b.default]
        cps = branch_output_consistency(logits_a, logits_b, self.scale_weights(len(logits_a)), self.activation,
                                        mode="cps", confidence_threshold=self.confidence_threshold)
        return {"supervised": supervised, "cps": cps}

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["supervised"] + self.consistency_weight() * self.weight_cps * terms["cps"]
