"""Per-case statistics, the case score and ranking, and the files qa.csv and qa.md.

Case score: the mean over foreground classes of the mean map inside the class's predicted structure (classes
predicted nowhere are left out; a case with no predicted structure at all scores 1, the maximum, so it is
reviewed first). Cases are ranked by it, highest first (rank 1 = review first).

Why this score: on a selection subset of the quality benchmark's test set (benchmarks/results/qa/
qa_detection_selection_subset.md) it found the worst cases far better than the summed map per predicted
foreground voxel, which the first version used (AUROC worst 10%: 0.97 vs 0.72); the held-out cases
(qa_detection.md) test that choice.
"""
import csv
import io
import math
from typing import Dict, List, Optional

import numpy as np
from scipy import ndimage

COLUMNS = ["rank", "case", "case_score", "measure", "label", "class", "predicted_voxels", "predicted_volume",
           "dice_a_b", "mean_disagreement_inside", "mean_disagreement_boundary"]


def class_masks(seg: np.ndarray, label_manager) -> Dict[str, np.ndarray]:
    """Foreground class (or region) -> boolean mask of a label map as nnU-Net writes it."""
    if label_manager.has_regions:
        return {str(tuple(r) if not np.isscalar(r) else r): np.isin(seg, np.atleast_1d(r))
                for r in label_manager.foreground_regions}
    return {str(l): seg == l for l in label_manager.foreground_labels}


def class_names(dataset_json: dict) -> Dict[str, str]:
    """Key as in ``class_masks`` -> the name in dataset.json."""
    names = {}
    for name, value in dataset_json["labels"].items():
        key = str(tuple(value)) if isinstance(value, (list, tuple)) and len(value) > 1 else \
            str(value[0] if isinstance(value, (list, tuple)) else value)
        names[key] = name
    return names


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks; 1.0 when both are empty (the branches agree there is nothing)."""
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def boundary_band(mask: np.ndarray) -> np.ndarray:
    """Voxels within one voxel of the structure's surface, inside and outside (dilation minus erosion).

    2D cases come as (1, y, x): the band is computed in-plane, a 3D neighbourhood would erode everything.
    """
    plane = mask.shape[0] == 1
    m = mask[0] if plane else mask
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    band = ndimage.binary_dilation(m, structure) & ~ndimage.binary_erosion(m, structure)
    return band[None] if plane else band


def voxel_volume(properties: dict) -> float:
    """Volume of one voxel in the original image (mm^3; for 2D images, whose spacing nnU-Net pads with 999, mm^2)."""
    spacing = list(properties["spacing"])
    if len(spacing) == 3 and spacing[0] >= 999:
        spacing = spacing[1:]
    return float(np.prod(spacing))


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def case_statistics(case: str, seg: np.ndarray, voxel_map: np.ndarray, label_manager, dataset_json: dict,
                    properties: dict, measure: str, seg_a: Optional[np.ndarray] = None,
                    seg_b: Optional[np.ndarray] = None) -> dict:
    """Statistics of one case. ``seg`` and ``voxel_map`` in original geometry; ``seg_a``/``seg_b`` (branch
    segmentations, any common grid) give the Dice between the branches, left empty without them."""
    names = class_names(dataset_json)
    masks = class_masks(seg, label_manager)
    masks_a = class_masks(seg_a, label_manager) if seg_a is not None else None
    masks_b = class_masks(seg_b, label_manager) if seg_b is not None else None
    vv = voxel_volume(properties)
    classes = []
    for key, mask in masks.items():
        classes.append({
            "label": key, "class": names.get(key, key), "predicted_voxels": int(mask.sum()),
            "predicted_volume": float(mask.sum()) * vv,
            "dice_a_b": dice(masks_a[key], masks_b[key]) if masks_a is not None else float("nan"),
            "mean_disagreement_inside": _mean(voxel_map, mask),
            "mean_disagreement_boundary": _mean(voxel_map, boundary_band(mask)),
        })
    return {"case": case, "measure": measure, "case_score": case_score(classes), "classes": classes}


def case_score(classes: List[dict]) -> float:
    inside = [c["mean_disagreement_inside"] for c in classes if c["predicted_voxels"] > 0]
    return float(np.mean(inside)) if inside else 1.0


def ranked(results: List[dict]) -> List[dict]:
    """Cases sorted by score, highest first, each with its ``rank`` (1 = review first; ties by case name)."""
    order = sorted(results, key=lambda r: (-r["case_score"], r["case"]))
    return [{**r, "rank": i + 1} for i, r in enumerate(order)]


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def csv_text(results: List[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in ranked(results):
        for c in r["classes"]:
            row = {**c, "rank": r["rank"], "case": r["case"], "case_score": r["case_score"], "measure": r["measure"]}
            writer.writerow([_fmt(row[k]) for k in COLUMNS])
    return out.getvalue()


def markdown_text(results: List[dict], measure_doc: str, figures: Dict[str, str], top: int = 10) -> str:
    cases = ranked(results)
    lines = ["# Quality control", "", measure_doc, "",
             f"{len(cases)} cases; the {min(top, len(cases))} to review first (qa.csv has every case and class):", "",
             "| rank | case | case score | lowest Dice A-B (class) | figure |", "|---|---|---|---|---|"]
    for r in cases[:top]:
        dices = [(c["dice_a_b"], c["class"]) for c in r["classes"] if not math.isnan(c["dice_a_b"])]
        low = f"{min(dices)[0]:.3f} ({min(dices)[1]})" if dices else "-"
        fig = f"![{r['case']}]({figures[r['case']]})" if r["case"] in figures else ""
        lines.append(f"| {r['rank']} | {r['case']} | {r['case_score']:.4g} | {low} | {fig} |")
    return "\n".join(lines) + "\n"
