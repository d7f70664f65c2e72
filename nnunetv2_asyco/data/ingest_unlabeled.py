"""Preprocess ``nnUNet_raw/DatasetXXX/imagesUnlabeled`` with the dataset's own plans.

Every case is checked before anything is written (channels, file ending,
readability, geometry of a case's channels). Output goes to a new version in
``<data_identifier>_unlabeled`` that becomes current (one pointer file
replaced with os.replace, ``versioned_set``) only when every case succeeded,
so a failed or killed run leaves the earlier set and the labeled preprocessed
data untouched.
"""
import gzip
import multiprocessing
import os
import re
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from tqdm import tqdm

from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunetv2_asyco.data.dataset_lookup import dataset_name as lookup_dataset_name
from nnunetv2_asyco.data.input_checks import (InputCheckError, TrainingImages, check_dimensionality, check_finite,
                                              check_geometry, check_name_clashes, check_not_a_training_case,
                                              check_one_scalar_channel, check_preprocessed,
                                              check_resampled_size)
from nnunetv2_asyco.data.unlabeled_data import unlabeled_folder
from nnunetv2_asyco.data.versioned_set import discard_staging, new_staging, publish
from nnunetv2_asyco.nnunet_compat import save_unlabeled_case

UNLABELED_IMAGES_FOLDER = "imagesUnlabeled"


class UnlabeledDataError(InputCheckError):
    """Bad unlabeled input; the message names the case and the fix."""


def group_channel_files(folder: str, file_ending: str, num_channels: int) -> Dict[str, List[str]]:
    """Map case id -> channel files (ordered), checking names, endings and channel counts."""
    if not os.path.isdir(folder):
        raise UnlabeledDataError(
            f"No unlabeled images folder at {folder}. Put unlabeled scans there as CASE_0000{file_ending} "
            f"(one file per channel, named like imagesTr), or use nnUNetv2_asyco_labeled_subset instead.")
    files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    if not files:
        raise UnlabeledDataError(f"{folder} is empty. Add unlabeled scans named CASE_0000{file_ending}.")
    # [0-9], not \d: \d also matches other scripts' digits, which int() accepts but nnU-Net's own naming does not
    pattern = re.compile(r"^(.+)_([0-9]{4})" + re.escape(file_ending) + "$")
    channels = defaultdict(dict)
    for f in files:
        m = pattern.match(f)
        if m is None:
            hint = (f"its file ending is not the dataset's {file_ending!r}" if not f.endswith(file_ending)
                    else f"it lacks the 4-digit channel suffix (CASE_0000{file_ending})")
            raise UnlabeledDataError(f"Unlabeled file {join(folder, f)} is not usable: {hint}. Rename or convert it "
                                     f"to match imagesTr (CASE_XXXX{file_ending}).")
        channels[m.group(1)][int(m.group(2))] = join(folder, f)
    expected = list(range(num_channels))
    for case, chans in channels.items():
        if sorted(chans) != expected:
            raise UnlabeledDataError(
                f"Unlabeled case {case!r} has channels {sorted(chans)}, but the dataset has {num_channels} "
                f"channel(s) {expected} (dataset.json channel_names). Provide exactly "
                + ", ".join(f"{case}_{c:04d}{file_ending}" for c in expected) + ".")
    return {case: [chans[c] for c in expected] for case, chans in sorted(channels.items())}


def check_file_complete(path: str) -> None:
    """Raise for a truncated file: ITK reads a cut-off .nii or .nii.gz without error and fills the rest with 0."""
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:  # BadGzipFile / zlib.error on a corrupt stream
            try:
                while f.read(1 << 24):
                    pass
            except EOFError as e:
                raise EOFError(f"the compressed data ends early, the file is truncated ({e})") from e
    elif path.endswith(".nii"):
        import nibabel
        proxy = nibabel.load(path).dataobj  # its offset resolves a vox_offset of 0 to the real start of the data
        needed = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
        if os.path.getsize(path) < needed:
            raise EOFError(f"the file has {os.path.getsize(path)} bytes but its header needs {needed}, "
                           f"it is truncated")


def read_checked_case(case: str, files: List[str], reader_class, plans: dict) -> Tuple[np.ndarray, dict]:
    """Read every channel on its own (so a broken file is named precisely), check it, return the case's image."""
    reference, channels, properties = None, [], None
    for f in files:
        try:
            check_file_complete(f)
            data, props = reader_class().read_images([f])
        except Exception as e:  # the reader's own exception types vary by format
            raise UnlabeledDataError(f"Unlabeled case {case!r}: cannot read {f} ({type(e).__name__}: {e}). "
                                     f"Replace or remove the file.") from e
        check_one_scalar_channel(case, f, data)
        check_finite(case, f, data)
        check_dimensionality(case, f, data, plans)
        geometry = {"shape": tuple(int(s) for s in data.shape[1:]), "spacing": tuple(map(float, props["spacing"]))}
        sitk = props.get("sitk_stuff")
        if sitk is not None:
            geometry["origin"] = tuple(map(float, sitk["origin"]))
            geometry["direction"] = tuple(map(float, sitk["direction"]))
        if reference is None:
            reference, properties = (f, geometry), props
        else:
            check_geometry(case, reference, (f, geometry))
        channels.append(data)
    return np.concatenate(channels), properties


def _preprocess_and_save(preprocessor_class, output_truncated: str, image_files: List[str], plans: dict,
                         configuration: str, dataset_json: dict) -> None:
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case(image_files, None, plans_manager, configuration_manager,
                                                  dataset_json)
    check_preprocessed(os.path.basename(output_truncated), data)
    save_unlabeled_case(data, seg, properties, output_truncated, configuration_manager.patch_size)


def preprocess_unlabeled(dataset_name_or_id, configuration: str, plans_identifier: str = "nnUNetPlans",
                         num_processes: int = 2, show_progress: bool = True) -> str:
    """Check and preprocess all unlabeled scans of a dataset for one configuration. Returns the output folder."""
    if num_processes < 1:
        raise UnlabeledDataError(f"-np must be 1 or more, got {num_processes}.")
    dataset_name = lookup_dataset_name(dataset_name_or_id, UnlabeledDataError)
    base = join(nnUNet_preprocessed, dataset_name)
    plans_file = join(base, plans_identifier + ".json")
    if not isfile(plans_file):
        raise UnlabeledDataError(
            f"{dataset_name} is not planned with {plans_identifier} ({plans_file} missing). Run "
            f"nnUNetv2_plan_and_preprocess -d {dataset_name_or_id} first (with -pl/-overwrite_plans_name for "
            f"other plans).")
    plans = load_json(plans_file)
    plans_manager = PlansManager(plans)
    if configuration not in plans["configurations"]:
        raise UnlabeledDataError(f"Configuration {configuration!r} is not in {plans_file}; available: "
                                 f"{list(plans['configurations'])}.")
    configuration_manager = plans_manager.get_configuration(configuration)
    dataset_json = load_json(join(base, "dataset.json"))
    file_ending = dataset_json["file_ending"]
    num_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))

    cases = group_channel_files(join(nnUNet_raw, dataset_name, UNLABELED_IMAGES_FOLDER), file_ending,
                                num_channels)
    reader_class = plans_manager.image_reader_writer_class
    raw_folder = join(nnUNet_raw, dataset_name)
    training_files = {str(c): v["images"] for c, v in  # str: nnU-Net returns numpy strings
                      get_filenames_of_train_images_and_targets(raw_folder, dataset_json).items()}
    check_name_clashes(list(cases), list(training_files), raw_folder)
    training = TrainingImages(training_files, reader_class)
    splits_file = join(base, "splits_final.json")
    splits = load_json(splits_file) if isfile(splits_file) else None
    for case, files in cases.items():
        data, properties = read_checked_case(case, files, reader_class, plans)
        check_resampled_size(case, data.shape[1:], properties["spacing"], plans_manager, configuration_manager)
        check_not_a_training_case(case, data, training, splits)

    root = unlabeled_folder(base, configuration_manager.data_identifier)
    if os.path.abspath(root) == os.path.abspath(join(base, configuration_manager.data_identifier)):
        raise RuntimeError("refusing to write unlabeled data into the labeled preprocessed folder")
    preprocessor_class = configuration_manager.preprocessor_class or DefaultPreprocessor
    # the new set is built beside the current one and switched in only when complete (versioned_set)
    staging = new_staging(root)
    try:
        jobs = [(preprocessor_class, case, join(staging, case), files, plans, configuration, dataset_json)
                for case, files in cases.items()]
        if num_processes <= 1:  # no pool: saves a spawned interpreter per run
            results = map(_star_preprocess, jobs)
            for _ in tqdm(results, total=len(jobs), desc="Preprocessing unlabeled cases", disable=not show_progress):
                pass
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                results = pool.imap_unordered(_star_preprocess, jobs)
                for _ in tqdm(results, total=len(jobs), desc="Preprocessing unlabeled cases",
                              disable=not show_progress):
                    pass
        return publish(staging, list(cases))
    except BaseException:
        discard_staging(staging)
        raise


def _star_preprocess(job):
    case = job[1]
    try:
        return _preprocess_and_save(job[0], *job[2:])
    except InputCheckError:
        raise
    except Exception as e:  # raised in a pool worker, where the traceback does not say which case it was
        raise UnlabeledDataError(f"Unlabeled case {case!r}: nnU-Net's preprocessing failed ({type(e).__name__}: "
                                 f"{e}). Nothing was changed; fix or remove the case's files and run again.") from None
