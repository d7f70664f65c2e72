"""Shared plumbing of trainers whose network is a :class:`TwoBranchNetwork` (AsyCo, CPS).

``TwoBranchTrainerMixin`` goes first in the bases of a trainer derived from
``nnUNetTrainerSemiSupervised``::

    class nnUNetTrainerCPS(TwoBranchTrainerMixin, nnUNetTrainerSemiSupervised): ...

It provides what every two-branch method needs and nothing method-specific:

- ``build_network_architecture``: both branches from the plans
  (``branch_b_encoder`` picks B's encoder, see ``nnunetv2_asyco.branches``),
  wrapped in one ``TwoBranchNetwork`` whose ``forward(x)`` is the branch
  ensemble, so nnU-Net's validation and ``nnUNetv2_predict`` work unchanged;
- ``initialize``: tells the network whether to ensemble softmax or sigmoid
  (region) probabilities;
- ``-pretrained_weights``: a stock checkpoint initialises both branches
  (``nnunetv2_asyco.pretrained``);
- ``branch_views`` / ``branch_outputs``: whether both branches read the same
  batch or each its own perturbed view of the unlabeled samples
  (``nnunetv2_asyco.branch_views``), and the training forward that applies it;
- ``set_deep_supervision_enabled``: nnU-Net's version reaches into
  ``network.decoder``; a two-branch network has two decoders.

``OutputLossesMixin`` (the base of ``TwoBranchTrainerMixin``, also used by the
single-network Mean Teacher) holds what every consistency method asks of the
trainer: the output ``activation`` (softmax for labels, sigmoid for nnU-Net
regions), the per-scale consistency weights and nnU-Net's supervised loss on a
list of logits (``nnunetv2_asyco.shared_losses``).
"""
from typing import List, Optional, Sequence, Tuple

import torch

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunetv2_asyco.branch_views import branch_inputs, view_perturbation
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import BranchOutputs, RemapPlan, TwoBranchNetwork, training_outputs
from nnunetv2_asyco.pretrained import install_pretrained_weights_hook
from nnunetv2_asyco.shared_losses import consistency_scale_weights, supervised_loss


class OutputLossesMixin:
    """Activation, consistency scale weights and the supervised loss; needs an nnUNetTrainer below it."""

    # "all": every deep-supervision scale with nnU-Net's (normalised) weights; "full_res": the output only
    consistency_scales: str = "all"

    @property
    def activation(self) -> str:
        """How logits become probabilities: sigmoid for nnU-Net's region training, softmax otherwise."""
        return "sigmoid" if self.label_manager.has_regions else "softmax"

    def scale_weights(self, num_scales: int) -> List[float]:
        """Consistency weight per deep-supervision scale (0 = full resolution)."""
        return consistency_scale_weights(self.loss, self.consistency_scales, num_scales)

    def supervised_loss(self, logits: Sequence[torch.Tensor], target) -> torch.Tensor:
        """nnU-Net's own loss (deep-supervised Dice+CE, or its region loss) on a list of logits per scale."""
        return supervised_loss(self.loss, logits, target)


class TwoBranchTrainerMixin(OutputLossesMixin):
    """Two-branch network plumbing; place before ``nnUNetTrainerSemiSupervised`` in the bases."""

    branch_b_encoder: str = "same"  # nnunetv2_asyco.branches.BRANCH_B_ENCODERS: same | residual | plain
    activation_checkpointing: bool = False  # memory mode: recompute stage activations in backward
    branch_views: str = "shared"  # nnunetv2_asyco.branch_views.BRANCH_VIEWS

    # nnU-Net records the init arguments from this signature (inspect), so it must be spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net's -pretrained_weights loader expects one network's keys; see nnunetv2_asyco.pretrained
        install_pretrained_weights_hook()
        self.view_perturbation = view_perturbation(self.branch_views)  # checked before any data is loaded

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> TwoBranchNetwork:
        branch_a, branch_b = build_branches(configuration_manager, num_input_channels, num_output_channels,
                                            enable_deep_supervision, cls.branch_b_encoder)
        return TwoBranchNetwork(branch_a, branch_b)

    def branch_outputs(self, data: torch.Tensor, unlabeled: torch.Tensor, remap_plan: RemapPlan,
                       forward_plan: Optional[RemapPlan] = None) -> Tuple[BranchOutputs, BranchOutputs]:
        """Both branches' training outputs on [labeled; unlabeled], each branch on its view (``branch_views``).

        ``forward_plan``: the remapped paths the forward computes, ``remap_plan``: the step's draw among them
        (``nnunetv2_asyco.network.training_outputs``).
        """
        x_a, x_b, mix = branch_inputs(data, unlabeled, self.view_perturbation)
        out_a, out_b = training_outputs(self.network, x_a, x_b, remap_plan, forward_plan)
        return (out_a, out_b) if mix is None else mix.align(out_a, out_b)

    def initialize(self):
        super().initialize()
        # stored in the state dict too, so nnUNetv2_predict (which never sees the dataset) ensembles correctly
        self.unwrapped_network().set_output_activation(self.activation)
        self.unwrapped_network().activation_checkpointing = self.activation_checkpointing
        self.print_to_log_file(f"Branch outputs as {self.activation} probabilities (consistency and ensemble)")

    def set_deep_supervision_enabled(self, enabled: bool):
        self.unwrapped_network().set_deep_supervision(enabled)
