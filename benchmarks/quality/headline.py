"""The README's headline tables, computed from the committed per-run CSVs of benchmarks/PROTOCOL.md.

Usage: python benchmarks/quality/headline.py [--readme README.md]
Prints the tables; with ``--readme`` it replaces the block between the ``headline:start`` / ``headline:end``
markers of that file, so the README never carries numbers typed by hand.

Two tables, because the protocol gives the primary endpoint's methods more seeds than the others: the primary
endpoints (AsyCo against CPS and against labeled-only) over every seed those three methods share, then every
method over the seeds that all of them (and the fully supervised reference) finished.
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import by_seed, compare, fmt_ci, full_by_seed, label, load_runs, mean_ci, per_run_scores  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "v2")
BENCHMARKS = {"synthetic": "synthetic 2D (5 classes, 200 test cases)",
              "inia19": "INIA19 macaque brain, coronal slices (8 structures, 36 test slices)"}
METHODS = ["labeled_only", "mean_teacher", "cps", "asyco"]
PRIMARY_METHODS = ["labeled_only", "cps", "asyco"]
PRIMARY = [("asyco", "cps"), ("asyco", "labeled_only")]
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def pct(x: float) -> str:
    return f"{x * 100:.1f}"


def common_seeds(scores, methods: list, n_labeled: int) -> tuple:
    """({method: {seed: Dice}} restricted to the seeds every one of ``methods`` finished, those seeds)."""
    per_method = {m: (full_by_seed(scores) if m == "full" else by_seed(scores, m, n_labeled)) for m in methods}
    seeds = set.intersection(*(set(v) for v in per_method.values()))
    return {m: {s: v[s] for s in seeds} for m, v in per_method.items()}, seeds


def mean_cells(common: dict, methods: list) -> list:
    cells = []
    for method in methods:
        mean, ci, n = mean_ci(common[method])
        cells.append(f"{pct(mean)} {fmt_ci(ci, digits=1, signed=False)}" if n else "—")
    return cells


def primary_row(name: str, scores, n_labeled: int):
    common, seeds = common_seeds(scores, PRIMARY_METHODS, n_labeled)
    if not seeds:
        return None
    scores = scores[scores.seed.isin(seeds)]
    cells = mean_cells(common, PRIMARY_METHODS)
    for method, reference in PRIMARY:
        s, _ = compare(scores, method, reference, n_labeled)
        cells.append(f"**{s.mean * 100:+.2f}** {fmt_ci(s.ci95_t)}" if s else "—")
    return f"| {BENCHMARKS[name]} | {len(seeds)} | " + " | ".join(cells) + " |"


def all_methods_row(name: str, scores, n_labeled: int):
    common, seeds = common_seeds(scores, METHODS + ["full"], n_labeled)
    if not seeds:
        return None
    return f"| {BENCHMARKS[name]} | {len(seeds)} | " + " | ".join(mean_cells(common, METHODS + ["full"])) + " |"


def headline(n_labeled: int = 2, results_root: str = RESULTS) -> str:
    scores = {name: per_run_scores(load_runs(os.path.join(results_root, name, "quality_runs"))[0])
              for name in BENCHMARKS if glob.glob(os.path.join(results_root, name, "quality_runs", "*.csv"))}
    primary = [f"**Primary endpoints** ({n_labeled} labeled cases; seeds that labeled-only, CPS and AsyCo all finished)",
               "",
               "| benchmark | seeds | " + " | ".join(label(m) for m in PRIMARY_METHODS)
               + " | AsyCo − CPS | AsyCo − labeled-only |",
               "|---|---|" + "---|" * (len(PRIMARY_METHODS) + len(PRIMARY))]
    primary += [r for r in (primary_row(n, s, n_labeled) for n, s in scores.items()) if r]
    every = ["", f"**All methods** ({n_labeled} labeled cases; seeds that every method finished)", "",
             "| benchmark | seeds | " + " | ".join(label(m) for m in METHODS) + " | fully supervised |",
             "|---|---|" + "---|" * (len(METHODS) + 1)]
    every += [r for r in (all_methods_row(n, s, n_labeled) for n, s in scores.items()) if r]
    return "\n".join(primary + every)


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"The README has no {START} ... {END} block to replace.")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{block}\n{END}{after}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default=None, help="replace the headline block of this file in place")
    p.add_argument("--n-labeled", type=int, default=2, help="the labeled budget of the tables (default: 2)")
    args = p.parse_args(argv)
    block = headline(args.n_labeled)
    print(block)
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        tmp = args.readme + ".tmp"
        with open(tmp, "w") as f:
            f.write(replace_block(text, block))
        os.replace(tmp, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
