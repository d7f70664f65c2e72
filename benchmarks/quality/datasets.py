"""The quality benchmark's two datasets, planned and preprocessed by nnU-Net with the same small CPU plans.

- ``synthetic``: ``nnunetv2_asyco.demo.synthetic`` with the "benchmark" setting (5 classes: organ, low-contrast
  inner structure, three small boundary structures; subjects differ in shape, size, contrast, noise, blur and
  bias field), ``n_train`` training cases and a large held-out test set;
- ``inia19``: coronal slices of the INIA19 macaque template with eight grouped NeuroMaps structures
  (``real_anatomy.py``; needs Debian's mricron-data).

Each is written once into the work folder; ``dataset_setup.json`` there records the options it was made with, and
a work folder made with other options is refused.
"""
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Benchmark:
    name: str
    dataset_id: int
    dataset_name: str
    write_raw: Callable  # (args, nnUNet_raw folder) -> dataset folder
    setup_keys: tuple  # the options the dataset depends on


def _write_synthetic(args, raw_root: str) -> str:
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    return write_synthetic_dataset(raw_root, args.dataset_id, BENCHMARKS["synthetic"].dataset_name, dim=2,
                                   shape=(128, 128), n_train=args.n_train, n_test=args.n_test,
                                   n_unlabeled=args.n_extra_unlabeled, num_classes=args.num_classes,
                                   seed=args.data_seed, difficulty=args.difficulty)


def _write_inia19(args, raw_root: str) -> str:
    sys.path.insert(0, HERE)
    from real_anatomy import build_dataset
    return build_dataset(raw_root, args.dataset_id, BENCHMARKS["inia19"].dataset_name, templates=args.templates)


BENCHMARKS: Dict[str, Benchmark] = {
    "synthetic": Benchmark("synthetic", 991, "AsyCoQuality", _write_synthetic,
                           ("n_train", "n_test", "n_extra_unlabeled", "data_seed", "difficulty", "num_classes")),
    "inia19": Benchmark("inia19", 992, "INIA19Coronal", _write_inia19, ()),
}


def dataset_folder_name(args) -> str:
    return f"Dataset{args.dataset_id:03d}_{BENCHMARKS[args.benchmark].dataset_name}"


def prepare_dataset(args, env: dict, run_cmd, find_cli, small_plans_name: str, setup: dict) -> str:
    """Dataset, nnU-Net preprocessing and small plans in the work folder (reused when already made)."""
    marker = os.path.join(args.work, "dataset_setup.json")
    raw = os.path.join(env["nnUNet_raw"], dataset_folder_name(args))
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == setup:
                print(f"Dataset and plans already prepared in {args.work}", flush=True)
                return raw
        raise RuntimeError(f"{args.work} holds a dataset made with other options; use another --work folder.")
    os.makedirs(args.work, exist_ok=True)
    logs = os.path.join(args.work, "logs")
    print(f"Writing the {args.benchmark} dataset {args.dataset_id}", flush=True)
    raw = BENCHMARKS[args.benchmark].write_raw(args, env["nnUNet_raw"])
    did = str(args.dataset_id)
    run_cmd([find_cli("nnUNetv2_plan_and_preprocess"), "-d", did, "-c", "2d", "-np", str(args.n_proc), "-npfp",
             str(args.n_proc)], env, os.path.join(logs, "plan_and_preprocess.log"))
    if args.plans != "nnUNetPlans":
        code = ("import sys; from nnunetv2_asyco.demo.small_plans import make_small_plans; "
                f"print(make_small_plans(int(sys.argv[1]), 'nnUNetPlans', '{args.plans}', "
                f"patch_size={{'2d': ({args.patch}, {args.patch})}}, batch_size={args.batch_size}, "
                f"max_features={args.max_features}))")
        run_cmd([sys.executable, "-c", code, did], env, os.path.join(logs, "small_plans.log"))
    if getattr(args, "n_extra_unlabeled", 0):
        run_cmd([find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", did, "-c", "2d", "-p", args.plans, "-np",
                 str(args.n_proc)], env, os.path.join(logs, "preprocess_unlabeled.log"))
    with open(marker, "w") as f:
        json.dump(setup, f, indent=2)
    return raw
