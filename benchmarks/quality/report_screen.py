"""Issue 18's screen and confirmation tables: each AsyCo variant against today's AsyCo, paired by seed.

Reads candidate runs from ``--candidates`` (a run_quality.py results folder) and the reference (``asyco``) and the
baselines from ``--reference`` (the main runs, same benchmark, budget and code but for the variant classes), and
writes ``<candidates>/screen.md``: per candidate the per-seed differences to today's AsyCo, their mean, 90% and
95% t intervals, the screen's verdict (benchmarks/PROTOCOL.md, "Defaults screen") and, for context, the
candidate's difference to CPS and to labeled-only;
then each candidate's learning speed against today's AsyCo (validation pseudo-Dice over the first quarter of
training and over all of it).

    python benchmarks/quality/report_screen.py --candidates benchmarks/results/v2/defaults_screen/synthetic \
        --reference benchmarks/results/v2/synthetic
"""
import argparse
import math
import os
import sys

from nnunetv2_asyco.atomic_files import atomic_write_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from paired_stats import paired_differences, paired_summary  # noqa: E402
from report import by_seed, curve_score_by_seed, fmt_ci, load_runs, per_run_scores  # noqa: E402

REFERENCE = "asyco"
MIN_SEEDS_TO_CHANGE = 8


def verdict(s, seeds: int) -> str:
    if s.mean <= 0:
        return "dropped (mean difference not above 0)"
    if seeds < MIN_SEEDS_TO_CHANGE:
        return "survives the screen (needs confirmation: fewer than 8 seeds)"
    if s.ci90_t[0] > 0:
        return "passes the decision rule (90% interval above 0)"
    return "not separable from today's default"


def diff_cell(candidate: dict, other: dict) -> str:
    d = paired_differences(candidate, other)
    if len(d) < 2:
        return "—"
    s = paired_summary(list(d.values()))
    return f"{s.mean * 100:+.2f} {fmt_ci(s.ci95_t)}"


def curve_scores(records: dict, method: str, reference_records: dict, reference: str, n: int, fraction: float):
    """Per-seed pseudo-Dice curve means (report.curve_score_by_seed) of a method and of its reference."""
    return (curve_score_by_seed(records, method, n, fraction),
            curve_score_by_seed(reference_records, reference, n, fraction))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--n-labeled", type=int, default=2)
    args = p.parse_args(argv)
    candidate_runs, candidate_records = load_runs(os.path.join(args.candidates, "quality_runs"))[:2]
    reference_runs, reference_records = load_runs(os.path.join(args.reference, "quality_runs"))[:2]
    candidates, reference = per_run_scores(candidate_runs), per_run_scores(reference_runs)
    n = args.n_labeled
    today = by_seed(reference, REFERENCE, n)
    cps, lower = by_seed(reference, "cps", n), by_seed(reference, "labeled_only", n)
    lines = [f"# Defaults screen: AsyCo variants against today's AsyCo ({n} labeled)", "",
             f"Candidates: `{args.candidates}`; today's AsyCo, CPS and labeled-only: `{args.reference}` (same "
             "benchmark, budget, seeds and code but for the variant classes). Dice differences in points, per seed "
             "and as mean [95% t interval]; the screen drops a candidate whose mean difference is not above 0 and "
             "promotes nothing (benchmarks/PROTOCOL.md).", "",
             "| candidate | seeds | per-seed Δ vs today's AsyCo | mean Δ | 90% CI (t) | 95% CI (t) | verdict | Δ vs CPS "
             "| Δ vs labeled-only |", "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for method in sorted(set(candidates.method)):
        scores = by_seed(candidates, method, n)
        d = paired_differences(scores, today)
        if not d:
            continue
        s = paired_summary(list(d.values()))
        rows.append((s.mean, method, d, s, scores))
    for mean, method, d, s, scores in sorted(rows, key=lambda r: -r[0]):
        per_seed = ", ".join(f"s{k}: {v * 100:+.2f}" for k, v in d.items())
        ci90 = fmt_ci(s.ci90_t) if not math.isnan(s.ci90_t[0]) else "—"
        ci95 = fmt_ci(s.ci95_t) if not math.isnan(s.ci95_t[0]) else "—"
        lines.append(f"| {method} | {s.n} | {per_seed} | **{s.mean * 100:+.2f}** | {ci90} | {ci95} | "
                     f"{verdict(s, s.n)} | {diff_cell(scores, cps)} | {diff_cell(scores, lower)} |")
    lines += ["", f"For reference, today's AsyCo − CPS: {diff_cell(today, cps)}; today's AsyCo − labeled-only: "
                  f"{diff_cell(today, lower)} (seeds {sorted(today)})."]
    lines += ["", "## Learning speed", "",
              "Validation pseudo-Dice (nnU-Net's `mean_fg_dice` per epoch), averaged over the first quarter of "
              "training and over all of it; per-seed difference to today's AsyCo in points (which term slows early "
              "learning). For reference, today's AsyCo − labeled-only over the first quarter: "
              f"{diff_cell(*curve_scores(reference_records, REFERENCE, reference_records, 'labeled_only', n, 0.25))}.", "",
              "| candidate | first quarter: per seed | mean | whole training: per seed | mean |", "|---|---|---|---|---|"]
    for _, method, *_ in sorted(rows, key=lambda r: -r[0]):
        cells = []
        for fraction in (0.25, 1.0):
            d = paired_differences(*curve_scores(candidate_records, method, reference_records, REFERENCE, n,
                                                           fraction))
            cells += [", ".join(f"s{k}: {v * 100:+.1f}" for k, v in d.items()) or "—",
                      f"{sum(d.values()) / len(d) * 100:+.1f}" if d else "—"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    atomic_write_bytes(("\n".join(lines) + "\n").encode("utf-8"), os.path.join(args.candidates, "screen.md"))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
