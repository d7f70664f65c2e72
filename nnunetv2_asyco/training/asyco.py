"""nnUNetTrainerAsyCo: asymmetric co-training with decoder-head decoupling.

Every choice the abstract leaves open is a class attribute below; variants
(ablations, short runs) are small subclasses that change one of them.
"""
from typing import Dict, List, Sequence

import torch

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.consistency import (branch_output_consistency, inter_head_consistency,
                                        representation_consistency)
from nnunetv2_asyco.network import BranchOutputs, RemapPlan, TwoBranchNetwork
from nnunetv2_asyco.remapping import RemapSchedule
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised

REPRESENTATION_LAYERS = ("decoder", "bottleneck", "decoder+bottleneck")
CONSISTENCY_SCALES = ("all", "full_res")


class nnUNetTrainerAsyCo(nnUNetTrainerSemiSupervised):
    # ---- decoder-head decoupling -------------------------------------------------------
    remap_schedule: str = "per_direction"  # see nnunetv2_asyco.remapping
    p_remap: float = 0.5
    supervise_remapped_paths: bool = True  # remapped paths also get the supervised loss on labeled data
    # ---- hierarchical consistency -------------------------------------------------------
    weight_branch_output: float = 1.0  # a_bo
    weight_inter_head: float = 1.0  # a_ih
    weight_representation: float = 0.1  # a_rep
    branch_output_mode: str = "soft"  # "soft": probability MSE; "cps": cross pseudo-supervision
    confidence_threshold: float = 0.0  # only for "cps"
    representation_layers: str = "decoder"
    consistency_scales: str = "all"  # every deep-supervision scale with nnU-Net's weights, or "full_res"
    consistency_on_labeled: bool = True  # consistency also on the labeled half of the batch
    # ---- asymmetry ---------------------------------------------------------------------------
    branch_b_encoder: str = "same"  # "same" | "residual" | "plain", see nnunetv2_asyco.branches

    loss_terms = ("supervised", "branch_output", "inter_head", "representation")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.representation_layers not in REPRESENTATION_LAYERS:
            raise ValueError(f"representation_layers must be one of {REPRESENTATION_LAYERS}")
        if self.consistency_scales not in CONSISTENCY_SCALES:
            raise ValueError(f"consistency_scales must be one of {CONSISTENCY_SCALES}")
        self.remap_scheduler = None  # -> initialize (needs the number of scales)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> TwoBranchNetwork:
        branch_a, branch_b = build_branches(configuration_manager, num_input_channels, num_output_channels,
                                            enable_deep_supervision, cls.branch_b_encoder)
        return TwoBranchNetwork(branch_a, branch_b)

    def initialize(self):
        super().initialize()
        network = self.unwrapped_network()
        network.set_output_activation("sigmoid" if self.label_manager.has_regions else "softmax")
        scales = range(network.num_scales) if self.enable_deep_supervision else (0,)
        self.remap_scheduler = RemapSchedule(self.remap_schedule, self.p_remap, scales, seed=self.fold_seed())

    def fold_seed(self) -> int:
        return 12345 + (self.fold if isinstance(self.fold, int) else 0) + 1000 * self.local_rank

    def set_deep_supervision_enabled(self, enabled: bool):
        self.unwrapped_network().set_deep_supervision(enabled)

    # ---- losses --------------------------------------------------------------------------
    @property
    def activation(self) -> str:
        return "sigmoid" if self.label_manager.has_regions else "softmax"

    def scale_weights(self, num_scales: int) -> List[float]:
        """nnU-Net's deep-supervision weights (normalised; the coarsest is ~0) or full resolution only."""
        if isinstance(self.loss, DeepSupervisionWrapper) and self.consistency_scales == "all":
            return [float(w) for w in self.loss.weight_factors]
        return [1.0] + [0.0] * (num_scales - 1)

    def supervised_loss(self, logits: Sequence[torch.Tensor], target) -> torch.Tensor:
        return self.loss(list(logits) if self.enable_deep_supervision else logits[0], target)

    def supervised_remapped_loss(self, remapped: Dict[int, torch.Tensor], target, n_labeled: int) -> torch.Tensor:
        """nnU-Net's loss on the active scales of a remapped path, normalised by their weight."""
        targets = target if isinstance(target, list) else [target]
        weights = self.scale_weights(len(targets)) if self.enable_deep_supervision else [1.0]
        base_loss = self.loss.loss if isinstance(self.loss, DeepSupervisionWrapper) else self.loss
        total, weight_sum = None, 0.0
        for s, logits in remapped.items():
            if weights[s] == 0:
                continue
            term = weights[s] * base_loss(logits[:n_labeled], targets[s])
            total = term if total is None else total + term
            weight_sum += weights[s]
        return total / weight_sum if total is not None else None

    def compute_loss_terms(self, data, target, unlabeled) -> Dict[str, torch.Tensor]:
        n_labeled = data.shape[0]
        plan: RemapPlan = self.remap_scheduler.draw()
        out_a, out_b = self.network(torch.cat((data, unlabeled)), remap_plan=plan)

        supervised = self.supervised_loss([o[:n_labeled] for o in out_a.default], target) + \
            self.supervised_loss([o[:n_labeled] for o in out_b.default], target)
        if self.supervise_remapped_paths:
            for remapped in (out_a.remapped, out_b.remapped):
                extra = self.supervised_remapped_loss(remapped, target, n_labeled)
                if extra is not None:
                    supervised = supervised + extra

        first = 0 if self.consistency_on_labeled else n_labeled
        a, b = self.consistency_part(out_a, first), self.consistency_part(out_b, first)
        weights = self.scale_weights(len(a.default))
        zero = supervised.new_zeros((), dtype=torch.float32)
        return {
            "supervised": supervised,
            "branch_output": branch_output_consistency(
                a.default, b.default, weights, self.activation, self.branch_output_mode, self.confidence_threshold)
            if self.weight_branch_output > 0 else zero,
            "inter_head": inter_head_consistency(a.default, a.remapped, b.default, b.remapped, weights,
                                                 self.activation) if self.weight_inter_head > 0 else zero,
            "representation": self.representation_term(a, b, weights) if self.weight_representation > 0 else zero,
        }

    @staticmethod
    def consistency_part(out: BranchOutputs, first: int) -> BranchOutputs:
        """The samples consistency is computed on (all, or only the unlabeled ones)."""
        if first == 0:
            return out
        return BranchOutputs(default=[o[first:] for o in out.default],
                             remapped={s: o[first:] for s, o in out.remapped.items()},
                             features=[f[first:] for f in out.features], bottleneck=out.bottleneck[first:])

    def representation_term(self, a: BranchOutputs, b: BranchOutputs, weights: List[float]) -> torch.Tensor:
        feats_a, feats_b, w = [], [], []
        if "decoder" in self.representation_layers:
            feats_a += a.features
            feats_b += b.features
            w += weights
        if "bottleneck" in self.representation_layers:
            feats_a.append(a.bottleneck)
            feats_b.append(b.bottleneck)
            w.append(1.0 if self.representation_layers == "bottleneck" else max(weights))
        return representation_consistency(feats_a, feats_b, w)

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        consistency = (self.weight_branch_output * terms["branch_output"]
                       + self.weight_inter_head * terms["inter_head"]
                       + self.weight_representation * terms["representation"])
        return terms["supervised"] + self.consistency_weight() * consistency

    # ---- checkpoint: the remap schedule's random state ---------------------------------
    def extra_checkpoint_state(self) -> dict:
        return {"remap_schedule": self.remap_scheduler.state_dict()}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        if "remap_schedule" in state:
            self.remap_scheduler.load_state_dict(state["remap_schedule"])
