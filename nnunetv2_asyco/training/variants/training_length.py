"""Short-run variants, named like nnU-Net's (``_1epoch``, ``_5epochs``, ...), for any trainer.

``epoch_variants(base, module_name)`` makes the subclasses; the calling module
puts them into its namespace (``globals().update(...)``) so that they are
importable by name, which nnU-Net's trainer search and pickling both need.
"""
import torch

EPOCH_BUDGETS = (1, 5, 10, 20, 50, 100, 250, 500)


def _variant(base: type, name: str, module_name: str, num_epochs: int, iterations: int = None,
             val_iterations: int = None) -> type:
    class Variant(base):
        # nnU-Net records the constructor arguments from this exact signature
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = num_epochs
            if iterations is not None:
                self.num_iterations_per_epoch = iterations
                self.num_val_iterations_per_epoch = val_iterations

    Variant.__name__ = Variant.__qualname__ = name
    Variant.__module__ = module_name
    return Variant


def epoch_variants(base: type, module_name: str) -> dict:
    """{name: class}: ``<base>_1epoch`` ... ``<base>_500epochs`` and ``<base>_smoke``.

    ``_smoke`` (2 epochs x 4 iterations, 2 validation iterations) runs the whole
    pipeline in seconds on tiny data: tests and first tries.
    """
    variants = {}
    for n in EPOCH_BUDGETS:
        name = f"{base.__name__}_{n}epoch" + ("" if n == 1 else "s")
        variants[name] = _variant(base, name, module_name, n)
    smoke = f"{base.__name__}_smoke"
    variants[smoke] = _variant(base, smoke, module_name, 2, iterations=4, val_iterations=2)
    return variants


# The demo's budget (nnUNetv2_asyco_demo): a few minutes on 2 CPU cores with the
# demo's small plans. Every method gets the same epochs x iterations.
DEMO_EPOCHS, DEMO_ITERATIONS, DEMO_VAL_ITERATIONS = 10, 80, 4


def demo_variant(base: type, module_name: str) -> dict:
    """{name: class}: ``<base>_demo``, the short budget of ``nnUNetv2_asyco_demo``."""
    name = f"{base.__name__}_demo"
    return {name: _variant(base, name, module_name, DEMO_EPOCHS, iterations=DEMO_ITERATIONS,
                           val_iterations=DEMO_VAL_ITERATIONS)}
