"""Input checks of unlabeled ingestion on single files: real SimpleITK files, nnU-Net's reader and preprocessor.

Each test writes the bad input the audit found and checks the message names the
case, the file and the fix; where the check predicts nnU-Net's own result
(normalisation overflow, resampled size), the test also runs nnU-Net's code to
show the prediction is right. The same inputs go through the real console
script in test_bad_input.py.
"""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import tiny_plans
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2_asyco.data.ingest_unlabeled import UnlabeledDataError, _star_preprocess, read_checked_case
from nnunetv2_asyco.data.input_checks import (InputCheckError, TrainingImages, check_not_a_training_case,
                                              check_preprocessed, check_resampled_size, resampled_shape)

# median shape (1, 64, 64): a 2D dataset; configuration "cfg" at 1 mm, median 32 x 32, z-score normalisation
PLANS_2D = {**tiny_plans(), "foreground_intensity_properties_per_channel": {"0": {
    "mean": 100.0, "std": 20.0, "median": 100.0, "min": 0.0, "max": 200.0, "percentile_00_5": 50.0,
    "percentile_99_5": 150.0}}}
PLANS_3D = {**PLANS_2D, "original_median_shape_after_transp": [40, 64, 64]}
DATASET_JSON = {"channel_names": {"0": "ct"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}


def write(tmp_path, name, array, spacing=(1.0, 1.0, 1.0), origin=None, vector=False):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[: image.GetDimension()])
    if origin is not None:
        image.SetOrigin(origin)
    path = str(tmp_path / name)
    sitk.WriteImage(image, path)
    return path


def scan(shape=(1, 32, 32), seed=0):
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def test_nan_voxels_are_refused_naming_case_and_file(tmp_path):
    data = scan()
    data[0, :4] = np.nan  # NaN padding, as in a float NRRD (ITK's NIfTI reader turns NaN into 0 itself)
    path = write(tmp_path, "pad_0000.nrrd", data)
    with pytest.raises(InputCheckError, match=r"'pad'.*pad_0000.nrrd has 128 non-finite voxel\(s\).*Replace"):
        read_checked_case("pad", [path], SimpleITKIO, PLANS_2D)


def test_finite_values_that_overflow_normalisation_are_refused(tmp_path):
    """3e37 is a finite float32, but nnU-Net's z-score of it is NaN: the check runs on nnU-Net's real output."""
    data = scan() * 3e35  # intensities near 3e37, e.g. a wrong rescale slope
    assert np.isfinite(data).all()
    path = write(tmp_path, "huge_0000.nii.gz", data)
    read_checked_case("huge", [path], SimpleITKIO, PLANS_2D)  # the input itself is finite
    pm = PlansManager(PLANS_2D)
    out, _, _ = DefaultPreprocessor(verbose=False).run_case([path], None, pm, pm.get_configuration("cfg"),
                                                            DATASET_JSON)
    assert not np.isfinite(out).all()  # what nnU-Net would have written
    with pytest.raises(InputCheckError, match="'huge'.*normalisation produced non-finite.*Rescale"):
        check_preprocessed("huge", out)


def test_a_few_overflowing_voxels_flatten_the_case_and_are_refused(tmp_path):
    """Eight voxels near 3e37 in a normal scan: nnU-Net's z-score makes every voxel 0 (finite, and useless)."""
    data = scan()
    data[0, 0, :8] = 3e37
    path = write(tmp_path, "spikes_0000.nii.gz", data)
    pm = PlansManager(PLANS_2D)
    out, _, _ = DefaultPreprocessor(verbose=False).run_case([path], None, pm, pm.get_configuration("cfg"),
                                                            DATASET_JSON)
    assert np.isfinite(out).all() and np.ptp(out) == 0  # what nnU-Net would have written
    with pytest.raises(InputCheckError, match="'spikes'.*channel 0 is constant.*after nnU-Net's normalisation"):
        check_preprocessed("spikes", out)


def test_2d_image_into_3d_dataset_is_refused(tmp_path):
    path = write(tmp_path, "flat_0000.nii.gz", scan()[0])  # a genuinely 2D file
    with pytest.raises(InputCheckError, match=r"'flat'.*is a 2D image.*training images are 3D.*3D scan"):
        read_checked_case("flat", [path], SimpleITKIO, PLANS_3D)
    read_checked_case("flat", [path], SimpleITKIO, PLANS_2D)  # in a 2D dataset it is what nnU-Net expects


def test_3d_image_into_2d_dataset_is_refused(tmp_path):
    path = write(tmp_path, "vol_0000.nii.gz", scan((12, 32, 32)))
    with pytest.raises(InputCheckError, match="'vol'.*is a 3D image.*training images are 2D"):
        read_checked_case("vol", [path], SimpleITKIO, PLANS_2D)


def test_vector_image_is_refused(tmp_path):
    path = write(tmp_path, "rgb_0000.nii.gz", np.stack([scan()] * 3, axis=-1), vector=True)
    with pytest.raises(InputCheckError, match="'rgb'.*vector image with 3 components.*one scalar image"):
        read_checked_case("rgb", [path], SimpleITKIO, PLANS_2D)


@pytest.mark.parametrize("spacing, needle", [(0.001, "would leave no voxels"), (100.0, "more than 100 times")])
def test_absurd_resampled_size_is_refused(spacing, needle):
    """Spacing in metres (0.001) empties the case, a wrong header (100 mm) blows it up; nnU-Net's shape decides."""
    pm = PlansManager(PLANS_2D)
    cm = pm.get_configuration("cfg")
    new_shape = resampled_shape((1, 128, 128), (1.0, spacing, spacing), pm, cm)
    assert (min(new_shape) < 1) if spacing < 1 else (new_shape[-1] == 12800)
    with pytest.raises(InputCheckError, match=f"'m'.*{needle}.*wrong unit"):
        check_resampled_size("m", (1, 128, 128), (1.0, spacing, spacing), pm, cm)
    check_resampled_size("m", (1, 128, 128), (1.0, 1.5, 1.5), pm, cm)  # an ordinary case passes


def test_channel_origins_compared_with_a_tolerance(tmp_path):
    a = write(tmp_path, "c_0000.nii.gz", scan(), origin=(0.0, 0.0, 0.0))
    b = write(tmp_path, "c_0001.nii.gz", scan(seed=1), origin=(2e-7, 0.0, 0.0))  # float noise: accepted
    data, _ = read_checked_case("c", [a, b], SimpleITKIO, PLANS_2D)
    assert data.shape == (2, 1, 32, 32)
    far = write(tmp_path, "d_0001.nii.gz", scan(seed=1), origin=(1.0, 0.0, 0.0))
    with pytest.raises(InputCheckError, match="'c'.*d_0001.nii.gz differs from c_0000.nii.gz in {'origin'"):
        read_checked_case("c", [a, far], SimpleITKIO, PLANS_2D)


def test_copy_of_a_training_case_is_found(tmp_path):
    train = {f"tr_{i}": [write(tmp_path, f"tr_{i}_0000.nii.gz", scan(seed=i))] for i in range(3)}
    training = TrainingImages(train, SimpleITKIO)
    copy = write(tmp_path, "u_0000.nii.gz", sitk.GetArrayFromImage(sitk.ReadImage(train["tr_2"][0])))
    data, _ = read_checked_case("u", [copy], SimpleITKIO, PLANS_2D)
    splits = [{"train": ["tr_0", "tr_1"], "val": ["tr_2"]}, {"train": ["tr_2"], "val": ["tr_0", "tr_1"]}]
    with pytest.raises(InputCheckError, match=r"'u' has exactly the image of training case 'tr_2' \(a validation "
                                              r"case of fold\(s\) \[0\]\).*Remove it"):
        check_not_a_training_case("u", data, training, splits)
    other, _ = read_checked_case("v", [write(tmp_path, "v_0000.nii.gz", scan(seed=9))], SimpleITKIO, PLANS_2D)
    check_not_a_training_case("v", other, training, splits)


def test_exception_in_the_preprocessing_worker_names_the_case(tmp_path):
    """A failure inside nnU-Net's run_case (here: a file gone after the checks) names the case, not a traceback."""
    job = (DefaultPreprocessor, "gone", str(tmp_path / "gone"), [str(tmp_path / "gone_0000.nii.gz")], PLANS_2D,
           "cfg", DATASET_JSON)
    with pytest.raises(UnlabeledDataError, match="Unlabeled case 'gone': nnU-Net's preprocessing failed"):
        _star_preprocess(job)
