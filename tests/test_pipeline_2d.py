"""AsyCo through the real nnU-Net commands on a tiny synthetic 2D dataset.

plan and preprocess -> ingest unlabeled scans -> labeled subset -> train a short
variant -> resume with --c -> predict, checking the files each step leaves.
"""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_asyco.data.versioned_set import current_folder

from conftest import (SHARED_2D_DATASETS, SHARED_PLANS, run_cli, run_clis_concurrently, shrink_plans,
                      training_env)

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]
PLANS = SHARED_PLANS
RESENC_PLANS = "nnUNetResEncTiny"
TRAINER = "nnUNetTrainerAsyCo_smoke"
BASELINE = "nnUNetTrainerLabeledOnly_smoke"  # a plain nnU-Net network (stock nnUNetTrainer + labeled subset)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_2d_dataset):
    """The session's planned one-channel dataset (10 training, 2 test, 4 unlabeled scans), the unlabeled scans
    ingested and a labeled subset of 3 cases recorded for fold 0."""
    env, name = shared_2d_dataset("one_channel", tmp_path_factory.mktemp("pipeline2d"))
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-np", 1], env=env)
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 3, "--seed", 0], env=env)
    return {"env": env, "name": name, "fold_dir": results_folder(env, name, TRAINER, PLANS),
            "raw": os.path.join(env["nnUNet_raw"], name), "pre": os.path.join(env["nnUNet_preprocessed"], name)}


def results_folder(env, name, trainer, plans, fold=0):
    return os.path.join(env["nnUNet_results"], name, f"{trainer}__{plans}__2d", f"fold_{fold}")


def train_command(*extra, trainer=TRAINER, fold=0, plans=PLANS):
    return ["nnUNetv2_train", DATASET_ID, "2d", fold, "-p", plans, "-tr", trainer, "-device", "cpu", *extra]


def train(pipeline, *extra, trainer=TRAINER, fold=0, check=True):
    return run_cli(train_command(*extra, trainer=trainer, fold=fold), env=training_env(pipeline["env"]), check=check)


def predict_command(images, out, trainer, *extra):
    return ["nnUNetv2_predict", "-i", images, "-o", out, "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-tr", trainer,
            "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_tta", *extra]


@pytest.fixture(scope="module")
def trained(pipeline):
    """Three stock ``nnUNetv2_train`` runs on fold 0, side by side: AsyCo, the single-network baseline (keeping
    validation probabilities for ensembling) and AsyCo on nnU-Net's residual-encoder preset (planned only; it
    shares the preprocessed data)."""
    env = pipeline["env"]
    run_cli(["nnUNetv2_plan_experiment", "-d", DATASET_ID, "-pl", "nnUNetPlannerResEncM", "-np", 1], env=env)
    shrink_plans(env, DATASET_ID, "nnUNetResEncUNetMPlans", RESENC_PLANS, {"2d": (64, 64)}, max_stages=4)
    run_clis_concurrently([train_command(), train_command("--npz", trainer=BASELINE),
                           train_command(plans=RESENC_PLANS)], training_env(env))
    return pipeline


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_trainer_dir_points_at_thin_modules(pipeline):
    folder = run_cli(["nnUNetv2_asyco_trainer_dir"], env=pipeline["env"]).stdout.strip()
    assert os.path.isfile(os.path.join(folder, "asyco_trainers.py"))


def test_ingested_unlabeled_data_sits_beside_labeled_data(pipeline):
    pre = pipeline["pre"]
    ingested = current_folder(os.path.join(pre, "nnUNetPlans_2d_unlabeled"))  # the current version of the set
    assert sorted(os.listdir(ingested)) == sorted(
        f"unl_{i:03d}{ext}" for i in range(4) for ext in (".b2nd", ".pkl", "_seg.b2nd"))
    labeled = [f for f in os.listdir(os.path.join(pre, "nnUNetPlans_2d")) if f.endswith(".pkl")]
    assert not any(f.startswith("unl_") for f in labeled)


def test_labeled_subset_is_reproducible_and_leaves_split_alone(pipeline):
    pre = pipeline["pre"]
    splits_before = open(os.path.join(pre, "splits_final.json")).read()
    record = json.load(open(os.path.join(pre, "asyco_labeled_subset_fold0.json")))
    assert record["n_labeled"] == 3 and len(record["labeled"]) == 3
    assert set(record["labeled"]) | set(record["unlabeled"]) == set(json.loads(splits_before)[0]["train"])
    # same seed, same subset: rewriting is accepted and identical
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 3, "--seed", 0], env=pipeline["env"])
    assert json.load(open(os.path.join(pre, "asyco_labeled_subset_fold0.json")))["labeled"] == record["labeled"]
    assert open(os.path.join(pre, "splits_final.json")).read() == splits_before


def test_train_smoke_variant_with_stock_command(trained):
    fold_dir = trained["fold_dir"]
    for f in ("checkpoint_final.pth", "progress.png", "validation/summary.json"):
        assert os.path.isfile(os.path.join(fold_dir, f)), f
    ckpt = load_checkpoint(os.path.join(fold_dir, "checkpoint_final.pth"))
    keys = ckpt["network_weights"].keys()
    assert any(k.startswith("branch_a.decoder.seg_layers") for k in keys)
    assert any(k.startswith("branch_b.decoder.seg_layers") for k in keys)
    assert ckpt["trainer_name"] == TRAINER and ckpt["current_epoch"] == 2
    logging = ckpt["logging"]
    for term in ("train_supervised", "train_branch_output", "train_inter_head", "train_representation",
                 "consistency_weight"):
        assert len(logging[term]) == 2 and all(np.isfinite(logging[term])), term
    assert logging["consistency_weight"][0] < logging["consistency_weight"][1]
    assert "remap_schedule" in ckpt["semi_supervised_state"]
    log = open(next(os.path.join(fold_dir, f) for f in os.listdir(fold_dir) if f.startswith("training_log"))).read()
    # 4 ingested scans + 5 fold cases outside the labeled subset; 3 labeled cases
    assert "Unlabeled cases: 9" in log and "Labeled subset: 3 of 8" in log
    summary = json.load(open(os.path.join(fold_dir, "validation", "summary.json")))
    assert set(summary["mean"]) == {"1", "2", "3"}


def test_predict_with_stock_command(trained, tmp_path):
    images = os.path.join(trained["raw"], "imagesTs")
    out = tmp_path / "pred"
    run_cli(predict_command(images, out, TRAINER), env=trained["env"])
    cases = sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(images))
    assert sorted(f for f in os.listdir(out) if f.endswith(".nii.gz")) == [c + ".nii.gz" for c in cases]
    for c in cases:
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{c}.nii.gz")))
        img = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(images, f"{c}_0000.nii.gz")))
        assert pred.shape == img.shape
        assert set(np.unique(pred)) <= {0, 1, 2, 3}
        assert len(np.unique(pred)) > 1, "the seeded smoke model predicts foreground"


def test_resume_with_c_restores_both_branches_and_continues(trained):
    """Simulate an interruption after epoch 0 and resume it with the stock --c flag."""
    fold_dir = trained["fold_dir"]
    final = os.path.join(fold_dir, "checkpoint_final.pth")
    ckpt = load_checkpoint(final)
    ckpt["current_epoch"] = 1
    ckpt["logging"] = {k: v[:1] for k, v in ckpt["logging"].items()}
    torch.save(ckpt, os.path.join(fold_dir, "checkpoint_latest.pth"))
    os.remove(final)
    logs_before = set(os.listdir(fold_dir))
    train(trained, "--c")
    new_log = [f for f in os.listdir(fold_dir) if f.startswith("training_log") and f not in logs_before]
    text = open(os.path.join(fold_dir, new_log[0])).read()
    assert "Epoch 1" in text and "Epoch 0\n" not in text
    resumed = load_checkpoint(final)
    assert resumed["current_epoch"] == 2
    assert all(len(v) == 2 for k, v in resumed["logging"].items() if k.startswith("train_"))
    assert not os.path.exists(os.path.join(fold_dir, "checkpoint_latest.pth"))


def test_missing_unlabeled_data_stops_training_with_instructions(pipeline):
    """Fold 1 has no labeled subset; with the ingested scans moved away there is no unlabeled data at all."""
    ingested = os.path.join(pipeline["pre"], "nnUNetPlans_2d_unlabeled")
    parked = ingested + "_parked"
    shutil.move(ingested, parked)
    try:
        proc = train(pipeline, fold=1, check=False)
    finally:
        shutil.move(parked, ingested)
    assert proc.returncode != 0
    assert "No unlabeled data" in proc.stderr
    assert "nnUNetv2_asyco_preprocess_unlabeled" in proc.stderr and "nnUNetv2_asyco_labeled_subset" in proc.stderr


def test_residual_encoder_plans(trained):
    """nnU-Net's residual-encoder preset: both branches are ResidualEncoderUNets."""
    ckpt = load_checkpoint(os.path.join(results_folder(trained["env"], trained["name"], TRAINER, RESENC_PLANS),
                                        "checkpoint_final.pth"))
    assert ckpt["current_epoch"] == 2
    for branch in ("branch_a", "branch_b"):
        assert any(k.startswith(f"{branch}.encoder.stem.") for k in ckpt["network_weights"]), \
            f"{branch} should be a ResidualEncoderUNet"


def test_pretrained_weights_from_a_stock_checkpoint_initialise_both_branches(trained):
    baseline = os.path.join(results_folder(trained["env"], trained["name"], BASELINE, PLANS), "checkpoint_final.pth")
    assert not any(k.startswith("branch_") for k in load_checkpoint(baseline)["network_weights"])
    # fold 2: a fresh output folder (fold 0's AsyCo run stays untouched); unlabeled data = the ingested scans
    proc = train(trained, "-pretrained_weights", baseline, fold=2)
    assert f"Pretrained weights from {baseline} loaded into branch_a and branch_b" in proc.stdout
    assert os.path.isfile(os.path.join(os.path.dirname(trained["fold_dir"]), "fold_2", "checkpoint_final.pth"))


def test_find_best_configuration_ensemble_and_zip_export(trained, tmp_path):
    env = trained["env"]
    images = os.path.join(trained["raw"], "imagesTs")
    # nnU-Net's validation-only rerun, now keeping probabilities; both models predict the test set meanwhile
    run_clis_concurrently([train_command("--val", "--npz")] + [
        predict_command(images, tmp_path / trainer, trainer, "--save_probabilities") for trainer in (TRAINER, BASELINE)],
        training_env(env))
    run_clis_concurrently([
        ["nnUNetv2_find_best_configuration", DATASET_ID, "-c", "2d", "-p", PLANS, "-tr", TRAINER, BASELINE, "-f", 0,
         "-np", 1],
        ["nnUNetv2_ensemble", "-i", tmp_path / TRAINER, tmp_path / BASELINE, "-o", tmp_path / "ensemble", "-np", 1]],
        env)
    info = json.load(open(os.path.join(env["nnUNet_results"], trained["name"], "inference_information.json")))
    assert {m["trainer"] for m in info["best_model_or_ensemble"]["selected_model_or_models"]} <= {TRAINER, BASELINE}
    assert any(TRAINER in key for key in info["all_results"])
    ensembled = sorted(f for f in os.listdir(tmp_path / "ensemble") if f.endswith(".nii.gz"))
    assert ensembled == sorted(f for f in os.listdir(tmp_path / TRAINER) if f.endswith(".nii.gz"))

    # share the AsyCo model (after find_best: the archive takes in what it wrote): export, install into an empty
    # results folder, predict from there
    archive = tmp_path / "asyco_model.zip"
    run_cli(["nnUNetv2_export_model_to_zip", "-d", DATASET_ID, "-o", archive, "-c", "2d", "-tr", TRAINER, "-p",
             PLANS, "-f", 0], env=env)
    receiver = {**env, "nnUNet_results": str(tmp_path / "receiver_results")}
    os.makedirs(receiver["nnUNet_results"])
    run_cli(["nnUNetv2_install_pretrained_model_from_zip", archive], env=receiver)
    run_cli(predict_command(images, tmp_path / "from_zip", TRAINER), env=receiver)
    for case in ensembled:
        shared = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "from_zip" / case)))
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / TRAINER / case)))
        assert np.array_equal(shared, original), "the installed model must predict exactly what the original did"
