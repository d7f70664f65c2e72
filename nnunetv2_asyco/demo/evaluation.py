"""Scoring predictions with nnU-Net's own evaluation (Dice, IoU, counts per class and case).

Thin wrappers around ``nnunetv2.evaluation.evaluate_predictions``: the label
set, ignore label, file ending and image reader come from the dataset's
``dataset.json``, exactly as ``nnUNetv2_evaluate_folder`` does, so our numbers
are nnU-Net's numbers.
"""
from typing import Dict, Optional, Union

from batchgenerators.utilities.file_and_folder_operations import load_json, subfiles

from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.label_handling.label_handling import LabelManager


def label_manager_from_dataset_json(dataset_json: dict) -> LabelManager:
    return LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))


def evaluate_folder(reference_folder: str, prediction_folder: str, dataset_json: Union[str, dict],
                    output_file: Optional[str] = None, num_processes: int = 2) -> dict:
    """nnU-Net's ``compute_metrics_on_folder`` for one prediction folder; returns its result dict.

    Every reference case must have a prediction (nnU-Net's ``chill=False``).
    Result keys: ``metric_per_case``, ``mean`` ({label or region: {"Dice": ..., ...}})
    and ``foreground_mean`` (mean over the foreground classes).
    """
    if isinstance(dataset_json, str):
        dataset_json = load_json(dataset_json)
    file_ending = dataset_json["file_ending"]
    references = subfiles(reference_folder, suffix=file_ending, join=True)
    if not references:
        raise FileNotFoundError(f"No reference files ending in {file_ending} in {reference_folder}")
    reader_writer = determine_reader_writer_from_dataset_json(dataset_json, references[0], verbose=False)()
    lm = label_manager_from_dataset_json(dataset_json)
    return compute_metrics_on_folder(reference_folder, prediction_folder, output_file, reader_writer, file_ending,
                                     lm.foreground_regions if lm.has_regions else lm.foreground_labels,
                                     lm.ignore_label, num_processes, chill=False)


def dice_summary(result: dict, dataset_json: dict) -> Dict[str, object]:
    """{"per_class": {name: mean Dice over cases}, "mean": nnU-Net's foreground mean} from ``evaluate_folder``.

    Classes are named as in dataset.json's ``labels``; regions keep nnU-Net's key (e.g. "(1, 2)").
    """
    names = {v if isinstance(v, int) else tuple(v): k for k, v in dataset_json["labels"].items()}
    per_class = {}
    for key, metrics in result["mean"].items():
        name = names.get(key, str(key))
        per_class[name] = float(metrics["Dice"])
    return {"per_class": per_class, "mean": float(result["foreground_mean"]["Dice"])}
