"""Aggregate the quality benchmark's per-run CSVs into ``quality.md`` and two plots.

Reads ``<results>/quality_runs/*.csv`` and ``*.json`` (written by
``run_quality.py``) and writes:

- ``<results>/quality.md``: per method and labeled budget, mean +- std over
  seeds of Dice and HD95 per class and of their class mean, the number of
  seeds, gap closure = (method - labeled-only) / (fully supervised -
  labeled-only) on mean Dice (per seed, then mean +- std; n/a where the gap is
  below 0.5 Dice points), the gap itself, and the measured seconds per
  training iteration;
- ``<results>/dice_vs_fraction.png``: mean Dice vs labeled fraction, error
  bars = std over seeds, the fully supervised result as a horizontal band;
- ``<results>/loss_terms.png``: per-epoch training curves of every loss term
  (``train_<term>`` of the checkpoints' logging) of the semi-supervised methods.

Per run, a case's mean Dice is the mean over its foreground classes (NaN, i.e.
class absent in both reference and prediction, left out); the run's score is
the mean over cases; mean +- std is then taken over seeds (std with ddof=1,
"-" with one seed).

    python benchmarks/quality/report.py [--results benchmarks/results] [--notes NOTES.md]
"""
import argparse
import glob
import json
import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

MAIN_LABELS = {"labeled_only": "labeled-only nnU-Net", "mean_teacher": "Mean Teacher", "cps": "CPS",
               "asyco": "AsyCo", "asyco_sharedViews": "AsyCo, shared views (earlier default)",
               "full": "fully supervised nnU-Net"}
# AsyCo with one part switched off, or the alternative for one open choice (defaults: nnUNetTrainerAsyCo)
ABLATION_LABELS = {
    "asyco_noRemap": "w/o remapping (and inter-head)", "asyco_noBranchOutput": "w/o branch-output cons.",
    "asyco_noInterHead": "w/o inter-head cons.", "asyco_noRepresentation": "w/o representation cons.",
    "asyco_cpsBranchOutput": "branch-output: hard (CPS) instead of soft",
    "asyco_cpsBranchOutputWeight1": "branch-output: hard (CPS) at CPS's weight 1",
    "asyco_branchOutputWeight3": "branch-output: soft at weight 3 (not 10)",
    "asyco_branchOutputWeight30": "branch-output: soft at weight 30 (not 10)",
    "asyco_classBalancedBranchOutput": "branch-output: class-balanced (each class equal) at weight 1",
    "asyco_remapPerScale": "remap schedule: per scale", "asyco_remapAlways": "remap schedule: always",
    "asyco_noRemappedSupervision": "remapped paths not supervised",
    "asyco_unlabeledConsistencyOnly": "consistency on unlabeled samples only",
    "asyco_fullResConsistency": "consistency at full resolution only",
    "asyco_representationBottleneck": "representation cons. also on the bottleneck",
    "asyco_consistencyX10": "consistency weights x10 (a_bo = a_ih = 10, a_rep = 1)",  # archived runs (old defaults)
    "asyco_lowConsistencyWeights": "first defaults: consistency weights / 10 (a_bo = a_ih = 1, a_rep = 0.1)",
    "asyco_perturbedViewsCutout": "per-branch perturbed views + cut-out",
    "asyco_perturbedMixedViews": "per-branch perturbed views + mixed (CutMix) views"}
# baselines with one AsyCo option, to tell the option's effect from AsyCo's
CONTROL_LABELS = {"cps_perturbedViews": "CPS with per-branch perturbed views",
                  "cps_perturbedMixedViews": "CPS with per-branch perturbed + mixed views"}
VARIANT_LABELS = {**ABLATION_LABELS, **CONTROL_LABELS}
# The configuration a variant differs from by one choice. The other AsyCo ablations change the AsyCo whose
# branch_views they ran with (ablation_reference).
REFERENCE = {"asyco_sharedViews": "asyco", "asyco_perturbedViewsCutout": "asyco", "asyco_perturbedMixedViews": "asyco",
             "cps_perturbedViews": "cps", "cps_perturbedMixedViews": "cps"}
# main-table row of AsyCo per branch_views; runs recorded before the option existed read the same batch ("shared")
ASYCO_BY_VIEWS = {"shared": "asyco_sharedViews", "perturbed": "asyco"}
LABELS = {**MAIN_LABELS, **{k: "AsyCo " + v for k, v in ABLATION_LABELS.items()}, **CONTROL_LABELS}
ORDER = list(MAIN_LABELS)


def load_runs(runs_dir: str):
    csvs = sorted(glob.glob(os.path.join(runs_dir, "*.csv")))
    if not csvs:
        raise SystemExit(f"No run CSVs in {runs_dir}; run benchmarks/quality/run_quality.py first.")
    df = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    records = {}
    for p in glob.glob(os.path.join(runs_dir, "*.json")):
        if os.path.basename(p) == "setup.json":
            continue
        with open(p) as f:
            r = json.load(f)
        records[(r["method"], r["n_labeled"], r["seed"])] = r
    setup = {}
    if os.path.isfile(os.path.join(runs_dir, "setup.json")):
        with open(os.path.join(runs_dir, "setup.json")) as f:
            setup = json.load(f)
    failed = sorted(os.path.basename(p)[:-len(".failed.txt")] for p in glob.glob(os.path.join(runs_dir, "*.failed.txt")))
    return df, records, setup, failed


def per_run_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run (method, fraction, n_labeled, seed) and metric column: class Dice/HD95 and means."""
    keys = ["method", "fraction", "n_labeled", "seed"]
    per_class = df.groupby(keys + ["class"]).agg(dice=("dice", "mean"), hd95=("hd95", "mean")).reset_index()
    wide = per_class.pivot_table(index=keys, columns="class", values=["dice", "hd95"])
    wide.columns = [f"{m}_{c}" for m, c in wide.columns]
    case_mean = df.groupby(keys + ["case"]).agg(dice=("dice", "mean"), hd95=("hd95", "mean")).reset_index()
    means = case_mean.groupby(keys).agg(dice_mean=("dice", "mean"), hd95_mean=("hd95", "mean"))
    return wide.join(means).reset_index()


def fmt(values, digits: int, scale: float = 1.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


MIN_GAP = 0.005  # gap closure is reported only where full - labeled-only >= 0.5 Dice points


def gaps(scores: pd.DataFrame) -> dict:
    """{n_labeled: [full - labeled-only mean Dice, per seed]}."""
    full = scores[scores.method == "full"].set_index("seed")["dice_mean"]
    out = {}
    for _, r in scores[scores.method == "labeled_only"].iterrows():
        if r.seed in full.index:
            out.setdefault(r.n_labeled, []).append(full[r.seed] - r.dice_mean)
    return out


def gap_closure(scores: pd.DataFrame) -> dict:
    """{(method, n_labeled): [closure per seed]} on mean Dice, against the same seed's bounds.

    NaN where the seed's gap (full - labeled-only) is below MIN_GAP: there is nothing to close, and the
    ratio would only amplify noise (or flip sign when labeled-only beats full supervision).
    """
    out = {}
    full = scores[scores.method == "full"].set_index("seed")["dice_mean"]
    lower = scores[scores.method == "labeled_only"].set_index(["n_labeled", "seed"])["dice_mean"]
    for _, r in scores[~scores.method.isin(["full"])].iterrows():
        key = (r.n_labeled, r.seed)
        if r.seed not in full.index or key not in lower.index:
            continue
        denom = full[r.seed] - lower[key]
        value = (r.dice_mean - lower[key]) / denom if denom >= MIN_GAP else np.nan
        out.setdefault((r.method, r.n_labeled), []).append(value)
    return out


def markdown(scores: pd.DataFrame, records: dict, setup: dict, failed: list, df: pd.DataFrame) -> str:
    classes = sorted(c[len("dice_"):] for c in scores.columns if c.startswith("dice_") and c != "dice_mean")
    closure = gap_closure(scores)
    budgets = sorted(scores[scores.method != "full"].n_labeled.unique())
    n_fold = int(scores[scores.method == "full"].n_labeled.iloc[0]) if (scores.method == "full").any() else None

    def spi(method, n):
        v = [r["seconds_per_iteration"] for (m, nl, _), r in records.items()
             if m == method and nl == n and r.get("seconds_per_iteration")]
        return f"{np.mean(v):.3f}" if v else "n/a"

    devices = {r.get("device", "cpu") for r in records.values()}
    where = ("on a shared 2-core CPU" if devices == {"cpu"} else
             "on a GPU shared by runs trained at the same time (see the runs' notes)" if devices == {"cuda"} else
             f"on mixed devices ({', '.join(sorted(devices))})")
    plans = ("nnU-Net's default plans" if setup.get("plans") == "nnUNetPlans" else "nnU-Net small CPU plans")
    generator = f"{setup['difficulty']} generator, " if "difficulty" in setup else ""
    lines = [f"# Quality benchmark (synthetic 2D, {generator}{plans})", ""]
    seeds = sorted(scores.seed.unique())
    n_cases = df.case.nunique()
    lines += [
        f"- Set-up: {json.dumps(setup)}" if setup else "- Set-up: (no setup.json)",
        f"- Test set: {n_cases} held-out cases (imagesTs/labelsTs), the same for every run.",
        f"- Seeds (labeled-subset draws; training itself is not seeded): {', '.join(map(str, seeds))} "
        f"-> **{len(seeds)} seed(s)**; ± is the std over seeds (ddof=1), shown only with 2+ seeds.",
        f"- Every method: same plans, same iteration budget "
        f"({', '.join(str(i) for i in sorted(df.iterations.unique()))} iterations), same labeled subset per "
        f"(budget, seed); the semi-supervised methods use fold 0's other training cases as unlabeled data.",
        "- Dice: nnU-Net's `compute_metrics_on_folder`; NaN (class absent in reference and prediction) left out.",
        "- HD95 (mm): `medpy.metric.binary.hd95`; both empty -> 0, exactly one empty -> image diagonal "
        "(worst case).",
        "- Gap closure = (method - labeled-only) / (fully supervised - labeled-only), on mean Dice, per seed.",
        "- s/it: median training epoch time / iterations per epoch (includes the epoch's few validation "
        f"iterations and per-epoch overhead), {where}: indicative only.",
        ""]
    if failed:
        lines += [f"- **Failed runs** (see quality_runs/*.failed.txt): {', '.join(failed)}", ""]

    head = (["method", "labeled", "seeds"] + [f"Dice {c}" for c in classes] + ["mean Dice", "gap closure"] +
            [f"HD95 {c}" for c in classes] + ["mean HD95", "s/it"])
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    groups = [(n, m) for n in budgets for m in ORDER if m != "full"] + [(n_fold, "full")]
    for n, m in groups:
        sub = scores[(scores.method == m) & (scores.n_labeled == n)]
        if sub.empty:
            continue
        frac = sub.fraction.iloc[0]
        label = f"{int(n)} ({frac * 100:g}%)" if m != "full" else f"{int(n)} (all)"
        gc = closure.get((m, n))
        cells = [LABELS.get(m, m), label, str(len(sub))]
        cells += [fmt(sub[f"dice_{c}"], 2, 100) for c in classes] + [f"**{fmt(sub.dice_mean, 2, 100)}**"]
        if m in ("labeled_only", "full"):
            cells.append("—")
        else:
            gc_text = fmt(gc, 0, 100) if gc else "n/a"
            n_defined = int(np.sum(~np.isnan(np.asarray(gc, dtype=float)))) if gc else 0
            if gc_text != "n/a":
                gc_text += "%" + (f" ({n_defined} of {len(gc)} seeds)" if n_defined < len(gc) else "")
            cells.append(gc_text)
        cells += [fmt(sub[f"hd95_{c}"], 2) for c in classes] + [fmt(sub.hd95_mean, 2), spi(m, n)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Dice in %, HD95 in mm (voxel spacing 1 mm).", ""]
    for n, g in sorted(gaps(scores).items()):
        g = np.asarray(g) * 100
        lines.append(f"- Gap to close at {int(n)} labeled cases (full − labeled-only, mean Dice points, per seed): "
                     f"{', '.join(f'{x:+.2f}' for x in g)}" +
                     ("" if (g >= MIN_GAP * 100).all() else
                      f" — gap closure is n/a for seeds with a gap below {MIN_GAP * 100:.1f} points."))
    lines += ablation_table(scores, classes, records)
    lines += ["", "## Per-case paired difference to labeled-only (same seed, same test cases)", "",
              "Mean over classes per test case, then method − labeled-only per case: mean ± std over "
              "cases (all seeds pooled) and the number of cases where the method is better. This shows the "
              "spread over test cases only, not over training runs.", "",
              "| method | labeled | Δ mean Dice (pts) | better cases | Δ mean HD95 (mm) |", "|---|---|---|---|---|"]
    case = df.groupby(["method", "n_labeled", "seed", "case"]).agg(dice=("dice", "mean"), hd95=("hd95", "mean"))
    for n in budgets:
        if ("labeled_only", n) not in {(m, nl) for m, nl, _, _ in case.index}:
            continue
        ref = case.xs(("labeled_only", n), level=("method", "n_labeled"))
        for m in ORDER + list(VARIANT_LABELS):
            if m in ("labeled_only", "full") or (m, n) not in {(a, b) for a, b, _, _ in case.index}:
                continue
            d = (case.xs((m, n), level=("method", "n_labeled")) - ref).dropna()
            lines.append(f"| {LABELS.get(m, m)} | {int(n)} | {d.dice.mean() * 100:+.2f} ± {d.dice.std() * 100:.2f} | "
                         f"{int((d.dice > 0).sum())}/{len(d)} | {d.hd95.mean():+.2f} ± {d.hd95.std():.2f} |")
    return "\n".join(lines) + "\n"


def paired_delta(scores: pd.DataFrame, method: str, reference: str, n) -> list:
    """method - reference mean Dice per seed, for the seeds where both ran at budget n."""
    a = scores[(scores.method == method) & (scores.n_labeled == n)].set_index("seed").dice_mean
    b = scores[(scores.method == reference) & (scores.n_labeled == n)].set_index("seed").dice_mean
    common = sorted(set(a.index) & set(b.index))
    return [a[k] - b[k] for k in common]


def ablation_reference(method: str, records: dict):
    """The row a variant is compared with: REFERENCE, or the AsyCo with the branch_views its runs used."""
    if method in REFERENCE or method not in VARIANT_LABELS:
        return REFERENCE.get(method)
    views = {r.get("branch_views") or "shared" for (m, _, _), r in records.items() if m == method}
    if len(views) != 1 or not views <= set(ASYCO_BY_VIEWS):
        raise SystemExit(f"Runs of {method} used branch_views {sorted(views)}: one of {sorted(ASYCO_BY_VIEWS)} is "
                         f"needed to pick the AsyCo they are compared with; keep such runs in separate results folders.")
    return ASYCO_BY_VIEWS[views.pop()]


def ablation_table(scores: pd.DataFrame, classes: list, records: dict) -> list:
    """Markdown lines: AsyCo's default against each ablation, per budget that has ablation runs."""
    budgets = sorted(scores[scores.method.isin(list(VARIANT_LABELS))].n_labeled.unique())
    if not budgets:
        return []
    lines = ["", "## Ablation: AsyCo's parts and the alternatives for its open choices", "",
             "Same plans, subset, budget and test set as the table above. Each variant changes one choice of its "
             "reference; Δ = variant − reference (and − labeled-only) on mean Dice, paired by seed (mean over the "
             "seeds where both ran).", ""]
    head = (["variant", "labeled", "seeds"] + [f"Dice {c}" for c in classes] +
            ["mean Dice", "reference", "Δ vs reference", "Δ vs labeled-only", "mean HD95"])
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for n in budgets:
        for m in ["labeled_only", "asyco", "asyco_sharedViews", "cps"] + list(VARIANT_LABELS):
            sub = scores[(scores.method == m) & (scores.n_labeled == n)]
            if sub.empty:
                continue
            name = "AsyCo (defaults)" if m == "asyco" else VARIANT_LABELS.get(m, MAIN_LABELS.get(m, m))
            reference = ablation_reference(m, records)
            d_ref = paired_delta(scores, m, reference, n) if reference else []
            d_lower = paired_delta(scores, m, "labeled_only", n) if m != "labeled_only" else []
            cells = [name, f"{int(n)}", str(len(sub))] + [fmt(sub[f"dice_{c}"], 2, 100) for c in classes]
            cells += [f"**{fmt(sub.dice_mean, 2, 100)}**", MAIN_LABELS[reference] if reference else "—",
                      f"{np.mean(d_ref) * 100:+.2f}" if d_ref else "—",
                      f"{np.mean(d_lower) * 100:+.2f}" if d_lower else "—", fmt(sub.hd95_mean, 2)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_dice(scores: pd.DataFrame, path: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, m in enumerate([m for m in ORDER if m != "full" and m in set(scores.method)]):
        sub = scores[scores.method == m].groupby("fraction").dice_mean
        mean, std = sub.mean() * 100, sub.std(ddof=1).fillna(0) * 100
        x = mean.index.values * 100 * (1 + 0.015 * (i - 1.5))  # small offset so error bars do not overlap
        ax.errorbar(x, mean.values, yerr=std.values, marker="o", capsize=4, label=LABELS.get(m, m))
    full = scores[scores.method == "full"].dice_mean * 100
    if len(full):
        mu, sd = full.mean(), (full.std(ddof=1) if len(full) > 1 else 0.0)
        ax.axhline(mu, color="k", ls="--", lw=1, label=f"{LABELS['full']} (100% of fold 0)")
        if sd:
            ax.axhspan(mu - sd, mu + sd, color="k", alpha=0.1)
    fractions = sorted(scores[scores.method != "full"].fraction.unique())
    ax.set_xscale("log")  # budgets like 1.25, 5, 10 % spread evenly; the small offsets look alike
    ax.set_xticks([f * 100 for f in fractions])
    ax.set_xticklabels([f"{f * 100:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labeled fraction of fold 0 training cases (%)")
    ax.set_ylabel("mean foreground Dice on test set (%)")
    per_point = scores[scores.method.isin(ORDER)].groupby(["method", "fraction"]).seed.nunique()
    lo, hi = int(per_point.min()), int(per_point.max())
    seeds_text = f"{lo} seed(s) per point" if lo == hi else f"{lo}-{hi} seeds per point"
    ax.set_title(f"Dice vs labeled fraction ({seeds_text}; bars: std over seeds)" if hi > 1
                 else "Dice vs labeled fraction (1 seed: no error bars)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_loss_terms(records: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    semi = [m for m in ORDER if m not in ("labeled_only", "full") and any(k[0] == m for k in records)]
    if not semi:
        return
    # top row: supervised loss and nnU-Net's weighted total; bottom row: the (much smaller) consistency terms
    fig, axes = plt.subplots(2, len(semi), figsize=(4.8 * len(semi), 7.0), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for col, m in enumerate(semi):
        runs = sorted((k, r) for k, r in records.items() if k[0] == m)
        colours = {}
        for i, ((_, n, seed), r) in enumerate(runs):
            ls = styles[i % len(styles)]
            for k, v in r["curves"].items():
                if not k.startswith("train_"):
                    continue
                term = "total (weighted; nnU-Net's train_loss)" if k == "train_losses" else k[len("train_"):]
                colour = "k" if k == "train_losses" else colours.setdefault(term, f"C{len(colours)}")
                ax = axes[0, col] if k in ("train_losses", "train_supervised") else axes[1, col]
                ax.plot(range(1, len(v) + 1), v, color=colour, ls=ls, lw=1.2, label=f"{term} (n={n}, seed {seed})")
        axes[0, col].set_title(LABELS.get(m, m))
        axes[0, col].set_ylabel("supervised / total loss")
        axes[1, col].set_ylabel("consistency terms (unweighted)")
        axes[1, col].set_xlabel("epoch")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Aggregate quality benchmark CSVs into quality.md and plots.")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--notes", default=None, help="a markdown file appended to quality.md as '## Notes'")
    args = p.parse_args(argv)
    runs_dir = os.path.join(args.results, "quality_runs")
    df, records, setup, failed = load_runs(runs_dir)
    scores = per_run_scores(df)
    text = markdown(scores, records, setup, failed, df)
    if args.notes:
        with open(args.notes) as f:
            text += "\n## Notes\n\n" + f.read()
    with open(os.path.join(args.results, "quality.md"), "w") as f:
        f.write(text)
    plot_dice(scores, os.path.join(args.results, "dice_vs_fraction.png"))
    plot_loss_terms(records, os.path.join(args.results, "loss_terms.png"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
