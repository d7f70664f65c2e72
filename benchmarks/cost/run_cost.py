"""Cost benchmark: step time, peak memory and inference time of each method, as ratios to nnU-Net.

One run, all methods side by side on the same plans, batch and data:

    python benchmarks/cost/run_cost.py --work /tmp/asyco_cost [--device cpu|cuda] [--steps 20] [--dim 2|3]

``--dim 2`` (default): 2D synthetic data and nnU-Net's ``2d`` configuration. ``--dim 3``: 3D synthetic volumes
and nnU-Net's ``3d_fullres`` configuration (planned by nnU-Net's default planner; as on its default 3d_fullres
plans without a 3d_lowres, batch Dice is off), patch ``--patch`` cubed. In both, the plans copy
``nnUNetPlansCost`` sets the patch, batch and the cap on feature widths (``make_small_plans``).

Each method is measured in its own child process (so peak memory is its own):
the real trainer is built with nnU-Net's ``get_trainer_from_args`` on a
synthetic dataset, runs ``--warmup`` then ``--steps`` training steps
(``train_step``, i.e. everything the method does per iteration, data loading
included), then predicts one preprocessed case with nnU-Net's sliding-window
predictor (``nnUNetPredictor.predict_sliding_window_return_logits``, no
mirroring). Step time is recorded twice: wall time and the process's CPU time
(``time.process_time``), both around ``train_step`` only. On a shared CPU the
wall time swings with the other processes' load; with ``--threads 1`` the CPU
time is the work of one thread, which the load changes far less, so its ratios
are the ones to compare there. Memory: CUDA ``max_memory_allocated`` on a GPU;
on the CPU the peak resident set size (``ru_maxrss``) minus the resident size just before
the first step, i.e. what training itself adds.

Writes benchmarks/results/cost_<device>.md and .json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results")
DATASET_ID = 951
PLANS = "nnUNetPlansCost"
# per dimension: (dataset id, dataset name, nnU-Net configuration)
DATASETS = {2: (951, "AsyCoCost", "2d"), 3: (954, "AsyCoCost3d", "3d_fullres")}
BASELINE = "nnUNetTrainerLabeledOnly"
METHODS = [BASELINE, "nnUNetTrainerMeanTeacher", "nnUNetTrainerCPS", "nnUNetTrainerAsyCo",
           "nnUNetTrainerAsyCo_halfUnlabeled", "nnUNetTrainerAsyCo_lowMemory", "nnUNetTrainerAsyCo_microBatch"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_shape(dim: int, patch: int) -> tuple:
    """Image size of the synthetic cases: 128x128 in 2D; in 3D a volume a quarter wider than the patch (nnU-Net's
    planner then plans a patch about the volume's size, which the plans copy replaces by --patch cubed)."""
    return (128, 128) if dim == 2 else (patch + patch // 4,) * 3


def prepare(work: str, patch: int, batch: int, max_features: int, dim: int = 2) -> dict:
    """Synthetic dataset, nnU-Net planning and a plans copy with the benchmark's patch/batch/widths."""
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[key] = os.path.join(work, key)
        os.makedirs(env[key], exist_ok=True)
    env["nnUNet_extTrainer"] = trainer_dir()
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    dataset_id, name, configuration = DATASETS[dim]
    plans_file = os.path.join(env["nnUNet_preprocessed"], f"Dataset{dataset_id:03d}_{name}", PLANS + ".json")
    if not os.path.isfile(plans_file):
        from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
        from nnunetv2_asyco.demo.small_plans import make_small_plans
        write_synthetic_dataset(env["nnUNet_raw"], dataset_id, name=name, dim=dim, shape=synthetic_shape(dim, patch),
                                n_train=10, n_unlabeled=6)
        from nnunetv2_asyco.demo.commands import find_cli
        subprocess.run([find_cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration,
                        "-np", "1", "-npfp", "1"], env=env, check=True, capture_output=True)
        subprocess.run([find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", str(dataset_id), "-c",
                        configuration, "-np", "1"], env=env, check=True, capture_output=True)
        make_small_plans(dataset_id, "nnUNetPlans", PLANS, patch_size={configuration: (patch,) * dim},
                         batch_size=batch, max_features=max_features)
    return env


def started_trainer(method: str, device, dim: int):
    """nnU-Net's trainer of ``method`` on this script's data and plans, set up to the first training step."""
    from nnunetv2.run.run_training import get_trainer_from_args
    dataset_id, _, configuration = DATASETS[dim]
    trainer = get_trainer_from_args(str(dataset_id), configuration, 0, method, PLANS, device=device)
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    return trainer


def measure_in_child(script: str, argv: list, method: str, env: dict) -> dict:
    """Run ``script ARGV --measure METHOD`` in a fresh process (one method's memory never leaks into the next)
    and return the dict it prints on its ``RESULT`` line."""
    proc = subprocess.run([sys.executable, script, *argv, "--measure", method], env=env, capture_output=True,
                          text=True)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"measuring {method} failed")
    return json.loads(result[0][len("RESULT "):])


def write_results(results: str, name: str, report: str, rows: list) -> None:
    """``<name>.md`` and ``<name>.json`` in ``results``, each written atomically; NaN (not measured) -> null."""
    from nnunetv2_asyco.atomic_files import atomic_write_bytes
    os.makedirs(results, exist_ok=True)
    atomic_write_bytes(report.encode("utf-8"), os.path.join(results, name + ".md"))
    clean = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]
    atomic_write_bytes(json.dumps(clean, indent=1).encode("utf-8"), os.path.join(results, name + ".json"))


def measure(method: str, device_name: str, warmup: int, steps: int, threads: int = 0, dim: int = 2,
            inference: bool = True) -> dict:
    """Runs in the child process: step time, memory and inference time of one method."""
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    load_before = os.getloadavg()[0]
    trainer = started_trainer(method, device, dim)
    rss_before = rss_mb()  # data loaders and network exist; everything training adds comes after this
    for _ in range(warmup):
        trainer.train_step(next(trainer.dataloader_train))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(steps):
        batch = next(trainer.dataloader_train)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    load_after = os.getloadavg()[0]
    memory = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before)

    row = {"method": method, "step_s": float(np.median(times)), "step_cpu_s": float(np.median(cpu_times)),
           "memory_mb": float(memory), "threads": torch.get_num_threads(), "load_avg": [load_before, load_after],
           "inference_s": float("nan"), "steps": steps,
           "unlabeled_batch": getattr(trainer, "dataloader_unlabeled_batch_size", 0), "batch": trainer.batch_size,
           "patch": [int(p) for p in trainer.configuration_manager.patch_size],
           "features": [int(f) for f in trainer.configuration_manager.network_arch_init_kwargs["features_per_stage"]],
           "batch_dice": bool(trainer.configuration_manager.batch_dice),
           "memory_mode": getattr(trainer, "memory_mode_in_use", None)}
    if getattr(trainer, "memory_mode_in_use", None) == "micro_batch":
        row["micro_batch_rows"] = trainer.micro_batch_rows_in_use
    if not inference:
        trainer.on_train_end()
        return row

    # inference through nnU-Net's predictor with what the method ships (ensemble / teacher / single net)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__, None)
    _, val_keys = trainer.do_split()
    data, _, _, _ = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys[:1]).load_case(val_keys[0])
    data = torch.from_numpy(np.asarray(data[:]))
    context = trainer.teacher_weights_in_network() if hasattr(trainer, "teacher_weights_in_network") else None
    infer_times = []
    with torch.no_grad():
        if context is not None:
            context.__enter__()
        for _ in range(4):
            start = time.perf_counter()
            predictor.predict_sliding_window_return_logits(data)
            if device.type == "cuda":
                torch.cuda.synchronize()
            infer_times.append(time.perf_counter() - start)
        if context is not None:
            context.__exit__(None, None, None)
    trainer.on_train_end()
    row["inference_s"] = float(np.median(infer_times[1:]))
    return row


def median_row(runs: list) -> dict:
    """One method's row from its rounds: the median of each measured number."""
    import numpy as np
    row = dict(runs[0])
    for key in ("step_s", "step_cpu_s", "memory_mb", "inference_s"):
        row[key] = float(np.median([r[key] for r in runs]))
    row["rounds"] = len(runs)
    row["load_avg"] = [min(min(r["load_avg"]) for r in runs), max(max(r["load_avg"]) for r in runs)]
    return row


def round_ratios(runs: dict, key: str) -> dict:
    """Each method's ratio to the baseline run of the same round, as (min, max) over the rounds: runs in one
    round are close in time, so their ratio shows how far the load moved the medians."""
    base = runs[BASELINE]
    return {m: (min(r[key] / b[key] for r, b in zip(rs, base)), max(r[key] / b[key] for r, b in zip(rs, base)))
            for m, rs in runs.items()}


def summarize(runs: dict) -> list:
    """One row per method: medians over its rounds, and the range of its per-round step-time ratios."""
    rows = [median_row(r) for r in runs.values()]
    spreads = {key: round_ratios(runs, key) for key in ("step_s", "step_cpu_s")}
    for row in rows:
        row["ratio_range"] = {key: spreads[key][row["method"]] for key in spreads}
    return rows


def ratio(value: float, base: float) -> str:
    return "n/a" if value != value or base != base else f"{value / base:.2f}x"  # NaN: not measured


def write_report(rows: list, device: str, args) -> str:
    base = next(r for r in rows if r["method"] == BASELINE)
    dim, inference = getattr(args, "dim", 2), not getattr(args, "no_inference", False)
    shape = "x".join(map(str, synthetic_shape(dim, args.patch)))
    load = [min(r["load_avg"][0] for r in rows), max(r["load_avg"][1] for r in rows)]
    gpu = ""
    if device == "cuda":
        import torch
        gpu = (f"GPU: {torch.cuda.get_device_name(0)}; nnU-Net's mixed precision (autocast + GradScaler); "
               f"nnUNet_compile={os.environ.get('nnUNet_compile', 'true')}.\n\n")
    lines = [f"# Cost benchmark ({device})", "",
             f"`python benchmarks/cost/run_cost.py --device {device} --steps {args.steps} --patch {args.patch} "
             f"--batch {args.batch} --max-features {args.max_features}"
             + (f" --methods {' '.join(args.methods)}" if list(args.methods) != METHODS else "")
             + (f" --rounds {args.rounds}" if args.rounds > 1 else "")
             + (f" --threads {args.threads}" if args.threads else "")
             + (f" --warmup {args.warmup}" if args.warmup != 3 else "")
             + (f" --dim {dim}" if dim != 2 else "") + (" --no-inference" if not inference else "")
             + (f" --tag {args.tag}" if args.tag else "") + "`", "", gpu +
             f"{dim}D synthetic data, configuration `{DATASETS[dim][2]}`, plans `{PLANS}`: patch "
             + "x".join([str(args.patch)] * dim) + f", batch {args.batch}, features up to {args.max_features}"
             + (f" ({base['features']})" if "features" in base else "")
             + (f", batch Dice {'on' if base['batch_dice'] else 'off'}" if "batch_dice" in base else "")
             + f"; median of {args.steps} steps after {args.warmup} warm-up steps"
             + (f", median over {args.rounds} alternating rounds" if args.rounds > 1 else "")
             + f"; torch threads: {base['threads']}; 1-minute load average {load[0]:.1f}-{load[1]:.1f}; "
             "step time = wall time, step CPU = the process's CPU time (both around train_step only); memory = "
             + ("CUDA max_memory_allocated" if device == "cuda" else "peak RSS increase over the RSS before the first training step (CPU allocator caching makes this coarse)")
             + (f"; inference = nnU-Net sliding-window prediction of one {shape} case without mirroring."
                if inference else "; inference not measured (--no-inference)."), "",
             "| method | labeled + unlabeled per step | step time [s] | step ratio | step CPU [s] | CPU ratio "
             "| memory [MiB] | memory ratio | inference [s] | inference ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = {k: "" for k in ("step_s", "step_cpu_s")}
        if r.get("rounds", 1) > 1:  # the per-round ratios' range beside the ratio of medians
            spread = {k: " ({:.2f}-{:.2f})".format(*r["ratio_range"][k]) for k in spread}
        lines.append(f"| {r['method']} | {r['batch']} + {r['unlabeled_batch']} | {r['step_s']:.3f} | "
                     f"{r['step_s'] / base['step_s']:.2f}x{spread['step_s']} | {r['step_cpu_s']:.3f} | "
                     f"{r['step_cpu_s'] / base['step_cpu_s']:.2f}x{spread['step_cpu_s']} | {r['memory_mb']:.0f} | "
                     f"{r['memory_mb'] / max(base['memory_mb'], 1e-9):.2f}x | {r['inference_s']:.3f} | "
                     f"{ratio(r['inference_s'], base['inference_s'])} |")
    lines += ["", "Bounds: about 4x step time for two networks on twice the samples, 2x inference for the "
              "two-branch ensemble (Mean Teacher ships one network)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/asyco_cost_benchmark")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--max-features", type=int, default=256)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every method this many times, alternating (A B C A B C), and report medians: "
                             "on a shared machine the methods then see the same load")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per measured process (default: torch's); 1 makes the CPU-time column "
                             "the work of one thread, comparable across a loaded machine")
    parser.add_argument("--dim", type=int, default=2, choices=(2, 3),
                        help="2: the 2d configuration on 2D data; 3: 3d_fullres on 3D volumes, patch --patch cubed")
    parser.add_argument("--no-inference", action="store_true",
                        help="skip the sliding-window inference (e.g. for 3D on a CPU, where it costs many steps)")
    parser.add_argument("--tag", default="", help="results go to cost_<device>[_<tag>].md/.json")
    parser.add_argument("--results", default=RESULTS, help="results folder (default: benchmarks/results)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args()

    env = prepare(args.work, args.patch, args.batch, args.max_features, args.dim)
    if args.measure:
        result = measure(args.measure, args.device, args.warmup, args.steps, args.threads, args.dim,
                         not args.no_inference)
        print("RESULT " + json.dumps(result))
        return
    env.update(nnUNet_n_proc_DA="0", nnUNet_compile="false" if args.device == "cpu" else env.get("nnUNet_compile", "true"))
    runs = {m: [] for m in args.methods}
    argv = ["--work", args.work, "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--patch", str(args.patch), "--batch", str(args.batch), "--max-features", str(args.max_features),
            "--threads", str(args.threads), "--dim", str(args.dim)] + (["--no-inference"] if args.no_inference else [])
    for method in [m for _ in range(args.rounds) for m in args.methods]:
        runs[method].append(measure_in_child(__file__, argv, method, env))
        print(runs[method][-1], flush=True)
    rows = summarize(runs)
    report = write_report(rows, args.device, args)
    write_results(args.results, f"cost_{args.device}" + (f"_{args.tag}" if args.tag else ""), report, rows)
    print(report)


if __name__ == "__main__":
    main()
