"""AsyCo's memory modes in the trainer: the mode chosen before the first step, micro-batched steps, the OOM message.

``MemoryModeMixin`` goes first in ``nnUNetTrainerAsyCo``'s bases. The decision logic lives in
``nnunetv2_asyco.memory_choice`` (testable without a GPU), the micro-batched step in
``nnunetv2_asyco.micro_batching``; here is only what needs the trainer: measuring on its device, the log line,
and the step.
"""
from typing import Optional

import torch
from torch import distributed as dist

from nnunetv2_asyco import nnunet_compat
from nnunetv2_asyco.branch_views import branch_inputs
from nnunetv2_asyco.memory_choice import (StepMemory, choose_memory_mode, out_of_memory_message,
                                          requested_memory_mode)
from nnunetv2_asyco.micro_batching import micro_batched_backward


class MemoryModeMixin:
    memory_mode: str = "auto"  # memory_choice.MEMORY_MODES: auto | default | micro_batch (env nnUNet_asyco_memory_mode)
    # rows ([labeled; unlabeled]) per micro-batch, each through both branches; 0: half of nnU-Net's batch, so a
    # micro-batch holds as many sample-activations as nnU-Net's own step
    micro_batch_rows: int = 0

    memory_mode_in_use: Optional[str] = None  # -> on_train_start

    @property
    def micro_batch_rows_in_use(self) -> int:
        return self.micro_batch_rows if self.micro_batch_rows > 0 else max(1, self.batch_size // 2)

    def micro_batches_exact(self) -> bool:
        """Whether micro-batches give the default step's gradient: no term pooled over the batch."""
        pooled_branch_output = (getattr(self, "branch_output_mode", "soft") == "class_balanced"
                                or getattr(self, "confidence_threshold", 0.0) > 0)
        return not self.configuration_manager.batch_dice and not pooled_branch_output

    def on_train_start(self):
        super().on_train_start()  # network, optimizer and data loaders exist; no step taken yet
        requested = requested_memory_mode(self.memory_mode)
        mixed_views = self.view_perturbation is not None and self.view_perturbation.mix_side is not None
        if mixed_views and requested == "micro_batch":
            raise ValueError(f"branch_views={self.branch_views!r} pastes boxes between the samples of a step, which "
                             f"micro-batching splits; use memory mode 'default' or another branch_views.")
        measured = self.device.type == "cuda" and requested == "auto" and not mixed_views
        estimate, available = (self.measure_step_memory(), self.available_device_memory()) if measured else (None, None)
        step_rows = self.batch_size + self.dataloader_unlabeled_batch_size
        mode, line = choose_memory_mode(requested, self.device.type, estimate, step_rows,
                                        self.micro_batch_rows_in_use, available, self.micro_batches_exact())
        self.memory_mode_in_use = self.same_mode_on_every_rank(mode)
        self.print_to_log_file(line)

    def measure_step_memory(self) -> StepMemory:
        """One sample through branch A, forward and backward (eager, nnU-Net's autocast), before the first step."""
        network = self.unwrapped_network()
        param_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
        branch_a_param_bytes = sum(p.numel() * p.element_size() for p in network.branch_a.parameters())
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        x = torch.zeros((1, self.num_input_channels, *self.configuration_manager.patch_size), device=self.device)
        with self.forward_context():
            out = network.branch_a(x)
            loss = sum(o.float().mean() for o in out) if isinstance(out, (list, tuple)) else out.float().mean()
        loss.backward()
        torch.cuda.synchronize(self.device)
        # the peak includes branch A's gradients, which fixed_bytes counts already
        per_sample = max(0, torch.cuda.max_memory_allocated(self.device) - before - branch_a_param_bytes)
        network.zero_grad(set_to_none=True)
        del x, out, loss
        torch.cuda.empty_cache()
        # gradients and nnU-Net's SGD momentum are allocated at the first step, one copy of the weights each
        return StepMemory(fixed_bytes=torch.cuda.memory_allocated(self.device) + 2 * param_bytes,
                          per_sample_branch_bytes=per_sample)

    def available_device_memory(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_allocated(self.device)  # what we allocated already is counted in the estimate

    def same_mode_on_every_rank(self, mode: str) -> str:
        """Under DDP every rank must run as many backward passes: micro-batching if any rank needs it."""
        if not self.is_ddp:
            return mode
        flag = torch.tensor([int(mode == "micro_batch")], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return "micro_batch" if flag.item() else mode

    # ---- the step --------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        try:
            if self.memory_mode_in_use == "micro_batch":
                return self.micro_batched_train_step(batch)
            return super().train_step(batch)
        except torch.OutOfMemoryError as error:
            raise torch.OutOfMemoryError(out_of_memory_message(
                self.memory_mode_in_use or "default", self.__class__.__name__, self.micro_batch_rows_in_use)) \
                from error

    def micro_batched_train_step(self, batch: dict) -> dict:
        """The AsyCo step (``compute_loss_terms``) in micro-batches; one optimizer step on the summed gradients."""
        data, target, unlabeled = self.step_inputs(batch)
        self.optimizer.zero_grad(set_to_none=True)
        plan = self.remap_scheduler.draw()
        x_a, x_b, _ = branch_inputs(data, unlabeled, self.view_perturbation)  # mixed views refused above
        step = micro_batched_backward(self.network, self.objective, x_a, x_b, target, data.shape[0], plan,
                                      self.forward_remap_plan, self.consistency_weight(), self.micro_batch_rows_in_use,
                                      backward=lambda loss: nnunet_compat.scaled_backward(self, loss),
                                      forward_context=self.forward_context)
        step_taken = nnunet_compat.clip_and_step(self) if step.finite else self.skip_step(step.total)
        return self.finish_step(step_taken, step.total, step.terms)
