"""Quality benchmark v2 (benchmarks/PROTOCOL.md): every method on one held-out test set, seeded and paired.

One command runs a benchmark with real nnU-Net commands as child processes:

1. the dataset (``--benchmark synthetic``: the synthetic generator's "benchmark" setting with a large test set;
   ``--benchmark inia19``: coronal slices of the INIA19 macaque template, see ``real_anatomy.py``),
   ``nnUNetv2_plan_and_preprocess`` (2d) and small CPU plans shared by every method (``datasets.py``);
2. for every labeled budget, seed and method: ``nnUNetv2_asyco_labeled_subset -d ID -f 0 (--fraction F | -n N)
   --seed S`` in a preprocessed folder of the run's own (so runs of different seeds can train side by side),
   ``nnUNetv2_train`` with ``nnUNet_asyco_seed=S`` and the method's ``_bench<I>`` trainer (same plans, same I
   iterations; ``trainers/budget_trainers.py``), the fully supervised upper bound (seeded stock
   ``nnUNetTrainer`` on all labels of fold 0) once per seed; ``--parallel N`` trainings at a time;
3. ``nnUNetv2_predict`` on imagesTs and scoring (``scoring.py``: Dice with nnU-Net's evaluation, HD95);
4. one CSV per run in ``<results>/quality_runs/`` (columns: method, trainer, iterations, fraction, n_labeled,
   seed, case, class, dice, hd95, hd95_note) plus ``<run>.json`` (training curves, per-iteration time,
   labeled cases, code version); with ``--commit`` both are committed to git as soon as the run is scored.

The seed S is the unit of replication: it draws the labeled subset and seeds training (initialisation, batch
order, augmentation), so two methods at the same seed differ by their method only. A run whose CSV exists is
skipped: an interrupted benchmark resumes where it stopped (an unfinished training restarts from scratch).
``benchmarks/quality/report.py`` turns the CSVs into the report.
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BENCH_TRAINER_DIR = os.path.join(HERE, "trainers")
sys.path.insert(0, BENCH_TRAINER_DIR)
sys.path.insert(0, HERE)
import budget_trainers  # noqa: E402
from datasets import BENCHMARKS, dataset_folder_name, prepare_dataset  # noqa: E402
from scoring import score_run, training_record  # noqa: E402
from nnunetv2_asyco.demo.commands import find_cli  # noqa: E402
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
DEFAULT_METHODS = ("labeled_only", "mean_teacher", "cps", "cps_perturbedViews", "asyco", "full")
# labeled budgets of the protocol: fractions of fold 0's training cases, or numbers of labeled slices
DEFAULT_BUDGETS = {"synthetic": {"fractions": [0.025, 0.05, 0.1]}, "inia19": {"n_labeled": [2, 4, 8]}}
SMALL_PLANS = "nnUNetPlansQuality"
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
CSV_COLUMNS = ("method", "trainer", "iterations", "fraction", "n_labeled", "seed", "case", "class", "dice", "hd95",
               "hd95_note")
RUN_SETUP_KEYS = ("benchmark", "dataset_id", "patch", "batch_size", "max_features", "plans", "iterations",
                  "seeded", "torch_threads", "n_proc_da")


class BenchError(RuntimeError):
    pass


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
# environment, set-up record, code version
# ---------------------------------------------------------------------------------------
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
    for var in ("nnUNet_n_proc_DA", "nnUNet_asyco_seed"):  # set per training run (n_proc_DA=0 crashes the planner)
        env.pop(var, None)
    # nnU-Net sets torch's threads to the core count; with OpenMP's default spin-waiting, threads that wait for a
    # descheduled sibling burn the shared cores (measured here: ~1-2 s vs ~45 ms per small training step)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def code_version() -> dict:
    """The commit of the code that trains (and whether it had uncommitted changes)."""
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "nnunetv2_asyco",
                                                                     "trainers", "benchmarks/quality"))}


def dataset_setup(args) -> dict:
    keys = ("benchmark", "dataset_id", "patch", "batch_size", "max_features", "plans") + \
        BENCHMARKS[args.benchmark].setup_keys
    return {k: getattr(args, k) for k in keys}


def run_setup(args) -> dict:
    return {**dataset_setup(args), **{k: getattr(args, k) for k in RUN_SETUP_KEYS}}


def check_setup(args) -> None:
    """Refuse to mix results of different set-ups in one results folder."""
    path = os.path.join(args.runs_dir, "setup.json")
    current = run_setup(args)
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


BENCH_MODULES = ("medpy", "pandas", "matplotlib", "scipy")  # the project's [bench] extra


def check_bench_dependencies() -> None:
    """Fail before any training if scoring or the report could not run afterwards (hours of training lost)."""
    import importlib.util
    missing = [m for m in BENCH_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)} (needed to score and report the runs); install the "
                         f"benchmark extra: pip install -e \".[bench]\"")


# ---------------------------------------------------------------------------------------
# labeled budgets and subsets
# ---------------------------------------------------------------------------------------
def fold0_train_cases(env: dict, args) -> list:
    folder = os.path.join(env["nnUNet_preprocessed"], dataset_folder_name(args))
    if not os.path.isfile(os.path.join(folder, "splits_final.json")):
        # nnU-Net's own 5-fold split, made exactly as nnUNetTrainer.do_split would (in the child's environment:
        # nnunetv2.paths is read at import time)
        code = ("import sys; from nnunetv2_asyco.data.labeled_subset import load_or_create_splits; "
                "load_or_create_splits(sys.argv[1])")
        run_cmd([sys.executable, "-c", code, os.path.basename(folder)], env, os.path.join(args.work, "logs",
                                                                                           "splits.log"))
    with open(os.path.join(folder, "splits_final.json")) as f:
        return list(json.load(f)[0]["train"])


def budgets(args, n_fold_train: int) -> list:
    """[(fraction or None, n_labeled)] in the order given (the first is the primary endpoint's budget)."""
    from nnunetv2_asyco.data.labeled_subset import budget_from_fraction
    if args.n_labeled:
        return [(None, n) for n in args.n_labeled]
    return [(f, budget_from_fraction(f, n_fold_train)) for f in args.fractions]


def run_preprocessed_root(args, env: dict, n_labeled: int, seed: int) -> str:
    """An nnUNet_preprocessed of this (budget, seed): links to the shared data, its own labeled-subset file."""
    name = dataset_folder_name(args)
    shared = os.path.join(env["nnUNet_preprocessed"], name)
    root = os.path.join(args.work, "preprocessed_per_subset", f"n{n_labeled:03d}_s{seed}")
    own = os.path.join(root, name)
    os.makedirs(own, exist_ok=True)
    for entry in os.listdir(shared):
        if entry.startswith("asyco_labeled_subset_"):
            continue
        link = os.path.join(own, entry)
        if not os.path.lexists(link):
            os.symlink(os.path.join(shared, entry), link)
    return root


def write_subset(args, env: dict, fraction, n_labeled: int, seed: int) -> dict:
    budget = ["--fraction", str(fraction)] if fraction is not None else ["-n", str(n_labeled)]
    run_cmd([find_cli("nnUNetv2_asyco_labeled_subset"), "-d", str(args.dataset_id), "-f", "0", *budget, "--seed",
             str(seed), "--overwrite"], env, os.path.join(args.work, "logs", f"subset_n{n_labeled:03d}_s{seed}.log"))
    with open(os.path.join(env["nnUNet_preprocessed"], dataset_folder_name(args),
                           "asyco_labeled_subset_fold0.json")) as f:
        subset = json.load(f)
    if subset["n_labeled"] != n_labeled:
        raise BenchError(f"subset has {subset['n_labeled']} labeled cases, expected {n_labeled}")
    return subset


# ---------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------
def run_id(method: str, n_labeled: int, seed: int) -> str:
    """``<method>__n<labeled>__s<seed>``; methods that train on all labels (full) are ``<method>__all__s<seed>``."""
    return f"{method}__{f'n{n_labeled:03d}' if METHODS[method][1] else 'all'}__s{seed}"


def run_one(args, env: dict, raw: str, method: str, fraction, n_labeled: int, seed: int) -> str:
    base, uses_subset = METHODS[method]
    rid = run_id(method, n_labeled, seed)
    if os.path.isfile(os.path.join(args.runs_dir, rid + ".csv")):
        say(f"[skip] {rid}: its CSV exists")
        return "skipped"
    trainer = f"{base}_bench{args.iterations}"
    if base in budget_trainers.UNAVAILABLE:
        raise BenchError(f"{base} cannot be imported: {budget_trainers.UNAVAILABLE[base]}")
    results_root = os.path.join(args.work, "nnUNet_results_runs", rid)
    shutil.rmtree(results_root, ignore_errors=True)  # an unfinished earlier attempt restarts
    run_env = dict(env, nnUNet_results=results_root)
    subset = None
    if uses_subset:
        run_env["nnUNet_preprocessed"] = run_preprocessed_root(args, env, n_labeled, seed)
        subset = write_subset(args, run_env, fraction, n_labeled, seed)
    train_env = dict(run_env, nnUNet_n_proc_DA=str(args.n_proc_da))
    if args.seeded:
        train_env["nnUNet_asyco_seed"] = str(seed)
    if args.torch_threads:
        train_env[budget_trainers.THREADS_ENV] = str(args.torch_threads)
    logs = os.path.join(args.work, "logs", rid)
    did = str(args.dataset_id)
    say(f"[run] {rid}: {trainer}")
    train_seconds = run_cmd([find_cli("nnUNetv2_train"), did, "2d", "0", "-p", args.plans, "-tr", trainer,
                             "-device", args.device], train_env, os.path.join(logs, "train.log"))
    pred = os.path.join(args.work, "predictions", rid)
    shutil.rmtree(pred, ignore_errors=True)
    predict_seconds = run_cmd([find_cli("nnUNetv2_predict"), "-i", os.path.join(raw, "imagesTs"), "-o", pred,
                               "-d", did, "-c", "2d", "-f", "0", "-p", args.plans, "-tr", trainer, "-npp", "1",
                               "-nps", "1", "-device", args.device], run_env, os.path.join(logs, "predict.log"))
    files = write_run_results(args, raw, rid, method, trainer, fraction, n_labeled, seed, subset, pred, results_root,
                              train_seconds, predict_seconds)
    if args.commit:
        commit_files(files, f"Benchmark v2 ({args.benchmark}): {rid}")
    shutil.rmtree(pred, ignore_errors=True)  # scored; the work folder would otherwise grow by a test set per run
    return "done"


def write_run_results(args, raw: str, rid: str, method: str, trainer: str, fraction, n_labeled: int, seed: int,
                      subset, pred: str, results_root: str, train_seconds: float, predict_seconds: float) -> list:
    """Score a finished run and write its JSON and CSV (the CSV last: it marks the run as complete)."""
    csv_path = os.path.join(args.runs_dir, rid + ".csv")
    rows = score_run(raw, pred)
    fold_dir = os.path.join(results_root, dataset_folder_name(args), f"{trainer}__{args.plans}__2d", "fold_0")
    record = training_record(os.path.join(fold_dir, "checkpoint_final.pth"), budget_trainers.ITERATIONS_PER_EPOCH)
    record.update(method=method, trainer=trainer, iterations=args.iterations, fraction=fraction,
                  n_labeled=n_labeled, seed=seed, seeded=args.seeded, train_seconds=train_seconds,
                  predict_seconds=predict_seconds,
                  labeled_cases=subset["labeled"] if subset else "all of fold 0", device=args.device,
                  code=args.code_version,
                  # two-branch trainers: what each branch reads
                  branch_views=getattr(getattr(budget_trainers, trainer, None), "branch_views", None))
    json_path = os.path.join(args.runs_dir, rid + ".json")
    with open(json_path + ".part", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(json_path + ".part", json_path)
    with open(csv_path + ".part", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for case, cls, dice, hd, note in rows:
            w.writerow((method, trainer, args.iterations, "" if fraction is None else fraction, n_labeled, seed, case,
                        cls, "" if math.isnan(dice) else f"{dice:.6f}", f"{hd:.4f}", note))
    os.replace(csv_path + ".part", csv_path)  # the CSV appears only when the run is complete
    stale = os.path.join(args.runs_dir, rid + ".failed.txt")
    if os.path.isfile(stale):
        os.remove(stale)
    valid = [r[2] for r in rows if not math.isnan(r[2])]
    say(f"[done] {rid}: train {train_seconds:.0f} s ({record['seconds_per_iteration']:.3f} s/iteration), "
        f"predict {predict_seconds:.0f} s, mean Dice {sum(valid) / max(1, len(valid)):.4f}")
    return [json_path, csv_path]


_git_lock = threading.Lock()


def commit_files(files: list, message: str, attempts: int = 20) -> None:
    """Commit exactly ``files`` (nothing else staged is touched); retries while another git command holds the lock."""
    repo = subprocess.run(["git", "-C", os.path.dirname(files[0]), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with _git_lock:
        for attempt in range(attempts):
            add = subprocess.run(["git", "-C", repo, "add", "--", *files], capture_output=True, text=True)
            done = add.returncode == 0 and subprocess.run(
                ["git", "-C", repo, "commit", "-q", "-m", message, "--only", "--", *files],
                capture_output=True, text=True).returncode == 0
            if done:
                return
            time.sleep(15)
    say(f"[warning] could not commit {files} (git busy?); they stay in the results folder")


# ---------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------
def jobs(args, n_fold_train: int) -> list:
    """(method, fraction, n_labeled, seed) in run order: budget by budget (the primary first), seed by seed."""
    out = []
    for i, (fraction, n_labeled) in enumerate(budgets(args, n_fold_train)):
        for seed in args.seeds:
            if i == 0 and "full" in args.methods:  # the upper bound once per seed, with the first budget
                out.append(("full", 1.0, n_fold_train, seed))
            out += [(m, fraction, n_labeled, seed) for m in args.methods if METHODS[m][1]]
    return out


def run_all(args, env: dict, raw: str, todo: list) -> list:
    """Run the jobs, ``args.parallel`` at a time; return the failures [(run id, error)]."""
    def one(job):
        method, fraction, n_labeled, seed = job
        rid = run_id(method, n_labeled, seed)
        try:
            run_one(args, env, raw, method, fraction, n_labeled, seed)
            return None
        except BenchError as e:
            error = str(e)
        except Exception:  # a bug in scoring or recording: keep the other runs going, report it with the rest
            error = "unexpected error\n" + traceback.format_exc()
        say(f"[FAILED] {rid}: {error}")
        with open(os.path.join(args.runs_dir, rid + ".failed.txt"), "w") as f:
            f.write(error)
        return rid, error

    with ThreadPoolExecutor(args.parallel) as pool:  # child processes do the work; threads only wait for them
        outcomes = list(pool.map(one, todo))
    return [o for o in outcomes if o is not None]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="synthetic")
    p.add_argument("--work", default=None, help="work folder for nnU-Net folders, predictions and logs "
                                                "(default: /tmp/asyco_quality_<benchmark>)")
    p.add_argument("--results", default=None, help="results folder; per-run CSVs go to <results>/quality_runs/ "
                                                   "(default: benchmarks/results/v2/<benchmark>)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(METHODS))
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--fractions", nargs="+", type=float, help="labeled fractions of fold 0's training cases")
    budget.add_argument("--n-labeled", nargs="+", type=int, help="numbers of labeled training cases")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds: each draws the labeled subset and seeds training (default: 0 1 2)")
    p.add_argument("--unseeded", dest="seeded", action="store_false",
                   help="nnU-Net's unseeded training (the seed then only draws the subset)")
    p.add_argument("--iterations", type=int, default=2000, choices=budget_trainers.BUDGETS,
                   help="training iterations of every method (default: 2000)")
    p.add_argument("--dataset-id", type=int, default=None, help="default: 991 synthetic, 992 inia19")
    p.add_argument("--n-train", type=int, default=100, help="synthetic: training cases (fold 0 trains on 80%%)")
    p.add_argument("--n-test", type=int, default=200, help="synthetic: held-out test cases (default: 200)")
    p.add_argument("--n-extra-unlabeled", type=int, default=0, help="synthetic: extra scans in imagesUnlabeled")
    p.add_argument("--data-seed", type=int, default=0, help="synthetic: seed of the dataset (default: 0)")
    p.add_argument("--difficulty", choices=DIFFICULTIES, default="benchmark", help="synthetic generator setting")
    p.add_argument("--num-classes", type=int, default=5, choices=range(1, 8), metavar="{1..7}")
    p.add_argument("--templates", default="/usr/share/mricron/templates", help="inia19: mricron-data's templates")
    p.add_argument("--patch", type=int, default=64, help="2d patch edge of the small plans (default: 64)")
    p.add_argument("--batch-size", type=int, default=4, help="batch size of the small plans (default: 4)")
    p.add_argument("--max-features", type=int, default=16, help="feature cap of the small plans (default: 16)")
    p.add_argument("--default-plans", action="store_true",
                   help="nnU-Net's own 2d plans (nnUNetPlans) instead of the small CPU plans; for GPU runs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--n-proc-da", type=int, default=1, help="nnUNet_n_proc_DA for training (default: 1)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch CPU threads per training (default: 1; 0 keeps nnU-Net's, the core count)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY of every child process (default: PASSIVE; '' keeps the environment's)")
    p.add_argument("--parallel", type=int, default=2, help="trainings at a time (default: 2)")
    p.add_argument("--n-proc", type=int, default=2, help="processes for nnU-Net's planning/preprocessing")
    p.add_argument("--commit", action="store_true", help="git-commit each run's CSV and JSON as soon as it is scored")
    p.add_argument("--setup-only", action="store_true", help="prepare dataset and plans, then stop")
    args = p.parse_args(argv)
    if args.parallel < 1 or args.n_proc < 1 or args.torch_threads < 0 or args.n_proc_da < 0:
        p.error("--parallel and --n-proc need a positive number, --torch-threads and --n-proc-da >= 0")
    if not args.fractions and not args.n_labeled:
        for key, value in DEFAULT_BUDGETS[args.benchmark].items():
            setattr(args, key, value)
    args.dataset_id = args.dataset_id or BENCHMARKS[args.benchmark].dataset_id
    args.work = os.path.abspath(args.work or os.path.join("/tmp", f"asyco_quality_{args.benchmark}"))
    args.results = os.path.abspath(args.results or os.path.join(REPO, "benchmarks", "results", "v2", args.benchmark))
    args.plans = "nnUNetPlans" if args.default_plans else SMALL_PLANS
    args.runs_dir = os.path.join(args.results, "quality_runs")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        check_bench_dependencies()
        check_setup(args)
        args.code_version = code_version()
        env = base_env(args)
        raw = prepare_dataset(args, env, run_cmd, find_cli, args.plans, dataset_setup(args))
        if args.setup_only:
            return 0
        todo = jobs(args, len(fold0_train_cases(env, args)))
        failures = run_all(args, env, raw, todo)
    except (BenchError, RuntimeError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(f"Finished in {(time.time() - t0) / 60:.1f} min; {len(failures)} failed run(s).", flush=True)
    for rid, _ in failures:
        print(f"  {rid}: see {os.path.join(args.runs_dir, rid + '.failed.txt')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
