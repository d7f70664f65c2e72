"""AsyCo on a tiny synthetic 3D dataset through the real nnU-Net commands: 3d_fullres, 3d_lowres, the cascade."""
import copy
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import nnunet_folders_env, plan_tiny_dataset, run_cli, run_clis_concurrently, training_env

DATASET_ID = 913
PLANS = "nnUNetPlansTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"
CONFIGURATIONS = ("3d_fullres", "3d_lowres")


def add_low_resolution_stage(env, name):
    """3d_lowres (half resolution) and 3d_cascade_fullres, as nnU-Net plans them for large images.

    The tiny test images are too small for nnU-Net's planner to propose a
    low-resolution stage, so the two configurations are added to the plans by hand
    (``nnUNetv2_preprocess`` then preprocesses 3d_lowres).
    """
    path = os.path.join(env["nnUNet_preprocessed"], name, PLANS + ".json")
    plans = json.load(open(path))
    full = plans["configurations"]["3d_fullres"]
    low = copy.deepcopy(full)
    low.update(data_identifier=f"{PLANS}_3d_lowres", spacing=[2 * s for s in full["spacing"]],
               median_image_size_in_voxels=[m // 2 for m in full["median_image_size_in_voxels"]],
               patch_size=[16, 16, 16], next_stage="3d_cascade_fullres")
    plans["configurations"]["3d_lowres"] = low
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    json.dump(plans, open(path, "w"), indent=4)


def ingest_command(configuration):
    return ["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", configuration, "-p", PLANS, "-np", 1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Plan 3d_fullres, add 3d_lowres, ingest unlabeled scans for both, record a labeled subset, train both and
    predict the test case with both (the two configurations side by side at each step)."""
    root = tmp_path_factory.mktemp("pipeline3d")
    env = nnunet_folders_env(root)
    name = plan_tiny_dataset(env, DATASET_ID, 3, "3d_fullres", n_train=6, n_test=1, n_unlabeled=2,
                             shape=(32, 32, 32), patch=(32, 32, 32), small_plans=PLANS)
    add_low_resolution_stage(env, name)
    run_clis_concurrently([["nnUNetv2_preprocess", "-d", DATASET_ID, "-plans_name", PLANS, "-c", "3d_lowres",
                            "-np", 1], ingest_command("3d_fullres"),
                           ["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 3, "--seed", 0]], env)
    run_cli(ingest_command("3d_lowres"), env=env)
    run_clis_concurrently([["nnUNetv2_train", DATASET_ID, c, 0, "-p", PLANS, "-tr", TRAINER, "-device", "cpu"]
                           for c in CONFIGURATIONS], training_env(env))
    images = os.path.join(env["nnUNet_raw"], name, "imagesTs")
    run_clis_concurrently([["nnUNetv2_predict", "-i", images, "-o", root / f"pred_{c}", "-d", DATASET_ID, "-c", c,
                            "-p", PLANS, "-tr", TRAINER, "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1,
                            "--disable_tta"] for c in CONFIGURATIONS], env)
    return env, name, root


def check_prediction_and_load_checkpoint(trained, configuration):
    env, name, root = trained
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(root / f"pred_{configuration}" / "test_000.nii.gz")))
    img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(env["nnUNet_raw"], name, "imagesTs",
                                                             "test_000_0000.nii.gz")))
    assert pred.shape == img.shape == (32, 32, 32)
    assert set(np.unique(pred)) <= {0, 1, 2, 3}
    fold_dir = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__{configuration}", "fold_0")
    return torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)


def test_3d_fullres_ingest_train_predict(trained):
    ckpt = check_prediction_and_load_checkpoint(trained, "3d_fullres")
    assert ckpt["init_args"]["configuration"] == "3d_fullres" and ckpt["current_epoch"] == 2
    assert any(k.startswith("branch_b.") and v.ndim == 5 for k, v in ckpt["network_weights"].items())


def test_3d_lowres_and_cascade_refusal(trained):
    ckpt = check_prediction_and_load_checkpoint(trained, "3d_lowres")
    assert ckpt["init_args"]["configuration"] == "3d_lowres" and ckpt["current_epoch"] == 2

    env, name, _ = trained
    proc = run_cli(["nnUNetv2_train", DATASET_ID, "3d_cascade_fullres", 0, "-p", PLANS, "-tr", TRAINER,
                    "-device", "cpu"], env=training_env(env), check=False)
    assert proc.returncode != 0
    assert "does not support the cascade (3d_cascade_fullres)" in proc.stderr
    assert "Train 3d_fullres or 3d_lowres instead" in proc.stderr
    cascade_dir = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__3d_cascade_fullres", "fold_0")
    assert not os.path.exists(os.path.join(cascade_dir, "checkpoint_final.pth"))
