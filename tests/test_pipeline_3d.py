"""AsyCo on a tiny synthetic 3D dataset (3d_fullres) through the real nnU-Net commands."""
import os

import numpy as np
import SimpleITK as sitk
import torch

from conftest import nnunet_folders_env, plan_tiny_dataset, run_cli, training_env

DATASET_ID = 913
PLANS = "nnUNetPlansTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"


def test_3d_fullres_ingest_train_predict(tmp_path):
    env = nnunet_folders_env(tmp_path)
    name = plan_tiny_dataset(env, DATASET_ID, 3, "3d_fullres", n_train=6, n_test=1, n_unlabeled=2,
                             shape=(32, 32, 32), patch=(32, 32, 32), small_plans=PLANS)
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", "3d_fullres", "-p", PLANS, "-np", 1],
            env=env)
    run_cli(["nnUNetv2_train", DATASET_ID, "3d_fullres", 0, "-p", PLANS, "-tr", TRAINER, "-device", "cpu"],
            env=training_env(env))
    fold_dir = os.path.join(env["nnUNet_results"], name, f"{TRAINER}__{PLANS}__3d_fullres", "fold_0")
    ckpt = torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert any(k.startswith("branch_b.") and v.ndim == 5 for k, v in ckpt["network_weights"].items())

    images = os.path.join(env["nnUNet_raw"], name, "imagesTs")
    out = tmp_path / "pred"
    run_cli(["nnUNetv2_predict", "-i", images, "-o", out, "-d", DATASET_ID, "-c", "3d_fullres", "-p", PLANS,
             "-tr", TRAINER, "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_tta"], env=env)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "test_000.nii.gz")))
    img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(images, "test_000_0000.nii.gz")))
    assert pred.shape == img.shape == (32, 32, 32)
    assert set(np.unique(pred)) <= {0, 1, 2, 3}
