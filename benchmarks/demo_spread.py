"""Measure how much the demo's result moves from one seed to the next at its budget, for the demo's table.

Runs ``nnUNetv2_asyco_demo --seed S`` for every seed (each in its own work folder), then writes the per-method SD
of mean Dice over seeds and the SD of AsyCo − labeled-only to ``nnunetv2_asyco/demo/measured_spread.json`` (the
demo reads it) and a table to ``benchmarks/results/demo_spread.md``.

    python benchmarks/demo_spread.py --work /tmp/asyco_demo_spread --seeds 0 1 2 3 4
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SPREAD_JSON = os.path.join(REPO, "nnunetv2_asyco", "demo", "measured_spread.json")
TABLE = os.path.join(REPO, "benchmarks", "results", "demo_spread.md")


def run_seed(work: str, seed: int) -> dict:
    output = os.path.join(work, f"seed_{seed}")
    results = os.path.join(output, "results.json")
    if not os.path.isfile(results):
        from nnunetv2_asyco.demo.commands import find_cli
        subprocess.run([find_cli("nnUNetv2_asyco_demo"), "--output", output, "--seed", str(seed), "--device", "cpu"],
                       check=True)
    with open(results) as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/asyco_demo_spread")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = p.parse_args()
    runs = {s: run_seed(args.work, s) for s in args.seeds}
    methods = [r["method"] for r in next(iter(runs.values()))["results"]]
    dice = {m: {s: next(r["mean_dice"] for r in runs[s]["results"] if r["method"] == m) for s in args.seeds}
            for m in methods}
    gain = [dice["AsyCo"][s] - dice["labeled-only nnU-Net"][s] for s in args.seeds]
    spread = {"seeds": args.seeds, "measured_on": f"{datetime.date.today().isoformat()}, 2-core CPU",
              "sd_mean_dice": {m: statistics.stdev(dice[m].values()) for m in methods},
              "mean_dice": {m: statistics.mean(dice[m].values()) for m in methods},
              "sd_asyco_minus_labeled_only": statistics.stdev(gain),
              "mean_asyco_minus_labeled_only": statistics.mean(gain),
              "minutes_per_run": statistics.mean(r["total_seconds"] / 60 for r in runs.values())}
    with open(SPREAD_JSON + ".part", "w") as f:
        json.dump(spread, f, indent=1)
    os.replace(SPREAD_JSON + ".part", SPREAD_JSON)
    lines = ["# The demo's seed-to-seed spread", "",
             f"`python benchmarks/demo_spread.py --seeds {' '.join(map(str, args.seeds))}`: `nnUNetv2_asyco_demo "
             f"--seed S` on a 2-core CPU; mean Dice over the demo's held-out test cases.", "",
             "| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | SD |",
             "|---|" + "---|" * (len(args.seeds) + 2)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{dice[m][s]:.4f}" for s in args.seeds)
                     + f" | {spread['mean_dice'][m]:.4f} | {spread['sd_mean_dice'][m]:.4f} |")
    lines.append("| AsyCo − labeled-only | " + " | ".join(f"{g:+.4f}" for g in gain)
                 + f" | {spread['mean_asyco_minus_labeled_only']:+.4f} | {spread['sd_asyco_minus_labeled_only']:.4f} |")
    lines += ["", f"Wall time per demo run: {spread['minutes_per_run']:.1f} min (shared machine)."]
    with open(TABLE, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
