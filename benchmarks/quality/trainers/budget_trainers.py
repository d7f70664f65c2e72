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

Each class sets the training length through the class attributes of the
package's trainers (``training_epochs``, ...); stock ``nnUNetTrainer`` (the
fully supervised upper bound) gets them, and ``nnUNet_asyco_seed``, through
``BenchmarkedStockTrainer``. A base that cannot be imported (for example a
method still being written) is left out and listed in ``UNAVAILABLE`` instead
of breaking the others.
"""
import importlib
import os

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_asyco.training.seeded_training import SeededTrainingMixin

ITERATIONS_PER_EPOCH = 50
VAL_ITERATIONS_PER_EPOCH = 2
# total training iterations; each must be a multiple of ITERATIONS_PER_EPOCH
BUDGETS = (100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000)


class nnUNetTrainerSeeded(SeededTrainingMixin, nnUNetTrainer):
    """Stock nnU-Net (all labels of the fold, never a labeled subset) with ``nnUNet_asyco_seed``."""


def _bases():
    """(module, class) of every trainer that gets budget variants: the methods and every ablation/control."""
    from nnunetv2_asyco.training.variants.ablations import ablation_trainers
    main = (("nnunetv2_asyco.training.labeled_only", "nnUNetTrainerLabeledOnly"),
            ("nnunetv2_asyco.training.mean_teacher", "nnUNetTrainerMeanTeacher"),
            ("nnunetv2_asyco.training.cps", "nnUNetTrainerCPS"),
            ("nnunetv2_asyco.training.asyco", "nnUNetTrainerAsyCo"))
    return main + tuple((cls.__module__, cls.__name__) for cls in ablation_trainers())


UNAVAILABLE = {}  # class name -> import error text

# nnUNetv2_train sets torch's CPU threads to the core count; on a shared CPU fewer threads can be much faster.
# The runner passes its --torch-threads here; unset: nnU-Net's choice.
THREADS_ENV = "ASYCO_BENCH_TORCH_THREADS"


class BudgetMixin:
    """``budget_iterations`` training iterations; no final validation (the benchmark scores imagesTs)."""
    budget_iterations: int = 0

    # nnU-Net records the init arguments from this signature (inspect), so it must be spelled out
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.budget_iterations // ITERATIONS_PER_EPOCH
        self.num_iterations_per_epoch = ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = VAL_ITERATIONS_PER_EPOCH

    def on_train_start(self):
        if os.environ.get(THREADS_ENV):
            torch.set_num_threads(int(os.environ[THREADS_ENV]))
            self.print_to_log_file(f"benchmark trainer: torch CPU threads set to {torch.get_num_threads()}")
        super().on_train_start()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("benchmark trainer: final validation skipped (the benchmark scores imagesTs)")


def bench_variants(base: type, base_name: str) -> dict:
    """{name: class}: ``<base_name>_bench<N>`` for every N in BUDGETS."""
    variants = {}
    for n in BUDGETS:
        if n % ITERATIONS_PER_EPOCH:
            raise ValueError(f"budget {n} is not a multiple of {ITERATIONS_PER_EPOCH} iterations per epoch")
        name = f"{base_name}_bench{n}"
        variants[name] = type(name, (BudgetMixin, base), {"budget_iterations": n, "__module__": __name__})
    return variants


# the fully supervised upper bound keeps stock nnU-Net's name
globals().update(bench_variants(nnUNetTrainerSeeded, "nnUNetTrainer"))
for _module, _name in _bases():
    try:
        _base = getattr(importlib.import_module(_module), _name)
    except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
        UNAVAILABLE[_name] = f"{type(e).__name__}: {e}"
        continue
    globals().update(bench_variants(_base, _name))
del _module, _name
