"""Deterministic synthetic multi-class "anatomy-like" datasets in nnU-Net raw format.

Every subject is a body (background tissue) containing one large organ
(class 1). Inside the organ sit a larger, low-contrast inner structure
(class 2) and small structures near the organ's boundary (class 3, and classes
4..7 when asked for). Shapes, sizes, positions and orientations vary between
subjects; images get partial-volume blurring, a smooth multiplicative bias
field and Gaussian noise. Classes have distinct mean intensities, so a tiny
U-Net can learn them, while class 2 vs class 1 stays deliberately hard.

Each case draws from its own random stream keyed on (seed, split, index), so
a case does not change when other splits or case counts change.

Three settings (``DIFFICULTIES``): "standard" (above; what the tests use);
"hard", where a few labeled subjects must not cover the population: every
subject also gets a smooth elastic deformation of its anatomy (irregular,
non-ellipsoid outlines), wider organ and structure size ranges, smaller
boundary structures, its own tissue contrasts (class 2 vs 1 between 12 and 36
units), noise level, blur (partial volume) and a stronger bias field; and
"benchmark", the quality benchmark's setting: hard's variability with every
class visible in every subject (class 2 at least 24 units above class 1,
noise SD 10-20, boundary structures of at least 2.5 voxels radius, class 5
dark instead of nearly as bright as class 3).

Layout written by :func:`write_synthetic_dataset`::

    DatasetXXX_name/
        dataset.json
        imagesTr/synth_000_0000.nii.gz   labelsTr/synth_000.nii.gz
        imagesTs/test_000_0000.nii.gz    labelsTs/test_000.nii.gz
        imagesUnlabeled/unl_000_0000.nii.gz
"""
import glob
import json
import os
import shutil
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

# split name -> (case id prefix, images folder, labels folder or None, stream key)
SPLITS: Dict[str, Tuple[str, str, Optional[str], int]] = {
    "train": ("synth", "imagesTr", "labelsTr", 0),
    "test": ("test", "imagesTs", "labelsTs", 1),
    "unlabeled": ("unl", "imagesUnlabeled", None, 2),
}

MAX_CLASSES = 7  # organ + inner structure + 5 boundary slots

# Channel-0 mean intensity per tissue. Keys: "air", "body", then label values.
# 2 vs 1 is low contrast on purpose (30 units against noise sigma 15).
_BASE_MEANS = {"air": 0.0, "body": 100.0, 1: 200.0, 2: 230.0, 3: 320.0,
               4: 150.0, 5: 280.0, 6: 370.0, 7: 130.0}
_NOISE_SIGMA = 15.0
_BLUR_SIGMA = 0.8  # voxels; softens edges like partial volume

# Angles (degrees) of the boundary-structure slots, relative to a random
# direction u, each jittered by up to +-_SLOT_JITTER. The inner structure sits
# on the -u side; these angles keep all of them disjoint (see structure_masks).
_SLOT_ANGLES = (0.0, 55.0, -55.0, 110.0, -110.0)
_SLOT_JITTER = 5.0


@dataclass(frozen=True)
class Variability:
    """How much subjects differ: what separates the generator settings."""
    organ_axes: Tuple[float, float]  # organ semi-axes, fraction of the image edge
    organ_rotation_deg: float
    small_radius: Optional[Tuple[float, float]]  # boundary structures, fraction of the organ's smallest axis
    bias_strength: float  # times the +-20 % bias field
    elastic: bool  # smooth random deformation of the whole anatomy
    subject_appearance: bool  # per-subject tissue means, noise level and blur
    # per-subject appearance (subject_appearance only): ranges drawn per subject
    noise_sigma: Tuple[float, float] = (12.0, 28.0)
    blur_sigma: Tuple[float, float] = (0.7, 1.6)
    inner_contrast: Tuple[float, float] = (0.4, 1.2)  # class 2 - class 1, as a fraction of the base 30 units
    min_small_radius_voxels: float = 1.5
    tissue_means: Optional[Dict[object, float]] = None  # replaces _BASE_MEANS entries (channel 0 and those derived)


VARIABILITY = {
    "standard": Variability((0.26, 0.36), 30.0, None, 1.0, elastic=False, subject_appearance=False),
    "hard": Variability((0.22, 0.38), 45.0, (0.09, 0.19), 1.8, elastic=True, subject_appearance=True),
    # the quality benchmark's setting: hard's variability between subjects, but the hardest cases of "hard" (class 2
    # only 12 units above class 1 under noise of SD 28; boundary structures of 1.5 voxels under blur 1.6) made
    # "learnt or not" a coin flip; here every class is visible in every subject (benchmarks/PROTOCOL.md)
    # class 5 (320 vs class 3's 280 in "hard") differed from class 3 by less than the per-subject intensity
    # spread, and fully supervised nnU-Net labelled it class 3 in 1 of 6 test cases; here it is a small dark
    # structure, and class 4 sits 70 units below the organ instead of 50
    "benchmark": Variability((0.22, 0.38), 45.0, (0.12, 0.19), 1.5, elastic=True, subject_appearance=True,
                             noise_sigma=(10.0, 20.0), blur_sigma=(0.7, 1.3), inner_contrast=(0.8, 1.4),
                             min_small_radius_voxels=2.5, tissue_means={4: 130.0, 5: 50.0}),
}
DIFFICULTIES = tuple(VARIABILITY)


def variability(difficulty: str) -> Variability:
    if difficulty not in VARIABILITY:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}.")
    return VARIABILITY[difficulty]


def default_shape(dim: int) -> Tuple[int, ...]:
    if dim == 2:
        return (128, 128)
    if dim == 3:
        return (32, 32, 32)
    raise ValueError(f"dim must be 2 or 3, got {dim}.")


def channel_means(channel: int, overrides: Optional[Dict[object, float]] = None) -> Dict[object, float]:
    """Mean intensity per tissue for one channel.

    Channels are different monotone or inverting maps of channel 0 (think T1
    vs T2 contrast), so every channel still separates all classes.
    """
    base = {**_BASE_MEANS, **(overrides or {})}
    if channel == 0:
        return base
    out = {}
    for tissue, v in base.items():
        if tissue == "air":
            out[tissue] = 0.0
        elif channel % 2 == 1:
            out[tissue] = 450.0 - v + 10.0 * channel  # inverted contrast
        else:
            out[tissue] = 20.0 * np.sqrt(v) * (1.0 + 0.1 * channel)  # compressed contrast
    return out


def _rotation_matrix(rng: np.random.Generator, dim: int, max_deg: float) -> np.ndarray:
    """Product of random rotations in every axis plane, each within +-max_deg."""
    rot = np.eye(dim)
    for a in range(dim):
        for b in range(a + 1, dim):
            t = np.deg2rad(rng.uniform(-max_deg, max_deg))
            r = np.eye(dim)
            r[a, a] = r[b, b] = np.cos(t)
            r[a, b], r[b, a] = -np.sin(t), np.sin(t)
            rot = rot @ r
    return rot


def _ellipsoid(coords: np.ndarray, center, semi_axes, rot: np.ndarray) -> np.ndarray:
    """Boolean mask of a rotated ellipsoid. coords has shape (dim, *shape)."""
    d = coords - np.asarray(center, dtype=float).reshape((-1,) + (1,) * (coords.ndim - 1))
    local = np.tensordot(rot.T, d, axes=1)  # into the ellipsoid's own frame
    a = np.asarray(semi_axes, dtype=float).reshape((-1,) + (1,) * (coords.ndim - 1))
    return np.sum((local / a) ** 2, axis=0) <= 1.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _elastic_coords(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Voxel coordinates plus a smooth random displacement (up to ~5% of the image edge).

    Every mask of a subject is evaluated at the same displaced coordinates, so
    masks that are disjoint (or nested) before stay disjoint (or nested).
    """
    size = np.asarray(shape, dtype=float)
    coords = np.indices(shape, dtype=float)
    for a in range(len(shape)):
        field = ndimage.gaussian_filter(rng.normal(size=tuple(shape)), sigma=0.12 * size.min(), mode="wrap")
        coords[a] += field / (np.abs(field).max() + 1e-12) * 0.05 * size[a] * rng.uniform(0.5, 1.0)
    return coords


def structure_masks(rng: np.random.Generator, shape: Sequence[int], num_classes: int,
                    difficulty: str = "standard") -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
    """Body mask and one boolean mask per label 1..num_classes for one subject.

    Masks of labels >= 2 are disjoint and lie inside the organ (label 1) by
    construction; painting them over the organ gives the label map.
    """
    var = variability(difficulty)
    dim = len(shape)
    size = np.asarray(shape, dtype=float)
    coords = _elastic_coords(rng, shape) if var.elastic else np.indices(shape, dtype=float)
    eye = np.eye(dim)

    body_c = (size - 1) / 2 + rng.uniform(-0.02, 0.02, dim) * size
    body_a = size * rng.uniform(0.44, 0.48, dim)
    body = _ellipsoid(coords, body_c, body_a, eye)

    organ_c = (size - 1) / 2 + rng.uniform(-0.05, 0.05, dim) * size
    organ_a = size * rng.uniform(*var.organ_axes, dim)
    organ_r = _rotation_matrix(rng, dim, var.organ_rotation_deg)
    # Keep the organ inside the body: in coordinates where the body is the unit
    # ball, the organ reaches at most |centre| + its largest semi-axis from 0.
    centre_n = np.linalg.norm((organ_c - body_c) / body_a)
    largest_n = np.linalg.norm(organ_r * organ_a[None] / body_a[:, None], ord=2)
    organ_a = organ_a * min(1.0, (0.97 - centre_n) / largest_n)
    masks = {1: _ellipsoid(coords, organ_c, organ_a, organ_r)}

    # Work in the organ's normalised frame, where the organ is the unit ball.
    # There the inner structure lies in a ball of radius 0.40 around -(0.20..0.28)u,
    # and each boundary structure in a ball of radius <= 0.21 around (0.70..0.76)
    # times its slot direction. So all lie inside the organ; neighbouring slots
    # (>= 45 degrees apart) are >= 0.53 apart (> 2 * 0.21), and the slots at
    # +-(110 +- 5) degrees stay >= 0.635 from the inner centre (> 0.40 + 0.21).
    u = _unit(rng.normal(size=dim))
    v = rng.normal(size=dim)
    w = _unit(v - (v @ u) * u)  # unit vector orthogonal to u: slots rotate in the (u, w) plane

    def to_image(p_norm):  # normalised organ frame -> voxel coordinates
        return organ_c + organ_r @ (organ_a * p_norm)

    if num_classes >= 2:
        inner_c = to_image(-rng.uniform(0.2, 0.28) * u)
        inner_a = organ_a * rng.uniform(0.32, 0.40, dim)
        masks[2] = _ellipsoid(coords, inner_c, inner_a, organ_r)

    for k, angle in zip(range(3, num_classes + 1), _SLOT_ANGLES):
        t = np.deg2rad(angle + rng.uniform(-_SLOT_JITTER, _SLOT_JITTER))
        center = to_image(rng.uniform(0.70, 0.76) * (np.cos(t) * u + np.sin(t) * w))
        radius = organ_a.min() * rng.uniform(0.17, 0.21)  # drawn in every mode: the random stream stays the same
        if var.small_radius:  # a minimum in voxels so small images keep them; <= 0.21 keeps them disjoint
            radius = min(max(organ_a.min() * rng.uniform(*var.small_radius), var.min_small_radius_voxels),
                         organ_a.min() * 0.21)
        masks[k] = _ellipsoid(coords, center, [radius] * dim, eye)
    return body, masks


def _bias_field(rng: np.random.Generator, shape: Sequence[int], strength: float = 1.0) -> np.ndarray:
    """Smooth multiplicative field (about +-20 % times strength): random linear + quadratic terms."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    log_field = np.zeros(shape)
    for g in grids:
        log_field += strength * (rng.uniform(-0.12, 0.12) * g + rng.uniform(-0.08, 0.08) * g ** 2)
    return np.exp(log_field)


def _subject_means(rng: np.random.Generator, means: Dict[object, float],
                   inner_contrast: Tuple[float, float]) -> Dict[object, float]:
    """The subject's own tissue intensities (+-8 %), with class 2 a subject-specific step above class 1."""
    out = {t: (v if t == "air" else v * rng.uniform(0.92, 1.08)) for t, v in means.items()}
    if 1 in out and 2 in out:
        out[2] = out[1] + (means[2] - means[1]) * rng.uniform(*inner_contrast)
    return out


def generate_case(rng: np.random.Generator, shape: Sequence[int], num_classes: int = 3,
                  n_channels: int = 1, difficulty: str = "standard") -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic subject.

    Returns (images float32 of shape (n_channels, *shape), labels uint8 of shape
    shape with values 0..num_classes).
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}.")
    var = variability(difficulty)
    body, masks = structure_masks(rng, shape, num_classes, difficulty)
    labels = np.zeros(shape, dtype=np.uint8)
    for k, m in masks.items():
        labels[m] = k
    bias = _bias_field(rng, shape, strength=var.bias_strength)
    noise_sigma = rng.uniform(*var.noise_sigma) if var.subject_appearance else _NOISE_SIGMA
    blur_sigma = rng.uniform(*var.blur_sigma) if var.subject_appearance else _BLUR_SIGMA
    images = np.empty((n_channels, *shape), dtype=np.float32)
    for c in range(n_channels):
        means = channel_means(c, var.tissue_means)
        if var.subject_appearance:
            means = _subject_means(rng, means, var.inner_contrast)
        img = np.full(shape, means["air"])
        img[body] = means["body"]
        for k in range(1, num_classes + 1):
            img[labels == k] = means[k]
        img = ndimage.gaussian_filter(img, blur_sigma)
        img = img * bias * rng.uniform(0.9, 1.1)  # per-subject gain
        img += rng.normal(0.0, noise_sigma, size=img.shape)
        images[c] = img
    return images, labels


def _write(arr: np.ndarray, fname: str, dim: int) -> None:
    # 2D cases are stored as 3D volumes with a single slice (numpy order z, y, x),
    # which is what nnU-Net's SimpleITK reader expects for 2D NIfTI datasets.
    if dim == 2:
        arr = arr[None]
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(img, fname, useCompression=True)


def _dataset_folder(raw_root: str, dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}.")
    folder_name = f"Dataset{int(dataset_id):03d}_{name}"
    # nnU-Net resolves ids by folder prefix; two names for one id would make that ambiguous.
    clashes = [os.path.basename(p) for p in glob.glob(os.path.join(raw_root, f"Dataset{int(dataset_id):03d}_*"))
               if os.path.basename(p) != folder_name]
    if clashes:
        raise ValueError(f"{raw_root} already holds {clashes} with dataset id {dataset_id}; "
                         f"pick another id or remove it.")
    return os.path.join(raw_root, folder_name)


def case_ids(split: str, n: int) -> list:
    prefix = SPLITS[split][0]
    return [f"{prefix}_{i:03d}" for i in range(n)]


def write_synthetic_dataset(raw_root: str, dataset_id: int, name: str = "AsyCoSynthetic", dim: int = 2,
                            shape: Optional[Sequence[int]] = None, *, n_train: int, n_test: int = 0,
                            n_unlabeled: int = 0, num_classes: int = 3, n_channels: int = 1, seed: int = 0,
                            file_ending: str = ".nii.gz", difficulty: str = "standard") -> str:
    """Write a synthetic dataset to ``raw_root/DatasetXXX_name`` and return that path.

    Split folders from an earlier call are replaced, so the folder always
    matches the arguments of the latest call.
    """
    shape = tuple(int(s) for s in (shape if shape is not None else default_shape(dim)))
    if dim not in (2, 3) or len(shape) != dim:
        raise ValueError(f"shape {shape} does not match dim={dim} (must be 2 or 3).")
    if n_train < 1 or n_test < 0 or n_unlabeled < 0 or n_channels < 1:
        raise ValueError("need n_train >= 1, n_test >= 0, n_unlabeled >= 0, n_channels >= 1.")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}.")
    variability(difficulty)  # unknown names fail before anything is written

    folder = _dataset_folder(raw_root, dataset_id, name)
    counts = {"train": n_train, "test": n_test, "unlabeled": n_unlabeled}
    for split, (_, img_dir, lab_dir, key) in SPLITS.items():
        for sub in (img_dir, lab_dir):
            if sub is not None:
                shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
        if counts[split] == 0:
            continue
        os.makedirs(os.path.join(folder, img_dir))
        if lab_dir is not None:
            os.makedirs(os.path.join(folder, lab_dir))
        for i, cid in enumerate(case_ids(split, counts[split])):
            rng = np.random.default_rng([seed, key, i])
            images, labels = generate_case(rng, shape, num_classes, n_channels, difficulty)
            for c in range(n_channels):
                _write(images[c], os.path.join(folder, img_dir, f"{cid}_{c:04d}{file_ending}"), dim)
            if lab_dir is not None:
                _write(labels, os.path.join(folder, lab_dir, f"{cid}{file_ending}"), dim)

    _write_dataset_json(folder, name, n_channels, num_classes, counts, file_ending, dim, shape, seed, difficulty)
    return folder


def _write_dataset_json(folder, name, n_channels, num_classes, counts, file_ending, dim, shape, seed,
                        difficulty) -> None:
    labels = {"background": 0}
    labels.update({f"class{k}": k for k in range(1, num_classes + 1)})
    dataset_json = {
        # names other than CT/noNorm/... give nnU-Net's default z-score normalisation
        "channel_names": {str(c): f"synthetic{c}" for c in range(n_channels)},
        "labels": labels,
        "numTraining": counts["train"],
        "file_ending": file_ending,
        # informational only; nnU-Net ignores these
        "name": name,
        "description": f"nnunetv2_asyco synthetic {dim}D dataset, shape {list(shape)}, seed {seed}, "
                       f"difficulty {difficulty}. "
                       f"imagesTs/labelsTs: held-out test cases; imagesUnlabeled: images without labels.",
        "numTest": counts["test"],
        "numUnlabeled": counts["unlabeled"],
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=4)
