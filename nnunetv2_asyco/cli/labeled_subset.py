"""``nnUNetv2_asyco_labeled_subset``: the literature's limited-label protocol on one fold."""
import argparse
import sys

from nnunetv2_asyco.data.labeled_subset import LabeledSubsetError, write_labeled_subset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Record which training cases of a fold keep their labels; the fold's other training cases are "
                    "then used as unlabeled data. nnU-Net's validation split is unchanged.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-f", type=int, required=True, help="fold")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("-n", type=int, help="number of labeled cases")
    budget.add_argument("--fraction", type=float, help="fraction of the fold's training cases (e.g. 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (same seed, same subset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing different subset")
    args = parser.parse_args(argv)
    try:
        record = write_labeled_subset(args.d, args.f, n_labeled=args.n, fraction=args.fraction, seed=args.seed,
                                      overwrite=args.overwrite)
    except LabeledSubsetError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    print(f"{record['dataset']} fold {record['fold']}: {record['n_labeled']} labeled, {len(record['unlabeled'])} "
          f"unlabeled of {record['n_fold_train_cases']} training cases (seed {record['seed']}).")
    print("labeled:", " ".join(record["labeled"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
