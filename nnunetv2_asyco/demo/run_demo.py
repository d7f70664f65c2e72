"""``nnUNetv2_asyco_demo``: AsyCo against labeled-only and fully supervised nnU-Net on a synthetic dataset.

The dataset is the quality benchmark's synthetic setting (``benchmark``: five
structures, three of them small or low-contrast; subjects differ in shape,
contrast, noise and bias), with two labeled training cases: a setting where
labeled-only nnU-Net stays clearly below fully supervised nnU-Net, so there
is something for the unlabeled scans to add. Every training is seeded
(``--seed``), so a run is reproducible; the table states how much the result
moves from one seed to the next (measured: ``benchmarks/demo_spread.py``).

Every step is a real nnU-Net (or nnunetv2_asyco) command run as a child
process, the same commands a user runs on their own data. Each step's output
goes to ``<output>/logs/``; the results table goes to ``<output>/results.md``
and ``results.json``, the picture to ``<output>/test_cases.png``.
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
# (method, trainer, fold): the fully supervised reference trains on every labeled case ("all": no subset)
METHODS = (("labeled-only nnU-Net", "nnUNetTrainerLabeledOnly_demo", "0"), ("AsyCo", "nnUNetTrainerAsyCo_demo", "0"),
           ("fully supervised nnU-Net", "nnUNetTrainerLabeledOnly_demo", "all"))
DIFFICULTY, NUM_CLASSES = "benchmark", 5
MEASURED_SPREAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured_spread.json")
FIGURE_CASES = 3
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


def measured_spread() -> dict:
    """How much each method's mean Dice moves between seeds at the demo's budget (benchmarks/demo_spread.py)."""
    if not os.path.isfile(MEASURED_SPREAD):
        return {}
    with open(MEASURED_SPREAD) as f:
        return json.load(f)


def results_table(rows: list, class_names: list, spread: dict) -> str:
    sd = spread.get("sd_mean_dice", {})
    head = ["Method"] + [f"Dice {c}" for c in class_names] + ["mean Dice", "seed-to-seed SD", "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        spread_cell = f"±{sd[r['method']]:.4f}" if r["method"] in sd else "not measured"
        cells = [r["method"]] + [f"{r['dice'][c]:.4f}" for c in class_names] + \
                [f"{r['mean_dice']:.4f}", spread_cell, f"{r['train_seconds'] / 60:.1f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_sentence(spread: dict) -> str:
    if not spread:
        return "The seed-to-seed spread at this budget has not been measured for this version."
    return (f"Measured over seeds {spread['seeds']} at this budget ({spread['measured_on']}): each method's mean "
            f"Dice moves by the SD in the table from one seed to the next, and AsyCo − labeled-only by "
            f"±{spread['sd_asyco_minus_labeled_only']:.4f} (mean {spread['mean_asyco_minus_labeled_only']:+.4f}); "
            f"one demo run is one draw.")


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
    steps = Steps(logs, 6 + 3 * len(METHODS))
    t_start, cpu_start = time.time(), cpu_seconds()
    print(f"nnUNetv2_asyco_demo: work folder {output} (device {args.device}); logs in {logs}")

    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    raw = steps.step_in_process(
        f"Writing synthetic 2D dataset {did} ({args.n_train} training, {args.n_test} test, "
        f"{args.n_unlabeled} unlabeled cases)",
        lambda: write_synthetic_dataset(env["nnUNet_raw"], args.dataset_id, DATASET_NAME, dim=2,
                                        n_train=args.n_train, n_test=args.n_test, n_unlabeled=args.n_unlabeled,
                                        num_classes=NUM_CLASSES, seed=0, difficulty=DIFFICULTY))
    steps.run("Plan and preprocess: nnUNetv2_plan_and_preprocess",
              [find_cli("nnUNetv2_plan_and_preprocess"), "-d", did, "-c", "2d", "-np", "2", "-npfp", "2"], env)
    steps.run(f"Small CPU plans: {PLANS} (patch 64x64, batch 4, 16 features)",
              [sys.executable, "-c", SMALL_PLANS_CODE, did], env)
    steps.run("Preprocess unlabeled scans: nnUNetv2_asyco_preprocess_unlabeled",
              [find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", did, "-c", "2d", "-p", PLANS, "-np", "2"], env)
    steps.run(f"Labeled subset: nnUNetv2_asyco_labeled_subset ({args.n_labeled} labeled cases in fold 0)",
              [find_cli("nnUNetv2_asyco_labeled_subset"), "-d", did, "-f", "0", "-n", str(args.n_labeled),
               "--seed", str(args.seed), "--overwrite"], env)

    train_env = dict(env, nnUNet_n_proc_DA="2", nnUNet_asyco_seed=str(args.seed))
    train_seconds = {}
    for method, trainer, fold in METHODS:
        train_seconds[method] = steps.run(
            f"Train {method}: nnUNetv2_train -tr {trainer} (fold {fold})",
            [find_cli("nnUNetv2_train"), did, "2d", fold, "-p", PLANS, "-tr", trainer, "-device", args.device],
            train_env)

    from nnunetv2_asyco.demo.evaluation import dice_summary, evaluate_folder
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    rows, prediction_folders = [], {}
    for method, trainer, fold in METHODS:
        pred = os.path.join(output, "predictions", f"{trainer}_fold_{fold}")
        prediction_folders[method] = pred
        steps.run(f"Predict test cases with {method}: nnUNetv2_predict",
                  [find_cli("nnUNetv2_predict"), "-i", os.path.join(raw, "imagesTs"), "-o", pred, "-d", did,
                   "-c", "2d", "-f", fold, "-p", PLANS, "-tr", trainer, "-npp", "1", "-nps", "1",
                   "-device", args.device], env)
        result = steps.step_in_process(
            f"Evaluate {method} against labelsTs (nnU-Net's evaluation)",
            lambda: evaluate_folder(os.path.join(raw, "labelsTs"), pred, dataset_json,
                                    os.path.join(pred, "summary.json")))
        summary = dice_summary(result, dataset_json)
        rows.append({"method": method, "trainer": trainer, "dice": summary["per_class"],
                     "mean_dice": summary["mean"], "train_seconds": train_seconds[method]})

    from nnunetv2_asyco.demo.figure import write_comparison
    cases = sorted(f[:-len(dataset_json["file_ending"])] for f in os.listdir(os.path.join(raw, "labelsTs")))
    shown = cases[:FIGURE_CASES]
    figure = steps.step_in_process(
        f"Picture of {len(shown)} test cases: {os.path.join(output, 'test_cases.png')}",
        lambda: write_comparison(
            os.path.join(output, "test_cases.png"),
            [os.path.join(raw, "imagesTs", c + "_0000" + dataset_json["file_ending"]) for c in shown],
            [os.path.join(raw, "labelsTs", c + dataset_json["file_ending"]) for c in shown],
            {m: [os.path.join(p, c + dataset_json["file_ending"]) for c in shown]
             for m, p in prediction_folders.items()}, NUM_CLASSES))

    class_names = list(rows[0]["dice"])
    spread = measured_spread()
    table = results_table(rows, class_names, spread)
    total = time.time() - t_start
    from nnunetv2_asyco.demo.demo_trainers import DEMO_EPOCHS, DEMO_ITERATIONS
    setup = (f"Dataset {did}: {args.n_train} training cases (fold 0: {args.n_labeled} labeled, the rest and "
             f"{args.n_unlabeled} extra scans unlabeled), {args.n_test} held-out test cases; plans {PLANS}; every "
             f"method {DEMO_EPOCHS} epochs x {DEMO_ITERATIONS} iterations, seed {args.seed}; the fully supervised "
             f"run uses every training label (fold 'all'); device {args.device}; total {total / 60:.1f} min. "
             + spread_sentence(spread) + f" Picture: {figure}.")
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
        description="Generate a synthetic 2D dataset, plan and preprocess it with nnU-Net, train labeled-only "
                    "nnU-Net and AsyCo on two labeled cases plus unlabeled scans and fully supervised nnU-Net on all "
                    "labels (same budget, seeded), predict held-out test cases, print their Dice and draw a few. "
                    "About 10 minutes on 2 CPU cores.")
    parser.add_argument("--output", default="./asyco_demo",
                        help="work folder (default: ./asyco_demo); must be new, empty or an earlier demo folder")
    parser.add_argument("--dataset-id", type=int, default=990, help="nnU-Net dataset id (default: 990)")
    parser.add_argument("--use-env", action="store_true",
                        help="use your nnUNet_raw/nnUNet_preprocessed/nnUNet_results instead of subfolders of "
                             "--output (the demo dataset is then written there)")
    parser.add_argument("--n-labeled", type=int, default=2, help="labeled training cases (default: 2)")
    parser.add_argument("--n-train", type=int, default=24, help="training cases (default: 24)")
    parser.add_argument("--n-unlabeled", type=int, default=30, help="extra unlabeled scans (default: 30)")
    parser.add_argument("--n-test", type=int, default=40, help="held-out test cases (default: 40)")
    parser.add_argument("--seed", type=int, default=0,
                        help="draws the labeled cases and seeds every training (default: 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    if args.seed < 0 or min(args.n_labeled, args.n_train, args.n_test) < 1 or args.n_unlabeled < 0:
        parser.error("--seed and --n-unlabeled must be >= 0, --n-labeled, --n-train and --n-test >= 1")
    if args.n_labeled >= args.n_train:
        parser.error(f"--n-labeled {args.n_labeled} leaves no unlabeled training case (--n-train {args.n_train})")
    try:
        return run_demo(args)
    except (DemoError, CommandNotFound) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
