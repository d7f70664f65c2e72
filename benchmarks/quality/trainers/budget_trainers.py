"""Benchmark-only trainers with a fixed iteration budget: ``<Trainer>_bench<N>`` = N training iterations.

The quality benchmark (``benchmarks/quality/run_quality.py``) prepends this
folder to ``nnUNet_extTrainer``; nnU-Net imports this module by its file name
and finds the classes by name, for training and for ``nnUNetv2_predict``.

Every method gets the same budget: N = epochs x ITERATIONS_PER_EPOCH
iterations (one optimizer step each, one labeled batch of the plans' batch
size; the semi-supervised methods add their unlabeled batch to that step),
VAL_ITERATIONS_PER_EPOCH validation iterations per epoch (nnU-Net's pseudo
Dice only; it does not steer training). The final validation on the fold's
validation cases is skipped: the benchmark scores the held-out test set
(imagesTs/labelsTs) instead, with the final checkpoint.

Each class is made with ``_variant`` from
``nnunetv2_asyco.training.variants.training_length``, the same helper as the
package's ``_5epochs``/``_demo`` variants. A base that cannot be imported (for
example a method still being written) is left out and listed in
``UNAVAILABLE`` instead of breaking the others.
"""
import importlib
import os

import torch

from nnunetv2_asyco.training.asyco_variants import ABLATIONS
from nnunetv2_asyco.training.variants.training_length import _variant

ITERATIONS_PER_EPOCH = 50
VAL_ITERATIONS_PER_EPOCH = 2
# total training iterations; each must be a multiple of ITERATIONS_PER_EPOCH
BUDGETS = (100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000)

# (module, class) of every trainer that gets budget variants
BASES = (
    ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer"),
    ("nnunetv2_asyco.training.labeled_only", "nnUNetTrainerLabeledOnly"),
    ("nnunetv2_asyco.training.mean_teacher", "nnUNetTrainerMeanTeacher"),
    ("nnunetv2_asyco.training.cps", "nnUNetTrainerCPS"),
    ("nnunetv2_asyco.training.cps", "nnUNetTrainerCPS_perturbedViews"),
    ("nnunetv2_asyco.training.cps", "nnUNetTrainerCPS_perturbedMixedViews"),
    ("nnunetv2_asyco.training.asyco", "nnUNetTrainerAsyCo"),
) + tuple(("nnunetv2_asyco.training.asyco_variants", cls.__name__) for cls in ABLATIONS)

UNAVAILABLE = {}  # class name -> import error text

# nnUNetv2_train sets torch's CPU threads to the core count; on a shared CPU fewer threads can be much faster.
# The runner passes its --torch-threads here; unset: nnU-Net's choice.
THREADS_ENV = "ASYCO_BENCH_TORCH_THREADS"


def _skip_final_validation(self, save_probabilities: bool = False):
    self.print_to_log_file("benchmark trainer: final validation skipped (the benchmark scores imagesTs)")


def _threads_then(cls: type):
    def on_train_start(self):
        if os.environ.get(THREADS_ENV):
            torch.set_num_threads(int(os.environ[THREADS_ENV]))
            self.print_to_log_file(f"benchmark trainer: torch CPU threads set to {torch.get_num_threads()}")
        super(cls, self).on_train_start()
    return on_train_start


def bench_variants(base: type, module_name: str) -> dict:
    """{name: class}: ``<base>_bench<N>`` for every N in BUDGETS."""
    variants = {}
    for n in BUDGETS:
        if n % ITERATIONS_PER_EPOCH:
            raise ValueError(f"budget {n} is not a multiple of {ITERATIONS_PER_EPOCH} iterations per epoch")
        name = f"{base.__name__}_bench{n}"
        cls = _variant(base, name, module_name, n // ITERATIONS_PER_EPOCH, iterations=ITERATIONS_PER_EPOCH,
                       val_iterations=VAL_ITERATIONS_PER_EPOCH)
        cls.perform_actual_validation = _skip_final_validation
        cls.on_train_start = _threads_then(cls)
        variants[name] = cls
    return variants


for _module, _name in BASES:
    try:
        _base = getattr(importlib.import_module(_module), _name)
    except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
        UNAVAILABLE[_name] = f"{type(e).__name__}: {e}"
        continue
    globals().update(bench_variants(_base, __name__))
del _module, _name
