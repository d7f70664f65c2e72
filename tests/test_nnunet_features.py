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

from conftest import (SHARED_2D_DATASETS, SHARED_PLANS, nnunet_folders_env, plan_tiny_dataset, run_cli,
                      run_clis_concurrently, training_env)

PLANS = SHARED_PLANS
REGION_DATASET_ID = 921
REGION_TRAINERS = {  # trainer -> (loss terms it logs, line its log must contain)
    "nnUNetTrainerAsyCo_smoke": (("supervised", "branch_output", "inter_head", "representation"),
                                 "Branch outputs as sigmoid probabilities"),
    "nnUNetTrainerCPS_smoke": (("supervised", "cps"), "Branch outputs as sigmoid probabilities"),
    "nnUNetTrainerMeanTeacher_smoke": (("supervised", "consistency"),
                                       "Student and teacher outputs as sigmoid probabilities"),
}


def set_region_labels(folder):
    """BraTS-style overlapping regions: organ = {1, 2}, inner = {2}, small = {3}; painted back in that order."""
    path = os.path.join(folder, "dataset.json")
    ds = json.load(open(path))
    ds["labels"] = {"background": 0, "organ": [1, 2], "inner": [2], "small": [3]}
    ds["regions_class_order"] = [1, 2, 3]
    json.dump(ds, open(path, "w"), indent=4)


def ingest_and_pick_subset(env, dataset_id):
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", dataset_id, "-c", "2d", "-p", PLANS, "-np", 1], env=env)
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", dataset_id, "-f", 0, "-n", 3, "--seed", 0], env=env)


def train_all(env, dataset_id, trainers):
    """Train every trainer on fold 0 at once (``nnUNetv2_train``, smoke length)."""
    run_clis_concurrently([["nnUNetv2_train", dataset_id, "2d", 0, "-p", PLANS, "-tr", tr, "-device", "cpu"]
                           for tr in trainers], training_env(env))


def fold_dir(env, name, trainer):
    return os.path.join(env["nnUNet_results"], name, f"{trainer}__{PLANS}__2d", "fold_0")


def training_log(fold_dir):
    return open(glob.glob(os.path.join(fold_dir, "training_log*.txt"))[0]).read()


def predict(env, name, dataset_id, trainer, out):
    """``nnUNetv2_predict`` on imagesTs (one case); returns the predicted label map."""
    images = os.path.join(env["nnUNet_raw"], name, "imagesTs")
    run_cli(["nnUNetv2_predict", "-i", images, "-o", out, "-d", dataset_id, "-c", "2d", "-p", PLANS, "-tr", trainer,
             "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_tta"], env=env)
    preds = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(out.glob("*.nii.gz"))]
    assert len(preds) == 1 and preds[0].shape == (1, 128, 128)
    return preds[0]


def checkpoint(fold_dir):
    return torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)


def assert_terms_finite(ckpt, terms):
    for term in terms:
        values = ckpt["logging"][f"train_{term}"]
        assert len(values) == 2 and np.all(np.isfinite(values)), term


@pytest.fixture(scope="module")
def region_dataset(tmp_path_factory):
    """A region-based dataset planned by nnU-Net, the three semi-supervised trainers trained on it, AsyCo's
    prediction of the test case (CPS predicts through the same two-branch ensemble as AsyCo, Mean Teacher
    through nnU-Net's stock network)."""
    tmp = tmp_path_factory.mktemp("regions")
    env = nnunet_folders_env(tmp)
    name = plan_tiny_dataset(env, REGION_DATASET_ID, 2, "2d", n_train=6, n_test=1, n_unlabeled=2, shape=(128, 128),
                             patch=(64, 64), small_plans=PLANS, edit_raw=set_region_labels)
    ingest_and_pick_subset(env, REGION_DATASET_ID)
    train_all(env, REGION_DATASET_ID, REGION_TRAINERS)
    prediction = predict(env, name, REGION_DATASET_ID, "nnUNetTrainerAsyCo_smoke", tmp / "pred")
    return env, name, prediction


@pytest.mark.parametrize("trainer", REGION_TRAINERS)
def test_region_dataset_trains_sigmoid_outputs_and_predicts_labels(region_dataset, trainer):
    env, name, prediction = region_dataset
    terms, activation_line = REGION_TRAINERS[trainer]
    folder = fold_dir(env, name, trainer)
    assert activation_line in training_log(folder)
    ckpt = checkpoint(folder)
    assert_terms_finite(ckpt, terms)
    if "branch_a.decoder.seg_layers.0.weight" in ckpt["network_weights"]:
        # three regions -> three sigmoid channels; the ensemble mode travels with the weights to the predictor
        assert ckpt["network_weights"]["branch_a.decoder.seg_layers.0.weight"].shape[0] == 3
        assert bool(ckpt["network_weights"]["sigmoid_outputs"])
    if trainer.startswith("nnUNetTrainerAsyCo"):  # the predictor turns region probabilities back into labels
        assert set(np.unique(prediction)) <= {0, 1, 2, 3} and len(np.unique(prediction)) > 1


def test_two_channel_dataset_with_ignore_label(tmp_path, shared_2d_dataset):
    """Two input channels and partial annotations (ignore label) in one dataset, each checked on its own."""
    kind = "two_channel_ignore"
    dataset_id = SHARED_2D_DATASETS[kind]["dataset_id"]
    env, name = shared_2d_dataset(kind, tmp_path)
    ingest_and_pick_subset(env, dataset_id)
    # ingestion read both channels of every unlabeled case; the ignore label does not concern it
    assert len(glob.glob(os.path.join(env["nnUNet_preprocessed"], name, "nnUNetPlans_2d_unlabeled", "v*", "*.pkl"))) == 2
    train_all(env, dataset_id, ["nnUNetTrainerAsyCo_smoke"])
    folder = fold_dir(env, name, "nnUNetTrainerAsyCo_smoke")
    assert "Branch outputs as softmax probabilities" in training_log(folder)
    weights = checkpoint(folder)["network_weights"]
    for branch in ("branch_a", "branch_b"):
        assert weights[f"{branch}.encoder.stages.0.0.convs.0.conv.weight"].shape[1] == 2  # two input channels
        # the ignore label gets no output channel: background + 3 classes
        assert weights[f"{branch}.decoder.seg_layers.0.weight"].shape[0] == 4
    assert_terms_finite(checkpoint(folder), ("supervised", "branch_output", "inter_head", "representation"))
    prediction = predict(env, name, dataset_id, "nnUNetTrainerAsyCo_smoke", tmp_path / "pred")
    assert set(np.unique(prediction)) <= {0, 1, 2, 3} and len(np.unique(prediction)) > 1
