"""The quality benchmark's report: per-seed scores, paired differences with intervals, power, plots.

Reads ``<results>/quality_runs/*.csv`` and ``*.json`` (written by
``run_quality.py``) and writes into ``<results>``:

- ``quality.md``: per labeled budget, each method's mean Dice over seeds with a
  95% interval, HD95 beside it, gap closure per seed with its interval; paired
  per-seed differences between methods (mean, SD, 95% t and seed-bootstrap
  intervals, 90% t interval of the decision rule, paired t and Wilcoxon
  p-values); the power of the comparison; per-class results as secondary
  endpoints; learning speed from the training logs;
- ``summary.json``: the same numbers for the primary endpoints, machine-readable;
- ``dice_by_budget.png``, ``paired_differences.png``, ``learning_curves.png``.

Unit of replication: the seed (labeled-subset draw + training seed). A run's
score is the mean over test cases of the case's mean Dice over its foreground
classes (a class absent from reference and prediction is left out). Test cases
are never pooled as replicates.

    python benchmarks/quality/report.py --results benchmarks/results/v2/synthetic
"""
import argparse
import glob
import io
import json
import math
import os
import sys

import numpy as np
import pandas as pd

from nnunetv2_asyco.atomic_files import atomic_write_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from paired_stats import (detectable_difference, gap_closure, paired_differences, paired_summary,  # noqa: E402
                          seeds_for_power)

LABELS = {"labeled_only": "labeled-only nnU-Net", "mean_teacher": "Mean Teacher", "cps": "CPS",
          "cps_perturbedViews": "CPS + per-branch views (control)", "asyco": "AsyCo",
          "full": "fully supervised nnU-Net"}
ORDER = list(LABELS)
# (method, reference): the primary endpoints first (PROTOCOL.md)
PRIMARY = (("asyco", "cps"), ("asyco", "labeled_only"))
SECONDARY = (("asyco", "mean_teacher"), ("asyco", "cps_perturbedViews"), ("cps", "labeled_only"),
             ("mean_teacher", "labeled_only"), ("cps_perturbedViews", "cps"))
MIN_GAP = 0.005  # gap closure only where full - labeled-only >= 0.5 Dice points
POWER_DELTA = 1.0  # Dice points the protocol wants to detect


def label(method: str) -> str:
    return LABELS.get(method, method)


def load_runs(runs_dir: str):
    csvs = sorted(glob.glob(os.path.join(runs_dir, "*.csv")))
    if not csvs:
        raise SystemExit(f"No run CSVs in {runs_dir}; run benchmarks/quality/run_quality.py first.")
    df = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    records = {}
    for p in glob.glob(os.path.join(runs_dir, "*.json")):
        if os.path.basename(p) != "setup.json":
            with open(p) as f:
                r = json.load(f)
            records[(r["method"], r["n_labeled"], r["seed"])] = r
    setup = {}
    if os.path.isfile(os.path.join(runs_dir, "setup.json")):
        with open(os.path.join(runs_dir, "setup.json")) as f:
            setup = json.load(f)
    failed = sorted(os.path.basename(p)[:-len(".failed.txt")]
                    for p in glob.glob(os.path.join(runs_dir, "*.failed.txt")))
    return df, records, setup, failed


def per_run_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run (method, n_labeled, seed): mean Dice and HD95 over cases (of case means over classes),
    and per class."""
    keys = ["method", "n_labeled", "seed"]
    case_mean = df.groupby(keys + ["case"]).agg(dice=("dice", "mean"), hd95=("hd95", "mean")).reset_index()
    runs = case_mean.groupby(keys).agg(dice=("dice", "mean"), hd95=("hd95", "mean"), cases=("case", "count"))
    per_class = df.groupby(keys + ["class"]).agg(dice=("dice", "mean")).reset_index()
    wide = per_class.pivot_table(index=keys, columns="class", values="dice")
    wide.columns = [f"dice_{c}" for c in wide.columns]
    return runs.join(wide).reset_index()


def by_seed(scores: pd.DataFrame, method: str, n_labeled, column: str = "dice") -> dict:
    rows = scores[(scores.method == method) & ((scores.n_labeled == n_labeled) if n_labeled is not None else True)]
    return {int(r.seed): float(getattr(r, column)) for r in rows.itertuples()}


def full_by_seed(scores: pd.DataFrame, column: str = "dice") -> dict:
    return by_seed(scores, "full", None, column)


def fmt_ci(ci, scale=100.0, digits=2, signed=True) -> str:
    if ci is None or any(math.isnan(c) for c in ci):
        return "—"
    sign = "+" if signed else ""
    return f"[{ci[0] * scale:{sign}.{digits}f}, {ci[1] * scale:{sign}.{digits}f}]"


def fmt_p(p) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def mean_ci(values: dict):
    v = np.asarray(list(values.values()), dtype=float)
    if len(v) == 0:
        return math.nan, (math.nan, math.nan), 0
    if len(v) == 1:
        return float(v[0]), (math.nan, math.nan), 1
    s = paired_summary(v)  # a one-sample interval is the same computation
    return s.mean, s.ci95_t, len(v)


def budgets_of(scores: pd.DataFrame) -> list:
    return sorted(int(n) for n in scores[scores.method != "full"].n_labeled.unique())


def methods_of(scores: pd.DataFrame) -> list:
    present = set(scores.method)
    return [m for m in ORDER if m in present] + sorted(present - set(ORDER))


def compare(scores: pd.DataFrame, method: str, reference: str, n: int, column: str = "dice"):
    d = paired_differences(by_seed(scores, method, n, column), by_seed(scores, reference, n, column))
    return (paired_summary(list(d.values())), d) if d else (None, d)


# ---------------------------------------------------------------------------------------------------------
def main_table(scores: pd.DataFrame, n: int, fractions: dict) -> list:
    lines = [f"### {n} labeled" + (f" ({fractions[n]})" if fractions.get(n) else ""), "",
             "| method | seeds | mean Dice (%) | 95% CI | mean HD95 (mm) | gap closure | 95% CI (t) | 95% CI (bootstrap) |",
             "|---|---|---|---|---|---|---|---|"]
    full = full_by_seed(scores)
    lower = by_seed(scores, "labeled_only", n)
    for m in methods_of(scores):
        dice = full if m == "full" else by_seed(scores, m, n)
        if not dice:
            continue
        hd = full_by_seed(scores, "hd95") if m == "full" else by_seed(scores, m, n, "hd95")
        mean, ci, k = mean_ci(dice)
        hd_mean = np.mean(list(hd.values()))
        closure = "—", "—", "—"
        if m not in ("full", "labeled_only"):
            g = gap_closure(dice, lower, full, MIN_GAP)
            if len(g) > 1:
                s = paired_summary(list(g.values()))
                closure = f"{s.mean * 100:.0f}%", fmt_ci(s.ci95_t, digits=0), fmt_ci(s.ci95_bootstrap, digits=0)
            elif len(g) == 1:
                closure = f"{list(g.values())[0] * 100:.0f}%", "—", "—"
        lines.append(f"| {label(m)} | {k} | **{mean * 100:.2f}** | {fmt_ci(ci, signed=False)} | {hd_mean:.2f} | "
                     + " | ".join(closure) + " |")
    gaps = paired_differences(full, lower)
    if gaps:
        lines += ["", "Gap to close (fully supervised − labeled-only, Dice points) per seed: "
                  + ", ".join(f"s{s}: {v * 100:+.2f}" for s, v in gaps.items())]
    return lines + [""]


def comparison_table(scores: pd.DataFrame, n: int, pairs) -> list:
    lines = ["| comparison | seeds | mean Δ Dice (pts) | SD | 95% CI (t) | 95% CI (bootstrap) | 90% CI (t) | p (t) "
             "| p (Wilcoxon) | Δ HD95 (mm) [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, reference in pairs:
        s, _ = compare(scores, method, reference, n)
        if s is None:
            continue
        h, _ = compare(scores, method, reference, n, "hd95")
        hd = f"{h.mean:+.2f} {fmt_ci(h.ci95_t, scale=1.0)}" if h is not None else "—"
        sd = f"{s.sd * 100:.2f}" if not math.isnan(s.sd) else "—"
        lines.append(f"| {label(method)} − {label(reference)} | {s.n} | **{s.mean * 100:+.2f}** | {sd} | "
                     f"{fmt_ci(s.ci95_t)} | {fmt_ci(s.ci95_bootstrap)} | {fmt_ci(s.ci90_t)} | {fmt_p(s.p_t)} | "
                     f"{fmt_p(s.p_wilcoxon)} | {hd} |")
    return lines + [""]


def power_lines(scores: pd.DataFrame, n: int) -> list:
    lines = []
    for method, reference in PRIMARY:
        s, _ = compare(scores, method, reference, n)
        if s is None or s.n < 2:
            continue
        sd = s.sd * 100
        need = seeds_for_power(sd, POWER_DELTA)
        lines.append(f"- {label(method)} − {label(reference)}: SD of the paired difference {sd:.2f} points over "
                     f"{s.n} seeds; detecting {POWER_DELTA:g} point with 80% power (two-sided paired t, α = 0.05) "
                     f"needs {need} seeds; with {s.n} seeds the detectable difference is "
                     f"{detectable_difference(sd, s.n):.2f} points.")
    return lines


def per_class_lines(scores: pd.DataFrame, n: int) -> list:
    classes = [c[len("dice_"):] for c in scores.columns if c.startswith("dice_")]
    lines = ["| method | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for m in methods_of(scores):
        rows = scores[(scores.method == m) & ((scores.n_labeled == n) if m != "full" else True)]
        if len(rows) == 0:
            continue
        lines.append(f"| {label(m)} | " + " | ".join(f"{rows[f'dice_{c}'].mean() * 100:.1f}" for c in classes) + " |")
    lines += ["", "| AsyCo − CPS per class | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    cells = []
    for c in classes:
        s, _ = compare(scores, "asyco", "cps", n, f"dice_{c}")
        cells.append("—" if s is None else f"{s.mean * 100:+.1f} {fmt_ci(s.ci95_t, digits=1)}")
    lines.append("| Δ [95% CI (t)] | " + " | ".join(cells) + " |")
    return lines + [""]


def learning_speed_lines(records: dict, scores: pd.DataFrame, n: int) -> list:
    """Validation pseudo-Dice (nnU-Net's mean_fg_dice on the fold's validation patches) at quarters of training."""
    lines = ["| method | 25% | 50% | 75% | 100% of training |", "|---|---|---|---|---|"]
    for m in methods_of(scores):
        curves = [np.asarray(r["curves"].get("mean_fg_dice", []), dtype=float) for (mm, nn, _), r in records.items()
                  if mm == m and (nn == n or m == "full")]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        mean_curve = np.nanmean(np.stack([c[:length] for c in curves]), axis=0)
        points = [mean_curve[max(0, int(round(q * length)) - 1)] * 100 for q in (0.25, 0.5, 0.75, 1.0)]
        lines.append(f"| {label(m)} | " + " | ".join(f"{p:.1f}" for p in points) + " |")
    return lines + [""]


def curve_score_by_seed(records: dict, method: str, n: int, first_fraction: float = 1.0) -> dict:
    """Per seed: the mean of the validation pseudo-Dice over the first ``first_fraction`` of training's epochs
    (1.0: the area under the curve, Dice against iterations, divided by its length)."""
    out = {}
    for (m, nn, seed), r in records.items():
        curve = np.asarray(r["curves"].get("mean_fg_dice", []), dtype=float)
        if m != method or (nn != n and m != "full") or not len(curve):
            continue
        out[int(seed)] = float(np.nanmean(curve[:max(1, int(round(first_fraction * len(curve))))]))
    return out


def learning_speed_comparison_lines(records: dict, n: int) -> list:
    """Paired per-seed differences of how fast methods learn, so learning speed is compared like the end point."""
    lines = ["| comparison | seeds | Δ mean pseudo-Dice over training (pts) [95% CI] | Δ over its first quarter "
             "[95% CI] |", "|---|---|---|---|"]
    for method, reference in PRIMARY + (("cps", "labeled_only"),):
        cells, count = [], 0
        for fraction in (1.0, 0.25):
            d = paired_differences(curve_score_by_seed(records, method, n, fraction),
                                   curve_score_by_seed(records, reference, n, fraction))
            if not d:
                break
            s = paired_summary(list(d.values()))
            cells.append(f"**{s.mean * 100:+.2f}** {fmt_ci(s.ci95_t)}")
            count = s.n
        if len(cells) == 2:
            lines.append(f"| {label(method)} − {label(reference)} | {count} | {cells[0]} | {cells[1]} |")
    return lines + [""]


# ---------------------------------------------------------------------------------------------------------
def save_figure(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(buffer.getvalue(), path)


def plot_dice_by_budget(scores: pd.DataFrame, path: str, title: str) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    budgets = budgets_of(scores)
    for i, m in enumerate(x for x in methods_of(scores) if x in ORDER and x != "full"):
        means, lows, highs, xs = [], [], [], []
        for n in budgets:
            mean, ci, k = mean_ci(by_seed(scores, m, n))
            if k == 0:
                continue
            xs.append(n * (1 + 0.03 * (i - 2)))
            means.append(mean * 100)
            lows.append(0 if math.isnan(ci[0]) else (mean - ci[0]) * 100)
            highs.append(0 if math.isnan(ci[1]) else (ci[1] - mean) * 100)
        ax.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=label(m))
    full = list(full_by_seed(scores).values())
    if full:
        f_mean, f_ci, _ = mean_ci(dict(enumerate(full)))
        ax.axhline(f_mean * 100, color="k", linestyle="--", label=label("full"))
        if not math.isnan(f_ci[0]):
            ax.axhspan(f_ci[0] * 100, f_ci[1] * 100, color="k", alpha=0.1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("mean Dice over test cases (%)")
    ax.set_title(title + " (error bars: 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_paired_differences(scores: pd.DataFrame, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    pairs = PRIMARY + SECONDARY
    budgets = budgets_of(scores)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pairs) * len(budgets) + 1))
    y, ticks, names = 0, [], []
    for n in budgets:
        for method, reference in pairs:
            s, d = compare(scores, method, reference, n)
            if s is None:
                continue
            if not math.isnan(s.ci95_t[0]):
                ax.plot([s.ci95_t[0] * 100, s.ci95_t[1] * 100], [y, y], color="C0")
            ax.plot([v * 100 for v in d.values()], [y] * len(d), "o", color="C0", alpha=0.3, markersize=3)
            ax.plot(s.mean * 100, y, "D", color="C3" if (method, reference) in PRIMARY else "C0")
            ticks.append(y)
            names.append(f"{label(method)} − {label(reference)}, n={n}")
            y -= 1
        y -= 0.5
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("paired difference in mean Dice (points): per seed (dots), mean (diamond), 95% t CI (line)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_learning_curves(records: dict, scores: pd.DataFrame, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    budgets = budgets_of(scores)
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.5 * len(budgets), 3.6), squeeze=False)
    for ax, n in zip(axes[0], budgets):
        for m in methods_of(scores):
            curves = [np.asarray(r["curves"].get("mean_fg_dice", []), dtype=float)
                      for (mm, nn, _), r in records.items() if mm == m and (nn == n or m == "full")]
            curves = [c for c in curves if len(c)]
            if curves:
                length = min(len(c) for c in curves)
                ax.plot(np.arange(1, length + 1), np.nanmean(np.stack([c[:length] for c in curves]), 0) * 100,
                        label=label(m), linestyle="--" if m == "full" else "-")
        ax.set_title(f"{n} labeled", fontsize=9)
        ax.set_xlabel("epoch (50 iterations)")
        ax.set_ylabel("validation pseudo-Dice (%)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title + ": mean over seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
def summary(scores: pd.DataFrame) -> dict:
    out = {"budgets": {}}
    full = full_by_seed(scores)
    for n in budgets_of(scores):
        entry = {}
        for method, reference in PRIMARY + SECONDARY:
            s, d = compare(scores, method, reference, n)
            if s is not None:
                entry[f"{method}-{reference}"] = {**s.as_dict(), "per_seed": d}
        for m in methods_of(scores):
            if m in ("full", "labeled_only"):
                continue
            g = gap_closure(by_seed(scores, m, n), by_seed(scores, "labeled_only", n), full, MIN_GAP)
            if len(g) > 1:
                entry[f"gap_closure_{m}"] = {**paired_summary(list(g.values())).as_dict(), "per_seed": g}
        entry["mean_dice"] = {m: by_seed(scores, m, n) for m in methods_of(scores) if m != "full"}
        out["budgets"][str(n)] = entry
    out["full"] = full
    return out


def write_report(results: str, title: str) -> str:
    runs_dir = os.path.join(results, "quality_runs")
    df, records, setup, failed = load_runs(runs_dir)
    scores = per_run_scores(df)
    fractions = {int(n): (f"{float(f) * 100:g}% of fold 0's training cases" if not pd.isna(f) else "")
                 for n, f in df.groupby("n_labeled").fraction.first().items()}
    budgets = budgets_of(scores)
    seeds = sorted(int(s) for s in scores.seed.unique())
    commits = sorted({r.get("code", {}).get("commit", "?")[:10] for r in records.values()})
    n_cases = int(scores.cases.max())
    lines = [f"# {title}", "",
             f"- Set-up: `{json.dumps(setup)}`",
             f"- Test set: {n_cases} held-out cases, the same for every run. Seeds present: {seeds}. Code: "
             f"{', '.join(commits)}.",
             "- Unit of replication: the seed (labeled-subset draw + `nnUNet_asyco_seed` training seed). A run's "
             "score is the mean over test cases of the case's mean Dice over its foreground classes; methods are "
             "compared by per-seed differences. Test cases are never pooled as replicates.",
             "- Intervals: t intervals over seeds (95%, and the decision rule's 90%), percentile seed-bootstrap "
             "(10,000 resamples); p: paired t-test and Wilcoxon signed-rank over seeds, two-sided.",
             "- Gap closure = (method − labeled-only) / (fully supervised − labeled-only), per seed.",
             "- HD95 (mm): medpy on the 2D slice; both empty → 0, exactly one empty → the image diagonal.", ""]
    if failed:
        lines += [f"- Failed runs (see their .failed.txt): {', '.join(failed)}", ""]
    lines += ["## Primary endpoints (smallest labeled budget)", ""]
    lines += comparison_table(scores, budgets[0], PRIMARY)
    lines += ["### Power", ""] + power_lines(scores, budgets[0]) + [""]
    lines += ["## Scores per labeled budget", ""]
    for n in budgets:
        lines += main_table(scores, n, fractions)
    lines += ["## Paired comparisons (secondary endpoints)", ""]
    for n in budgets:
        lines += [f"### {n} labeled", ""] + comparison_table(scores, n, PRIMARY + SECONDARY)
    lines += ["## Per class (secondary, exploratory)", "",
              "Mean Dice (%) over seeds per class, and AsyCo − CPS per class with a 95% t interval over seeds. "
              "No correction for multiplicity: with k classes and budgets, about 5% of such intervals exclude 0 "
              "by chance; read them as where to look, not as findings.", ""]
    for n in budgets:
        lines += [f"### {n} labeled", ""] + per_class_lines(scores, n)
    lines += ["## Learning speed", "",
              "nnU-Net's validation pseudo-Dice (`mean_fg_dice` of the training log: 2 validation batches of fold 0's "
              "validation cases per epoch), mean over seeds, at quarters of the budget; the full curves are in "
              "`learning_curves.png`.", ""]
    for n in budgets:
        lines += [f"### {n} labeled", ""] + learning_speed_lines(records, scores, n)
        lines += ["Paired per seed (the same seeds' runs of both methods): the mean of the pseudo-Dice curve over all "
                  "of training (Dice against iterations) and over its first quarter.", ""]
        lines += learning_speed_comparison_lines(records, n)
    atomic_write_bytes(("\n".join(lines) + "\n").encode("utf-8"), os.path.join(results, "quality.md"))
    atomic_write_bytes(json.dumps(summary(scores), indent=1, default=float).encode("utf-8"),
                       os.path.join(results, "summary.json"))
    plot_dice_by_budget(scores, os.path.join(results, "dice_by_budget.png"), title)
    plot_paired_differences(scores, os.path.join(results, "paired_differences.png"), title)
    plot_learning_curves(records, scores, os.path.join(results, "learning_curves.png"), title)
    return os.path.join(results, "quality.md")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="a results folder of run_quality.py (holding quality_runs/)")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    title = args.title or f"Quality benchmark: {os.path.basename(os.path.abspath(args.results))}"
    print(write_report(args.results, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
