"""nnUNetTrainerMeanTeacher: Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) in nnU-Net, a benchmark baseline.

The student is the network nnU-Net builds from the plans (stock
``PlainConvUNet`` / ``ResidualEncoderUNet``, the parent's
``build_network_architecture``); it is ``self.network`` and the only thing the
optimizer, DDP and torch.compile see. The teacher is an exponential moving
average (EMA) of the student: a plain copy on the same device, never wrapped
in DDP (every rank takes the same optimizer step, so every rank's teacher
stays identical), never in the optimizer, always in eval mode, no gradients.

    L = L_sup(student) + weight_consistency * lambda(t) * MSE(p_student, p_teacher)

- ``L_sup``: nnU-Net's own loss on the labeled part of the batch.
- consistency: mean squared difference of softmax (sigmoid for region
  datasets) probabilities, teacher side without gradient, on the unlabeled
  samples and, with ``consistency_on_labeled = True``, the labeled ones too.
- ``lambda(t)``: the shared ramp-up of ``nnUNetTrainerSemiSupervised``.
- EMA: after every optimizer step actually taken (``after_optimizer_step``),
  ``teacher = d * teacher + (1 - d) * student`` over all floating-point
  parameters and buffers (other buffers are copied). With ``ema_warmup`` the
  n-th update (n = 1, 2, ...) uses ``d = min(ema_decay, 1 - 1 / (n + 1))``, as
  in the reference implementation, so early on the teacher is the plain
  average of the weights seen so far rather than mostly its random init.
- Input noise: both networks see the same nnU-Net-augmented batch.
  ``teacher_input_noise_std`` (default 0.1, on nnU-Net's z-scored intensities)
  adds Gaussian noise clipped to +-2 std to the teacher's input, as the usual
  medical Mean Teacher implementations (UA-MT, SSL4MIS) do;
  ``student_input_noise_std`` (default 0) does the same for the student's
  unlabeled input. 0 switches either off.

Choices are the class attributes below (``consistency_scales = "full_res"``
as published; ``"all"``: every deep-supervision scale with nnU-Net's weights).

Which network is where -- the teacher is what we evaluate and ship:

- Checkpoints: ``network_weights`` holds the *teacher*, so the stock
  ``nnUNetv2_predict`` (which builds a stock U-Net and loads
  ``network_weights``) predicts with the teacher. The student and the EMA
  update count go to ``semi_supervised_state["mean_teacher"]``
  (``student_weights``, ``ema_updates``). ``load_checkpoint`` (``--c``,
  ``--val``) loads ``network_weights`` into ``self.network`` as nnU-Net does,
  copies them into the teacher and then restores the student from
  ``student_weights``, so resuming continues exactly. A checkpoint without
  that entry is refused (resuming from it would make the teacher the student).
- Online validation (pseudo Dice, hence ``checkpoint_best``) and the final
  validation run the teacher. All three use one mechanism,
  ``teacher_weights_in_network()``: the teacher's values are copied into the
  student's parameters in place and copied back afterwards. The parameter
  objects never change, so the optimizer state, DDP and torch.compile are
  untouched and the round trip is bit-exact; the cost is one copy of the
  weights, a few times per epoch.
- ``-pretrained_weights``: nnU-Net loads them into ``self.network`` after
  ``initialize``; the teacher is set to the student at ``on_train_start`` as
  long as no EMA update has been made, so it starts from them too.
"""
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch

from nnunetv2_asyco.consistency import probability_mse
from nnunetv2_asyco.nnunet_compat import CheckpointStateError
from nnunetv2_asyco.shared_losses import first_consistency_row, labeled_rows
from nnunetv2_asyco.training.semi_supervised_base import nnUNetTrainerSemiSupervised
from nnunetv2_asyco.training.two_branch import OutputLossesMixin


def _as_list(output) -> List[torch.Tensor]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


def _noisy(x: torch.Tensor, std: float) -> torch.Tensor:
    if std <= 0:
        return x
    return x + (torch.randn_like(x) * std).clamp(-2 * std, 2 * std)


class nnUNetTrainerMeanTeacher(OutputLossesMixin, nnUNetTrainerSemiSupervised):
    ema_decay: float = 0.99
    ema_warmup: bool = True
    # at weight 1 the probability-MSE term was ~0.15% of the supervised loss and did not steer training; 20 brings
    # it to the share CPS's term has (~3%); benchmarks/PROTOCOL.md, "Fairness of tuning"
    weight_consistency: float = 20.0
    consistency_on_labeled: bool = True
    consistency_scales: str = "full_res"
    teacher_input_noise_std: float = 0.1
    student_input_noise_std: float = 0.0

    loss_terms = ("supervised", "consistency")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.teacher: Optional[torch.nn.Module] = None  # -> initialize
        self.ema_updates = 0
        self._stashed_student: Optional[Dict[str, torch.Tensor]] = None  # set while the network holds the teacher
        self._validation_context = None

    # ---- teacher ---------------------------------------------------------------------------
    def initialize(self):
        super().initialize()
        self.teacher = self.build_network_architecture(
            self.plans_manager, self.configuration_manager, self.num_input_channels,
            self.label_manager.num_segmentation_heads, self.enable_deep_supervision).to(self.device)
        self.teacher.load_state_dict(self.unwrapped_network().state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.print_to_log_file(f"Student and teacher outputs as {self.activation} probabilities (consistency)")

    def on_train_start(self):
        super().on_train_start()
        if self.ema_updates == 0:  # fresh start, possibly from -pretrained_weights: the teacher starts as the student
            self.teacher.load_state_dict(self.unwrapped_network().state_dict())

    def set_deep_supervision_enabled(self, enabled: bool):
        super().set_deep_supervision_enabled(enabled)
        if self.teacher is not None:
            self.teacher.decoder.deep_supervision = enabled

    def next_ema_decay(self) -> float:
        """The decay the next EMA update will use."""
        if not self.ema_warmup:
            return self.ema_decay
        n = self.ema_updates + 1
        return min(self.ema_decay, 1.0 - 1.0 / (n + 1))

    @torch.no_grad()
    def update_teacher(self) -> None:
        """teacher = d * teacher + (1 - d) * student (floating-point entries; others are copied)."""
        d = self.next_ema_decay()
        student = self.unwrapped_network()
        # named_parameters/named_buffers list each tensor once; a state_dict does not (nnU-Net's decoders
        # hold a reference to their encoder, so encoder tensors appear twice there)
        student_tensors = dict(student.named_parameters())
        student_tensors.update(student.named_buffers())
        teacher_tensors = list(self.teacher.named_parameters()) + list(self.teacher.named_buffers())
        teacher_floats, student_floats = [], []
        for name, t in teacher_tensors:
            s = student_tensors[name].detach()
            if t.is_floating_point():
                teacher_floats.append(t.data)
                student_floats.append(s.to(t.dtype))
            else:
                t.copy_(s)
        if teacher_floats:
            torch._foreach_mul_(teacher_floats, d)
            torch._foreach_add_(teacher_floats, student_floats, alpha=1.0 - d)
        self.ema_updates += 1

    def after_optimizer_step(self) -> None:
        self.update_teacher()

    @contextmanager
    def teacher_weights_in_network(self):
        """Inside: ``self.network`` computes with the teacher's values; the student's come back on exit."""
        if self._stashed_student is not None:  # nested use: the teacher is in already
            yield
            return
        network = self.unwrapped_network()
        self._stashed_student = {k: v.clone() for k, v in network.state_dict().items()}
        try:
            network.load_state_dict(self.teacher.state_dict())
            yield
        finally:
            network.load_state_dict(self._stashed_student)
            self._stashed_student = None

    # ---- losses --------------------------------------------------------------------------
    def compute_loss_terms(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> Dict[str, torch.Tensor]:
        n_labeled = data.shape[0]
        student_in = torch.cat((data, _noisy(unlabeled, self.student_input_noise_std)))
        student_out = _as_list(self.network(student_in))
        supervised = self.supervised_loss(labeled_rows(student_out, n_labeled), target)
        if self.weight_consistency == 0:
            return {"supervised": supervised, "consistency": supervised.new_zeros((), dtype=torch.float32)}

        first = first_consistency_row(self.consistency_on_labeled, n_labeled)
        with torch.no_grad():
            teacher_in = torch.cat((data, unlabeled))[first:]
            teacher_out = _as_list(self.teacher(_noisy(teacher_in, self.teacher_input_noise_std)))
        consistency = supervised.new_zeros((), dtype=torch.float32)
        for s, w in enumerate(self.scale_weights(len(student_out))):
            if w != 0:
                consistency = consistency + w * probability_mse(student_out[s][first:], teacher_out[s],
                                                                self.activation)
        return {"supervised": supervised, "consistency": consistency}

    def combine_loss_terms(self, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["supervised"] + self.consistency_weight() * self.weight_consistency * terms["consistency"]

    # ---- validation runs the teacher -------------------------------------------------------
    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._validation_context = self.teacher_weights_in_network()
        self._validation_context.__enter__()

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        self._validation_context.__exit__(None, None, None)
        self._validation_context = None
        super().on_validation_epoch_end(val_outputs)

    def perform_actual_validation(self, save_probabilities: bool = False):
        with self.teacher_weights_in_network():
            super().perform_actual_validation(save_probabilities)

    # ---- checkpoints: network_weights = teacher, student in the extra state -----------------
    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank == 0 and not self.disable_checkpointing:
            with self.teacher_weights_in_network():
                super().save_checkpoint(filename)  # calls extra_checkpoint_state while the teacher is in
        else:
            super().save_checkpoint(filename)

    def extra_checkpoint_state(self) -> dict:
        student = self._stashed_student if self._stashed_student is not None \
            else self.unwrapped_network().state_dict()
        return {"mean_teacher": {"student_weights": student, "ema_updates": self.ema_updates,
                                 "ema_decay": self.ema_decay}}

    def load_extra_checkpoint_state(self, state: dict) -> None:
        network = self.unwrapped_network()
        self.teacher.load_state_dict(network.state_dict())  # nnU-Net just loaded network_weights: the teacher
        if "mean_teacher" not in state:
            raise CheckpointStateError("The checkpoint holds no Mean Teacher student (semi_supervised_state"
                                       "['mean_teacher']); it was written by another semi-supervised trainer.")
        network.load_state_dict(state["mean_teacher"]["student_weights"])
        self.ema_updates = int(state["mean_teacher"]["ema_updates"])
