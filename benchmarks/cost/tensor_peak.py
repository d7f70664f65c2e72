"""Peak live tensor memory of a training step on the CPU: the CPU counterpart of CUDA's max_memory_allocated.

    python benchmarks/cost/tensor_peak.py --dim 3 --patch 48 --batch 2 --max-features 320 --tag memory3d

Peak RSS (``run_cost.py``) also counts what the CPU allocator keeps after tensors are freed (glibc's heap does not
return freed blocks of a few MiB to the system at once), the data augmentation's buffers and the interpreter.
Here each method runs in a fresh process on ``run_cost.py``'s synthetic data and plans (same arguments): after
``--warmup`` steps, one ``train_step`` runs under ``torch.profiler`` with ``profile_memory``; the running sum of
its allocation events is the step's live tensor memory over what existed at its start. Peak = parameters +
gradients + optimizer state held at the start of the step (both branches for AsyCo) + that running sum's maximum.
Writes benchmarks/results/tensor_peak_cpu[_<tag>].md and .json.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run_cost  # noqa: E402


def running_peak(events) -> float:
    """Maximum of the running sum of (time, bytes) allocation (+) and free (-) events, in time order."""
    current = peak = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


def measure(method: str, warmup: int, threads: int, dim: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    trainer = run_cost.started_trainer(method, torch.device("cpu"), dim)
    for _ in range(warmup):
        trainer.train_step(next(trainer.dataloader_train))
    batch = next(trainer.dataloader_train)

    def mib(tensors):
        return sum(t.numel() * t.element_size() for t in tensors) / 2 ** 20
    params = list(trainer.network.parameters())
    held = {"parameters": mib(params), "gradients": mib(p.grad for p in params if p.grad is not None),
            "optimizer_state": mib(v for s in trainer.optimizer.state.values() for v in s.values()
                                   if torch.is_tensor(v))}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer.train_step(batch)
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    step_peak = running_peak(events) / 2 ** 20
    return {"method": method, "memory_mode": getattr(trainer, "memory_mode_in_use", None),
            "micro_batch_rows": getattr(trainer, "micro_batch_rows_in_use", None), "held_mib": held,
            "step_peak_mib": step_peak, "peak_mib": sum(held.values()) + step_peak}


def report(rows: list, args) -> str:
    base = rows[0]
    lines = [f"`python benchmarks/cost/tensor_peak.py --dim {args.dim} --patch {args.patch} --batch {args.batch} "
             f"--max-features {args.max_features} --warmup {args.warmup} --methods {' '.join(args.methods)}"
             + (f" --tag {args.tag}" if args.tag else "") + "`", "",
             "| method | mode | held at step start [MiB] (params + grads + optimizer) | step's own peak [MiB] "
             "| peak live tensors [MiB] | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        mode = r["memory_mode"] or "nnU-Net"
        if mode == "micro_batch":
            mode += f" ({r['micro_batch_rows']} rows per micro-batch)"
        lines.append(f"| {r['method']} | {mode} | {sum(r['held_mib'].values()):.0f} | {r['step_peak_mib']:.0f} | "
                     f"{r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f}x |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/asyco_cost_benchmark")
    parser.add_argument("--dim", type=int, default=2, choices=(2, 3))
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--max-features", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=[run_cost.BASELINE, "nnUNetTrainerAsyCo",
                                                          "nnUNetTrainerAsyCo_microBatch"],
                        help="the first is the baseline of the ratios")
    parser.add_argument("--tag", default="")
    parser.add_argument("--results", default=run_cost.RESULTS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args()

    env = run_cost.prepare(args.work, args.patch, args.batch, args.max_features, args.dim)
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure, args.warmup, args.threads, args.dim)), flush=True)
        return
    env.update(nnUNet_n_proc_DA="0", nnUNet_compile="false")
    argv = ["--work", args.work, "--dim", str(args.dim), "--patch", str(args.patch), "--batch", str(args.batch),
            "--max-features", str(args.max_features), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    rows = []
    for method in args.methods:
        rows.append(run_cost.measure_in_child(__file__, argv, method, env))
        print(rows[-1], flush=True)
    text = report(rows, args)
    run_cost.write_results(args.results, "tensor_peak_cpu" + (f"_{args.tag}" if args.tag else ""), text, rows)
    print(text)


if __name__ == "__main__":
    main()
