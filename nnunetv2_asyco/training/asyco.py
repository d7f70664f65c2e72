"""nnUNetTrainerAsyCo: asymmetric co-training with decoder-head decoupling.

Every choice the abstract leaves open is a class attribute below; variants
(ablations, short runs) are small subclasses that change one of them.
"""
from dataclasses import fields
from typing import Dict

import torch

from nnunetv2_asyco.asyco_objective import TERMS, AsyCoObjective, AsyCoOptions
from nnunetv2_asyco.network import RemapPlan
from nnunetv2_asyco.remapping import RemapSchedule
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised
from nnunetv2_asyco.training.two_branch import TwoBranchTrainerMixin


class nnUNetTrainerAsyCo(TwoBranchTrainerMixin, nnUNetTrainerSemiSupervised):
    # ---- decoder-head decoupling -------------------------------------------------------
    remap_schedule: str = "per_direction"  # see nnunetv2_asyco.remapping
    p_remap: float = 0.5
    supervise_remapped_paths: bool = True  # remapped paths also get the supervised loss on labeled data
    # ---- hierarchical consistency -------------------------------------------------------
    # Chosen by the quality benchmark (benchmarks/results/quality.md): the probability-MSE terms are ~1e-2 against
    # a supervised loss of order 1, so weights of 1 / 1 / 0.1 barely steered training (_lowConsistencyWeights).
    weight_branch_output: float = 10.0  # a_bo
    weight_inter_head: float = 10.0  # a_ih
    weight_representation: float = 1.0  # a_rep
    branch_output_mode: str = "soft"  # one of consistency.BRANCH_OUTPUT_MODES (README, Options)
    confidence_threshold: float = 0.0  # only for "cps"
    representation_layers: str = "decoder"
    consistency_scales: str = "all"  # every deep-supervision scale with nnU-Net's weights, or "full_res"
    consistency_on_labeled: bool = True  # consistency also on the labeled half of the batch
    # ---- asymmetry ---------------------------------------------------------------------------
    branch_b_encoder: str = "same"  # "same" | "residual" | "plain", see nnunetv2_asyco.branches
    # each branch reads its own perturbed view of the unlabeled samples: the branches stop agreeing for free, which
    # kept AsyCo from learning from consistency at longer budgets (benchmarks/results/cpu_3000its/notes.md)
    branch_views: str = "perturbed"  # "shared" | "perturbed" | "perturbed_cutout", see nnunetv2_asyco.branch_views
    # ---- memory --------------------------------------------------------------------------------
    activation_checkpointing: bool = False  # recompute stage activations in backward: less memory, more time
    unlabeled_batch_ratio: float = 1.0  # unlabeled patches per labeled patch in a step

    loss_terms = TERMS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.asyco_options()  # validate the options now, not after data loading started
        self.remap_scheduler = None  # -> initialize (needs the number of scales)
        self.objective = None  # -> initialize (needs nnU-Net's loss)

    def initialize(self):
        super().initialize()  # TwoBranchTrainerMixin: network built, output activation and memory mode set
        network = self.unwrapped_network()
        scales = range(network.num_scales) if self.enable_deep_supervision else (0,)
        self.remap_scheduler = RemapSchedule(self.remap_schedule, self.p_remap, scales, seed=self.fold_seed())
        self.objective = AsyCoObjective(self.loss, self.activation, self.asyco_options())

    def fold_seed(self) -> int:
        # the same on every DDP rank, so that all ranks use the same remapped paths in a step
        return 12345 + (self.fold if isinstance(self.fold, int) else 0)

    # ---- losses (``activation``: TwoBranchTrainerMixin) -----------------------------------------
    def asyco_options(self) -> AsyCoOptions:
        return AsyCoOptions(**{f.name: getattr(self, f.name) for f in fields(AsyCoOptions)})

    def compute_loss_terms(self, data, target, unlabeled) -> Dict[str, torch.Tensor]:
        plan: RemapPlan = self.remap_scheduler.draw()
        out_a, out_b = self.branch_outputs(data, unlabeled, plan)
        return self.objective.terms(out_a, out_b, target, n_labeled=data.shape[0])

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective.combine(terms, self.consistency_weight())

    # ---- checkpoint: the remap schedule's random state ---------------------------------
    def extra_checkpoint_state(self) -> dict:
        return {"remap_schedule": self.remap_scheduler.state_dict()}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        if "remap_schedule" in state:
            self.remap_scheduler.load_state_dict(state["remap_schedule"])
