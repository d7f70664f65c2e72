"""nnUNetv2_asyco_predict_qa: nnUNetv2_predict plus per-voxel branch disagreement and per-case review flags.

Writes into -o what ``nnUNetv2_predict`` writes with the same flags (segmentations identical to it, and its
predict_from_raw_data_args.json, dataset.json, plans.json), plus per case ``CASE_disagreement<file ending>``
(``CASE_tta_spread`` with ``--measure tta``), ``qa.csv``, ``qa.md`` and ``qa_figures/CASE.png`` for the
top-ranked cases. Like nnUNetv2_predict it never deletes anything in -o; files of the same name are replaced.
"""
# Only light imports at module level: multiprocessing's spawn re-runs the main script in every worker (preprocessing,
# export), so what this module imports, each worker imports again. nnU-Net, torch and matplotlib come in run().
import argparse
import multiprocessing
import os
import sys

MEASURE_DOC = {
    "branches": "Map: per-voxel Jensen-Shannon divergence (bits, 0..1) between branch A's and branch B's "
                "probabilities, stored x10000. Case score: mean over classes of the mean map inside the "
                "predicted structure.",
    "tta": "Map: per-voxel variance over nnU-Net's mirrored predictions (summed over classes), stored x10000. "
           "Case score: mean over classes of the mean map inside the predicted structure.",
}
TWO_BRANCH_TRAINERS = "nnUNetTrainerAsyCo, nnUNetTrainerCPS and their subclasses (variants, ablations)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", required=True, help="input folder (nnU-Net naming, CASE_0000<file ending>)")
    p.add_argument("-o", required=True, help="output folder (created if missing; existing files are kept)")
    p.add_argument("-d", required=True, help="dataset name or id")
    p.add_argument("-c", required=True, help="configuration")
    p.add_argument("-f", nargs="+", default=(0, 1, 2, 3, 4), help="folds (default 0 1 2 3 4)")
    p.add_argument("-tr", default="nnUNetTrainerAsyCo", help="trainer (default nnUNetTrainerAsyCo)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="default cuda")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding window step size (default 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring (as nnUNetv2_predict)")
    p.add_argument("-npp", type=int, default=3, help="preprocessing processes (default 3)")
    p.add_argument("-nps", type=int, default=3, help="export processes (default 3)")
    p.add_argument("--measure", choices=("branches", "tta"), default="branches",
                   help="branches: disagreement between the two branches (two-branch models only, default); "
                        "tta: variance over nnU-Net's mirrored predictions, any model (the single-network baseline)")
    p.add_argument("--png_top", type=int, default=5, help="review PNGs for this many top-ranked cases (default 5)")
    p.add_argument("--disable_progress_bar", action="store_true")
    return p


def device_for(name: str):
    import torch
    if name == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())  # as nnUNetv2_predict
        return torch.device("cpu")
    if name == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        return torch.device("cuda")
    return torch.device("mps")


def run(args) -> list:
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    from nnunetv2_asyco.qa.figures import write_review_png
    from nnunetv2_asyco.qa.export import MAP_SUFFIX
    from nnunetv2_asyco.qa.predictor import QAPredictor
    from nnunetv2_asyco.atomic_files import atomic_write_bytes
    from nnunetv2_asyco.qa.table import csv_text, markdown_text, ranked

    predictor = QAPredictor(tile_step_size=args.step_size, use_gaussian=True, use_mirroring=not args.disable_tta,
                            perform_everything_on_device=True, device=device_for(args.device),
                            allow_tqdm=not args.disable_progress_bar)
    folds = [f if f == "all" else int(f) for f in args.f]
    predictor.initialize_from_trained_model_folder(get_output_folder(args.d, args.tr, args.p, args.c), folds,
                                                   checkpoint_name=args.chk)
    predictor.enable_qa(args.measure, TWO_BRANCH_TRAINERS)  # refuses unsupported models before -o is touched

    ending = predictor.dataset_json["file_ending"]
    inputs = create_lists_from_splitted_dataset_folder(args.i, ending, num_processes=1)
    if not inputs:
        raise SystemExit(f"No images ending in {ending} in {args.i}")
    os.makedirs(args.o, exist_ok=True)
    results = predictor.predict_from_files(inputs, args.o, save_probabilities=False, overwrite=True,
                                           num_processes_preprocessing=max(1, args.npp),
                                           num_processes_segmentation_export=max(1, args.nps))

    files_of_case = {os.path.basename(files[0])[:-(len(ending) + 5)]: files for files in inputs}
    figures = {}
    if args.png_top > 0:
        os.makedirs(os.path.join(args.o, "qa_figures"), exist_ok=True)
    for r in ranked(results)[:args.png_top]:
        case = r["case"]
        rel = os.path.join("qa_figures", case + ".png")
        write_review_png(files_of_case[case], os.path.join(args.o, case + ending),
                         os.path.join(args.o, case + MAP_SUFFIX[args.measure] + ending), os.path.join(args.o, rel),
                         predictor.plans_manager, f"{case}: rank {r['rank']}, score {r['case_score']:.4g}")
        figures[case] = rel
    atomic_write_bytes(csv_text(results).encode("utf-8"), os.path.join(args.o, "qa.csv"))
    atomic_write_bytes(markdown_text(results, MEASURE_DOC[args.measure], figures).encode("utf-8"),
                       os.path.join(args.o, "qa.md"))
    return results


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    from nnunetv2_asyco.qa.predictor import NotTwoBranchModelError
    try:
        run(args)
    except NotTwoBranchModelError as e:
        print(f"nnUNetv2_asyco_predict_qa: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
