"""Seeded, reproducible training: one switch, ``nnUNet_asyco_seed``.

nnU-Net does not seed its training: weights are initialised from torch's
unseeded generator and augmentation runs in workers of a
``NonDetMultiThreadedAugmenter``, which hands out batches in whichever order
the workers finish them. That is fine for a single model and useless for a
benchmark, where two methods should differ by their method and not by the
draw.

With ``nnUNet_asyco_seed=S`` set in the environment, every trainer of this
package (and the benchmark's variant of stock ``nnUNetTrainer``):

- seeds Python, numpy and torch in the main process before the network is
  built, so branch A of CPS and AsyCo, Mean Teacher's student and the single
  network of labeled-only nnU-Net start from the same weights;
- gives every data loader its own random stream (labeled training batches,
  unlabeled batches, validation batches), derived from S and the loader's
  purpose only, so that the labeled batch sequence is the same for every
  method that draws labeled batches of one size: the paired difference
  between methods then measures the method, not the draw (common random
  numbers);
- feeds the workers through batchgenerators' ``MultiThreadedAugmenter``
  (round robin over the workers, so batch k always comes from the same
  worker), each worker with its own stream derived from (S, purpose, worker);
- reseeds the main process after the network is built, with a stream of its
  own for the method's randomness (remapping draws, perturbed views, noise).

Without the variable nothing changes: nnU-Net's own behaviour.

On the CPU a run with the same seed, thread count and data is bit-identical;
on CUDA, cuDNN's autotuning and atomics make runs close but not identical.
"""
import os
import random
from typing import Optional

import numpy as np
import torch

SEED_ENV = "nnUNet_asyco_seed"

# one independent stream per purpose; the numbers only name the streams
NETWORK_INIT, METHOD, LABELED_BATCHES, UNLABELED_BATCHES, VALIDATION_BATCHES, REMAP_DRAWS = range(6)


class SeedError(ValueError):
    """The seed variable is set to something that is not a seed."""


def training_seed() -> Optional[int]:
    """The seed from ``nnUNet_asyco_seed``, or None when it is not set (nnU-Net's unseeded behaviour)."""
    value = os.environ.get(SEED_ENV, "").strip()
    if value == "":
        return None
    if not (value.isascii() and value.isdigit()):
        raise SeedError(f"{SEED_ENV}={value!r} is not a seed; set a whole number >= 0 (e.g. {SEED_ENV}=0) or "
                        f"unset it for nnU-Net's unseeded training.")
    return int(value)


def stream_seed(seed: int, *purpose: int) -> int:
    """A 32-bit seed for the stream named by ``purpose`` (independent of every other purpose)."""
    return int(np.random.SeedSequence([seed, *purpose]).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators of this process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RandomState:
    """Python's, numpy's and torch's (CPU) global generator states, saved and restored as one."""

    def __init__(self, seed: int):
        saved = RandomState.capture()
        seed_process(seed)
        self.python, self.numpy, self.torch = RandomState.capture()
        RandomState.restore((saved))

    @staticmethod
    def capture():
        return random.getstate(), np.random.get_state(), torch.get_rng_state()

    @staticmethod
    def restore(states) -> None:
        python, numpy, torch_state = states
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(torch_state)


class OwnRandomStream:
    """A data loader that draws from a random stream of its own.

    nnU-Net's loader and augmentation use numpy's and torch's *global*
    generators. Wrapped in this class, each batch is made with this loader's
    own generator states swapped in, and the caller's states are put back
    afterwards, so one loader's draws neither disturb nor depend on anything
    else in the process (another loader in the same process, the training
    step). In a worker of a ``MultiThreadedAugmenter``, ``set_thread_id``
    (which the worker calls first) moves the loader to the worker's stream.
    """

    def __init__(self, loader, seed: int, *purpose: int):
        self.loader = loader
        self.seed, self.purpose = seed, purpose
        self.state = RandomState(stream_seed(seed, *purpose, 0))

    def set_thread_id(self, thread_id: int) -> None:
        # runs first thing in a MultiThreadedAugmenter worker: one thread per worker, as nnU-Net's own workers
        # (NonDetMultiThreadedAugmenter) have, and the worker's own stream
        torch.set_num_threads(1)
        self.loader.set_thread_id(thread_id)
        self.state = RandomState(stream_seed(self.seed, *self.purpose, thread_id + 1))

    def __iter__(self):
        return self

    def __next__(self):
        caller = RandomState.capture()
        RandomState.restore((self.state.python, self.state.numpy, self.state.torch))
        try:
            return next(self.loader)
        finally:
            self.state.python, self.state.numpy, self.state.torch = RandomState.capture()
            RandomState.restore(caller)

    def __getattr__(self, name):  # everything else is the wrapped loader's (batch size, patch size, ...)
        return getattr(self.__dict__["loader"], name)
