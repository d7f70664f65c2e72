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
import resource
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
ITERATIONS_PER_EPOCH = 50  # the benchmark's budget trainers


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


def one_run(env: dict, trainer: str, seeded: bool, n_proc_da: int, work: str, tag: str) -> dict:
    """Train once; per-epoch wall times (first epoch, start-up, left out) and the CPU seconds of the whole command
    (trainer and its augmentation workers) per iteration. Kept in ``<tag>.json``, so an interrupted measurement
    resumes with the runs it has."""
    from nnunetv2_asyco.atomic_files import atomic_write_bytes
    from nnunetv2_asyco.demo.commands import find_cli
    record = os.path.join(work, "runs", tag + ".json")
    if os.path.isfile(record):
        with open(record) as f:
            return json.load(f)
    results = os.path.join(work, "results", tag)
    run_env = dict(env, nnUNet_results=results, nnUNet_n_proc_DA=str(n_proc_da))
    if seeded:
        run_env["nnUNet_asyco_seed"] = "0"
    else:
        run_env.pop("nnUNet_asyco_seed", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    subprocess.run([find_cli("nnUNetv2_train"), str(DATASET_ID), "2d", "all", "-p", PLANS, "-tr", trainer, "-device",
                    "cpu"], env=run_env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    checkpoint = os.path.join(results, f"Dataset{DATASET_ID:03d}_SeedCost", f"{trainer}__{PLANS}__2d", "fold_all",
                              "checkpoint_final.pth")
    trainer_object = torch.load(checkpoint, map_location="cpu", weights_only=False)
    logging = trainer_object["logging"]
    durations = [e - s for s, e in zip(logging["epoch_start_timestamps"], logging["epoch_end_timestamps"])]
    iterations = len(durations) * ITERATIONS_PER_EPOCH
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    row = {"epoch_seconds": durations[1:], "cpu_seconds_per_iteration": cpu / iterations,
           "load_at_start": load}
    os.makedirs(os.path.dirname(record), exist_ok=True)
    atomic_write_bytes(json.dumps(row).encode("utf-8"), record)
    return row


def main():
    from nnunetv2_asyco.atomic_files import atomic_write_bytes
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/asyco_seeding_cost")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-proc-da", type=int, default=2)
    args = p.parse_args()
    env = prepare(args.work)
    rows = {}
    for trainer in TRAINERS:
        rounds = []
        for r in range(args.repeats):
            # unseeded then seeded, back to back: load on a shared machine hits both alike, and each round's ratio
            # compares runs minutes apart
            runs = {seeded: one_run(env, trainer, seeded, args.n_proc_da, args.work,
                                    f"{trainer}_{'seeded' if seeded else 'unseeded'}_{r}") for seeded in (False, True)}
            rounds.append({
                "wall_ratio": statistics.median(runs[True]["epoch_seconds"])
                / statistics.median(runs[False]["epoch_seconds"]),
                "cpu_ratio": runs[True]["cpu_seconds_per_iteration"] / runs[False]["cpu_seconds_per_iteration"],
                "unseeded_epoch_s": statistics.median(runs[False]["epoch_seconds"]),
                "seeded_epoch_s": statistics.median(runs[True]["epoch_seconds"]),
                "load": [runs[False]["load_at_start"], runs[True]["load_at_start"]]})
        rows[trainer] = {"rounds": rounds,
                         "wall_ratio_median": statistics.median(x["wall_ratio"] for x in rounds),
                         "cpu_ratio_median": statistics.median(x["cpu_ratio"] for x in rounds)}
    atomic_write_bytes(json.dumps({"n_proc_da": args.n_proc_da, "repeats": args.repeats, "rows": rows},
                                  indent=1).encode("utf-8"), os.path.join(RESULTS, "seeding_cost.json"))
    loads = [v for r in rows.values() for x in r["rounds"] for v in x["load"]]
    lines = ["# What seeded training costs", "",
             f"`python benchmarks/cost/seeding_cost.py --repeats {args.repeats} --n-proc-da {args.n_proc_da}`: real "
             "`nnUNetv2_train` on a synthetic 2D dataset (patch 64x64, batch 4, 16 features), 50 iterations per "
             f"epoch, {args.n_proc_da} augmentation workers, CPU. Each round trains unseeded (nnU-Net's "
             "NonDetMultiThreadedAugmenter) then seeded (`nnUNet_asyco_seed`: MultiThreadedAugmenter, every worker on "
             "its own random stream) and takes their ratio: wall = median epoch time without the first epoch "
             "(start-up); CPU = CPU seconds of the whole command (trainer and augmentation workers) per iteration. "
             f"1-minute load average at the runs' starts: {min(loads):.1f}-{max(loads):.1f}.", "",
             "| trainer | unseeded [s/epoch] | seeded [s/epoch] | wall ratio, median (rounds) | CPU ratio, median "
             "(rounds) |", "|---|---|---|---|---|"]
    for trainer, r in rows.items():
        def spread(key):
            return ", ".join(f"{x[key]:.2f}" for x in r["rounds"])
        lines.append(f"| {trainer} | {statistics.median(x['unseeded_epoch_s'] for x in r['rounds']):.2f} | "
                     f"{statistics.median(x['seeded_epoch_s'] for x in r['rounds']):.2f} | "
                     f"{r['wall_ratio_median']:.2f}x ({spread('wall_ratio')}) | "
                     f"{r['cpu_ratio_median']:.2f}x ({spread('cpu_ratio')}) |")
    atomic_write_bytes(("\n".join(lines) + "\n").encode("utf-8"), os.path.join(RESULTS, "seeding_cost.md"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
