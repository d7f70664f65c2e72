"""nnU-Net features beyond plain one-channel label maps, through the real commands on tiny 2D datasets.

Region-based training (sigmoid outputs); two-channel input with the ignore label:
plan and preprocess -> ingest unlabeled scans -> labeled subset -> train a
short variant -> predict with ``nnUNetv2_predict``.
"""
import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import nnunet_folders_env, plan_tiny_dataset, run_cli, training_env

PLANS = "nnUNetPlansTiny"
IGNORE = 4


def set_region_labels(folder):
    """BraTS-style overlapping regions: organ = {1, 2}, inner = {2}, small = {3}; painted back in that order."""
    path = os.path.join(folder, "dataset.json")
    ds = json.load(open(path))
    ds["labels"] = {"background": 0, "organ": [1, 2], "inner": [2], "small": [3]}
    ds["regions_class_order"] = [1, 2, 3]
    json.dump(ds, open(path, "w"), indent=4)


def add_ignore_label(folder):
    """Partial annotations: label 4 ("ignore") over the top quarter of every training label map."""
    path = os.path.join(folder, "dataset.json")
    ds = json.load(open(path))
    ds["labels"]["ignore"] = IGNORE
    json.dump(ds, open(path, "w"), indent=4)
    for f in glob.glob(os.path.join(folder, "labelsTr", "*.nii.gz")):
        img = sitk.ReadImage(f)
        arr = sitk.GetArrayFromImage(img)
        arr[:, : arr.shape[1] // 4] = IGNORE
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, f, useCompression=True)


def prepare(tmp_path, dataset_id, edit_raw=None, n_channels=1):
    env = nnunet_folders_env(tmp_path)
    name = plan_tiny_dataset(env, dataset_id, 2, "2d", n_train=6, n_test=1, n_unlabeled=2, shape=(128, 128),
                             patch=(64, 64), small_plans=PLANS, n_channels=n_channels, edit_raw=edit_raw)
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", dataset_id, "-c", "2d", "-p", PLANS, "-np", 1], env=env)
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", dataset_id, "-f", 0, "-n", 3, "--seed", 0], env=env)
    return env, name


def train_and_predict(env, name, dataset_id, trainer, tmp_path, predict=True):
    """Train ``trainer`` on fold 0, predict imagesTs; returns (fold folder, training log text, predictions)."""
    run_cli(["nnUNetv2_train", dataset_id, "2d", 0, "-p", PLANS, "-tr", trainer, "-device", "cpu"],
            env=training_env(env))
    fold_dir = os.path.join(env["nnUNet_results"], name, f"{trainer}__{PLANS}__2d", "fold_0")
    log = open(glob.glob(os.path.join(fold_dir, "training_log*.txt"))[0]).read()
    if not predict:
        return fold_dir, log, None
    images = os.path.join(env["nnUNet_raw"], name, "imagesTs")
    out = tmp_path / f"pred_{trainer}"
    run_cli(["nnUNetv2_predict", "-i", images, "-o", out, "-d", dataset_id, "-c", "2d", "-p", PLANS, "-tr", trainer,
             "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_tta"], env=env)
    preds = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(out.glob("*.nii.gz"))]
    assert len(preds) == 1 and preds[0].shape == (1, 128, 128)
    return fold_dir, log, preds


def checkpoint(fold_dir):
    return torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)


def assert_terms_finite(ckpt, terms):
    for term in terms:
        values = ckpt["logging"][f"train_{term}"]
        assert len(values) == 2 and np.all(np.isfinite(values)), term


@pytest.fixture(scope="module")
def region_dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regions")
    env, name = prepare(tmp, 921, edit_raw=set_region_labels)
    return env, name, tmp


@pytest.mark.parametrize("trainer,terms,activation_line", [
    ("nnUNetTrainerAsyCo_smoke", ("supervised", "branch_output", "inter_head", "representation"),
     "Branch outputs as sigmoid probabilities"),
    ("nnUNetTrainerCPS_smoke", ("supervised", "cps"), "Branch outputs as sigmoid probabilities"),
    ("nnUNetTrainerMeanTeacher_smoke", ("supervised", "consistency"),
     "Student and teacher outputs as sigmoid probabilities"),
])
def test_region_dataset_trains_sigmoid_outputs_and_predicts_labels(region_dataset, trainer, terms, activation_line):
    env, name, tmp = region_dataset
    # CPS predicts through the same two-branch ensemble as AsyCo, Mean Teacher through nnU-Net's stock network
    predict = trainer.startswith("nnUNetTrainerAsyCo")
    fold_dir, log, preds = train_and_predict(env, name, 921, trainer, tmp, predict=predict)
    assert activation_line in log
    ckpt = checkpoint(fold_dir)
    assert_terms_finite(ckpt, terms)
    if "branch_a.decoder.seg_layers.0.weight" in ckpt["network_weights"]:
        # three regions -> three sigmoid channels; the ensemble mode travels with the weights to the predictor
        assert ckpt["network_weights"]["branch_a.decoder.seg_layers.0.weight"].shape[0] == 3
        assert bool(ckpt["network_weights"]["sigmoid_outputs"])
    if predict:  # the predictor turns region probabilities back into labels with regions_class_order
        assert set(np.unique(preds[0])) <= {0, 1, 2, 3} and len(np.unique(preds[0])) > 1


def test_two_channel_dataset_with_ignore_label(tmp_path):
    """Two input channels and partial annotations (ignore label) in one dataset, each checked on its own."""
    env, name = prepare(tmp_path, 922, edit_raw=add_ignore_label, n_channels=2)
    # ingestion read both channels of every unlabeled case; the ignore label does not concern it
    assert len(glob.glob(os.path.join(env["nnUNet_preprocessed"], name, "nnUNetPlans_2d_unlabeled", "*.pkl"))) == 2
    fold_dir, log, preds = train_and_predict(env, name, 922, "nnUNetTrainerAsyCo_smoke", tmp_path)
    assert "Branch outputs as softmax probabilities" in log
    ckpt = checkpoint(fold_dir)
    weights = ckpt["network_weights"]
    for branch in ("branch_a", "branch_b"):
        assert weights[f"{branch}.encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 2  # two input channels
        # the ignore label gets no output channel: background + 3 classes
        assert weights[f"{branch}.decoder.seg_layers.0.weight"].shape[0] == 4
    assert_terms_finite(ckpt, ("supervised", "branch_output", "inter_head", "representation"))
    assert set(np.unique(preds[0])) <= {0, 1, 2, 3} and len(np.unique(preds[0])) > 1
