"""The limited-label protocol: N labeled training cases of a fold, the rest unlabeled.

The subset is stored per fold in
``nnUNet_preprocessed/DatasetXXX/asyco_labeled_subset_fold{F}.json`` and is
independent of plans and configuration, so every method and configuration
trained on that fold sees the same labeled cases. nnU-Net's validation split
(``splits_final.json``) is never changed.
"""
import os
from typing import List, Optional, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_asyco.atomic_files import atomic_write_json
from nnunetv2_asyco.data.dataset_lookup import dataset_name as lookup_dataset_name


class LabeledSubsetError(ValueError):
    """A labeled-subset request that cannot be honoured; the message says how to fix it."""


def subset_file(preprocessed_dataset_folder: str, fold: int) -> str:
    return join(preprocessed_dataset_folder, f"asyco_labeled_subset_fold{fold}.json")


def load_labeled_subset(preprocessed_dataset_folder: str, fold) -> Optional[dict]:
    """The recorded subset of ``fold``, or None when the fold trains on all its labels."""
    if fold == "all":
        return None
    path = subset_file(preprocessed_dataset_folder, fold)
    return load_json(path) if isfile(path) else None


def load_or_create_splits(dataset_name: str) -> Tuple[List[dict], bool]:
    """nnU-Net's 5-fold split, created exactly as nnUNetTrainer.do_split would if it is missing.

    Returns (splits, created); a created split is written by the caller once the request is known to be valid.
    """
    base = join(nnUNet_preprocessed, dataset_name)
    splits_file = join(base, "splits_final.json")
    if isfile(splits_file):
        return load_json(splits_file), False
    if not os.path.isdir(base):
        raise LabeledSubsetError(
            f"{base} does not exist. Plan and preprocess the dataset first: "
            f"nnUNetv2_plan_and_preprocess -d {dataset_name}")
    dataset_json = load_json(join(base, "dataset.json"))
    cases = get_filenames_of_train_images_and_targets(join(nnUNet_raw, dataset_name), dataset_json)
    return generate_crossval_split(sorted(cases.keys()), seed=12345, n_splits=5), True


def choose_labeled_cases(train_cases: List[str], n_labeled: int, seed: int) -> List[str]:
    """Same cases, same seed, same subset: a seeded draw without replacement from the sorted fold."""
    rng = np.random.default_rng(seed)
    ordered = sorted(train_cases)
    picked = rng.choice(len(ordered), size=n_labeled, replace=False)
    return sorted(ordered[i] for i in picked)


def budget_from_fraction(fraction: float, n_train: int) -> int:
    if not 0 < fraction <= 1:
        raise LabeledSubsetError(f"--fraction must lie in (0, 1], got {fraction}.")
    return max(1, int(round(fraction * n_train)))


def write_labeled_subset(dataset_name_or_id, fold: int, n_labeled: Optional[int] = None,
                         fraction: Optional[float] = None, seed: int = 0, overwrite: bool = False) -> dict:
    """Record which training cases of ``fold`` keep their labels. Returns the record."""
    if (n_labeled is None) == (fraction is None):
        raise LabeledSubsetError("Give exactly one of -n (number of labeled cases) or --fraction.")
    if seed < 0:
        raise LabeledSubsetError(f"--seed must be 0 or larger, got {seed}.")
    dataset_name = lookup_dataset_name(dataset_name_or_id, LabeledSubsetError)
    splits, splits_created = load_or_create_splits(dataset_name)
    if not 0 <= fold < len(splits):
        raise LabeledSubsetError(f"Fold {fold} does not exist: splits_final.json of {dataset_name} has "
                                 f"{len(splits)} folds (0..{len(splits) - 1}).")
    train_cases = list(splits[fold]["train"])
    if fraction is not None:
        n_labeled = budget_from_fraction(fraction, len(train_cases))
    if n_labeled <= 0:
        raise LabeledSubsetError(f"The labeled budget must be at least 1 case, got {n_labeled}.")
    if n_labeled > len(train_cases):
        raise LabeledSubsetError(
            f"Fold {fold} of {dataset_name} has only {len(train_cases)} training cases; a labeled budget of "
            f"{n_labeled} is larger than the fold. Use -n {len(train_cases)} or less (with -n equal to the fold "
            f"size nothing is left unlabeled).")
    labeled = choose_labeled_cases(train_cases, n_labeled, seed)
    record = {
        "dataset": dataset_name,
        "fold": fold,
        "seed": seed,
        "n_labeled": n_labeled,
        "n_fold_train_cases": len(train_cases),
        "labeled": labeled,
        "unlabeled": sorted(set(train_cases) - set(labeled)),
    }
    path = subset_file(join(nnUNet_preprocessed, dataset_name), fold)
    if isfile(path) and not overwrite:
        existing = load_json(path)
        if existing.get("labeled") != labeled:
            raise LabeledSubsetError(
                f"{path} already records a different labeled subset ({existing.get('n_labeled')} cases, seed "
                f"{existing.get('seed')}). Trainings of this fold may depend on it. Pass --overwrite to replace it.")
    # nothing is written before every check passed
    if splits_created:
        atomic_write_json(splits, join(nnUNet_preprocessed, dataset_name, "splits_final.json"))
    atomic_write_json(record, path)
    return record
