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


def started_trainer(env: dict, monkeypatch, trainer_name: str):
    """A real trainer from nnU-Net's own lookup, seeded, with its first epoch started (no data workers)."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    from nnunetv2.run.run_training import get_trainer_from_args
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, trainer_name, PLANS, device=torch.device("cpu"))
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    return trainer


def train_a_few_steps(env: dict, monkeypatch, steps: int = 3, trainer_name: str = "nnUNetTrainerAsyCo") -> dict:
    trainer = started_trainer(env, monkeypatch, trainer_name)
    trainer.remap_scheduler.p_remap = 1.0  # every remapped path active: labels would have every chance to leak
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


LEAK_CHECKED_TRAINERS = ["nnUNetTrainerAsyCo", "nnUNetTrainerAsyCo_sharedViews"]


@pytest.mark.parametrize("trainer_name", LEAK_CHECKED_TRAINERS)
def test_scrambling_unlabeled_cases_labels_changes_nothing(dataset, monkeypatch, trainer_name):
    reference = train_a_few_steps(dataset["env"], monkeypatch, trainer_name=trainer_name)
    for i, case in enumerate(dataset["subset"]["unlabeled"]):
        # other seeds for every trainer: the module's dataset keeps the previous test's scrambling
        scramble_labels(dataset["data"], case, seed=10 * LEAK_CHECKED_TRAINERS.index(trainer_name) + i)
    after = train_a_few_steps(dataset["env"], monkeypatch, trainer_name=trainer_name)
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
    trainer = started_trainer(dataset["env"], monkeypatch, "nnUNetTrainerAsyCo")
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


@pytest.mark.parametrize("trainer_name, own_view", [("nnUNetTrainerAsyCo", True), ("nnUNetTrainerCPS_perturbedViews", True),
                                                     ("nnUNetTrainerAsyCo_perturbedMixedViews", True),
                                                     ("nnUNetTrainerAsyCo_sharedViews", False),
                                                     ("nnUNetTrainerCPS", False)])
def test_branch_b_reads_its_own_view_of_the_unlabeled_samples(dataset, monkeypatch, trainer_name, own_view):
    trainer = started_trainer(dataset["env"], monkeypatch, trainer_name)
    seen = []
    real_forward = trainer.network.forward

    def recording_forward(x, remap_plan=None, x_b=None):
        seen.append((x.detach().clone(), None if x_b is None else x_b.detach().clone()))
        return real_forward(x, remap_plan=remap_plan, x_b=x_b)

    trainer.network.forward = recording_forward
    out = trainer.train_step(next(trainer.dataloader_train))
    assert np.isfinite(out["loss"]) and trainer.skipped_steps == 0
    (x_a, x_b), = seen
    n_labeled = trainer.batch_size
    assert x_a.shape[0] == 2 * n_labeled
    if not own_view:
        assert x_b is None  # branch B reads x_a
        return
    assert x_b is not None and x_a.shape == x_b.shape
    assert torch.equal(x_a[:n_labeled], x_b[:n_labeled])  # labeled samples: the same for both branches
    assert not torch.allclose(x_a[n_labeled:], x_b[n_labeled:], atol=0.05)


def test_run_records_its_labeled_subset_in_debug_json_and_checkpoint(dataset, monkeypatch):
    """The subset a run trains on is written where a resumed run (and a reader of the results) can compare it."""
    import json
    from nnunetv2_asyco.training.labeled_subset_split import SUBSET_KEY
    trainer = started_trainer(dataset["env"], monkeypatch, "nnUNetTrainerAsyCo")
    subset = dataset["subset"]
    expected = {"labeled": subset["labeled"], "seed": subset["seed"], "n_labeled": subset["n_labeled"]}
    assert trainer.checkpoint_entries()[SUBSET_KEY] == expected
    with open(os.path.join(trainer.output_folder, "debug.json")) as f:
        recorded = json.load(f)["labeled_subset_of_run"]  # nnU-Net writes attributes as str()
    assert recorded == str(expected)


def test_micro_batched_trainer_step_trains_and_says_its_mode(dataset, monkeypatch):
    trainer = started_trainer(dataset["env"], monkeypatch, "nnUNetTrainerAsyCo_microBatch")
    assert trainer.memory_mode_in_use == "micro_batch" and trainer.micro_batch_rows_in_use == trainer.batch_size // 2
    before = {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}
    out = trainer.train_step(next(trainer.dataloader_train))
    assert np.isfinite(out["loss"]) and trainer.skipped_steps == 0
    assert all(np.isfinite(out[f"train_{t}"]) for t in trainer.loss_terms)
    assert any(not torch.equal(before[k], v) for k, v in trainer.network.state_dict().items())
    assert "AsyCo memory mode: micro_batch (requested)" in open(trainer.log_file).read()


@pytest.mark.parametrize("trainer_name, mode", [("nnUNetTrainerAsyCo", "default"),
                                                ("nnUNetTrainerAsyCo_microBatch", "micro_batch")])
def test_out_of_memory_during_a_step_ends_with_the_memory_options(dataset, monkeypatch, trainer_name, mode):
    trainer = started_trainer(dataset["env"], monkeypatch, trainer_name)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.network, "forward", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError) as error:
        trainer.train_step(next(trainer.dataloader_train))
    assert f"memory mode '{mode}'" in str(error.value) and "-gpu_memory_target" in str(error.value)
    assert "Tried to allocate" in str(error.value.__cause__)  # the CUDA message is kept as the cause
