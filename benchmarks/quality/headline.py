"""The README's headline table, computed from the committed per-run CSVs of benchmarks/PROTOCOL.md.

Usage: python benchmarks/quality/headline.py [--readme README.md]
Prints the table; with ``--readme`` it replaces the block between the ``headline:start`` / ``headline:end``
markers of that file, so the README never carries numbers typed by hand.
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
PRIMARY = [("asyco", "cps"), ("asyco", "labeled_only")]
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def pct(x: float) -> str:
    return f"{x * 100:.1f}"


def benchmark_rows(name: str, results: str, n_labeled: int):
    """One row; every number over the seeds that every method (and the fully supervised reference) finished."""
    df, _, _, _ = load_runs(os.path.join(results, "quality_runs"))
    scores = per_run_scores(df)
    per_method = {m: by_seed(scores, m, n_labeled) for m in METHODS}
    per_method["full"] = full_by_seed(scores)
    seeds = set.intersection(*(set(v) for v in per_method.values()))
    if not seeds:
        return None  # no seed has every method yet
    common = {m: {s: v[s] for s in seeds} for m, v in per_method.items()}
    scores = scores[scores.seed.isin(seeds)]
    cells = []
    for method in METHODS + ["full"]:
        mean, ci, n = mean_ci(common[method])
        cells.append(f"{pct(mean)} {fmt_ci(ci, digits=1, signed=False)}" if n else "—")
    for method, reference in PRIMARY:
        s, _ = compare(scores, method, reference, n_labeled)
        cells.append(f"**{s.mean * 100:+.2f}** {fmt_ci(s.ci95_t)}" if s else "—")
    return f"| {BENCHMARKS[name]} | {len(seeds)} | " + " | ".join(cells) + " |"


def headline(n_labeled: int = 2, results_root: str = RESULTS) -> str:
    head = ["| benchmark (2 labeled cases) | seeds | " + " | ".join(label(m) for m in METHODS)
            + " | fully supervised | AsyCo − CPS | AsyCo − labeled-only |",
            "|---|---|" + "---|" * (len(METHODS) + 1 + len(PRIMARY))]
    rows = [benchmark_rows(name, os.path.join(results_root, name), n_labeled) for name in BENCHMARKS
            if glob.glob(os.path.join(results_root, name, "quality_runs", "*.csv"))]
    return "\n".join(head + [r for r in rows if r])


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"The README has no {START} ... {END} block to replace.")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{block}\n{END}{after}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default=None, help="replace the headline block of this file in place")
    p.add_argument("--n-labeled", type=int, default=2, help="the labeled budget of the table (default: 2)")
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
