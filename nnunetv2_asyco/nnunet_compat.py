"""Every place where this package depends on nnU-Net internals rather than its public commands.

nnU-Net has no plugin API beyond "subclass nnUNetTrainer"; a few things a
semi-supervised trainer needs reach further in. Each function below names
the nnU-Net code it depends on (nnunetv2 2.8.x), so that a new nnU-Net
release is checked here and nowhere else.
"""
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from nnunetv2_asyco.atomic_files import atomic_write

# ---- checkpoints -------------------------------------------------------------------------------------
# nnUNetTrainer.save_checkpoint builds this dict and torch.save()s it in place; load_checkpoint,
# nnUNetv2_predict (network_weights, init_args, trainer_name, inference_allowed_mirroring_axes) and
# nnUNetv2_train --c read it back. We write the same keys plus our own state in one atomic write.
EXTRA_STATE_KEY = "semi_supervised_state"


def nnunet_checkpoint(trainer) -> dict:
    """The dict ``nnUNetTrainer.save_checkpoint`` writes (nnunetv2 2.8.x), for the trainer's current state."""
    from nnunetv2_asyco.network import unwrap
    return {
        "network_weights": unwrap(trainer.network).state_dict(),
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
    }


def atomic_torch_save(obj, path: str) -> None:
    """torch.save through a temporary file in the same folder: ``path`` is old or new, never half."""
    atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointStateError(RuntimeError):
    """A checkpoint lacks the state our trainers write next to nnU-Net's."""


def extra_state(checkpoint: dict, filename: str, trainer_name: str) -> dict:
    """Our state from a checkpoint our trainers wrote; a clear error for any other checkpoint."""
    if EXTRA_STATE_KEY not in checkpoint:
        raise CheckpointStateError(
            f"{filename} has no '{EXTRA_STATE_KEY}' entry, so it was not written by {trainer_name} (it comes from "
            f"another trainer, e.g. stock nnUNetTrainer, or is incomplete). Resuming from it would silently reset "
            f"the semi-supervised state. To start from its weights use -pretrained_weights {filename} in a fresh "
            f"run instead of --c.")
    return checkpoint[EXTRA_STATE_KEY]


# ---- optimizer step ----------------------------------------------------------------------------------
# Mirrors the end of nnUNetTrainer.train_step (GradScaler on CUDA, clip_grad_norm_ at 12, optimizer.step),
# with one change: the step reports whether it was taken.
GRADIENT_CLIP_NORM = 12


def backward_and_step(trainer, total: torch.Tensor) -> bool:
    """Backward, clip and step exactly as nnU-Net does; False when the GradScaler skipped the step."""
    scaled_backward(trainer, total)
    return clip_and_step(trainer)


def scaled_backward(trainer, loss: torch.Tensor) -> None:
    """The backward half of nnU-Net's step (through the GradScaler on CUDA); called once per micro-batch when
    gradients are accumulated (``nnunetv2_asyco.micro_batching``)."""
    if trainer.grad_scaler is not None:
        trainer.grad_scaler.scale(loss).backward()
    else:
        loss.backward()


def clip_and_step(trainer) -> bool:
    """The rest of nnU-Net's step on the accumulated gradients; False when the GradScaler skipped the step."""
    if trainer.grad_scaler is not None:
        trainer.grad_scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), GRADIENT_CLIP_NORM)
        scale_before = trainer.grad_scaler.get_scale()
        trainer.grad_scaler.step(trainer.optimizer)
        trainer.grad_scaler.update()
        return trainer.grad_scaler.get_scale() >= scale_before  # a lowered scale means the step was skipped
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), GRADIENT_CLIP_NORM)
    trainer.optimizer.step()
    return True


# ---- logging -------------------------------------------------------------------------------------------
# nnUNetLogger.local_logger (a LocalLogger) accepts only the keys it was created with; nnUNetTrainer creates
# it in __init__. We replace it with one that also knows our per-term keys.
def install_term_logger(trainer, term_keys) -> None:
    from nnunetv2_asyco.training.term_logger import TermLocalLogger
    trainer.logger.local_logger = TermLocalLogger(term_keys)


# ---- data augmentation workers -------------------------------------------------------------------------
# nnUNetTrainer.get_dataloaders builds its training and validation augmenters (in this order) with the names
# NonDetMultiThreadedAugmenter and SingleThreadedAugmenter of its own module; nnUNetTrainer.on_train_end
# finishes NonDetMultiThreadedAugmenter and MultiThreadedAugmenter instances.
def augmenter(loader, num_processes: int, pin_memory: bool, deterministic: bool):
    """nnU-Net's choice of augmenter for ``loader``; ``deterministic``: batchgenerators' round-robin one."""
    if num_processes == 0:
        return SingleThreadedAugmenter(loader, None)
    if deterministic:
        # per-worker streams come from the loader itself (seeding.OwnRandomStream); the numpy seeds only
        # have to be fixed, their values do not matter
        return MultiThreadedAugmenter(loader, None, num_processes, num_cached_per_queue=max(2, 6 // num_processes),
                                      seeds=list(range(num_processes)), pin_memory=pin_memory, wait_time=0.002)
    return NonDetMultiThreadedAugmenter(loader, None, num_processes=num_processes,
                                        num_cached=max(6, num_processes // 2), seeds=None, pin_memory=pin_memory,
                                        wait_time=0.002)


@contextmanager
def nnunet_augmenters_from(factory: Callable):
    """Inside: nnUNetTrainer.get_dataloaders builds each augmenter as ``factory(loader, num_processes, pin_memory)``.

    ``factory`` is called for the training loader first, then for the validation loader.
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
    original = trainer_module.NonDetMultiThreadedAugmenter, trainer_module.SingleThreadedAugmenter

    def multi(data_loader, transform, num_processes, num_cached=None, seeds=None, pin_memory=False, wait_time=None):
        return factory(data_loader, num_processes, pin_memory)

    def single(data_loader, transform):
        return factory(data_loader, 0, False)

    trainer_module.NonDetMultiThreadedAugmenter, trainer_module.SingleThreadedAugmenter = multi, single
    try:
        yield
    finally:
        trainer_module.NonDetMultiThreadedAugmenter, trainer_module.SingleThreadedAugmenter = original


def finish_augmenter(augmenter_or_none) -> None:
    """Stop an augmenter's workers, as nnUNetTrainer.on_train_end does for its own two."""
    if isinstance(augmenter_or_none, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
        augmenter_or_none._finish()


# ---- -pretrained_weights ---------------------------------------------------------------------------------
# nnunetv2.run.run_training.run_training calls the name load_pretrained_weights of its own module
# (imported from nnunetv2.run.load_pretrained_weights), which expects one network's state-dict keys.
def route_pretrained_weights(load_two_branch: Callable, is_two_branch: Callable) -> None:
    """Make run_training's ``load_pretrained_weights`` hand two-branch networks to ``load_two_branch``."""
    import nnunetv2.run.run_training as run_training
    original = getattr(run_training, "load_pretrained_weights", None)
    if original is None or getattr(original, "handles_two_branch_networks", False):
        return

    def load_pretrained_weights(network, fname, verbose=False):
        if not is_two_branch(network):
            return original(network, fname, verbose)
        return load_two_branch(network, fname)

    load_pretrained_weights.handles_two_branch_networks = True
    run_training.load_pretrained_weights = load_pretrained_weights


# ---- preprocessed case files -------------------------------------------------------------------------------
# nnU-Net 2.8 stores preprocessed cases as blosc2 (.b2nd + .pkl) through nnUNetDatasetBlosc2.save_case, with
# chunk/block sizes from comp_blosc2_params; DefaultPreprocessor.run_case writes class_locations only when a
# label is given, and nnUNetDataLoader reads that key.
def save_unlabeled_case(data: np.ndarray, seg: np.ndarray, properties: dict, output_truncated: str,
                        patch_size) -> None:
    """Write one preprocessed unlabeled case the way nnU-Net writes labeled ones (no class locations)."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params
    properties["class_locations"] = {}
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)  # only the -1 nonzero-region marker, no classes
    patch = tuple(patch_size)
    blocks, chunks = comp_blosc2_params(data.shape, patch, data.itemsize)
    blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, output_truncated, chunks=chunks, blocks=blocks,
                                  chunks_seg=chunks_seg, blocks_seg=blocks_seg)
