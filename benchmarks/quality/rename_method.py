"""Rename a method's finished runs in a results folder when its trainer's settings got another name.

Used when a default changes: runs made as ``asyco_consistencyX10`` (weights 10 / 10 / 1) are what
``nnUNetTrainerAsyCo`` is now, so they become ``asyco``. Scores are untouched; each run's JSON records the old
names under ``renamed_from``. Refuses to overwrite existing runs of the new name.

    python benchmarks/quality/rename_method.py --results benchmarks/results asyco asyco_lowConsistencyWeights \\
        nnUNetTrainerAsyCo_lowConsistencyWeights
"""
import argparse
import csv
import glob
import json
import os


def rename(runs_dir: str, old: str, new: str, new_trainer_base: str) -> list:
    csvs = sorted(glob.glob(os.path.join(runs_dir, f"{old}__*.csv")))
    moves = []
    for path in csvs:
        rid = os.path.basename(path)[:-len(".csv")]
        new_rid = new + rid[len(old):]
        if os.path.exists(os.path.join(runs_dir, new_rid + ".csv")):
            raise SystemExit(f"{new_rid}.csv exists already; nothing renamed.")
        moves.append((rid, new_rid))
    for rid, new_rid in moves:
        with open(os.path.join(runs_dir, rid + ".csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        budget = rows[0]["trainer"].rsplit("_bench", 1)[1]
        for r in rows:
            r["method"], r["trainer"] = new, f"{new_trainer_base}_bench{budget}"
        with open(os.path.join(runs_dir, new_rid + ".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        json_path = os.path.join(runs_dir, rid + ".json")
        with open(json_path) as f:
            record = json.load(f)
        record["renamed_from"] = {"method": record["method"], "trainer": record["trainer"]}
        record["method"], record["trainer"] = new, f"{new_trainer_base}_bench{budget}"
        with open(os.path.join(runs_dir, new_rid + ".json"), "w") as f:
            json.dump(record, f, indent=1)
        os.remove(os.path.join(runs_dir, rid + ".csv"))
        os.remove(json_path)
    return moves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="results folder holding quality_runs/")
    p.add_argument("old_method")
    p.add_argument("new_method")
    p.add_argument("new_trainer_base", help="trainer class of the new name, without _bench<N>")
    args = p.parse_args()
    for rid, new_rid in rename(os.path.join(args.results, "quality_runs"), args.old_method, args.new_method,
                               args.new_trainer_base):
        print(f"{rid} -> {new_rid}")


if __name__ == "__main__":
    main()
