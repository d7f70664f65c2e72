"""Quality benchmark (DESIGN.md section 5): Dice and HD95 of every method on one held-out test set.

One command runs the whole protocol with real nnU-Net commands as child processes:

1. write a synthetic 2D dataset (``nnunetv2_asyco.demo.synthetic``, ``--difficulty hard``
   and 5 classes by default: organ, low-contrast inner structure, three small
   boundary structures; subjects differ in shape, size, contrast, noise, blur
   and bias field): ``--n-train``
   training cases (nnU-Net's fold 0 uses 80% of them for training), a fixed
   held-out test set (imagesTs/labelsTs, ``--n-test`` cases) and, optionally,
   ``--n-extra-unlabeled`` extra unlabeled scans (imagesUnlabeled);
2. ``nnUNetv2_plan_and_preprocess`` (2d), then CPU plans
   (``make_small_plans``: patch 64x64, small batch, capped widths) shared by
   every method;
3. for every seed and labeled fraction: ``nnUNetv2_asyco_labeled_subset -d ID
   -f 0 --fraction F --seed S --overwrite`` (the fold's other training cases
   are the unlabeled data), then for every method ``nnUNetv2_train`` with the
   method's ``_bench<N>`` trainer (same plans, same subset, same N iterations;
   ``benchmarks/quality/trainers/budget_trainers.py``); the fully supervised
   upper bound (stock ``nnUNetTrainer`` on all labels of fold 0) once per seed;
   ``--parallel N`` trains N of one (seed, fraction) block at once (for a GPU
   that one small network leaves mostly idle);
4. ``nnUNetv2_predict`` on imagesTs (``-npp 1 -nps 1``), Dice per class and
   case with nnU-Net's ``compute_metrics_on_folder``, HD95 per class and case
   with ``medpy.metric.binary.hd95``;
5. one CSV per run in ``<results>/quality_runs/`` (columns: method, trainer,
   iterations, fraction, n_labeled, seed, case, class, dice, hd95, hd95_note)
   plus ``<run>.json`` (training log from the checkpoint's ``logging`` dict,
   per-iteration time, labeled cases).

A run whose CSV exists is skipped, so an interrupted benchmark resumes where it
stopped (``--c`` is not used: an unfinished training restarts). The "seed" is
the seed of the labeled-subset draw; nnU-Net training itself is not seeded, so
repeated seeds also sample training randomness. ``benchmarks/quality/report.py``
turns the CSVs into ``quality.md`` and the plots.

Empty-mask conventions (per test case and class):
- Dice: nnU-Net's own value; it is NaN when reference and prediction are both
  empty, and NaN values are left out of means (nnU-Net does the same).
- HD95: both empty -> 0.0 (``hd95_note=both_empty``); exactly one empty -> the
  image diagonal in mm, the largest distance possible in the image, as a fixed
  worst-case penalty (``hd95_note=empty_prediction`` / ``empty_reference``);
  otherwise medpy's hd95 with the image spacing.

The defaults are the full protocol (5% and 10% labels, 3 seeds, 1000
iterations per method, about 1 h 45 min on a 2-core CPU). The runs behind
benchmarks/results/quality.md are listed in benchmarks/results/quality_notes.md.
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BENCH_TRAINER_DIR = os.path.join(HERE, "trainers")
sys.path.insert(0, BENCH_TRAINER_DIR)
import budget_trainers  # noqa: E402
from nnunetv2_asyco.demo.synthetic import DIFFICULTIES  # noqa: E402
from nnunetv2_asyco.training.variants.ablations import ablation_trainers  # noqa: E402

# method key -> (trainer base name, trained on the labeled subset)
METHODS = {
    "labeled_only": ("nnUNetTrainerLabeledOnly", True),
    "mean_teacher": ("nnUNetTrainerMeanTeacher", True),
    "cps": ("nnUNetTrainerCPS", True),
    "asyco": ("nnUNetTrainerAsyCo", True),
    "full": ("nnUNetTrainer", False),  # upper bound: every label of fold 0
    # ablations and controls (nnunetv2_asyco/training/variants/ablations.py): asyco_<suffix> trains
    # nnUNetTrainerAsyCo_<suffix>, cps_<suffix> nnUNetTrainerCPS_<suffix>
    **{cls.__name__[len("nnUNetTrainer"):].replace("AsyCo_", "asyco_").replace("CPS_", "cps_"): (cls.__name__, True)
       for cls in ablation_trainers()},
}
DEFAULT_METHODS = ("labeled_only", "mean_teacher", "cps", "asyco", "full")
DATASET_NAME = "AsyCoQuality"
PLANS = "nnUNetPlansQuality"  # the small CPU plans
DEFAULT_PLANS = "nnUNetPlans"  # nnU-Net's own plans, unedited (--default-plans, for GPU runs)
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
CSV_COLUMNS = ("method", "trainer", "iterations", "fraction", "n_labeled", "seed", "case", "class", "dice", "hd95",
               "hd95_note")
# what the dataset and plans depend on; results made with other values are not comparable
SETUP_KEYS = ("dataset_id", "n_train", "n_test", "n_extra_unlabeled", "data_seed", "difficulty", "num_classes",
              "patch", "batch_size", "max_features", "iterations")


class BenchError(RuntimeError):
    pass


from nnunetv2_asyco.demo.commands import find_cli  # noqa: E402
from nnunetv2_asyco.data.labeled_subset import load_labeled_subset  # noqa: E402


def base_env(args) -> dict:
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env = dict(os.environ, PYTHONUNBUFFERED="1", nnUNet_compile="false")
    for v in PATH_VARS:
        env[v] = os.path.join(args.work, v)
        os.makedirs(env[v], exist_ok=True)
    # benchmark trainers first, then the package's; keep whatever the user already searches
    env["nnUNet_extTrainer"] = os.pathsep.join(
        p for p in (BENCH_TRAINER_DIR, trainer_dir(), os.environ.get("nnUNet_extTrainer")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_TRAINER_DIR, os.environ.get("PYTHONPATH")) if p)
    env.pop("nnUNet_n_proc_DA", None)  # set for training only (0 crashes the planner)
    # nnU-Net sets torch's threads to the core count; with OpenMP's default spin-waiting, threads that wait for a
    # descheduled sibling burn the shared cores (measured here: ~1-2 s vs ~45 ms per small training step)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def say(message: str) -> None:
    """One line to stdout in a single write (parallel runs must not interleave within a line)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def run_cmd(cmd: list, env: dict, log: str) -> float:
    """Run a child process with its output in ``log``; return wall seconds; raise BenchError on failure."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    say(f"  $ {' '.join(cmd)}   (log: {log})")
    start = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seconds = time.time() - start
    if rc != 0:
        with open(log) as f:
            tail = "".join(f.readlines()[-30:])
        raise BenchError(f"exit code {rc} after {seconds:.0f} s: {' '.join(cmd)}\n{tail}")
    return seconds


# ---------------------------------------------------------------------------------------
# dataset, plans
# ---------------------------------------------------------------------------------------
def setup_dict(args) -> dict:
    setup = {k: getattr(args, k) for k in SETUP_KEYS}
    if args.plans == DEFAULT_PLANS:  # patch, batch and widths are nnU-Net's choice then
        setup.update(plans=DEFAULT_PLANS, patch=None, batch_size=None, max_features=None)
    return setup


BENCH_MODULES = ("medpy", "pandas", "matplotlib")  # the project's [bench] extra


def check_bench_dependencies() -> None:
    """Fail before any training if scoring or the report could not run afterwards (hours of training lost)."""
    import importlib.util
    missing = [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)} (needed to score and report the runs); install the "
                         f"benchmark extra: pip install -e \".[bench]\"")


def check_setup(args) -> None:
    """Refuse to mix results of different set-ups in one results folder."""
    path = os.path.join(args.runs_dir, "setup.json")
    current = setup_dict(args)
    if os.path.isfile(path):
        with open(path) as f:
            recorded = json.load(f)
        if recorded != current:
            raise BenchError(f"{path} records another set-up ({recorded}) than this call ({current}); results would "
                             f"not be comparable. Use another --results folder or the recorded options.")
    else:
        os.makedirs(args.runs_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(current, f, indent=2)


def prepare_dataset(args, env: dict) -> str:
    """Dataset, nnU-Net preprocessing and small plans in the work folder (reused when already made)."""
    marker = os.path.join(args.work, "dataset_setup.json")
    current = {k: v for k, v in setup_dict(args).items() if k != "iterations"}
    raw = os.path.join(env["nnUNet_raw"], f"Dataset{args.dataset_id:03d}_{DATASET_NAME}")
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == current:
                print(f"Dataset and plans already prepared in {args.work}", flush=True)
                return raw
        raise BenchError(f"{args.work} holds a dataset made with other options; use another --work folder.")
    os.makedirs(args.work, exist_ok=True)
    logs = os.path.join(args.work, "logs")
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    print(f"Writing dataset {args.dataset_id}: {args.n_train} training, {args.n_test} test, "
          f"{args.n_extra_unlabeled} extra unlabeled cases", flush=True)
    raw = write_synthetic_dataset(env["nnUNet_raw"], args.dataset_id, DATASET_NAME, dim=2, shape=(128, 128),
                                  n_train=args.n_train, n_test=args.n_test, n_unlabeled=args.n_extra_unlabeled,
                                  num_classes=args.num_classes, seed=args.data_seed, difficulty=args.difficulty)
    did = str(args.dataset_id)
    run_cmd([find_cli("nnUNetv2_plan_and_preprocess"), "-d", did, "-c", "2d", "-np", str(args.n_proc), "-npfp",
             str(args.n_proc)], env,
            os.path.join(logs, "plan_and_preprocess.log"))
    code = ("import sys; from nnunetv2_asyco.demo.small_plans import make_small_plans; "
            f"print(make_small_plans(int(sys.argv[1]), 'nnUNetPlans', '{PLANS}', "
            f"patch_size={{'2d': ({args.patch}, {args.patch})}}, batch_size={args.batch_size}, "
            f"max_features={args.max_features}))")
    if args.plans == PLANS:
        run_cmd([sys.executable, "-c", code, did], env, os.path.join(logs, "small_plans.log"))
    if args.n_extra_unlabeled:
        run_cmd([find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", did, "-c", "2d", "-p", args.plans, "-np",
                 str(args.n_proc)],
                env, os.path.join(logs, "preprocess_unlabeled.log"))
    with open(marker, "w") as f:
        json.dump(current, f, indent=2)
    return raw


def write_subset(args, env: dict, fraction: float, seed: int) -> dict:
    run_cmd([find_cli("nnUNetv2_asyco_labeled_subset"), "-d", str(args.dataset_id), "-f", "0", "--fraction",
             str(fraction), "--seed", str(seed), "--overwrite"], env,
            os.path.join(args.work, "logs", f"subset_f{fraction}_s{seed}.log"))
    return load_labeled_subset(os.path.join(env["nnUNet_preprocessed"], f"Dataset{args.dataset_id:03d}_{DATASET_NAME}"),
                               0)


def fold0_train_cases(env: dict, dataset_id: int) -> list:
    folder = os.path.join(env["nnUNet_preprocessed"], f"Dataset{dataset_id:03d}_{DATASET_NAME}")
    if not os.path.isfile(os.path.join(folder, "splits_final.json")):
        # nnU-Net's own 5-fold split, made exactly as nnUNetTrainer.do_split would (in the child's environment:
        # nnunetv2.paths is read at import time)
        code = ("import sys; from nnunetv2_asyco.data.labeled_subset import load_or_create_splits; "
                "load_or_create_splits(sys.argv[1])")
        run_cmd([sys.executable, "-c", code, os.path.basename(folder)], env,
                os.path.join(os.path.dirname(env["nnUNet_raw"]), "logs", "splits.log"))
    with open(os.path.join(folder, "splits_final.json")) as f:
        return list(json.load(f)[0]["train"])


# ---------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------
def hd95_with_convention(pred, ref, spacing) -> tuple:
    """(hd95 in mm, note); see the module docstring for the empty-mask convention."""
    from medpy.metric.binary import hd95
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0, "both_empty"
    if has_pred != has_ref:
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing)))
        return diagonal, "empty_reference" if has_pred else "empty_prediction"
    return float(hd95(pred, ref, voxelspacing=spacing)), ""


def score_run(raw: str, pred_folder: str) -> list:
    """[(case, class name, dice, hd95, note)] for every test case and foreground class."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2_asyco.demo.evaluation import evaluate_folder
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    ending = dataset_json["file_ending"]
    names = {int(v): k for k, v in dataset_json["labels"].items()}
    result = evaluate_folder(os.path.join(raw, "labelsTs"), pred_folder, dataset_json,
                             os.path.join(pred_folder, "summary.json"), num_processes=1)
    rows = []
    for entry in result["metric_per_case"]:
        case = os.path.basename(entry["reference_file"])[:-len(ending)]
        ref_img = sitk.ReadImage(entry["reference_file"])
        ref = sitk.GetArrayFromImage(ref_img)
        pred = sitk.GetArrayFromImage(sitk.ReadImage(entry["prediction_file"]))
        spacing = tuple(reversed(ref_img.GetSpacing()))  # numpy axis order
        for label, metrics in entry["metrics"].items():
            label = int(label)
            hd, note = hd95_with_convention(pred == label, ref == label, spacing)
            rows.append((case, names[label], float(metrics["Dice"]), hd, note))
    if not np.isfinite([r[3] for r in rows]).all():
        raise BenchError(f"non-finite HD95 in {pred_folder}")
    return rows


def training_record(checkpoint: str, iterations_per_epoch: int) -> dict:
    """Loss curves and per-iteration time from the checkpoint's ``logging`` dict."""
    import numpy as np
    import torch
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    logging = ckpt["logging"]
    curves = {k: [float(x) for x in v] for k, v in logging.items()
              if (k.startswith("train_") or k.startswith("val_") or k in ("mean_fg_dice", "ema_fg_dice",
                                                                          "consistency_weight")) and
              all(isinstance(x, (int, float)) or hasattr(x, "item") for x in v)}
    starts, ends = logging.get("epoch_start_timestamps", []), logging.get("epoch_end_timestamps", [])
    durations = [e - s for s, e in zip(starts, ends)]
    steady = durations[1:] if len(durations) > 1 else durations  # first epoch: start-up
    return {"curves": curves, "epoch_seconds": durations,
            "seconds_per_iteration": float(np.median(steady)) / iterations_per_epoch if steady else None}


# ---------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------
def train_env(args, env: dict) -> dict:
    env = dict(env, nnUNet_n_proc_DA=str(args.n_proc_da))
    if args.torch_threads:
        env[budget_trainers.THREADS_ENV] = str(args.torch_threads)
    return env


def run_id(method: str, n_labeled: int, seed: int) -> str:
    """``<method>__n<labeled>__s<seed>``; methods that train on all labels (full) are ``<method>__all__s<seed>``."""
    return f"{method}__{f'n{n_labeled:03d}' if METHODS[method][1] else 'all'}__s{seed}"


def run_one(args, env: dict, raw: str, method: str, fraction: float, n_labeled: int, seed: int,
            subset: dict = None) -> str:
    base = METHODS[method][0]
    rid = run_id(method, n_labeled, seed)
    csv_path = os.path.join(args.runs_dir, rid + ".csv")
    if os.path.isfile(csv_path):
        print(f"[skip] {rid}: {csv_path} exists", flush=True)
        return "skipped"
    trainer = f"{base}_bench{args.iterations}"
    if base in budget_trainers.UNAVAILABLE:
        raise BenchError(f"{base} cannot be imported: {budget_trainers.UNAVAILABLE[base]}")
    results_root = os.path.join(args.work, "nnUNet_results_runs", rid)
    shutil.rmtree(results_root, ignore_errors=True)  # an unfinished earlier attempt restarts
    run_env = dict(env, nnUNet_results=results_root)
    logs = os.path.join(args.work, "logs", rid)
    did = str(args.dataset_id)
    say(f"[run] {rid}: {trainer}")
    train_seconds = run_cmd([find_cli("nnUNetv2_train"), did, "2d", "0", "-p", args.plans, "-tr", trainer,
                             "-device", args.device], train_env(args, run_env),
                            os.path.join(logs, "train.log"))
    pred = os.path.join(args.work, "predictions", rid)
    shutil.rmtree(pred, ignore_errors=True)
    predict_seconds = run_cmd([find_cli("nnUNetv2_predict"), "-i", os.path.join(raw, "imagesTs"), "-o", pred,
                               "-d", did, "-c", "2d", "-f", "0", "-p", args.plans, "-tr", trainer, "-npp", "1",
                               "-nps", "1", "-device", args.device], run_env, os.path.join(logs, "predict.log"))
    write_run_results(args, raw, rid, method, trainer, fraction, n_labeled, seed, subset, pred, results_root,
                      train_seconds, predict_seconds)
    return "done"


def write_run_results(args, raw: str, rid: str, method: str, trainer: str, fraction: float, n_labeled: int,
                      seed: int, subset, pred: str, results_root: str, train_seconds: float,
                      predict_seconds: float) -> None:
    """Score a finished run's test-set predictions and write its JSON (curves, timing) and CSV (per case, class)."""
    uses_subset = METHODS[method][1]
    csv_path = os.path.join(args.runs_dir, rid + ".csv")
    rows = score_run(raw, pred)
    fold_dir = os.path.join(results_root, f"Dataset{args.dataset_id:03d}_{DATASET_NAME}",
                            f"{trainer}__{args.plans}__2d", "fold_0")
    record = training_record(os.path.join(fold_dir, "checkpoint_final.pth"), budget_trainers.ITERATIONS_PER_EPOCH)
    record.update(method=method, trainer=trainer, iterations=args.iterations, fraction=fraction,
                  n_labeled=n_labeled, seed=seed, train_seconds=train_seconds, predict_seconds=predict_seconds,
                  labeled_cases=subset["labeled"] if (uses_subset and subset) else "all of fold 0",
                  device=args.device,
                  # two-branch trainers: what each branch reads (report.py picks an ablation's reference by it)
                  branch_views=getattr(getattr(budget_trainers, trainer, None), "branch_views", None))
    with open(os.path.join(args.runs_dir, rid + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    tmp = csv_path + ".part"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for case, cls, dice, hd, note in rows:
            w.writerow((method, trainer, args.iterations, fraction, n_labeled, seed, case, cls,
                        "" if math.isnan(dice) else f"{dice:.6f}", f"{hd:.4f}", note))
    os.replace(tmp, csv_path)  # the CSV appears only when the run is complete
    stale = os.path.join(args.runs_dir, rid + ".failed.txt")
    if os.path.isfile(stale):
        os.remove(stale)
    spi = record["seconds_per_iteration"]
    say(f"[done] {rid}: train {train_seconds:.0f} s ({spi:.3f} s/iteration), predict {predict_seconds:.0f} s, "
        f"mean Dice {sum(r[2] for r in rows if not math.isnan(r[2])) / max(1, sum(not math.isnan(r[2]) for r in rows)):.4f}")


def run_block(args, env: dict, raw: str, block: list, seed: int) -> list:
    """Run (method, fraction, n_labeled, subset) jobs, ``args.parallel`` at a time; return the failures."""
    def one(job):
        method, fraction, n_labeled, subset = job
        rid = run_id(method, n_labeled, seed)
        try:
            run_one(args, env, raw, method, fraction, n_labeled, seed, subset)
            return None
        except BenchError as e:
            error = str(e)
        except Exception:  # a bug in scoring or recording: keep the other runs going, report it with the rest
            error = "unexpected error\n" + traceback.format_exc()
        say(f"[FAILED] {rid}: {error}")
        return rid, error

    if args.parallel == 1:
        outcomes = [one(job) for job in block]
    else:  # child processes do the work; threads only wait for them
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(args.parallel) as pool:
            outcomes = list(pool.map(one, block))
    return [o for o in outcomes if o is not None]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join("/tmp", f"asyco_quality_{os.environ.get('USER', 'bench')}"),
                   help="work folder for nnUNet_raw/_preprocessed/_results, predictions and logs")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"),
                   help="results folder; per-run CSVs go to <results>/quality_runs/")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(METHODS))
    p.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1],
                   help="labeled fractions of fold 0's training cases (default: 0.05 0.1)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="labeled-subset seeds (default: 0 1 2)")
    p.add_argument("--iterations", type=int, default=1000, choices=budget_trainers.BUDGETS,
                   help="training iterations of every method (default: 1000)")
    p.add_argument("--dataset-id", type=int, default=991)
    p.add_argument("--n-train", type=int, default=100, help="training cases (fold 0 trains on 80%%; default 100)")
    p.add_argument("--n-test", type=int, default=20, help="held-out test cases (default: 20)")
    p.add_argument("--n-extra-unlabeled", type=int, default=0,
                   help="extra unlabeled scans in imagesUnlabeled, used by the semi-supervised methods on top of "
                        "fold 0's unlabeled training cases (default: 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset (default: 0)")
    p.add_argument("--difficulty", choices=DIFFICULTIES, default="hard",
                   help="synthetic generator setting (nnunetv2_asyco.demo.synthetic; default: hard)")
    p.add_argument("--num-classes", type=int, default=5, choices=range(1, 8), metavar="{1..7}",
                   help="foreground classes: organ, low-contrast inner structure, small boundary structures "
                        "(default: 5)")
    p.add_argument("--patch", type=int, default=64, help="2d patch edge of the small plans (default: 64)")
    p.add_argument("--batch-size", type=int, default=4, help="batch size of the small plans (default: 4)")
    p.add_argument("--max-features", type=int, default=16, help="feature cap of the small plans (default: 16)")
    p.add_argument("--default-plans", action="store_true",
                   help="train with nnU-Net's own 2d plans (nnUNetPlans) instead of the small CPU plans; for GPU runs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--n-proc-da", type=int, default=2, help="nnUNet_n_proc_DA for training (default: 2)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch CPU threads in training (default: nnU-Net's, the core count); 1 helps on a busy CPU")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY of every child process (default: PASSIVE; '' keeps the environment's)")
    p.add_argument("--parallel", type=int, default=1,
                   help="training runs at once within one seed and fraction (default: 1; more for a GPU with "
                        "spare capacity: the small networks use a fraction of it)")
    p.add_argument("--n-proc", type=int, default=2,
                   help="processes for nnU-Net's planning/preprocessing (-np/-npfp; default: 2)")
    p.add_argument("--setup-only", action="store_true", help="prepare dataset and plans, then stop")
    args = p.parse_args(argv)
    if args.parallel < 1 or args.n_proc < 1:
        p.error("--parallel and --n-proc need a positive number (1 = one at a time)")
    args.work = os.path.abspath(args.work)
    args.plans = DEFAULT_PLANS if args.default_plans else PLANS
    args.runs_dir = os.path.join(os.path.abspath(args.results), "quality_runs")

    t0 = time.time()
    failures = []
    try:
        check_bench_dependencies()
        check_setup(args)
        env = base_env(args)
        raw = prepare_dataset(args, env)
        if args.setup_only:
            return 0
        n_fold_train = len(fold0_train_cases(env, args.dataset_id))
        from nnunetv2_asyco.data.labeled_subset import budget_from_fraction
        for seed in args.seeds:
            for i, fraction in enumerate(args.fractions):
                subset_methods = [m for m in args.methods if METHODS[m][1]]
                n_labeled = budget_from_fraction(fraction, n_fold_train)
                pending = [m for m in subset_methods
                           if not os.path.isfile(os.path.join(args.runs_dir, run_id(m, n_labeled, seed) + ".csv"))]
                # one subset file per dataset: every run of this block reads the same one, so the next
                # fraction's subset is written only after the whole block has finished
                subset = write_subset(args, env, fraction, seed) if pending else None
                # the upper bound first (with the first block): every gap closure of this seed needs it
                block = ([("full", 1.0, n_fold_train, None)] if i == 0 and "full" in args.methods else [])
                block += [(m, fraction, n_labeled, subset) for m in subset_methods]
                failures += run_block(args, env, raw, block, seed)
    except BenchError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(f"Finished in {(time.time() - t0) / 60:.1f} min; {len(failures)} failed run(s).", flush=True)
    for rid, err in failures:
        with open(os.path.join(args.runs_dir, rid + ".failed.txt"), "w") as f:
            f.write(err)
        print(f"  {rid}: see {os.path.join(args.runs_dir, rid + '.failed.txt')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
