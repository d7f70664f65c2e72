"""``nnUNetv2_asyco_preprocess_unlabeled``: preprocess imagesUnlabeled with the dataset's own plans."""
import argparse
import sys

from nnunetv2_asyco.data.ingest_unlabeled import preprocess_unlabeled
from nnunetv2_asyco.data.input_checks import InputCheckError
from nnunetv2_asyco.data.versioned_set import VersionedSetError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Preprocess nnUNet_raw/DatasetXXX/imagesUnlabeled with the dataset's nnU-Net plans into "
                    "nnUNet_preprocessed/DatasetXXX/<data_identifier>_unlabeled (beside the labeled data).")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", nargs="+", default=["3d_fullres"],
                        help="configuration(s), as in nnUNetv2_train (default: 3d_fullres)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-np", type=int, default=2, help="number of worker processes (default: 2)")
    args = parser.parse_args(argv)
    try:
        for configuration in args.c:
            out = preprocess_unlabeled(args.d, configuration, args.p, args.np)
            print(f"Unlabeled cases for {configuration} written to {out}")
    except (InputCheckError, VersionedSetError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
