"""Real-anatomy benchmark dataset: 2D coronal slices of the INIA19 rhesus macaque template and its NeuroMaps labels.

Source: Debian's ``mricron-data`` package (``apt-get install mricron-data``),
files ``inia19-t1-brain.nii.gz`` and ``inia19-NeuroMaps.nii.gz`` in
``/usr/share/mricron/templates``. The package's human templates and atlases
(ch2*, aal, brodmann, AICHA, HarvardOxford, JHU, natbrainlab, jhu189) are kept
for independent checks; this module never opens them and refuses them as input.

NeuroMaps has ~700 labels, most of them tiny nuclei and tracts. The benchmark
groups them into eight structures (both hemispheres: NeuroMaps numbers a
right-hemisphere structure as its left-hemisphere number + 1000), from large to
small: white matter, thalamus, putamen, caudate, hippocampus, amygdala, lateral
ventricle, globus pallidus. Everything else inside the brain is background.

Each coronal slice (0.5 mm apart) with white matter in it is one 2D case
(stored as a one-slice volume, in-plane spacing 0.5 mm). Neighbouring slices
are nearly identical, so the split runs in blocks along the anterior-posterior
axis: ``train_block`` slices to imagesTr, ``gap`` slices dropped, ``test_block``
slices to imagesTs/labelsTs, ``gap`` slices dropped, and again. No test slice
is within ``gap`` slices of a training slice. The dropped slices are not used
at all (as unlabeled data they would sit next to the test slices).

    python benchmarks/quality/real_anatomy.py --raw NNUNET_RAW --dataset-id 992
"""
import argparse
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

TEMPLATES = "/usr/share/mricron/templates"
T1_FILE = "inia19-t1-brain.nii.gz"
LABEL_FILE = "inia19-NeuroMaps.nii.gz"
# reserved for independent checks: never train, tune or test on these
RESERVED = ("ch2", "aal", "brodmann", "aicha", "harvardoxford", "jhu", "natbrainlab", "jhu189")
INSTALL_HINT = "Install it with: sudo apt-get install mricron-data (Debian/Ubuntu), or pass --templates FOLDER."

RIGHT_HEMISPHERE_OFFSET = 1000
# structure -> NeuroMaps label numbers (left hemisphere; the right one is +1000)
STRUCTURES: Dict[str, Tuple[int, ...]] = {
    # cerebral, occipital, temporal, frontal white matter; internal, external and extreme capsule
    "white_matter": (55, 2, 151, 193, 97, 149, 150),
    # thalamus and its nuclei
    "thalamus": (497, 492, 325, 135, 92, 95, 96, 137, 136, 165, 177, 178, 101, 499, 130, 116, 87, 134, 161, 168,
                 186, 285, 287, 321, 322, 323, 324, 326, 327),
    "putamen": (98,),
    "caudate": (82,),
    # dentate gyrus, CA fields and layers, subiculum, fimbria, alveus
    "hippocampus": (86, 449, 467, 470, 457, 458, 483, 450, 451, 452, 453, 459, 461, 462, 463, 456, 454, 90, 91),
    # amygdala and its nuclei and transition areas
    "amygdala": (480, 521, 189, 191, 192, 482, 484, 498, 496, 447, 205, 211),
    # body, temporal, frontal and occipital horn
    "lateral_ventricle": (73, 74, 201, 51),
    # lateral and medial globus pallidus (and the medial one's portions)
    "globus_pallidus": (162, 171, 489, 490),
}
CORONAL_AXIS = 1  # numpy axis (z, y, x) of the template: y runs anterior-posterior


class RealAnatomyError(RuntimeError):
    pass


def template_files(templates: str = TEMPLATES) -> Tuple[str, str]:
    """(T1, labels) paths; a clear error if the package or a file is missing."""
    paths = tuple(os.path.join(templates, f) for f in (T1_FILE, LABEL_FILE))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise RealAnatomyError(f"The INIA19 macaque template is missing ({', '.join(missing)}); it comes with "
                               f"Debian's mricron-data package. {INSTALL_HINT}")
    return paths


def check_not_reserved(path: str) -> None:
    name = os.path.basename(path).lower()
    if any(name.startswith(r) for r in RESERVED):
        raise RealAnatomyError(f"{path} is one of mricron-data's human templates, which are reserved for "
                               f"independent checks; the benchmark uses only the INIA19 macaque files.")


def group_labels(neuromaps: np.ndarray) -> np.ndarray:
    """NeuroMaps label map -> 0 (background) and 1..len(STRUCTURES) (in STRUCTURES order)."""
    left = np.where(neuromaps >= RIGHT_HEMISPHERE_OFFSET, neuromaps - RIGHT_HEMISPHERE_OFFSET, neuromaps)
    grouped = np.zeros(neuromaps.shape, dtype=np.uint8)
    for value, ids in enumerate(STRUCTURES.values(), start=1):
        grouped[np.isin(left, ids)] = value
    return grouped


def block_split(slices: Sequence[int], train_block: int, test_block: int, gap: int) -> Dict[str, List[int]]:
    """Slices -> {"train": [...], "test": [...], "dropped": [...]} in repeating blocks (see the module docstring)."""
    if min(train_block, test_block) < 1 or gap < 0:
        raise ValueError("train_block and test_block must be >= 1 and gap >= 0")
    pattern = ["train"] * train_block + ["dropped"] * gap + ["test"] * test_block + ["dropped"] * gap
    split = {"train": [], "test": [], "dropped": []}
    for i, s in enumerate(sorted(slices)):
        split[pattern[i % len(pattern)]].append(int(s))
    return split


def _write_slice(array2d: np.ndarray, spacing: Tuple[float, float], path: str) -> None:
    # a 2D case is a one-slice volume; the large through-plane spacing tells nnU-Net the axis is not spatial
    image = sitk.GetImageFromArray(array2d[None])
    image.SetSpacing((float(spacing[1]), float(spacing[0]), 999.0))
    sitk.WriteImage(image, path, useCompression=True)


def build_dataset(raw_root: str, dataset_id: int, name: str = "INIA19Coronal", templates: str = TEMPLATES,
                  t1_path: str = None, label_path: str = None, train_block: int = 4, test_block: int = 2,
                  gap: int = 1) -> str:
    """Write ``raw_root/DatasetXXX_name`` (imagesTr/labelsTr, imagesTs/labelsTs, dataset.json); return its path.

    ``t1_path``/``label_path`` default to the INIA19 files in ``templates``.
    """
    if t1_path is None or label_path is None:
        t1_path, label_path = template_files(templates)
    for p in (t1_path, label_path):
        check_not_reserved(p)
    t1_image, label_image = sitk.ReadImage(t1_path), sitk.ReadImage(label_path)
    t1 = sitk.GetArrayFromImage(t1_image).astype(np.float32)
    labels = group_labels(sitk.GetArrayFromImage(label_image).astype(np.int64))
    if t1.shape != labels.shape:
        raise RealAnatomyError(f"T1 {t1.shape} and label map {labels.shape} differ in shape")
    spacing_zyx = tuple(reversed(t1_image.GetSpacing()))
    in_plane = tuple(s for a, s in enumerate(spacing_zyx) if a != CORONAL_AXIS)

    with_white_matter = np.where((labels == 1).any(axis=tuple(a for a in range(3) if a != CORONAL_AXIS)))[0]
    split = block_split(with_white_matter, train_block, test_block, gap)
    folder = os.path.join(raw_root, f"Dataset{dataset_id:03d}_{name}")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for part, (images, targets, prefix) in {"train": ("imagesTr", "labelsTr", "tr"),
                                            "test": ("imagesTs", "labelsTs", "ts")}.items():
        for s in split[part]:
            case = f"{prefix}_y{s:03d}"
            _write_slice(np.take(t1, s, axis=CORONAL_AXIS), in_plane, os.path.join(folder, images, case + "_0000.nii.gz"))
            _write_slice(np.take(labels, s, axis=CORONAL_AXIS), in_plane, os.path.join(folder, targets, case + ".nii.gz"))
    dataset_json = {
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, **{k: i for i, k in enumerate(STRUCTURES, start=1)}},
        "numTraining": len(split["train"]),
        "file_ending": ".nii.gz",
        "name": name,
        "description": f"Coronal slices of the INIA19 macaque T1 template with grouped NeuroMaps labels "
                       f"(benchmarks/quality/real_anatomy.py): blocks of {train_block} training and {test_block} "
                       f"test slices, {gap} slice(s) dropped between them.",
        "split": split,
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", required=True, help="nnUNet_raw folder to write the dataset into")
    p.add_argument("--dataset-id", type=int, default=992)
    p.add_argument("--templates", default=TEMPLATES, help=f"mricron-data's templates folder (default {TEMPLATES})")
    p.add_argument("--train-block", type=int, default=4)
    p.add_argument("--test-block", type=int, default=2)
    p.add_argument("--gap", type=int, default=1)
    args = p.parse_args(argv)
    try:
        folder = build_dataset(args.raw, args.dataset_id, templates=args.templates, train_block=args.train_block,
                               test_block=args.test_block, gap=args.gap)
    except RealAnatomyError as e:
        print(f"ERROR: {e}")
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
