"""Unlabeled cases for training: where they come from and how they are loaded.

Two sources, combined when both exist:

- ingested scans: ``nnUNet_preprocessed/DatasetXXX/<data_identifier>_unlabeled``
  written by ``nnUNetv2_asyco_preprocess_unlabeled``;
- the limited-label protocol: the fold's training cases outside the labeled
  subset, read from the labeled preprocessed folder.

Labels of these cases must never reach a loss. ``UnlabeledCases`` therefore
hands the loader a segmentation that keeps only nnU-Net's outside-the-body
marker (-1, needed by the masking transform) and no class information, and
``UnlabeledDataLoader`` drops the target from the batch altogether.
"""
import os
from typing import List, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class, nnUNetDatasetBlosc2

from nnunetv2_asyco.data.versioned_set import current_cases, current_folder


def unlabeled_folder(preprocessed_dataset_folder_base: str, data_identifier: str) -> str:
    """Where ingested unlabeled scans of one configuration live: beside, never inside, the labeled data.

    The folder holds versions of the set and a pointer to the current one (``versioned_set``).
    """
    return join(preprocessed_dataset_folder_base, data_identifier + "_unlabeled")


def ingested_unlabeled_sources(preprocessed_dataset_folder_base: str, data_identifier: str) -> List[Tuple[str, str]]:
    """(folder, case) of every case of the current ingested set: one complete set, resolved once."""
    root = unlabeled_folder(preprocessed_dataset_folder_base, data_identifier)
    folder = current_folder(root)
    return [] if folder is None else [(folder, c) for c in current_cases(root)]


def dataset_class(folder: str):
    """nnU-Net's dataset class for ``folder``, looking at case files only.

    infer_dataset_class fails on any extra file ending; a flat set of an earlier release shares its folder with
    the pointer file of the versioned layout (and its temporary file while it is replaced).
    """
    if any(f.endswith(".b2nd") for f in os.listdir(folder)):
        return nnUNetDatasetBlosc2
    return infer_dataset_class(folder)


def strip_labels(seg) -> np.ndarray:
    """Keep only nnU-Net's nonzero-region marker (-1); every class label becomes 0."""
    seg = np.asarray(seg[:])
    return np.where(seg < 0, -1, 0).astype(np.int16)


class UnlabeledCases:
    """A read-only nnU-Net dataset over (folder, identifier) pairs that never returns labels."""

    def __init__(self, sources: List[Tuple[str, str]]):
        if len(sources) == 0:
            raise ValueError("UnlabeledCases needs at least one case.")
        self.folder_of = {}
        for folder, identifier in sources:
            if identifier in self.folder_of and self.folder_of[identifier] != folder:
                raise ValueError(f"Unlabeled case {identifier!r} exists in both {self.folder_of[identifier]} and "
                                 f"{folder}. Rename one of them in nnUNet_raw and preprocess again.")
            self.folder_of[identifier] = folder
        self.identifiers = sorted(self.folder_of)
        self._datasets = {f: dataset_class(f)(f, [i for i, ff in self.folder_of.items() if ff == f])
                          for f in set(self.folder_of.values())}

    def __len__(self):
        return len(self.identifiers)

    def __getitem__(self, identifier):
        return self.load_case(identifier)

    def load_case(self, identifier):
        data, seg, _, properties = self._datasets[self.folder_of[identifier]].load_case(identifier)
        return data, strip_labels(seg), None, properties


class UnlabeledDataLoader(nnUNetDataLoader):
    """nnU-Net's patch sampler on unlabeled cases: random patches only, and no target in the batch."""

    def __init__(self, data: UnlabeledCases, batch_size, patch_size, final_patch_size, label_manager, transforms):
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=0.0, transforms=transforms)
        # foreground oversampling and ignore-label sampling read label locations; unlabeled cases have none
        self.has_ignore = False

    def generate_train_batch(self):
        batch = super().generate_train_batch()
        del batch["target"]
        return batch
