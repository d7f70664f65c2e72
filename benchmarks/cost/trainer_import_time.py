"""Time nnU-Net's trainer search through our trainer folder (what every nnUNetv2_train/predict call pays).

Each measurement is a fresh process: nnU-Net's own trainers are imported first
(they are imported anyway), then nnU-Net's ``recursive_find_python_class``
searches the folder for a name that is not there, so every module is imported.

    python benchmarks/cost/trainer_import_time.py [--trainer-dir DIR] [--package-root CHECKOUT] [--repeats 5]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import os, sys, time
if os.environ.get("PACKAGE_ROOT"):  # measure another checkout: bypass the editable install's import hook
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["PACKAGE_ROOT"])
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
start = time.perf_counter()
found = recursive_find_python_class(sys.argv[1], "NoSuchTrainerName", current_module=None,
                                    cleanup_imports_from_base_folder=True)
assert found is None
print(time.perf_counter() - start)
"""


def measure(trainer_dir: str, repeats: int, package_root: str = None) -> list:
    env = dict(os.environ, PACKAGE_ROOT=package_root or "")
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", CHILD, trainer_dir], capture_output=True, text=True, check=True,
                             env=env)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainer-dir", default=None, help="default: nnUNetv2_asyco_trainer_dir")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--package-root", default=None,
                   help="import nnunetv2_asyco from this checkout instead of the installed one (e.g. an older commit)")
    args = p.parse_args()
    if args.trainer_dir is None:
        from nnunetv2_asyco.cli.trainer_dir import trainer_dir
        args.trainer_dir = trainer_dir()
    times = measure(os.path.abspath(args.trainer_dir), args.repeats, args.package_root)
    print(json.dumps({"trainer_dir": args.trainer_dir, "seconds": times, "median": statistics.median(times)}))


if __name__ == "__main__":
    main()
