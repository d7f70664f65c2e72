"""Synthetic datasets and small plans, checked against real nnU-Net (CPU, no mocks).

The small-plans tests build on a copy of the session's planned one-channel 2D
dataset (the real ``nnUNetv2_plan_and_preprocess`` CLI, see conftest).
nnunetv2.paths reads nnUNet_raw/_preprocessed/_results from os.environ at call
time, so setting the environment (here and in CLI subprocesses) is enough.
3D planning is not run here: on 2 CPU cores it takes about 50 s for 32^3 cases.
"""
import glob
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import SHARED_2D_DATASETS
from nnunetv2_asyco.demo.small_plans import make_small_plans
from nnunetv2_asyco.demo.synthetic import generate_case, structure_masks, write_synthetic_dataset

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]
DATASET_NAME = f"Dataset{DATASET_ID:03d}_AsyCoSynthetic"
NUM_CLASSES = 3


def _read(fname):
    img = sitk.ReadImage(fname)
    return sitk.GetArrayFromImage(img), img.GetSpacing()


def _md5(fname):
    with open(fname, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


# ----------------------------------------------------------------------------- synthetic data

def test_2d_dataset_layout_and_contents(tmp_path):
    folder = write_synthetic_dataset(str(tmp_path), 5, name="Toy", n_train=3, n_test=2, n_unlabeled=2,
                                     n_channels=2, seed=1)
    assert folder == str(tmp_path / "Dataset005_Toy")

    dj = json.load(open(os.path.join(folder, "dataset.json")))
    assert dj["channel_names"] == {"0": "synthetic0", "1": "synthetic1"}
    assert dj["labels"] == {"background": 0, "class1": 1, "class2": 2, "class3": 3}
    assert dj["numTraining"] == 3 and dj["file_ending"] == ".nii.gz"

    def ids(sub, suffix):
        return sorted(os.path.basename(f)[:-len(suffix)] for f in glob.glob(os.path.join(folder, sub, "*" + suffix)))

    assert ids("imagesTr", "_0000.nii.gz") == ids("imagesTr", "_0001.nii.gz") == ["synth_000", "synth_001", "synth_002"]
    assert ids("labelsTr", ".nii.gz") == ["synth_000", "synth_001", "synth_002"]
    assert ids("imagesTs", "_0000.nii.gz") == ids("labelsTs", ".nii.gz") == ["test_000", "test_001"]
    assert ids("imagesUnlabeled", "_0000.nii.gz") == ["unl_000", "unl_001"]
    assert not os.path.exists(os.path.join(folder, "labelsUnlabeled"))

    seg, spacing = _read(os.path.join(folder, "labelsTr", "synth_000.nii.gz"))
    img0, _ = _read(os.path.join(folder, "imagesTr", "synth_000_0000.nii.gz"))
    img1, _ = _read(os.path.join(folder, "imagesTr", "synth_000_0001.nii.gz"))
    # 2D cases are single-slice volumes, numpy order (z, y, x)
    assert seg.shape == img0.shape == img1.shape == (1, 128, 128)
    assert spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    assert img0.dtype == np.float32 and not np.allclose(img0, img1)


def test_3d_dataset_shapes_and_labels(tmp_path):
    folder = write_synthetic_dataset(str(tmp_path), 6, dim=3, n_train=2, n_unlabeled=1)
    for case in ("synth_000", "synth_001"):
        seg, spacing = _read(os.path.join(folder, "labelsTr", case + ".nii.gz"))
        img, _ = _read(os.path.join(folder, "imagesTr", case + "_0000.nii.gz"))
        assert seg.shape == img.shape == (32, 32, 32) and spacing == (1.0, 1.0, 1.0)
        counts = np.bincount(seg.ravel(), minlength=4)
        assert len(counts) == 4 and counts.min() > 0
    img, _ = _read(os.path.join(folder, "imagesUnlabeled", "unl_000_0000.nii.gz"))
    assert img.shape == (32, 32, 32)


def test_generation_is_deterministic_and_per_case(tmp_path):
    a = write_synthetic_dataset(str(tmp_path / "a"), 7, n_train=2, seed=3)
    b = write_synthetic_dataset(str(tmp_path / "b"), 7, n_train=4, n_test=1, seed=3)
    c = write_synthetic_dataset(str(tmp_path / "c"), 7, n_train=2, seed=4)
    # same seed: the same case, whatever the other counts; another seed: another case
    for sub, f in (("imagesTr", "synth_001_0000.nii.gz"), ("labelsTr", "synth_001.nii.gz")):
        arr_a, arr_b, arr_c = (_read(os.path.join(x, sub, f))[0] for x in (a, b, c))
        np.testing.assert_array_equal(arr_a, arr_b)
        assert not np.array_equal(arr_a, arr_c)


def test_rewrite_replaces_old_cases(tmp_path):
    folder = write_synthetic_dataset(str(tmp_path), 8, n_train=4, n_unlabeled=2)
    write_synthetic_dataset(str(tmp_path), 8, n_train=2)
    assert len(glob.glob(os.path.join(folder, "labelsTr", "*"))) == 2
    assert not os.path.exists(os.path.join(folder, "imagesUnlabeled"))


@pytest.mark.parametrize("difficulty", ["standard", "hard", "benchmark"])
@pytest.mark.parametrize("shape", [(128, 128), (64, 96), (32, 32, 32), (24, 40, 48)])
def test_structures_are_disjoint_and_nested(shape, difficulty):
    for seed in range(20):
        body, masks = structure_masks(np.random.default_rng(seed), shape, 7, difficulty)
        assert masks[1].any() and not (masks[1] & ~body).any()
        for k in range(2, 8):
            assert masks[k].any() and not (masks[k] & ~masks[1]).any(), (seed, k)
            for j in range(k + 1, 8):
                assert not (masks[k] & masks[j]).any(), (seed, k, j)


def test_classes_have_distinct_intensities():
    means = np.zeros((20, 2, 4))
    for i in range(20):
        img, seg = generate_case(np.random.default_rng(i), (128, 128), 3, 2)
        means[i] = [[img[c][seg == k].mean() for k in range(4)] for c in range(2)]
    m = means.mean(0)
    # channel 0: organ < inner structure (low contrast) < boundary structure
    assert m[0, 1] + 15 < m[0, 2] < m[0, 3] - 50
    # channel 1 maps the same anatomy with another contrast
    assert abs(m[1, 1] - m[1, 3]) > 50 and abs(m[1, 1] - m[1, 2]) > 15


def _ellipse_fit_iou(mask):
    """IoU of a 2D mask with the ellipse of the same centroid and second moments (1.0 for an exact ellipse)."""
    pts = np.argwhere(mask).astype(float)
    centre, inv = pts.mean(0), np.linalg.inv(np.cov(pts.T))
    d = np.indices(mask.shape).reshape(2, -1).T - centre
    ellipse = (np.einsum("ij,jk,ik->i", d, inv, d) <= 4).reshape(mask.shape)
    return (ellipse & mask).sum() / (ellipse | mask).sum()


def _subject_stats(difficulty):
    """Per subject: class 2 - class 1 contrast, smallest boundary structure area, organ ellipse-fit IoU."""
    stats = []
    for i in range(20):
        img, seg = generate_case(np.random.default_rng(i), (128, 128), 5, 1, difficulty)
        assert set(np.unique(seg)) <= set(range(6)) and img.dtype == np.float32
        stats.append((img[0][seg == 2].mean() - img[0][seg == 1].mean(),
                      min(int((seg == k).sum()) for k in (3, 4, 5)), _ellipse_fit_iou(seg >= 1)))
    return np.array(stats)


def test_hard_difficulty_varies_more_between_subjects():
    standard, hard = _subject_stats("standard"), _subject_stats("hard")
    assert hard[:, 0].std() > 2 * standard[:, 0].std()  # subject-specific low contrast of class 2
    assert hard[:, 0].min() > 0  # still brighter than the organ on average: ambiguous, not inverted
    assert hard[:, 1].mean() < 0.6 * standard[:, 1].mean()  # smaller boundary structures
    # elastic deformation: the organ is no longer an ellipse (standard: IoU with its moment ellipse > 0.99)
    assert standard[:, 2].min() > 0.99 and hard[:, 2].mean() < 0.98
    with pytest.raises(ValueError, match="difficulty"):
        generate_case(np.random.default_rng(0), (32, 32), 3, 1, "extreme")


def test_benchmark_setting_keeps_every_class_visible_in_every_subject():
    """The benchmark setting: hard's variability, but no subject where a class hides (benchmarks/results/v2/
    generator_check.md)."""
    hard, bench = _subject_stats("hard"), _subject_stats("benchmark")
    assert bench[:, 0].min() > 15 > hard[:, 0].min()  # class 2 stands out from the organ in every subject
    assert bench[:, 1].min() >= 19  # boundary structures of >= 2.5 voxels radius (pi * 2.5^2 ~ 19.6)
    assert bench[:, 2].mean() < 0.98  # still elastically deformed
    for i in range(20):
        img, seg = generate_case(np.random.default_rng(i), (128, 128), 5, 1, "benchmark")
        means = {k: img[0][seg == k].mean() for k in range(1, 6)}
        assert means[5] < means[4] < means[1] < means[2] < means[3]  # one intensity order in every subject
        assert min(b - a for a, b in zip(sorted(means.values()), sorted(means.values())[1:])) > 15


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_synthetic_dataset(str(tmp_path), 10, dim=3, shape=(64, 64), n_train=1)
    with pytest.raises(ValueError):
        write_synthetic_dataset(str(tmp_path), 10, num_classes=8, n_train=1)
    with pytest.raises(ValueError):
        write_synthetic_dataset(str(tmp_path), 1000, n_train=1)
    write_synthetic_dataset(str(tmp_path), 11, name="First", n_train=1)
    with pytest.raises(ValueError, match="dataset id"):
        write_synthetic_dataset(str(tmp_path), 11, name="Second", n_train=1)


# ----------------------------------------------------------------------------- small plans

@pytest.fixture(scope="module")
def planned_2d(tmp_path_factory, shared_2d_dataset):
    """A tiny 2D dataset (128x128 cases), planned, verified and preprocessed by the real nnU-Net CLI (conftest)."""
    env, name = shared_2d_dataset("one_channel", tmp_path_factory.mktemp("nnunet"))
    assert name == DATASET_NAME
    with pytest.MonkeyPatch.context() as mp:
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            mp.setenv(var, env[var])
        yield Path(env["nnUNet_preprocessed"]) / DATASET_NAME


def test_small_plans_2d(planned_2d):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    source = planned_2d / "nnUNetPlans.json"
    before = _md5(source)
    path = make_small_plans(DATASET_ID, patch_size={"2d": (64, 64)}, batch_size=4, max_features=32)
    assert path == str(planned_2d / "nnUNetPlansSmall.json")
    assert _md5(source) == before

    src = PlansManager(str(source)).get_configuration("2d")
    pm = PlansManager(path)
    assert pm.plans_name == "nnUNetPlansSmall" and pm.dataset_name == DATASET_NAME
    cm = pm.get_configuration("2d")
    assert cm.data_identifier == src.data_identifier == "nnUNetPlans_2d"
    assert (planned_2d / cm.data_identifier).is_dir()
    assert cm.patch_size == [64, 64] and cm.batch_size == 4
    arch = cm.network_arch_init_kwargs
    # 64 -> 4: four poolings, five stages; every per-stage list agrees
    assert arch["n_stages"] == 5
    assert arch["strides"] == [[1, 1]] + [[2, 2]] * 4
    assert len(arch["kernel_sizes"]) == len(arch["n_conv_per_stage"]) == 5
    assert len(arch["n_conv_per_stage_decoder"]) == 4
    assert arch["features_per_stage"] == [32] * 5

    net = get_network_from_plans(cm.network_arch_class_name, arch, cm.network_arch_init_kwargs_req_import,
                                 1, NUM_CLASSES + 1, deep_supervision=False)
    assert isinstance(net, PlainConvUNet)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, NUM_CLASSES + 1, 64, 64)


def test_refuses_to_overwrite_source(planned_2d):
    before = _md5(planned_2d / "nnUNetPlans.json")
    with pytest.raises(ValueError, match="source"):
        make_small_plans(DATASET_ID, source_plans="nnUNetPlans", target_plans="nnUNetPlans")
    with pytest.raises(ValueError):
        make_small_plans(DATASET_ID, target_plans="nnUNetPlansBad", patch_size={"3d_fullres": (32, 32, 32)})
    with pytest.raises(ValueError):
        make_small_plans(DATASET_ID, target_plans="nnUNetPlansBad", patch_size={"2d": (32, 32, 32)})
    assert _md5(planned_2d / "nnUNetPlans.json") == before


def test_patch_is_padded_and_max_stages(planned_2d):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    path = make_small_plans(DATASET_ID, target_plans="nnUNetPlansPad", patch_size={"2d": (60, 60)})
    cm = PlansManager(path).get_configuration("2d")
    assert cm.patch_size == [64, 64]  # padded to a multiple of 2**4, like the planner does
    assert cm.network_arch_init_kwargs["features_per_stage"] == [32, 64, 64, 64, 64]

    # max_stages alone truncates the source topology and keeps its patch size
    path = make_small_plans(DATASET_ID, target_plans="nnUNetPlansShallow", max_stages=3)
    src = PlansManager(str(planned_2d / "nnUNetPlans.json")).get_configuration("2d")
    cm = PlansManager(path).get_configuration("2d")
    arch = cm.network_arch_init_kwargs
    assert cm.patch_size == src.patch_size and cm.batch_size == src.batch_size
    assert arch["n_stages"] == 3 and arch["strides"] == src.network_arch_init_kwargs["strides"][:3]
    assert len(arch["n_conv_per_stage"]) == 3 and len(arch["n_conv_per_stage_decoder"]) == 2


def test_small_plans_residual_encoder(planned_2d):
    """ResidualEncoderUNet plans (n_blocks_per_stage), made by nnU-Net's own ResEnc M planner."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import \
        nnUNetPlannerResEncM
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    nnUNetPlannerResEncM(DATASET_ID).plan_experiment()  # reuses the fingerprint; no preprocessing needed
    path = make_small_plans(DATASET_ID, source_plans="nnUNetResEncUNetMPlans",
                            target_plans="nnUNetResEncUNetMPlansSmall", patch_size={"2d": (48, 80)},
                            batch_size=2, max_features=32, max_stages=3)
    cm = PlansManager(path).get_configuration("2d")
    arch = cm.network_arch_init_kwargs
    assert cm.data_identifier == "nnUNetPlans_2d" and cm.patch_size == [48, 80]
    assert arch["n_stages"] == 3 and arch["n_blocks_per_stage"] == [1, 3, 4]
    assert len(arch["n_conv_per_stage_decoder"]) == 2 and arch["features_per_stage"] == [32, 32, 32]
    net = get_network_from_plans(cm.network_arch_class_name, arch, cm.network_arch_init_kwargs_req_import,
                                 1, NUM_CLASSES + 1, deep_supervision=True)
    assert isinstance(net, ResidualEncoderUNet)
    with torch.no_grad():
        outs = net(torch.rand(1, 1, 48, 80))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 48, 80), (1, 4, 24, 40)]


def test_inheriting_configuration_follows_its_edited_parent(planned_2d):
    """Custom configurations that inherit (nnU-Net's documented way) keep inheriting."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.load(open(planned_2d / "nnUNetPlans.json"))
    plans["configurations"]["2d_bs8"] = {"inherits_from": "2d", "batch_size": 8}
    with open(planned_2d / "nnUNetPlansWithChild.json", "w") as f:
        json.dump(plans, f)

    path = make_small_plans(DATASET_ID, source_plans="nnUNetPlansWithChild", target_plans="nnUNetPlansChildSmall",
                            patch_size={"2d": (64, 64)}, max_features=32)
    raw = json.load(open(path))["configurations"]["2d_bs8"]
    assert raw == {"inherits_from": "2d", "batch_size": 8}
    child = PlansManager(path).get_configuration("2d_bs8")
    assert child.patch_size == [64, 64] and child.batch_size == 8
    assert child.network_arch_init_kwargs["features_per_stage"] == [32] * 5

    path = make_small_plans(DATASET_ID, source_plans="nnUNetPlansWithChild", target_plans="nnUNetPlansChildSmall",
                            batch_size=3)
    assert PlansManager(path).get_configuration("2d_bs8").batch_size == 3


def test_trainer_trains_one_step_with_small_plans(planned_2d, monkeypatch):
    from nnunetv2.run.run_training import get_trainer_from_args

    make_small_plans(DATASET_ID, patch_size={"2d": (64, 64)}, batch_size=4, max_features=32)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # single-threaded augmenter: no worker processes
    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, "nnUNetTrainer", "nnUNetPlansSmall",
                                    device=torch.device("cpu"))
    trainer.initialize()
    # the small plans read the data preprocessed for nnUNetPlans
    assert trainer.preprocessed_dataset_folder == str(planned_2d / "nnUNetPlans_2d")
    dl_train, _ = trainer.get_dataloaders()
    batch = next(dl_train)
    assert tuple(batch["data"].shape) == (4, 1, 64, 64)
    loss = trainer.train_step(batch)["loss"]
    assert np.isfinite(loss)
