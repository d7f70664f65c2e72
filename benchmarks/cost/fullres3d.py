"""3d_fullres on nnU-Net's default plans: compile time, step time and peak memory of AsyCo's modes vs nnU-Net.

    python benchmarks/cost/fullres3d.py --work /tmp/fullres3d --results OUT_FOLDER [--device cuda]
    python benchmarks/cost/fullres3d.py --work /tmp/fullres3d_dry --results /tmp/dry --dry-run   (CPU, tiny)

Synthetic 3D scans, planned and preprocessed by nnU-Net's default planner (``nnUNetPlans``, 3d_fullres: the patch
and batch nnU-Net picks for its ~8 GB target). Each method runs in its own process with nnU-Net's own settings
(torch.compile and AMP on CUDA): the first step (compile included), warm-up steps, then timed steps; peak memory is
CUDA ``max_memory_allocated`` over all steps. The processes start together so that their compiles overlap (CPU
work), and the timed steps of one process at a time hold a file lock (the GPU is not shared while timing).
The AsyCo default-mode process also logs what the automatic choice (memory_mode "auto") would decide, with its
estimate next to the measured peak. Afterwards ``nnUNetv2_predict`` runs with the AsyCo and nnU-Net checkpoints.
Writes fullres3d.md and fullres3d.json to --results.
"""
import argparse
import fcntl
import json
import os
import subprocess
import sys
import time

DATASET_ID = 953
NAME = "AsyCoFullres3d"
CONFIGURATION = "3d_fullres"
# (row name, trainer, memory mode forced through the environment)
METHODS = [("nnU-Net (labeled only)", "nnUNetTrainerLabeledOnly", None),
           ("AsyCo default mode", "nnUNetTrainerAsyCo", "default"),
           ("AsyCo micro-batch mode", "nnUNetTrainerAsyCo_microBatch", None)]


def nnunet_env(work: str) -> dict:
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[key] = os.path.join(work, key)
        os.makedirs(env[key], exist_ok=True)
    env["nnUNet_extTrainer"] = trainer_dir()
    return env


def prepare(work: str, shape, n_train: int, n_proc: int) -> dict:
    from nnunetv2_asyco.demo.commands import find_cli
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    env = nnunet_env(work)
    plans = os.path.join(env["nnUNet_preprocessed"], f"Dataset{DATASET_ID:03d}_{NAME}", "nnUNetPlans.json")
    if not os.path.isfile(plans):
        write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, name=NAME, dim=3, shape=shape, n_train=n_train,
                                n_test=1, n_unlabeled=n_train)
        for cmd in ([find_cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
                     "-np", str(n_proc), "-npfp", str(n_proc)],
                    [find_cli("nnUNetv2_asyco_preprocess_unlabeled"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
                     "-np", str(n_proc)]):
            subprocess.run(cmd, env=env, check=True, capture_output=True)
    return env


def measure(trainer_name: str, device_name: str, warmup: int, steps: int, lock_file: str) -> dict:
    """In the child process: one method's compile time, step time and peak memory; then its final checkpoint."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, 0, trainer_name, "nnUNetPlans", device=device)
    trainer.num_epochs = 1  # the checkpoint written at the end is a finished 1-epoch training
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    row = {"trainer": trainer_name, "patch": list(trainer.configuration_manager.patch_size),
           "batch": trainer.batch_size, "unlabeled_batch": getattr(trainer, "dataloader_unlabeled_batch_size", 0),
           "memory_mode": getattr(trainer, "memory_mode_in_use", None), "compiled": trainer._do_i_compile()}
    if cuda and hasattr(trainer, "measure_step_memory") and row["memory_mode"] == "default":
        from nnunetv2_asyco.memory_choice import choose_memory_mode
        estimate = trainer.measure_step_memory()
        step_rows = trainer.batch_size + trainer.dataloader_unlabeled_batch_size
        row["auto_choice"] = choose_memory_mode("auto", "cuda", estimate, step_rows, trainer.micro_batch_rows_in_use,
                                                trainer.available_device_memory())[1]
        row["estimated_peak_default_mib"] = estimate.peak(step_rows) / 2 ** 20
        row["estimated_peak_micro_mib"] = estimate.peak(trainer.micro_batch_rows_in_use) / 2 ** 20
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    trainer.train_step(next(trainer.dataloader_train))
    sync()
    row["first_step_s"] = time.perf_counter() - start
    for _ in range(warmup):
        trainer.train_step(next(trainer.dataloader_train))
    sync()
    times = []
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process times its steps at a time
        for _ in range(steps):
            batch = next(trainer.dataloader_train)
            start = time.perf_counter()
            trainer.train_step(batch)
            sync()
            times.append(time.perf_counter() - start)
        fcntl.flock(lock, fcntl.LOCK_UN)
    row["step_s"] = float(np.median(times))
    row["compile_s"] = row["first_step_s"] - row["step_s"]
    row["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else float("nan")
    if cuda:
        row["device"] = torch.cuda.get_device_name(0)
    trainer.on_train_end()  # checkpoint_final.pth for nnUNetv2_predict
    return row


def predict(env: dict, work: str, trainer_name: str, device: str) -> float:
    from nnunetv2_asyco.demo.commands import find_cli
    images = os.path.join(env["nnUNet_raw"], f"Dataset{DATASET_ID:03d}_{NAME}", "imagesTs")
    out = os.path.join(work, "predictions", trainer_name)
    start = time.perf_counter()
    subprocess.run([find_cli("nnUNetv2_predict"), "-i", images, "-o", out, "-d", str(DATASET_ID), "-c",
                    CONFIGURATION, "-f", "0", "-tr", trainer_name, "-chk", "checkpoint_final.pth", "-device", device,
                    "-npp", "1", "-nps", "1", "--disable_tta"], env=env, check=True, capture_output=True, text=True)
    n_written = len([f for f in os.listdir(out) if f.endswith(".nii.gz")])
    if n_written == 0:
        raise RuntimeError(f"nnUNetv2_predict with {trainer_name} wrote no segmentation")
    return time.perf_counter() - start


def report(rows: list, args) -> str:
    base = rows[0]
    first = next((r for r in rows if "device" in r), {})
    lines = [f"# 3d_fullres on nnU-Net's default plans ({first.get('device', args.device)})", "",
             f"`python benchmarks/cost/fullres3d.py --device {args.device} --shape {' '.join(map(str, args.shape))} "
             f"--steps {args.steps}`" + (" (dry run)" if args.dry_run else ""), "",
             f"Synthetic 3D data, nnU-Net's default planner: patch {base['patch']}, batch {base['batch']}; "
             f"torch.compile {'on' if base['compiled'] else 'off'}, "
             f"{'AMP' if args.device == 'cuda' else 'float32'}; median of {args.steps} steps after "
             f"{args.warmup + 1} warm-up steps; peak = CUDA max_memory_allocated.", "",
             "| mode | labeled + unlabeled | compile [s] | step [s] | step ratio | peak [MiB] | peak ratio | "
             "predict [s] |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batch']} + {r['unlabeled_batch']} | {r['compile_s']:.1f} | "
                     f"{r['step_s']:.3f} | {r['step_s'] / base['step_s']:.2f}x | {r['peak_mib']:.0f} | "
                     f"{r['peak_mib'] / base['peak_mib']:.2f}x | {r.get('predict_s', float('nan')):.1f} |")
    for r in rows:
        if "auto_choice" in r:
            lines += ["", f"Automatic choice on this GPU: {r['auto_choice']} (estimate "
                          f"{r['estimated_peak_default_mib']:.0f} MiB default / {r['estimated_peak_micro_mib']:.0f} "
                          f"MiB micro-batch; measured default peak {r['peak_mib']:.0f} MiB)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/asyco_fullres3d")
    parser.add_argument("--results", required=True)
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 192, 192))
    parser.add_argument("--n-train", type=int, default=6)
    parser.add_argument("--n-proc", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="CPU, a tiny volume, 2 steps: checks the script")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child process for one trainer
    args = parser.parse_args()
    if args.dry_run:
        args.device, args.shape, args.n_train, args.n_proc, args.steps, args.warmup = "cpu", (24, 32, 32), 5, 1, 2, 0

    env = prepare(args.work, args.shape, args.n_train, args.n_proc)
    if args.measure:
        os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
        print("RESULT " + json.dumps(measure(args.measure, args.device, args.warmup, args.steps,
                                             os.path.join(args.work, "timing.lock"))), flush=True)
        return
    env["nnUNet_compile"] = "true" if args.device == "cuda" else "false"
    env.setdefault("nnUNet_n_proc_DA", "0" if args.dry_run else "6")
    procs = []
    for name, trainer, mode in METHODS:
        child_env = dict(env, **({"nnUNet_asyco_memory_mode": mode} if mode else {}))
        cmd = [sys.executable, __file__, "--work", args.work, "--results", args.results, "--device", args.device,
               "--shape", *map(str, args.shape), "--n-train", str(args.n_train), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--measure", trainer]
        procs.append((name, trainer, subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True)))
    rows = []
    for name, trainer, proc in procs:
        output = proc.communicate()[0]
        result = [line for line in output.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not result:
            print(output[-4000:])
            raise SystemExit(f"measuring {trainer} failed")
        rows.append(dict(json.loads(result[0][len("RESULT "):]), name=name))
        print(rows[-1], flush=True)
    for row in (rows[0], rows[-1]):  # nnU-Net and AsyCo's memory mode: both go through nnUNetv2_predict
        row["predict_s"] = predict(env, args.work, row["trainer"], args.device)
    os.makedirs(args.results, exist_ok=True)
    text = report(rows, args)
    with open(os.path.join(args.results, "fullres3d.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.results, "fullres3d.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
