"""Which memory mode an AsyCo run uses, and what an out-of-memory error tells the user.

Modes (``MEMORY_MODES``):

- ``default``: the whole step, [labeled; unlabeled] through both branches, in one forward/backward;
- ``micro_batch``: the same step in micro-batches with accumulated gradients (``nnunetv2_asyco.micro_batching``);
  each micro-batch holds about nnU-Net's own activations;
- ``auto`` (the default): on CUDA, before the first step, the default mode's peak is estimated from a measured
  forward/backward of one sample through one branch; when it does not fit on the device, ``micro_batch`` is used
  and one log line says so. Elsewhere (CPU, MPS) ``default``.

``nnUNet_asyco_memory_mode`` (environment) overrides the trainer's ``memory_mode`` attribute.
"""
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

MEMORY_MODES = ("auto", "default", "micro_batch")
MEMORY_MODE_ENV = "nnUNet_asyco_memory_mode"
# the estimate leaves out the loss terms' own tensors and the allocator's fragmentation
FIT_HEADROOM = 0.85
GIB = 2 ** 30

FORCE_HINT = (f"Force a mode with {MEMORY_MODE_ENV}=default or {MEMORY_MODE_ENV}=micro_batch "
              f"(or -tr nnUNetTrainerAsyCo_microBatch).")


@dataclass(frozen=True)
class StepMemory:
    """An estimate of an AsyCo step's peak device memory."""
    fixed_bytes: int  # weights, gradients and optimizer state of both branches (and whatever else is allocated)
    per_sample_branch_bytes: int  # activations one sample keeps for backward in one branch

    def peak(self, rows_at_once: int) -> int:
        """Peak with ``rows_at_once`` rows through both branches in one forward/backward."""
        return self.fixed_bytes + 2 * rows_at_once * self.per_sample_branch_bytes


def requested_memory_mode(trainer_mode: str, environ: Mapping[str, str] = os.environ) -> str:
    mode = environ.get(MEMORY_MODE_ENV, "").strip() or trainer_mode
    if mode not in MEMORY_MODES:
        raise ValueError(f"Unknown AsyCo memory mode {mode!r} (from {MEMORY_MODE_ENV} or the trainer's memory_mode); "
                         f"choose one of {MEMORY_MODES}.")
    return mode


def choose_memory_mode(requested: str, device_type: str, estimate: Optional[StepMemory], step_rows: int,
                       micro_batch_rows: int, available_bytes: Optional[int],
                       micro_batches_exact: bool = True) -> Tuple[str, str]:
    """(mode, the one log line that says why and how to force either mode).

    ``micro_batches_exact``: micro-batching gives the default step's gradient (no batch-level term such as
    nnU-Net's batch Dice). Only then does "auto" switch by itself: the choice may change memory, never what is
    trained, so it is not a default of the method (benchmarks/PROTOCOL.md, decision rule)."""
    if requested != "auto":
        return requested, f"AsyCo memory mode: {requested} (requested). {FORCE_HINT}"
    if device_type != "cuda" or estimate is None or available_bytes is None:
        return "default", f"AsyCo memory mode: default (no GPU memory limit to check on {device_type}). {FORCE_HINT}"
    default_peak, micro_peak = estimate.peak(step_rows), estimate.peak(micro_batch_rows)
    budget = FIT_HEADROOM * available_bytes
    sizes = (f"estimated peak {default_peak / GIB:.1f} GiB in the default mode, {micro_peak / GIB:.1f} GiB in "
             f"micro-batches of {micro_batch_rows} rows, {available_bytes / GIB:.1f} GiB available")
    if default_peak <= budget:
        return "default", f"AsyCo memory mode: default ({sizes}). {FORCE_HINT}"
    if not micro_batches_exact:
        return "default", (f"AsyCo memory mode: default, although it may not fit ({sizes}); micro-batches would pool "
                           f"batch-level loss terms (nnU-Net's batch Dice) per micro-batch, which changes the "
                           f"objective, so that switch is yours. {FORCE_HINT}")
    line = f"AsyCo memory mode: micro_batch, the default mode does not fit ({sizes}). {FORCE_HINT}"
    if micro_peak > budget:
        line += " Even micro-batches may not fit: " + PLANNING_HINT
    return "micro_batch", line


PLANNING_HINT = ("plan for a smaller GPU with nnU-Net, e.g. nnUNetv2_plan_and_preprocess -d DATASET "
                 "-pl nnUNetPlannerResEncM (or -gpu_memory_target GB -overwrite_plans_name nnUNetPlansSmall), "
                 "then train with -p and that plans name.")


def out_of_memory_message(mode: str, trainer_name: str, micro_batch_rows: int) -> str:
    """What to do after a CUDA out-of-memory error in ``mode``; ends the training's traceback."""
    steps = []
    if mode != "micro_batch":
        steps.append(f"{MEMORY_MODE_ENV}=micro_batch: the step in micro-batches with accumulated gradients, about "
                     f"nnU-Net's own activation memory, the same arithmetic in smaller pieces")
    elif micro_batch_rows > 1:
        steps.append(f"smaller micro-batches: a trainer variant with micro_batch_rows = 1 (now {micro_batch_rows})")
    steps.append("-tr nnUNetTrainerAsyCo_lowMemory: activation checkpointing (more step time)")
    steps.append(PLANNING_HINT)
    return (f"{trainer_name} ran out of GPU memory in AsyCo memory mode '{mode}'. Options, cheapest first:\n"
            + "\n".join(f"  - {s}" for s in steps))
