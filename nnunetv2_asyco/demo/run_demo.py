"""``nnUNetv2_asyco_demo``: AsyCo against labeled-only nnU-Net on a small synthetic dataset, end to end.

Every step is a real nnU-Net (or nnunetv2_asyco) command run as a child
process, the same commands a user runs on their own data. Each step's output
goes to ``<output>/logs/``; the results table goes to ``<output>/results.md``
and ``results.json``.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

from nnunetv2_asyco.demo.commands import CommandNotFound, find_cli

MARKER = ".nnunetv2_asyco_demo"  # marks a folder this command created; only such folders are reused
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
DATASET_NAME = "AsyCoDemo"
PLANS = "nnUNetPlansDemo"
METHODS = (("labeled-only nnU-Net", "nnUNetTrainerLabeledOnly_demo"), ("AsyCo", "nnUNetTrainerAsyCo_demo"))
# make_small_plans reads nnUNet_preprocessed when nnunetv2.paths is imported, so it runs in the child's environment
SMALL_PLANS_CODE = ("import sys; from nnunetv2_asyco.demo.small_plans import make_small_plans; "
                    "print(make_small_plans(int(sys.argv[1]), 'nnUNetPlans', '%s', patch_size={'2d': (64, 64)}, "
                    "batch_size=4, max_features=16))" % PLANS)


class DemoError(RuntimeError):
    pass


def prepare_output(output: str) -> None:
    """Create the work folder, or clear the folders of an earlier demo run; never touch anything else."""
    marker = os.path.join(output, MARKER)
    if os.path.exists(output) and not os.path.isdir(output):
        raise DemoError(f"{output} exists and is not a folder. Choose another --output.")
    if os.path.isdir(output) and os.listdir(output) and not os.path.isfile(marker):
        raise DemoError(f"{output} exists and is not a folder created by nnUNetv2_asyco_demo; refusing to write "
                        f"into it (nothing was changed). Choose another --output, e.g. --output ./asyco_demo_run.")
    os.makedirs(output, exist_ok=True)
    for sub in PATH_VARS + ("logs", "predictions"):
        shutil.rmtree(os.path.join(output, sub), ignore_errors=True)
    with open(marker, "w") as f:
        f.write("Created by nnUNetv2_asyco_demo; the command clears and reuses this folder when run again.\n")


def child_env(args, output: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.use_env:
        missing = [v for v in PATH_VARS if not env.get(v)]
        if missing:
            raise DemoError(f"--use-env given but {', '.join(missing)} not set.")
    else:
        env.update({v: os.path.join(output, v) for v in PATH_VARS})
    for v in PATH_VARS:
        os.makedirs(env[v], exist_ok=True)
    # the demo trainers live in this package; keep any folders the user already searches
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env["nnUNet_extTrainer"] = os.pathsep.join(p for p in (trainer_dir(), env.get("nnUNet_extTrainer")) if p)
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes the planner; set for training only
    env["nnUNet_def_n_proc"] = "2"  # nnU-Net's default of 8 spawned workers (final validation) is slow on a laptop
    if args.device == "cpu":
        env["nnUNet_compile"] = "false"
        # idle OpenMP threads sleep instead of spinning: 3-4x faster inference when other programs share the CPU
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the honest cost on a shared machine)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Steps:
    """Numbered steps with one progress line each; wall and CPU seconds per step go to ``self.times``."""

    def __init__(self, log_dir: str, total: int):
        self.log_dir, self.total, self.done, self.times = log_dir, total, 0, []

    def _start(self, title: str):
        self.done += 1
        print(f"[{self.done}/{self.total}] {title} ...", end=" ", flush=True)
        return time.time(), cpu_seconds()

    def _finish(self, title: str, started) -> float:
        wall, cpu = time.time() - started[0], cpu_seconds() - started[1]
        self.times.append({"step": title, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)})
        print(f"done in {wall:.0f} s")
        return wall

    def run(self, title: str, cmd: list, env: dict) -> float:
        """Run one step with its output in a log file; return its wall time, raise DemoError on failure."""
        started = self._start(title)
        log = os.path.join(self.log_dir, f"{self.done:02d}_{title.split(':')[0].lower().replace(' ', '_')}.log")
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if rc != 0:
            print(f"FAILED (exit code {rc}) after {time.time() - started[0]:.0f} s")
            with open(log) as f:
                tail = f.readlines()[-40:]
            raise DemoError(f"Step '{title}' failed. Last lines of {log}:\n" + "".join(tail))
        return self._finish(title, started)

    def step_in_process(self, title: str, fn):
        started = self._start(title)
        try:
            result = fn()
        except (ValueError, OSError) as e:
            print("FAILED")
            raise DemoError(f"Step '{title}' failed: {e}") from e
        self._finish(title, started)
        return result


def results_table(rows: list, class_names: list) -> str:
    head = ["Method"] + [f"Dice {c}" for c in class_names] + ["mean Dice", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["method"]] + [f"{r['dice'][c]:.4f}" for c in class_names] + \
                [f"{r['mean_dice']:.4f}", f"{r['train_seconds'] / 60:.1f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(args) -> int:
    output = os.path.abspath(args.output)
    prepare_output(output)
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    env = child_env(args, output)
    did = str(args.dataset_id)
    logs = os.path.join(output, "logs")
    os.makedirs(logs)
    steps = Steps(logs, 5 + 3 * len(METHODS))
    t_start, cpu_start = time.time(), cpu_seconds()
    print(f"nnUNetv2_asyco_demo: work folder {output} (device {args.device}); logs in {logs}")

    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    raw = steps.step_in_process(
        f"Writing synthetic 2D dataset {did} ({args.n_train} training, {args.n_test} test, "
        f"{args.n_unlabeled} unlabeled cases)",
        lambda: write_synthetic_dataset(env["nnUNet_raw"], args.dataset_id, DATASET_NAME, dim=2,
                                        n_train=args.n_train, n_test=args.n_test, n_unlabeled=args.n_unlabeled,
                                        num_classes=3, seed=0))
    steps.run("Plan and preprocess: nnUNetv2_plan_and_preprocess",
              [find_cli("nnUNetv2_plan_and_preprocess"), "-d", did, "-c", "2d", "-np", "2", "-npfp", "2"], env)
    steps.run(f"Small CPU plans: {PLANS} (patch 64x64, batch 4, 16 features)",
              [sys.executable, "-c", SMALL_PLANS_CODE, did], env)
    steps.run("Preprocess unlabeled scans: nnUNetv2_asyco_preprocess_unlabeled",
              [find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", did, "-c", "2d", "-p", PLANS, "-np", "2"], env)
    steps.run(f"Labeled subset: nnUNetv2_asyco_labeled_subset ({args.n_labeled} labeled cases in fold 0)",
              [find_cli("nnUNetv2_asyco_labeled_subset"), "-d", did, "-f", "0", "-n", str(args.n_labeled),
               "--seed", "0", "--overwrite"], env)

    train_env = dict(env, nnUNet_n_proc_DA="2")
    train_seconds = {}
    for method, trainer in METHODS:
        train_seconds[method] = steps.run(
            f"Train {method}: nnUNetv2_train -tr {trainer}",
            [find_cli("nnUNetv2_train"), did, "2d", "0", "-p", PLANS, "-tr", trainer, "-device", args.device],
            train_env)

    from nnunetv2_asyco.demo.evaluation import dice_summary, evaluate_folder
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    rows = []
    for method, trainer in METHODS:
        pred = os.path.join(output, "predictions", trainer)
        steps.run(f"Predict test cases with {method}: nnUNetv2_predict",
                  [find_cli("nnUNetv2_predict"), "-i", os.path.join(raw, "imagesTs"), "-o", pred, "-d", did,
                   "-c", "2d", "-f", "0", "-p", PLANS, "-tr", trainer, "-npp", "1", "-nps", "1",
                   "-device", args.device], env)
        result = steps.step_in_process(
            f"Evaluate {method} against labelsTs (nnU-Net's evaluation)",
            lambda: evaluate_folder(os.path.join(raw, "labelsTs"), pred, dataset_json,
                                    os.path.join(pred, "summary.json")))
        summary = dice_summary(result, dataset_json)
        rows.append({"method": method, "trainer": trainer, "dice": summary["per_class"],
                     "mean_dice": summary["mean"], "train_seconds": train_seconds[method]})

    class_names = list(rows[0]["dice"])
    table = results_table(rows, class_names)
    total = time.time() - t_start
    from nnunetv2_asyco.demo.demo_trainers import DEMO_EPOCHS, DEMO_ITERATIONS
    setup = (f"Dataset {did}: {args.n_train} training cases (fold 0: {args.n_labeled} labeled), "
             f"{args.n_unlabeled} extra unlabeled scans, {args.n_test} held-out test cases; plans {PLANS}; "
             f"both methods {DEMO_EPOCHS} epochs x {DEMO_ITERATIONS} iterations; device {args.device}; "
             f"total {total / 60:.1f} min. Train time includes nnU-Net's final validation. One short run: "
             f"expect a few Dice points of run-to-run variation (nnU-Net training is not seeded).")
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write("# nnUNetv2_asyco_demo\n\n" + setup + "\n\n" + table + "\n")
    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump({"setup": vars(args), "total_seconds": round(total, 1),
                   "total_cpu_seconds": round(cpu_seconds() - cpu_start, 1), "steps": steps.times,
                   "results": rows}, f, indent=2)
    print("\n" + table + "\n\n" + setup)
    print(f"Table written to {os.path.join(output, 'results.md')} and results.json")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_asyco_demo",
        description="Generate a small synthetic 2D dataset, plan and preprocess it with nnU-Net, train "
                    "labeled-only nnU-Net and AsyCo on a few labeled cases plus unlabeled scans (same budget), "
                    "predict held-out test cases and print their Dice. A few minutes on a CPU.")
    parser.add_argument("--output", default="./asyco_demo",
                        help="work folder (default: ./asyco_demo); must be new, empty or an earlier demo folder")
    parser.add_argument("--dataset-id", type=int, default=990, help="nnU-Net dataset id (default: 990)")
    parser.add_argument("--use-env", action="store_true",
                        help="use your nnUNet_raw/nnUNet_preprocessed/nnUNet_results instead of subfolders of "
                             "--output (the demo dataset is then written there)")
    parser.add_argument("--n-labeled", type=int, default=3, help="labeled training cases (default: 3)")
    parser.add_argument("--n-train", type=int, default=24, help="training cases (default: 24)")
    parser.add_argument("--n-unlabeled", type=int, default=30, help="extra unlabeled scans (default: 30)")
    parser.add_argument("--n-test", type=int, default=10, help="held-out test cases (default: 10)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except (DemoError, CommandNotFound) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
