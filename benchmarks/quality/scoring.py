"""Scoring one run's test-set predictions: Dice (nnU-Net's evaluation) and HD95 (medpy) per case and class.

Empty-mask conventions (per test case and class):
- Dice: nnU-Net's own value; it is NaN when reference and prediction are both
  empty, and NaN values are left out of means (nnU-Net does the same).
- HD95: both empty -> 0.0 (``hd95_note=both_empty``); exactly one empty -> the
  image diagonal in mm, the largest distance possible in the image, as a fixed
  worst-case penalty (``hd95_note=empty_prediction`` / ``empty_reference``);
  otherwise medpy's hd95 with the image spacing.
"""
import json
import math
import os


class ScoringError(RuntimeError):
    pass


def hd95_with_convention(pred, ref, spacing) -> tuple:
    """(hd95 in mm, note); see the module docstring for the empty-mask convention."""
    from medpy.metric.binary import hd95
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0, "both_empty"
    if has_pred != has_ref:
        diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, spacing)))
        return diagonal, "empty_reference" if has_pred else "empty_prediction"
    return float(hd95(pred, ref, voxelspacing=spacing)), ""


def in_plane(array, spacing):
    """A one-slice volume (a 2D case in nnU-Net's 3D format) as a 2D array and its 2D spacing."""
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0], spacing[1:]
    return array, spacing


def score_run(raw: str, pred_folder: str, num_processes: int = 1) -> list:
    """[(case, class name, dice, hd95, note)] for every test case and foreground class."""
    import numpy as np
    import SimpleITK as sitk
    from nnunetv2_asyco.demo.evaluation import evaluate_folder
    with open(os.path.join(raw, "dataset.json")) as f:
        dataset_json = json.load(f)
    ending = dataset_json["file_ending"]
    names = {int(v): k for k, v in dataset_json["labels"].items()}
    result = evaluate_folder(os.path.join(raw, "labelsTs"), pred_folder, dataset_json,
                             os.path.join(pred_folder, "summary.json"), num_processes=num_processes)
    rows = []
    for entry in result["metric_per_case"]:
        case = os.path.basename(entry["reference_file"])[:-len(ending)]
        ref_img = sitk.ReadImage(entry["reference_file"])
        spacing = tuple(reversed(ref_img.GetSpacing()))  # numpy axis order
        ref, spacing = in_plane(sitk.GetArrayFromImage(ref_img), spacing)
        pred, _ = in_plane(sitk.GetArrayFromImage(sitk.ReadImage(entry["prediction_file"])), spacing)
        for label, metrics in entry["metrics"].items():
            label = int(label)
            hd, note = hd95_with_convention(pred == label, ref == label, spacing)
            rows.append((case, names[label], float(metrics["Dice"]), hd, note))
    if not np.isfinite([r[3] for r in rows]).all():
        raise ScoringError(f"non-finite HD95 in {pred_folder}")
    return rows


def training_record(checkpoint: str, iterations_per_epoch: int) -> dict:
    """Loss curves, validation pseudo-Dice per epoch and per-iteration time from the checkpoint's ``logging``."""
    import numpy as np
    import torch
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    logging = ckpt["logging"]
    curves = {k: [float(x) for x in v] for k, v in logging.items()
              if (k.startswith("train_") or k.startswith("val_") or k in ("mean_fg_dice", "ema_fg_dice",
                                                                          "consistency_weight")) and
              all(isinstance(x, (int, float)) or hasattr(x, "item") for x in v)}
    starts, ends = logging.get("epoch_start_timestamps", []), logging.get("epoch_end_timestamps", [])
    durations = [e - s for s, e in zip(starts, ends)]
    steady = durations[1:] if len(durations) > 1 else durations  # first epoch: start-up
    return {"curves": curves, "epoch_seconds": durations,
            "seconds_per_iteration": float(np.median(steady)) / iterations_per_epoch if steady else None}
