"""In-process AsyCo trainer checks: labels of "unlabeled" cases never reach a loss; non-finite steps are skipped.

Under the limited-label protocol the fold's unlabeled cases still have labels
on disk. We train a few real AsyCo steps, scramble those labels (segmentation
files and the label-derived foreground locations), train again from the same
seeds, and require bit-identical weights. A positive control scrambles one
*labeled* case instead and must change the weights, so the test can fail.
"""
import os
import pickle
import random

import blosc2
import numpy as np
import pytest
import torch

from conftest import SHARED_2D_DATASETS, SHARED_PLANS, run_cli

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]
PLANS = SHARED_PLANS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_2d_dataset):
    # no ingested scans: the fold's cases outside the labeled subset are the only unlabeled data
    env, name = shared_2d_dataset("one_channel", tmp_path_factory.mktemp("leak"))
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 2, "--seed", 0], env=env)
    pre = os.path.join(env["nnUNet_preprocessed"], name)
    subset = __import__("json").load(open(os.path.join(pre, "asyco_labeled_subset_fold0.json")))
    return {"env": env, "data": os.path.join(pre, "nnUNetPlans_2d"), "subset": subset}


def train_a_few_steps(env: dict, monkeypatch, steps: int = 3) -> dict:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    from nnunetv2.run.run_training import get_trainer_from_args
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, "nnUNetTrainerAsyCo", PLANS,
                                    device=torch.device("cpu"))
    trainer.p_remap = 1.0  # every remapped path active: labels would have every chance to leak
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    for _ in range(steps):
        trainer.train_step(next(trainer.dataloader_train))
    return {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}


def scramble_labels(data_folder: str, case: str, seed: int) -> None:
    """Replace every class label of a case (not the -1 outside-body marker) and its foreground locations."""
    rng = np.random.default_rng(seed)
    seg_path = os.path.join(data_folder, case + "_seg.b2nd")
    seg = blosc2.open(seg_path, mode="r")[:]
    scrambled = np.where(seg < 0, seg, rng.integers(0, 4, size=seg.shape)).astype(seg.dtype)
    assert not np.array_equal(scrambled, seg)
    os.remove(seg_path)
    blosc2.asarray(np.ascontiguousarray(scrambled), urlpath=seg_path)
    pkl = os.path.join(data_folder, case + ".pkl")
    with open(pkl, "rb") as f:
        props = pickle.load(f)
    shape = seg.shape
    props["class_locations"] = {k: np.stack([np.zeros(7, int)] + [rng.integers(0, s, 7) for s in shape[1:]], 1)
                                for k in props["class_locations"]}
    with open(pkl, "wb") as f:
        pickle.dump(props, f)


def test_scrambling_unlabeled_cases_labels_changes_nothing(dataset, monkeypatch):
    reference = train_a_few_steps(dataset["env"], monkeypatch)
    for i, case in enumerate(dataset["subset"]["unlabeled"]):
        scramble_labels(dataset["data"], case, seed=i)
    after = train_a_few_steps(dataset["env"], monkeypatch)
    assert reference.keys() == after.keys()
    for k in reference:
        assert torch.equal(reference[k], after[k]), f"{k} changed: labels of unlabeled cases reached a loss"


def test_positive_control_scrambling_a_labeled_case_changes_the_weights(dataset, monkeypatch):
    reference = train_a_few_steps(dataset["env"], monkeypatch)
    for i, case in enumerate(dataset["subset"]["labeled"]):
        scramble_labels(dataset["data"], case, seed=100 + i)
    after = train_a_few_steps(dataset["env"], monkeypatch)
    assert any(not torch.equal(reference[k], after[k]) for k in reference)


def test_non_finite_loss_skips_the_step_and_keeps_the_weights(dataset, monkeypatch):
    """Inject a NaN into one consistency term: the step is skipped with a logged warning, weights unchanged."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, dataset["env"][key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, "nnUNetTrainerAsyCo", PLANS, device=torch.device("cpu"))
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    real_compute = trainer.compute_loss_terms

    def with_nan_inter_head(*args):
        terms = real_compute(*args)
        terms["inter_head"] = terms["inter_head"] * float("nan")
        return terms

    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    trainer.compute_loss_terms = with_nan_inter_head
    out = trainer.train_step(next(trainer.dataloader_train))
    assert np.isnan(out["loss"])
    assert trainer.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in trainer.network.state_dict().items())
    assert "non-finite loss" in open(trainer.log_file).read()
    # the next, finite step trains normally
    trainer.compute_loss_terms = real_compute
    trainer.train_step(next(trainer.dataloader_train))
    assert any(not torch.equal(before[k], v) for k, v in trainer.network.state_dict().items())
