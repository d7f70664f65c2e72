"""Does the QA case score find the badly segmented cases? Branch disagreement vs nnU-Net's TTA spread.

For each trained model (a run: nnU-Net results folder + dataset + trainer + plans + configuration) and each
measure, runs ``nnUNetv2_asyco_predict_qa`` on a test set with ground truth, scores every case (mean Dice over
foreground classes against the reference; a class absent from both counts 1), and reports per measure:

- Spearman correlation between the case score and 1 - Dice,
- AUROC of the case score for detecting the worst 10% and the worst 20% of cases (lowest Dice),

each with a 90% bootstrap interval, and the paired difference branches - tta on the same cases. With several
runs the statistic is the mean over runs; runs with the same trainer count as seeds of one method: the bootstrap
draws the test cases with replacement (one draw for all runs when they share the test cases) and the seeds with
replacement within each method. With more than one trainer, the report has a table per trainer and one over all
runs. Writes ``qa_detection{--suffix}.md``, ``qa_detection{--suffix}.json`` and ``qa_scatter{--suffix}.png`` to
--out.

    python benchmarks/quality/qa_evaluation.py --run RESULTS_ROOT DATASET TRAINER PLANS CONFIG [--run ...] \
        --images imagesTs --labels labelsTs --work /tmp/qa_eval --out benchmarks/results/qa [--suffix _name] \
        [--jobs 1] [--reuse]
"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_TRAINER_DIR = os.path.join(HERE, "trainers")
FRACTIONS = (0.1, 0.2)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def worst(dice: np.ndarray, fraction: float) -> np.ndarray:
    """The ceil(fraction * n) cases of lowest Dice (ties broken by order, stable)."""
    k = max(1, int(math.ceil(fraction * len(dice))))
    mask = np.zeros(len(dice), bool)
    mask[np.argsort(dice, kind="stable")[:k]] = True
    return mask


def statistics(score: np.ndarray, dice: np.ndarray) -> Dict[str, float]:
    out = {"spearman": spearman(score, 1 - dice)}
    for f in FRACTIONS:
        out[f"auroc_worst{int(f * 100)}"] = auroc(score, worst(dice, f))
    return out


def case_dice(pred: np.ndarray, ref: np.ndarray, labels: List[int], both_empty: str = "skip") -> float:
    """Mean Dice over foreground classes. A class absent from reference and prediction is left out (``skip``, the
    benchmark's scoring, as nnU-Net's) or counts 1 (``one``); a case with every class absent from both scores 1."""
    values = []
    for label in labels:
        p, r = pred == label, ref == label
        denom = p.sum() + r.sum()
        if denom == 0:
            if both_empty == "one":
                values.append(1.0)
            continue
        values.append(2.0 * np.logical_and(p, r).sum() / denom)
    return float(np.mean(values)) if values else 1.0


def run_qa(run, measure: str, images: str, out: str, args) -> None:
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    root, dataset, trainer, plans, config = run
    env = dict(os.environ, nnUNet_results=root, nnUNet_compile="false", OMP_WAIT_POLICY="PASSIVE",
               nnUNet_extTrainer=os.pathsep.join(p for p in (BENCH_TRAINER_DIR, trainer_dir(),
                                                             os.environ.get("nnUNet_extTrainer")) if p),
               PYTHONPATH=os.pathsep.join(p for p in (BENCH_TRAINER_DIR, os.environ.get("PYTHONPATH")) if p))
    env.setdefault("nnUNet_raw", out)
    env.setdefault("nnUNet_preprocessed", out)
    cmd = [os.path.join(os.path.dirname(sys.executable), "nnUNetv2_asyco_predict_qa"), "-i", images, "-o", out,
           "-d", dataset, "-tr", trainer, "-p", plans, "-c", config, "-f", args.fold, "-chk", args.chk,
           "-device", args.device, "-npp", "1", "-nps", "1", "--measure", measure, "--png_top", "3",
           "--disable_progress_bar"]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def draw(cases: List[str], n: int, seed: int) -> set:
    return set(np.random.default_rng(seed).choice(cases, min(n, len(cases)), replace=False))


def case_subset(images: str, folder: str, n: int, seed: int = 0, held_out_from: int = -1) -> str:
    """A folder of symbolic links to a seeded random subset of n cases (all channels) of ``images``; with
    ``held_out_from`` S, drawn only among the cases that the subset of seed S left out."""
    files = sorted(os.listdir(images))
    cases = sorted({f.rsplit("_", 1)[0] for f in files})
    if held_out_from >= 0:
        cases = sorted(set(cases) - draw(cases, n, held_out_from))
    chosen = draw(cases, n, seed)
    os.makedirs(folder, exist_ok=True)
    for f in files:
        link = os.path.join(folder, f)
        if f.rsplit("_", 1)[0] in chosen and not os.path.lexists(link):
            os.symlink(os.path.join(os.path.abspath(images), f), link)
    return folder


# case-level scores read back from qa.csv: the command's own ranking score, and two others from its columns
SCORES = {
    "case_score": lambda rows: float(rows[0]["case_score"]),
    "mean_inside": lambda rows: float(np.nanmean([float(r["mean_disagreement_inside"] or "nan") for r in rows]
                                                 or [float("nan")])),
    "one_minus_dice_ab": lambda rows: 1.0 - float(np.mean([float(r["dice_a_b"]) for r in rows]))
    if rows[0]["dice_a_b"] != "" else float("nan"),
}


def collect(out: str, labels_dir: str, ending: str, labels: List[int], both_empty: str = "skip"):
    """Cases, {score name: per-case values} (scores a measure lacks are left out), per-case Dice."""
    by_case = {}
    with open(os.path.join(out, "qa.csv")) as f:
        for row in csv.DictReader(f):
            by_case.setdefault(row["case"], []).append(row)
    cases = sorted(by_case)
    scores = {}
    for name, fn in SCORES.items():
        values = np.array([fn(by_case[c]) for c in cases])
        if not np.all(np.isnan(values)):
            scores[name] = np.nan_to_num(values, nan=1.0)  # nothing predicted at all: review first
    dice = [case_dice(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out, c + ending))),
                      sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(labels_dir, c + ending))), labels,
                      both_empty)
            for c in cases]
    return cases, scores, np.array(dice)


def bootstrap(per_run, n: int, seed: int = 0, groups=None, shared_cases: bool = False):
    """per_run: [(score_by_measure dict, dice)]. Returns {measure or 'difference': {stat: (point, lo, hi)}}.

    The statistic is the mean over runs of the per-run statistic. Each resample draws cases with replacement:
    with ``shared_cases`` (all runs predicted the same test cases) one draw of case indices is used for every run,
    so that a hard case stays hard across seeds; otherwise each run is resampled on its own. With ``groups`` (a
    label per run, e.g. the trainer: runs with the same label are seeds of one method), the runs are also
    resampled with replacement within each group, so the interval covers seeds as well as cases."""
    rng = np.random.default_rng(seed)
    measures = list(per_run[0][0])
    groups = list(groups) if groups is not None else [None] * len(per_run)
    members = {g: [i for i, h in enumerate(groups) if h == g] for g in dict.fromkeys(groups)}
    if shared_cases:
        assert len({len(d) for _, d in per_run}) == 1, "shared_cases needs the same cases in every run"

    def stats_of(runs, index_per_run):
        res = {}
        for m in measures:
            vals = [statistics(per_run[r][0][m][i], per_run[r][1][i]) for r, i in zip(runs, index_per_run)]
            res[m] = {k: float(np.nanmean([v[k] for v in vals])) for k in vals[0]}
        for a in measures:  # paired difference where both measures have the same score
            if a.startswith("branches: ") and "tta: " + a[len("branches: "):] in res:
                b = "tta: " + a[len("branches: "):]
                res[f"{a} - {b}"] = {k: res[a][k] - res[b][k] for k in res[a]}
        return res

    point = stats_of(range(len(per_run)), [np.arange(len(d)) for _, d in per_run])
    draws = []
    for _ in range(n):
        runs = [int(r) for g in members for r in
                (rng.choice(members[g], len(members[g])) if groups[0] is not None else members[g])]
        if shared_cases:
            idx = rng.integers(0, len(per_run[0][1]), len(per_run[0][1]))
            index = [idx] * len(runs)
        else:
            index = [rng.integers(0, len(per_run[r][1]), len(per_run[r][1])) for r in runs]
        draws.append(stats_of(runs, index))
    table = {}
    for key, stats in point.items():
        table[key] = {}
        for stat, value in stats.items():
            samples = np.array([d[key][stat] for d in draws])
            samples = samples[~np.isnan(samples)]
            lo, hi = (np.percentile(samples, [5, 95]) if len(samples) else (float("nan"), float("nan")))
            table[key][stat] = (value, float(lo), float(hi))
    return table


def scatter(per_run, path: str, names=None) -> None:
    """1 - Dice against each case score; one colour per method (``names``: a label per run, e.g. the trainer)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(per_run))]
    colours = {n: f"C{k}" for k, n in enumerate(dict.fromkeys(names))}
    measures = [m for m in per_run[0][0] if m.endswith("case_score") or m.endswith("mean_inside")]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.5 * len(measures), 4.2), squeeze=False)
    for ax, m in zip(axes[0], measures):
        seen = set()
        for (scores, dice), name in zip(per_run, names):
            ax.scatter(scores[m], 1 - dice, s=8, alpha=0.5, color=colours[name],
                       label=None if name in seen else name)
            seen.add(name)
        ax.set_xlabel(m)
        ax.set_ylabel("1 - Dice (ground truth)")
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_title(m)
    if len(colours) > 1:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def dice_summary(dices) -> Dict[str, float]:
    """Mean over runs of: mean and median case Dice, and the highest Dice among the worst 10% / 20% of cases."""
    out = {"mean_dice": float(np.mean([np.mean(d) for d in dices])),
           "median_dice": float(np.mean([np.median(d) for d in dices]))}
    for f in FRACTIONS:
        out[f"worst{int(f * 100)}_max_dice"] = float(np.mean([d[worst(d, f)].max() for d in dices]))
    return out


def markdown(sections, runs, n_cases, n_boot, resampled_seeds=False, both_empty="skip", exclude=None) -> str:
    """sections: [(title, table, dice summary)]."""
    excluded = (f" (leaving out the {exclude[0]} cases of the subset of seed {exclude[1]})" if exclude else "")
    stats = ["spearman"] + [f"auroc_worst{int(f * 100)}" for f in FRACTIONS]
    how = ("90% bootstrap interval over cases and seeds (" + str(n_boot) + " resamples: the test cases drawn with "
           "replacement, the same draw for every run, and the runs (seeds) drawn with replacement within each "
           "method; the statistic is the mean over runs)") if resampled_seeds else (
        f"90% bootstrap interval over cases ({n_boot} resamples; with several runs, the mean over runs)")
    lines = ["# QA case score as an error detector", "",
             f"Runs: {', '.join('/'.join(r[2:4]) + ' @ ' + os.path.basename(r[0].rstrip('/')) for r in runs)}; "
             f"{n_cases} test cases per run{excluded}. Scores from `nnUNetv2_asyco_predict_qa`'s qa.csv: `case_score` (its "
             f"ranking; since commit 0f76ddc the same as mean_inside, before it the summed map / predicted "
             f"foreground voxels), `mean_inside` (mean over classes of the mean map "
             f"inside the predicted structure), `one_minus_dice_ab` (1 - mean Dice between the branches' "
             f"segmentations; branches only). Error = 1 - mean foreground Dice against the reference (a class "
             f"absent from both reference and prediction "
             f"{'left out, as in the benchmark' if both_empty == 'skip' else 'counted as Dice 1'}); the worst "
             f"10% / 20% are taken per run. Point estimate, and {how}."]
    for title, table, summary in sections:
        if len(sections) > 1 or title:
            lines += ["", f"## {title}"]
        lines += ["", "Case Dice (mean over runs): mean {mean_dice:.3f}, median {median_dice:.3f}; the worst 10% "
                  "have Dice <= {worst10_max_dice:.3f}, the worst 20% <= {worst20_max_dice:.3f}.".format(**summary),
                  "", "| measure | " + " | ".join(stats) + " |", "|---" * (len(stats) + 1) + "|"]
        for key, row in table.items():
            cells = [f"{row[s][0]:.3f} [{row[s][1]:.3f}, {row[s][2]:.3f}]" for s in stats]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs=5, action="append", required=True,
                   metavar=("RESULTS_ROOT", "DATASET", "TRAINER", "PLANS", "CONFIG"))
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--work", required=True, help="prediction folders (one per run and measure)")
    p.add_argument("--out", required=True, help="where the table, json and plot go")
    p.add_argument("--suffix", default="",
                   help="appended to the output names: qa_detection{suffix}.md/.json, qa_scatter{suffix}.png")
    p.add_argument("--measures", nargs="+", default=["branches", "tta"])
    p.add_argument("--jobs", type=int, default=0,
                   help="prediction commands at a time (0: the measures of one run side by side; 1: one at a time)")
    p.add_argument("--fold", default="0")
    p.add_argument("--chk", default="checkpoint_final.pth")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--both_empty", choices=["skip", "one"], default="skip",
                   help="a class absent from reference and prediction of a case: left out of its mean Dice (skip, "
                        "as the benchmark's scoring) or counted as Dice 1 (one; the default before; no difference "
                        "where every test case contains every class)")
    p.add_argument("--reuse", action="store_true", help="reuse prediction folders that already hold a qa.csv")
    p.add_argument("--max_cases", type=int, default=0,
                   help="evaluate a seeded random subset of this many test cases (0: all); for slow machines")
    p.add_argument("--subset_seed", type=int, default=0)
    p.add_argument("--held_out_from", type=int, default=-1,
                   help="draw the subset among the cases the subset of this seed left out (a fresh test of a choice "
                        "made on that subset)")
    p.add_argument("--exclude_subset", type=int, nargs=2, metavar=("N", "SEED"),
                   help="leave out of the statistics the cases of the --max_cases N --subset_seed SEED subset (e.g. "
                        "the cases a choice was made on); predictions are still made for all")
    args = p.parse_args(argv)
    if args.max_cases:
        args.images = case_subset(args.images, os.path.join(args.work, "images_subset"), args.max_cases,
                                  args.subset_seed, args.held_out_from)

    per_run, case_lists = [], []
    for i, run in enumerate(args.run):
        ds_json = json.load(open(os.path.join(args.labels, "..", "dataset.json")))
        labels = sorted(v for v in ds_json["labels"].values() if isinstance(v, int) and v > 0)
        scores, dice, cases = {}, None, None
        outs = {m: os.path.join(args.work, f"run{i}_{m}") for m in args.measures}
        todo = [m for m in args.measures if not (args.reuse and os.path.isfile(os.path.join(outs[m], "qa.csv")))]
        with ThreadPoolExecutor(args.jobs or len(todo) or 1) as pool:  # the measures of one run side by side
            list(pool.map(lambda m: run_qa(run, m, args.images, outs[m], args), todo))
        for m in args.measures:
            out = outs[m]
            cases_m, by_score, dice_m = collect(out, args.labels, ds_json["file_ending"], labels, args.both_empty)
            scores.update({f"{m}: {name}": v for name, v in by_score.items()})
            if cases is not None:
                assert cases_m == cases and np.array_equal(dice_m, dice), "measures disagree on the segmentation"
            cases, dice = cases_m, dice_m
        if args.exclude_subset:
            excluded = draw(cases, *args.exclude_subset)
            keep = np.array([c not in excluded for c in cases])
            scores = {k: v[keep] for k, v in scores.items()}
            dice, cases = dice[keep], [c for c, k in zip(cases, keep) if k]
        per_run.append((scores, dice))
        case_lists.append(cases)
    shared = all(c == case_lists[0] for c in case_lists)
    trainers = [r[2] for r in args.run]
    by_trainer = {t: [i for i, u in enumerate(trainers) if u == t] for t in dict.fromkeys(trainers)}
    resampled_seeds = any(len(v) > 1 for v in by_trainer.values())
    sections = []
    if len(by_trainer) > 1:
        for t, idx in by_trainer.items():
            sub = [per_run[i] for i in idx]
            sections.append((f"{t} ({len(idx)} run{'s' if len(idx) > 1 else ''})",
                             bootstrap(sub, args.bootstrap, groups=[t] * len(idx), shared_cases=shared),
                             dice_summary([d for _, d in sub])))
    title = ("all runs (mean over " + ", ".join(f"{len(v)} {t}" for t, v in by_trainer.items()) + ")"
             if len(by_trainer) > 1 else "")
    table = bootstrap(per_run, args.bootstrap, groups=trainers, shared_cases=shared)
    sections.append((title, table, dice_summary([d for _, d in per_run])))
    text = markdown(sections, args.run, len(case_lists[0]), args.bootstrap, resampled_seeds, args.both_empty,
                    args.exclude_subset)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"qa_detection{args.suffix}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, f"qa_detection{args.suffix}.json"), "w") as f:
        json.dump({"runs": args.run, "both_empty": args.both_empty, "exclude_subset": args.exclude_subset, "table": table,
                   "by_trainer": {s[0]: {"table": s[1], "dice": s[2]} for s in sections[:-1]},
                   "dice": sections[-1][2],
                   "per_case": [{"run": os.path.basename(r[0].rstrip("/")), "trainer": r[2], "cases": c,
                                 "dice": d.tolist(), **{m: s[m].tolist() for m in s}}
                                for r, c, (s, d) in zip(args.run, case_lists, per_run)]}, f, indent=1)
    scatter(per_run, os.path.join(args.out, f"qa_scatter{args.suffix}.png"),
            [t.replace("nnUNetTrainer", "").replace("_bench2000", "") for t in trainers])
    print(text)


if __name__ == "__main__":
    main()
