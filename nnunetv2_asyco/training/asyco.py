"""nnUNetTrainerAsyCo: asymmetric co-training with decoder-head decoupling.

Every choice the abstract leaves open is a class attribute below, and the
attribute is the only place its default lives; variants (ablations, short
runs) are small subclasses that change one of them. Where a default rests on
a benchmark, its comment links the table.
"""
from dataclasses import fields
from typing import Dict

import torch

from nnunetv2_asyco.asyco_objective import TERMS, AsyCoObjective, AsyCoOptions
from nnunetv2_asyco.network import DIRECTIONS, RemapPlan
from nnunetv2_asyco.remapping import RemapSchedule
from nnunetv2_asyco.seeding import REMAP_DRAWS, stream_seed
from nnunetv2_asyco.training.memory_mode import MemoryModeMixin
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised
from nnunetv2_asyco.training.two_branch import TwoBranchTrainerMixin


def asyco_options_of(trainer_or_class, **changes) -> AsyCoOptions:
    """The loss options a trainer (class or instance) uses, with ``changes`` applied."""
    values = {f.name: getattr(trainer_or_class, f.name) for f in fields(AsyCoOptions)}
    return AsyCoOptions(**{**values, **changes})


class nnUNetTrainerAsyCo(MemoryModeMixin, TwoBranchTrainerMixin, nnUNetTrainerSemiSupervised):
    # memory_mode (auto | default | micro_batch) and micro_batch_rows: MemoryModeMixin, nnunetv2_asyco.memory_choice
    # What each default rests on (v2 benchmark, decision rule of benchmarks/PROTOCOL.md): the table
    # "What each default of nnUNetTrainerAsyCo rests on" in benchmarks/results/v2/defaults_decisions.md.
    # Meanings: docs/options.md.
    # ---- decoder-head decoupling (nnunetv2_asyco.remapping) ---------------------------------------
    remap_schedule: str = "per_direction"  # which remapped paths a step uses: per_direction | per_scale | always | off
    p_remap: float = 0.5  # probability of each draw of the schedule
    supervise_remapped_paths: bool = True  # remapped paths also get the supervised loss on labeled samples
    # ---- hierarchical consistency (nnunetv2_asyco.consistency) ------------------------------------
    # The probability-MSE terms are ~1e-2 against a supervised loss of order 1, hence weights of 10.
    weight_branch_output: float = 10.0  # a_bo, (i) O_AA vs O_BB
    weight_inter_head: float = 10.0  # a_ih, (ii) O_AA vs O_AB and O_BB vs O_BA
    weight_representation: float = 1.0  # a_rep, (iii) 1 - cosine similarity of A's and B's features
    branch_output_mode: str = "soft"  # consistency.BRANCH_OUTPUT_MODES: soft | class_balanced | cps (hard labels)
    confidence_threshold: float = 0.0  # pseudo-label confidence cut, "cps" mode only
    representation_layers: str = "decoder"  # decoder | bottleneck | decoder+bottleneck
    consistency_on_labeled: bool = True  # consistency on the labeled samples too, not only the unlabeled ones
    # ---- asymmetry between the branches ------------------------------------------------------------
    # each branch reads its own perturbed view of the unlabeled samples, so agreement is not free once the weights
    # agree
    branch_views: str = "perturbed"  # branch_views.BRANCH_VIEWS: shared | perturbed | perturbed_cutout | perturbed_mixed

    loss_terms = TERMS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.asyco_options()  # validate the options now, not after data loading started
        self.remap_scheduler = None  # -> initialize (needs the number of scales)
        self.objective = None  # -> initialize (needs nnU-Net's loss)
        self.forward_remap_plan = None  # -> initialize

    def initialize(self):
        super().initialize()  # TwoBranchTrainerMixin: network built, output activation and memory mode set
        network = self.unwrapped_network()
        scales = range(network.num_scales) if self.enable_deep_supervision else (0,)
        self.remap_scheduler = RemapSchedule(self.remap_schedule, self.p_remap, scales, seed=self.remap_seed())
        # the forward computes every path the schedule can draw, every step: one graph for torch.compile (the
        # remapped heads are 1x1 convolutions); the draw only selects among them (TwoBranchTrainerMixin)
        self.forward_remap_plan = RemapPlan({d: () if self.remap_schedule == "off" else tuple(scales)
                                             for d in DIRECTIONS})
        self.objective = AsyCoObjective(self.loss, self.activation, self.asyco_options())

    def remap_seed(self) -> int:
        # the same on every DDP rank, so that all ranks use the same remapped paths in a step
        fold = self.fold if isinstance(self.fold, int) else 0
        seed = self.seed()
        return 12345 + fold if seed is None else stream_seed(seed, REMAP_DRAWS, fold)

    # ---- losses (``activation``: TwoBranchTrainerMixin) -----------------------------------------
    def asyco_options(self) -> AsyCoOptions:
        return asyco_options_of(self)

    def compute_loss_terms(self, data, target, unlabeled) -> Dict[str, torch.Tensor]:
        plan: RemapPlan = self.remap_scheduler.draw()
        out_a, out_b = self.branch_outputs(data, unlabeled, plan, self.forward_remap_plan)
        return self.objective.terms(out_a, out_b, target, n_labeled=data.shape[0])

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective.combine(terms, self.consistency_weight())

    # ---- checkpoint: the remap schedule's random state ---------------------------------
    def extra_checkpoint_state(self) -> dict:
        return {"remap_schedule": self.remap_scheduler.state_dict()}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        if "remap_schedule" in state:
            self.remap_scheduler.load_state_dict(state["remap_schedule"])
