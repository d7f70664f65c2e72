"""AsyCo on a tiny synthetic 3D dataset through the real nnU-Net commands: 3d_fullres, 3d_lowres, the cascade."""
import copy
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import nnunet_folders_env, plan_tiny_dataset, run_cli, training_env

DATASET_ID = 913
PLANS = "nnUNetPlansTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline3d")
    env = nnunet_folders_env(root)
    name = plan_tiny_dataset(env, DATASET_ID, 3, "3d_fullres", n_train=6, n_test=1, n_unlabeled=2,
                             shape=(32, 32, 32), patch=(32, 32, 32), small_plans=PLANS)
    return env, name, root


def train_and_predict(env, name, configuration, out):
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", configuration, "-p", PLANS, "-np", 1],
            env=env)
    run_cli(["nnUNetv2_train", DATASET_ID, configuration, 0, "-p", PLANS, "-tr", TRAINER, "-device", "cpu"],
            env=training_env(env))
    fold_dir = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__{configuration}", "fold_0")
    images = os.path.join(env["nnUNet_raw"], name, "imagesTs")
    run_cli(["nnUNetv2_predict", "-i", images, "-o", out, "-d", DATASET_ID, "-c", configuration, "-p", PLANS,
             "-tr", TRAINER, "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_tta"], env=env)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "test_000.nii.gz")))
    img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(images, "test_000_0000.nii.gz")))
    assert pred.shape == img.shape == (32, 32, 32)
    assert set(np.unique(pred)) <= {0, 1, 2, 3}
    return torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)


def test_3d_fullres_ingest_train_predict(planned):
    env, name, root = planned
    ckpt = train_and_predict(env, name, "3d_fullres", root / "pred_fullres")
    assert any(k.startswith("branch_b.") and v.ndim == 5 for k, v in ckpt["network_weights"].items())


def add_low_resolution_stage(env, name):
    """3d_lowres (half resolution) and 3d_cascade_fullres, as nnU-Net plans them for large images.

    The tiny test images are too small for nnU-Net's planner to propose a
    low-resolution stage, so the two configurations are added to the plans by hand.
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
    run_cli(["nnUNetv2_preprocess", "-d", DATASET_ID, "-plans_name", PLANS, "-c", "3d_lowres", "-np", 1], env=env)


def test_3d_lowres_and_cascade_refusal(planned):
    env, name, root = planned
    add_low_resolution_stage(env, name)
    ckpt = train_and_predict(env, name, "3d_lowres", root / "pred_lowres")
    assert ckpt["init_args"]["configuration"] == "3d_lowres"

    proc = run_cli(["nnUNetv2_train", DATASET_ID, "3d_cascade_fullres", 0, "-p", PLANS, "-tr", TRAINER,
                    "-device", "cpu"], env=training_env(env), check=False)
    assert proc.returncode != 0
    assert "does not support the cascade (3d_cascade_fullres)" in proc.stderr
    assert "Train 3d_fullres or 3d_lowres instead" in proc.stderr
    cascade_dir = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__3d_cascade_fullres", "fold_0")
    assert not os.path.exists(os.path.join(cascade_dir, "checkpoint_final.pth"))
