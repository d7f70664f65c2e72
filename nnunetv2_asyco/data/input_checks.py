"""Checks that predict what nnU-Net's preprocessing will do with an unlabeled case, before anything is written.

Each check mirrors a step of ``DefaultPreprocessor.run_case`` (nnunetv2 2.8.x)
or of ``SimpleITKIO.read_images`` and refuses a case whose result would be
silently wrong (NaN after normalisation, a 2D slice stretched into a volume,
an empty or absurdly large resampled case) or would crash inside the
preprocessing pool without naming the case. Every message names the case, the
file and the fix.
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

# A resampled case with more voxels than this many times the dataset's median case (nnU-Net's
# median_image_size_in_voxels of the configuration) is refused: typically a spacing in the wrong unit.
MAX_SIZE_FACTOR = 100
# nnU-Net's reader compares channel geometry with np.allclose (BaseReaderWriter._check_all_same); origins get an
# absolute tolerance as well, far below any voxel size, so that 2e-7 mm of float noise near 0 is accepted.
ORIGIN_ATOL_MM = 1e-4


class InputCheckError(ValueError):
    """A case preprocessing would get wrong; the message names it and the fix."""


def check_finite(case: str, path: str, data: np.ndarray) -> None:
    """Non-finite voxels are refused: nnU-Net's z-score of an image with one NaN is NaN everywhere."""
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputCheckError(
            f"Unlabeled case {case!r}: {path} has {bad} non-finite voxel(s) (NaN or inf). nnU-Net's normalisation "
            f"would turn the whole case into NaN. Replace them with a real intensity (e.g. the image's minimum or "
            f"the scanner's padding value) and run again.")


def check_one_scalar_channel(case: str, path: str, data: np.ndarray) -> None:
    """One file, one scalar channel: a vector image (RGB, DWI, displacement field) would be read as extra axes."""
    components = _components(path)
    if components > 1:
        raise InputCheckError(
            f"Unlabeled case {case!r}: {path} is a vector image with {components} components per voxel; nnU-Net "
            f"expects one scalar image per channel file. Split the components into separate channel files "
            f"(only if imagesTr has them as channels too) or convert the image to a scalar one.")
    if data.ndim != 4 or data.shape[0] != 1:
        raise InputCheckError(
            f"Unlabeled case {case!r}: {path} reads as an array of shape {tuple(data.shape)}, not one channel "
            f"(expected (1, z, y, x)). Store one channel per file, named CASE_XXXX like imagesTr.")


def _components(path: str) -> int:
    """Components per voxel from the file header (SimpleITK formats); 1 where SimpleITK cannot tell."""
    try:
        import SimpleITK as sitk
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return int(reader.GetNumberOfComponents())
    except Exception:  # not a SimpleITK format (e.g. .png via NaturalImage2DIO): the shape check still applies
        return 1


def check_dimensionality(case: str, path: str, data: np.ndarray, plans: dict) -> None:
    """A 2D image in a 3D dataset (or the reverse) is refused.

    nnU-Net reads a 2D image as one slice with a spacing of 999 x its in-plane spacing between slices, and a 3D
    configuration would resample that slice into hundreds of identical ones.
    """
    median = plans.get("original_median_shape_after_transp")
    if median is None:
        return
    dataset_2d = min(median) == 1
    image_2d = min(data.shape[1:]) == 1
    if image_2d != dataset_2d:
        kind = "2D" if image_2d else "3D"
        other = "2D" if dataset_2d else "3D"
        raise InputCheckError(
            f"Unlabeled case {case!r}: {path} is a {kind} image (shape {tuple(int(s) for s in data.shape[1:])}), but "
            f"the dataset's training images are {other} (median shape {tuple(median)}). nnU-Net would "
            + ("stretch its single slice into a volume. Provide the 3D scan." if image_2d else
               "treat it as a stack it cannot train on. Provide 2D images like imagesTr.")
            + " Remove the case or replace it.")


def check_geometry(case: str, reference: tuple, current: tuple) -> None:
    """Channels of a case on one grid: shape exact, spacing/direction as nnU-Net compares them, origin to 1e-4 mm."""
    (ref_file, ref), (f, geo) = reference, current
    diff = {}
    if ref["shape"] != geo["shape"]:
        diff["shape"] = (ref["shape"], geo["shape"])
    for key in ("spacing", "origin", "direction"):
        if key not in ref or key not in geo:
            continue
        atol = ORIGIN_ATOL_MM if key == "origin" else 1e-8
        if len(ref[key]) != len(geo[key]) or not np.allclose(ref[key], geo[key], atol=atol):
            diff[key] = (ref[key], geo[key])
    if diff:
        shown = {k: (_rounded(a), _rounded(b)) for k, (a, b) in diff.items()}
        raise InputCheckError(
            f"Unlabeled case {case!r}: channels do not share one geometry; {os.path.basename(f)} differs from "
            f"{os.path.basename(ref_file)} in {shown}. Resample all channels of a case onto the same grid.")


def _rounded(values):
    return tuple(round(float(v), 6) if not isinstance(v, (int, np.integer)) else int(v) for v in values)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], plans_manager, configuration_manager) -> List[int]:
    """The shape DefaultPreprocessor.run_case resamples an uncropped case of this shape and spacing to."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
    transpose = plans_manager.transpose_forward
    shape_t = [int(shape[i]) for i in transpose]
    spacing_t = [float(spacing[i]) for i in transpose]
    target = list(configuration_manager.spacing)
    if len(target) < len(shape_t):  # 2D configurations keep the spacing between slices
        target = [spacing_t[0]] + target
    return [int(s) for s in compute_new_shape(shape_t, spacing_t, target)]


def check_resampled_size(case: str, shape: Sequence[int], spacing: Sequence[float], plans_manager,
                         configuration_manager) -> None:
    """Refuse a case that resampling would make empty or absurdly large (spacing in metres, a wrong header)."""
    new_shape = resampled_shape(shape, spacing, plans_manager, configuration_manager)
    median = [int(m) for m in configuration_manager.median_image_size_in_voxels]
    in_plane = new_shape[-len(median):]
    hint = (f"Its spacing {tuple(round(float(s), 6) for s in spacing)} against the configuration's "
            f"{tuple(configuration_manager.spacing)}: is the spacing in the header in the wrong unit (metres instead "
            f"of mm)? Fix the header (SimpleITK SetSpacing) and run again.")
    if min(new_shape) < 1:
        raise InputCheckError(f"Unlabeled case {case!r}: resampling would leave no voxels (shape {tuple(shape)} -> "
                              f"{tuple(new_shape)}). " + hint)
    if np.prod(in_plane, dtype=np.float64) > MAX_SIZE_FACTOR * np.prod(median, dtype=np.float64):
        raise InputCheckError(
            f"Unlabeled case {case!r}: resampling would make it {tuple(new_shape)} voxels, more than "
            f"{MAX_SIZE_FACTOR} times the dataset's median case {tuple(median)}. " + hint)


def check_preprocessed(case: str, data: np.ndarray) -> None:
    """After nnU-Net's preprocessing: finite input can still overflow in normalisation.

    Intensities near 3e37 (a wrong rescale slope) make float32 mean/std overflow: the whole case becomes NaN, or,
    with only a few such voxels, a constant 0. Both are refused; so is a channel that was blank to begin with.
    """
    if not np.all(np.isfinite(data)):
        raise InputCheckError(
            f"Unlabeled case {case!r}: nnU-Net's normalisation produced non-finite values (the intensities are so "
            f"large that mean and standard deviation overflow float32). Rescale the image to a realistic intensity "
            f"range and run again.")
    for c in range(data.shape[0]):
        if data[c].size and float(np.min(data[c])) == float(np.max(data[c])):
            raise InputCheckError(
                f"Unlabeled case {case!r}: channel {c} is constant ({float(data[c].flat[0])}) after nnU-Net's "
                f"normalisation: the scan is blank, or a few extreme intensities (near the float32 limit) made its "
                f"standard deviation overflow. Remove the case or rescale its intensities and run again.")


# ---- clashes with the labeled training cases ----------------------------------------------------
def check_name_clashes(cases: Sequence[str], training_cases: Sequence[str], raw_folder: str) -> None:
    clash = sorted(set(cases) & set(training_cases))
    if clash:
        raise InputCheckError(
            f"Unlabeled case(s) {clash[:5]} have the name of a training case in {raw_folder}/imagesTr; training "
            f"would confuse the two. Rename them in imagesUnlabeled (e.g. unl_{clash[0]}_0000...).")


class TrainingImages:
    """The training cases' images, compared by a digest of their voxels.

    A training image is read (once) only when an unlabeled case has its shape; its header gives the shape.
    """

    def __init__(self, training_files: Dict[str, List[str]], reader_class):
        self.training_files = training_files
        self.reader_class = reader_class
        self._shapes: Dict[str, tuple] = {}
        self._digests: Dict[str, str] = {}

    def shape_of(self, case: str) -> Optional[tuple]:
        if case not in self._shapes:
            try:  # header only where SimpleITK can read it; otherwise the image
                import SimpleITK as sitk
                reader = sitk.ImageFileReader()
                reader.SetFileName(self.training_files[case][0])
                reader.ReadImageInformation()
                self._shapes[case] = tuple(int(s) for s in reader.GetSize()[::-1])
            except Exception:
                data, _ = self.reader_class().read_images(self.training_files[case][:1])
                self._shapes[case] = tuple(int(s) for s in data.shape[1:])
        return self._shapes[case]

    def digest_of(self, case: str) -> str:
        if case not in self._digests:
            data, _ = self.reader_class().read_images(self.training_files[case])
            self._digests[case] = _digest(data)
        return self._digests[case]

    def identical_to(self, data: np.ndarray) -> Optional[str]:
        """The training case whose image has exactly these voxels (all channels), or None."""
        shape, digest = tuple(int(s) for s in data.shape[1:]), _digest(data)
        for case in sorted(self.training_files):
            if _squeezed(self.shape_of(case)) == _squeezed(shape) and self.digest_of(case) == digest:
                return case
        return None


def _digest(data: np.ndarray) -> str:
    import hashlib
    data = np.ascontiguousarray(data, dtype=np.float32)  # readers differ in dtype; the voxel values decide
    return hashlib.sha256(str((data.shape, data.dtype.str)).encode() + data.tobytes()).hexdigest()


def _squeezed(shape) -> tuple:
    return tuple(s for s in shape if s != 1)


def check_not_a_training_case(case: str, data: np.ndarray, training: TrainingImages, splits: Optional[list]) -> None:
    twin = training.identical_to(data)
    if twin is None:
        return
    folds = [i for i, s in enumerate(splits or []) if twin in s.get("val", [])]
    where = f"a validation case of fold(s) {folds}" if folds else "a labeled training case"
    raise InputCheckError(
        f"Unlabeled case {case!r} has exactly the image of training case {twin!r} ({where}). Used as unlabeled "
        f"data it would leak that case into training and inflate its validation score. Remove it from "
        f"imagesUnlabeled.")
