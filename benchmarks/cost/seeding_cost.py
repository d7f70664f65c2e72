"""What seeded training costs: epoch time with ``nnUNet_asyco_seed`` (round-robin MultiThreadedAugmenter, every
loader on its own random stream) against nnU-Net's unseeded NonDetMultiThreadedAugmenter, side by side.

Runs the real ``nnUNetv2_train`` with the benchmark's budget trainers (50 iterations per epoch) on a synthetic 2D
dataset, alternating seeded and unseeded runs, and compares the median epoch time (the first epoch of each run,
start-up, is left out). Writes ``benchmarks/results/seeding_cost.md`` and ``.json``.

    python benchmarks/cost/seeding_cost.py --work /tmp/asyco_seeding_cost [--repeats 3] [--n-proc-da 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results")
BENCH_TRAINERS = os.path.join(HERE, "..", "quality", "trainers")
DATASET_ID = 952
PLANS = "nnUNetPlansSeedCost"
TRAINERS = ("nnUNetTrainerLabeledOnly_bench300", "nnUNetTrainerAsyCo_bench300")


def prepare(work: str) -> dict:
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    from nnunetv2_asyco.demo.commands import find_cli
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), nnUNet_compile="false")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[key] = os.path.join(work, key)
        os.makedirs(env[key], exist_ok=True)
    env["nnUNet_extTrainer"] = os.pathsep.join((BENCH_TRAINERS, trainer_dir()))
    env.pop("nnUNet_n_proc_DA", None)
    plans = os.path.join(env["nnUNet_preprocessed"], f"Dataset{DATASET_ID:03d}_SeedCost", PLANS + ".json")
    if not os.path.isfile(plans):
        from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
        write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, name="SeedCost", dim=2, shape=(128, 128), n_train=20,
                                n_unlabeled=10, num_classes=5, difficulty="benchmark")
        subprocess.run([find_cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2",
                        "-npfp", "2"], env=env, check=True, capture_output=True)
        code = ("import sys; from nnunetv2_asyco.demo.small_plans import make_small_plans; "
                f"make_small_plans({DATASET_ID}, 'nnUNetPlans', '{PLANS}', patch_size={{'2d': (64, 64)}}, "
                "batch_size=4, max_features=16)")
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        subprocess.run([find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", str(DATASET_ID), "-c", "2d", "-p",
                        PLANS, "-np", "2"], env=env, check=True, capture_output=True)
    return env


def epoch_seconds(env: dict, trainer: str, seeded: bool, n_proc_da: int, work: str, tag: str) -> list:
    from nnunetv2_asyco.demo.commands import find_cli
    results = os.path.join(work, "results", tag)
    run_env = dict(env, nnUNet_results=results, nnUNet_n_proc_DA=str(n_proc_da))
    if seeded:
        run_env["nnUNet_asyco_seed"] = "0"
    else:
        run_env.pop("nnUNet_asyco_seed", None)
    subprocess.run([find_cli("nnUNetv2_train"), str(DATASET_ID), "2d", "all", "-p", PLANS, "-tr", trainer, "-device",
                    "cpu"], env=run_env, check=True, capture_output=True)
    checkpoint = os.path.join(results, f"Dataset{DATASET_ID:03d}_SeedCost", f"{trainer}__{PLANS}__2d", "fold_all",
                              "checkpoint_final.pth")
    logging = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    durations = [e - s for s, e in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])]
    return durations[1:]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/asyco_seeding_cost")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-proc-da", type=int, default=2)
    args = p.parse_args()
    env = prepare(args.work)
    rows = {}
    for trainer in TRAINERS:
        seconds = {True: [], False: []}
        for r in range(args.repeats):
            for seeded in (False, True):  # alternate, so load on a shared machine hits both alike
                seconds[seeded] += epoch_seconds(env, trainer, seeded, args.n_proc_da, args.work,
                                                 f"{trainer}_{'seeded' if seeded else 'unseeded'}_{r}")
        unseeded, seeded = statistics.median(seconds[False]), statistics.median(seconds[True])
        rows[trainer] = {"unseeded_epoch_s": unseeded, "seeded_epoch_s": seeded, "ratio": seeded / unseeded,
                         "epochs_measured": len(seconds[True])}
    with open(os.path.join(RESULTS, "seeding_cost.json"), "w") as f:
        json.dump({"n_proc_da": args.n_proc_da, "repeats": args.repeats, "rows": rows}, f, indent=1)
    lines = ["# What seeded training costs", "",
             f"`python benchmarks/cost/seeding_cost.py --repeats {args.repeats} --n-proc-da {args.n_proc_da}`: real "
             "`nnUNetv2_train` on a synthetic 2D dataset (patch 64x64, batch 4, 16 features), 50 iterations per "
             f"epoch, {args.n_proc_da} augmentation workers, CPU; seeded and unseeded runs alternate; median epoch time "
             "without each run's first epoch.", "",
             "| trainer | unseeded (NonDetMultiThreadedAugmenter) [s/epoch] | seeded (MultiThreadedAugmenter, own "
             "streams) [s/epoch] | ratio |", "|---|---|---|---|"]
    for trainer, r in rows.items():
        lines.append(f"| {trainer} | {r['unseeded_epoch_s']:.2f} | {r['seeded_epoch_s']:.2f} | {r['ratio']:.2f}x |")
    with open(os.path.join(RESULTS, "seeding_cost.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
