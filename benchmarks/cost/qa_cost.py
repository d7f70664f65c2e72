"""Cost of nnUNetv2_asyco_predict_qa against nnUNetv2_predict on the same tiny AsyCo model and settings.

Builds a synthetic 2D dataset (real nnUNetv2_plan_and_preprocess, test-sized plans), trains the AsyCo smoke
variant with nnUNetv2_train, then runs both commands on the same test images (TTA on, -npp 1 -nps 1),
alternating which goes first, --repeats times. Target: QA <= 1.2 x nnUNetv2_predict.

Two costs per run of a whole command (start-up, imports, worker processes included):
- CPU time: user + sys seconds of the command and all its child processes (getrusage(RUSAGE_CHILDREN) around
  the run; the commands wait for their workers, so the workers' time is counted). On a shared machine this is
  the fair measure: it does not count the time the command waits for a core.
- wall time: what a user waits; on a loaded machine it mostly measures the other jobs.
Ratios are of the medians; the paired ratio is the median over repeats of QA / predict within a repeat.

Then a breakdown of where the extra goes, measured in-process (CPU seconds, best of a few repeats, one case)
and in fresh interpreters for the worker start-up imports: see ``breakdown``.

    python benchmarks/cost/qa_cost.py --work /tmp/qa_cost [--cases 10] [--repeats 4] [--device cpu]

Writes benchmarks/results/qa/cost.md and cost.json.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results", "qa")
DATASET_ID = 961
PLANS = "nnUNetPlansTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"
COMMANDS = ("nnUNetv2_predict", "nnUNetv2_asyco_predict_qa")
PNG_TOP = 5  # the QA command's default --png_top


def command(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd, env) -> dict:
    """Run a console script; its wall seconds, the CPU seconds of it and its children, the load around it."""
    load_before = os.getloadavg()[0]
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.run([command(cmd[0])] + [str(c) for c in cmd[1:]], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"wall": wall, "cpu": cpu, "load": [load_before, os.getloadavg()[0]]}


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


def fresh_import_cpu(statement: str, env: dict, repeats: int = 3) -> float:
    """CPU seconds of a fresh interpreter running ``statement`` (best of ``repeats``), minus an empty one."""
    def once(code):
        cpu = children_cpu_seconds()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        return children_cpu_seconds() - cpu
    return min(once(statement) for _ in range(repeats)) - min(once("pass") for _ in range(repeats))


# Start-up imports, per process. A spawned worker (preprocessing or export) first imports the parent's main script
# (multiprocessing's spawn runs it as __mp_main__), then the module of the function it runs.
MAIN_SCRIPT = {
    "nnUNetv2_predict": "from nnunetv2.inference.predict_from_raw_data import predict_entry_point",
    "nnUNetv2_asyco_predict_qa": "from nnunetv2_asyco.cli.predict_qa import main",
}
START_UP_IMPORTS = {
    "main process start-up imports": {
        "nnUNetv2_predict": MAIN_SCRIPT["nnUNetv2_predict"],
        "nnUNetv2_asyco_predict_qa": MAIN_SCRIPT["nnUNetv2_asyco_predict_qa"] + "; import nnunetv2_asyco.qa.predictor, "
                                     "nnunetv2_asyco.qa.table, nnunetv2_asyco.qa.figures, "
                                     "nnunetv2.utilities.file_path_utilities, nnunetv2.utilities.utils"},
    "preprocessing worker start-up imports": {
        k: v + "; import nnunetv2.inference.data_iterators" for k, v in MAIN_SCRIPT.items()},
    "export worker start-up imports": {
        "nnUNetv2_predict": MAIN_SCRIPT["nnUNetv2_predict"] + "; import nnunetv2.inference.export_prediction",
        "nnUNetv2_asyco_predict_qa": MAIN_SCRIPT["nnUNetv2_asyco_predict_qa"] + "; import nnunetv2_asyco.qa.export"},
}


def times_per_run(phase: str, cases: int) -> int:
    """How often a phase of the breakdown happens in one run of the command."""
    if "per case" in phase:
        return cases
    if "each further figure" in phase:
        return max(0, min(PNG_TOP, cases) - 1)
    return 1  # start-up: once per process (one main process, -npp 1, -nps 1); the first figure


def breakdown(env: dict, images: str, device: str, cases: int, repeats: int = 5) -> dict:
    """CPU seconds of the phases in which the QA command does more (or other) work than nnUNetv2_predict.

    Runs in a child interpreter (``--breakdown_json``), as nnU-Net reads its folders from the environment at import.
    """
    out = os.path.join(os.path.dirname(env["nnUNet_raw"]), "breakdown")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "breakdown.json")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--work", os.path.dirname(env["nnUNet_raw"]),
                    "--device", device, "--breakdown_json", path, "--images", images, "--repeats", str(repeats)],
                   env=env, check=True)
    with open(path) as f:
        phases = json.load(f)
    for phase, statements in START_UP_IMPORTS.items():
        phases[phase] = {k: fresh_import_cpu(v, env) for k, v in statements.items()}
    for phase, v in phases.items():
        v["times_per_run"] = times_per_run(phase, cases)
    return phases


def measure_phases(images: str, device: str, repeats: int) -> dict:
    """In this process: sliding window, hand-over to the export worker, export and review PNG of one case."""
    import glob
    import pickle
    import tempfile

    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunetv2_asyco.cli.predict_qa import device_for
    from nnunetv2_asyco.qa.export import MAP_SUFFIX, export_case
    from nnunetv2_asyco.qa.predictor import QAPredictor

    def cpu_of(fn, n=repeats) -> float:
        best = float("inf")
        for _ in range(n):
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
        return best

    model = get_output_folder(DATASET_ID, TRAINER, PLANS, "2d")
    settings = dict(use_mirroring=True, perform_everything_on_device=True, device=device_for(device), allow_tqdm=False)
    plain, qa = nnUNetPredictor(**settings), QAPredictor(**settings)
    for predictor in (plain, qa):
        predictor.initialize_from_trained_model_folder(model, (0,))
    qa.enable_qa("branches")
    image = sorted(glob.glob(os.path.join(images, "*_0000.nii.gz")))[0]
    preprocessor = plain.configuration_manager.preprocessor_class(verbose=False)
    data, _, properties = preprocessor.run_case([image], None, plain.plans_manager, plain.configuration_manager,
                                                plain.dataset_json)
    data = torch.from_numpy(data)
    logits = plain.predict_logits_from_preprocessed_data(data).cpu().numpy()
    outputs = qa.predict_logits_from_preprocessed_data(data).cpu().numpy()
    tmp = tempfile.mkdtemp(prefix="qa_cost_phases_")
    export_args = (qa.plans_manager, qa.configuration_manager, qa.dataset_json, qa.measure, qa.activation)

    def first_png():  # a fresh interpreter's first figure: matplotlib import and font set-up included
        code = ("import sys; from nnunetv2.utilities.plans_handling.plans_handler import PlansManager; "
                "from nnunetv2_asyco.qa.figures import write_review_png; "
                f"write_review_png([{image!r}], {os.path.join(tmp, 'q.nii.gz')!r}, "
                f"{os.path.join(tmp, 'q' + MAP_SUFFIX['branches'] + '.nii.gz')!r}, {os.path.join(tmp, 'first.png')!r}, "
                f"PlansManager({os.path.join(model, 'plans.json')!r}), 'title')")
        pre = "import sys; from nnunetv2.utilities.plans_handling.plans_handler import PlansManager"
        return fresh_import_cpu(code, dict(os.environ)) - fresh_import_cpu(pre, dict(os.environ))

    from nnunetv2_asyco.qa.figures import write_review_png
    phases = {
        "sliding window per case": {
            "nnUNetv2_predict": cpu_of(lambda: plain.predict_logits_from_preprocessed_data(data)),
            "nnUNetv2_asyco_predict_qa": cpu_of(lambda: qa.predict_logits_from_preprocessed_data(data))},
        "hand-over to the export worker per case (pickle + unpickle)": {
            "nnUNetv2_predict": cpu_of(lambda: pickle.loads(pickle.dumps(logits))),
            "nnUNetv2_asyco_predict_qa": cpu_of(lambda: pickle.loads(pickle.dumps(outputs)))},
        "export per case": {
            "nnUNetv2_predict": cpu_of(lambda: export_prediction_from_logits(
                logits, properties, plain.configuration_manager, plain.plans_manager, plain.dataset_json,
                os.path.join(tmp, "p"), False)),
            "nnUNetv2_asyco_predict_qa": cpu_of(lambda: export_case(outputs, properties, os.path.join(tmp, "q"),
                                                                    *export_args))},
    }
    png = lambda: write_review_png([image], os.path.join(tmp, "q.nii.gz"),  # noqa: E731
                                   os.path.join(tmp, "q" + MAP_SUFFIX["branches"] + ".nii.gz"),
                                   os.path.join(tmp, "q.png"), qa.plans_manager, "title")
    png()
    phases["review PNG, each further figure"] = {"nnUNetv2_predict": 0.0, "nnUNetv2_asyco_predict_qa": cpu_of(png)}
    phases["review PNG, first figure in a fresh process (matplotlib import, fonts)"] = {
        "nnUNetv2_predict": 0.0, "nnUNetv2_asyco_predict_qa": first_png()}
    return phases


def markdown(record: dict, argv_line: str) -> str:
    cpu, wall = record["median_cpu_seconds"], record["median_wall_seconds"]
    lines = ["# Cost of nnUNetv2_asyco_predict_qa", "",
             f"`{argv_line}`", "",
             f"Same tiny AsyCo model ({TRAINER}, 2D, patch 64x64), {record['cases']} test cases of 128x128, TTA on, "
             f"-device {record['device']} -npp 1 -nps 1, --png_top {PNG_TOP} (the default); {record['repeats']} runs per "
             f"command, alternating which goes first; whole command including start-up and worker processes. "
             f"Machine: {record['machine']}, shared with other jobs: load average (1 min) "
             f"{record['load_range'][0]:.1f}-{record['load_range'][1]:.1f} during the runs.", "",
             "| command | median CPU s (user+sys, with children) | CPU s per run | median wall s | wall s per run |",
             "|---|---|---|---|---|"]
    for k in COMMANDS:
        runs = record["runs"][k]
        per_run = {key: ", ".join(f"{r[key]:.1f}" for r in runs) for key in ("cpu", "wall")}
        lines.append(f"| {k} | {cpu[k]:.1f} | {per_run['cpu']} | {wall[k]:.1f} | {per_run['wall']} |")
    lines += ["", f"**CPU-time ratio QA / nnUNetv2_predict: {record['ratio_cpu']:.2f}x** (paired per repeat: median "
                  f"{record['paired_ratio_cpu']:.2f}x); wall-time ratio {record['ratio_wall']:.2f}x (paired "
                  f"{record['paired_ratio_wall']:.2f}x). Target <= 1.2x. Extra CPU per case: "
                  f"{record['extra_cpu_seconds_per_case']:.3f} s.", ""]
    if record.get("before"):
        b = record["before"]
        lines += [f"Against the code before this change ({b['label']}; same script, `{b['command_line']}`, load "
                  f"{b['load_range'][0]:.1f}-{b['load_range'][1]:.1f}):", "",
                  "| code | QA median CPU s | predict median CPU s | CPU ratio (paired) | wall ratio (paired) |",
                  "|---|---|---|---|---|"]
        for label, r in ((b["label"], b), ("this version", record)):
            lines.append(f"| {label} | {r['median_cpu_seconds'][COMMANDS[1]]:.1f} | "
                         f"{r['median_cpu_seconds'][COMMANDS[0]]:.1f} | {r['ratio_cpu']:.2f}x ({r['paired_ratio_cpu']:.2f}x) | "
                         f"{r['ratio_wall']:.2f}x ({r['paired_ratio_wall']:.2f}x) |")
        lines.append("")
    if record.get("breakdown"):
        lines += ["## Where the extra goes", "",
                  "CPU seconds, measured separately (best of several runs in one process; start-up imports in "
                  "fresh interpreters); per case = one of the test cases.", "",
                  "| phase | nnUNetv2_predict | nnUNetv2_asyco_predict_qa | QA - predict | times per run | "
                  "QA - predict per run |", "|---|---|---|---|---|---|"]
        total = 0.0
        for phase, v in record["breakdown"].items():
            a, b, n = v["nnUNetv2_predict"], v["nnUNetv2_asyco_predict_qa"], v["times_per_run"]
            total += (b - a) * n
            lines.append(f"| {phase} | {a:.3f} | {b:.3f} | {b - a:+.3f} | {n} | {(b - a) * n:+.2f} |")
        measured = record["median_cpu_seconds"][COMMANDS[1]] - record["median_cpu_seconds"][COMMANDS[0]]
        lines += [f"| **sum** | | | | | **{total:+.2f}** (whole commands, medians: {measured:+.2f}) |", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no_breakdown", action="store_true", help="only time the two commands")
    p.add_argument("--before_json", help="cost.json of an earlier code version (same script, --no_breakdown), shown "
                                         "beside this run; with --before_label naming that version")
    p.add_argument("--before_label", default="before")
    p.add_argument("--breakdown_json", help=argparse.SUPPRESS)  # internal: the child that measures the phases
    p.add_argument("--images", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.breakdown_json:
        with open(args.breakdown_json, "w") as f:
            json.dump(measure_phases(args.images, args.device, args.repeats), f, indent=1)
        return
    env = environment(args.work)
    images = prepare(env, args.cases)
    common = ["-i", images, "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-tr", TRAINER, "-f", 0,
              "-device", args.device, "-npp", 1, "-nps", 1, "--disable_progress_bar"]
    runs = {k: [] for k in COMMANDS}
    for r in range(args.repeats):
        for name in (COMMANDS if r % 2 == 0 else COMMANDS[::-1]):
            runs[name].append(run([name, "-o", os.path.join(args.work, f"out_{name}_{r}")] + common, env))
            print(name, r, runs[name][-1], flush=True)
    qa, pr = COMMANDS[1], COMMANDS[0]
    median = {key: {k: statistics.median(x[key] for x in v) for k, v in runs.items()} for key in ("cpu", "wall")}
    paired = {key: statistics.median(a[key] / b[key] for a, b in zip(runs[qa], runs[pr])) for key in ("cpu", "wall")}
    loads = [x for v in runs.values() for r in v for x in r["load"]]
    record = {"cases": args.cases, "case_shape": [128, 128], "patch": [64, 64], "tta": True, "device": args.device,
              "repeats": args.repeats, "runs": runs,
              "median_cpu_seconds": median["cpu"], "median_wall_seconds": median["wall"],
              "ratio_cpu": median["cpu"][qa] / median["cpu"][pr], "ratio_wall": median["wall"][qa] / median["wall"][pr],
              "paired_ratio_cpu": paired["cpu"], "paired_ratio_wall": paired["wall"],
              "extra_cpu_seconds_per_case": (median["cpu"][qa] - median["cpu"][pr]) / args.cases,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "load_range": [min(loads), max(loads)],
              "breakdown": None if args.no_breakdown else breakdown(env, images, args.device, args.cases)}
    if args.before_json:
        with open(args.before_json) as f:
            before = json.load(f)
        record["before"] = {"label": args.before_label, **{k: before[k] for k in (
            "command_line", "runs", "median_cpu_seconds", "median_wall_seconds", "ratio_cpu", "ratio_wall",
            "paired_ratio_cpu", "paired_ratio_wall", "load_range")}}
    argv_line = "python benchmarks/cost/qa_cost.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    record["command_line"] = argv_line
    from nnunetv2_asyco.atomic_files import atomic_write_bytes, atomic_write_json
    os.makedirs(RESULTS, exist_ok=True)
    atomic_write_json(record, os.path.join(RESULTS, "cost.json"))
    text = markdown(record, argv_line)
    atomic_write_bytes(text.encode("utf-8"), os.path.join(RESULTS, "cost.md"))
    print(text)


if __name__ == "__main__":
    main()
