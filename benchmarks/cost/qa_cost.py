"""Cost of nnUNetv2_asyco_predict_qa against nnUNetv2_predict on the same tiny AsyCo model and settings.

Builds a synthetic 2D dataset (real nnUNetv2_plan_and_preprocess, test-sized plans), trains the AsyCo smoke
variant with nnUNetv2_train, then times both commands on the same test images (TTA on, -npp 1 -nps 1),
alternating which goes first, --repeats times. Reports the median wall time of each command and their ratio
(target: QA <= 1.2 x nnUNetv2_predict). Command wall time includes start-up (imports, process pools), which is
what a user waits for; the per-case difference is (QA - predict) / cases.

    python benchmarks/cost/qa_cost.py --work /tmp/qa_cost [--cases 20] [--repeats 3] [--device cpu]

Writes benchmarks/results/qa/cost.md and cost.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results", "qa")
DATASET_ID = 961
PLANS = "nnUNetPlansTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"


def command(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def run(cmd, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run([command(cmd[0])] + [str(c) for c in cmd[1:]], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def environment(work: str) -> dict:
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env = dict(os.environ, nnUNet_extTrainer=trainer_dir(), nnUNet_compile="false", nnUNet_def_n_proc="1",
               OMP_WAIT_POLICY="PASSIVE")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[key] = os.path.join(work, key)
        os.makedirs(env[key], exist_ok=True)
    return env


def prepare(env: dict, cases: int) -> str:
    """Plan, preprocess and train once (skipped when the trained model exists); returns the test image folder."""
    from nnunetv2_asyco.demo.small_plans import make_small_plans
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    folder = write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, dim=2, shape=(128, 128), n_train=10,
                                     n_test=cases, n_unlabeled=4, num_classes=3, n_channels=1)
    name = os.path.basename(folder)
    final = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__2d", "fold_0", "checkpoint_final.pth")
    if not os.path.isfile(final):
        run(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "2d", "-np", 1, "-npfp", 1], env)
        os.environ["nnUNet_preprocessed"] = env["nnUNet_preprocessed"]
        make_small_plans(DATASET_ID, "nnUNetPlans", PLANS, patch_size={"2d": (64, 64)}, batch_size=2, max_features=16,
                         max_stages=4)
        run(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-np", 1], env)
        run(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 3, "--seed", 0], env)
        run(["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", PLANS, "-tr", TRAINER, "-device", "cpu"],
            {**env, "nnUNet_n_proc_DA": "0", "nnUNet_asyco_seed": "0"})
    return os.path.join(folder, "imagesTs")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    env = environment(args.work)
    images = prepare(env, args.cases)
    common = ["-i", images, "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-tr", TRAINER, "-f", 0,
              "-device", args.device, "-npp", 1, "-nps", 1, "--disable_progress_bar"]
    times = {"nnUNetv2_predict": [], "nnUNetv2_asyco_predict_qa": []}
    for r in range(args.repeats):
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in order:
            times[name].append(run([name, "-o", os.path.join(args.work, f"out_{name}_{r}")] + common, env))
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["nnUNetv2_asyco_predict_qa"] / median["nnUNetv2_predict"]
    record = {"cases": args.cases, "case_shape": [128, 128], "patch": [64, 64], "tta": True, "device": args.device,
              "repeats": args.repeats, "seconds": times, "median_seconds": median, "ratio": ratio,
              "extra_seconds_per_case": (median["nnUNetv2_asyco_predict_qa"] - median["nnUNetv2_predict"]) / args.cases,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_average_at_end": os.getloadavg()}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "cost.json"), "w") as f:
        json.dump(record, f, indent=1)
    lines = ["# Cost of nnUNetv2_asyco_predict_qa", "",
             f"Same tiny AsyCo model ({TRAINER}, 2D, patch 64x64), {args.cases} test cases of 128x128, TTA on, "
             f"-device {args.device} -npp 1 -nps 1; median wall time of {args.repeats} runs per command "
             f"(alternating order), whole command including start-up. Machine: {record['machine']}; load average "
             f"at the end {record['load_average_at_end'][0]:.1f} (shared machine).", "",
             "| command | median s | runs (s) |", "|---|---|---|"]
    for k, v in times.items():
        lines.append(f"| {k} | {median[k]:.1f} | {', '.join(f'{x:.1f}' for x in v)} |")
    lines += ["", f"**Ratio QA / nnUNetv2_predict: {ratio:.2f}x** (target <= 1.2x); "
                  f"extra per case: {record['extra_seconds_per_case']:.3f} s.", ""]
    with open(os.path.join(RESULTS, "cost.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
