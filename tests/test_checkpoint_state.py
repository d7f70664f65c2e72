"""Trainer state: checkpoints (one atomic write, our state required, the labeled subset pinned to its run), and
the stop on mostly non-finite losses.

Real trainers (nnU-Net's constructor and ``initialize``) on the tiny plans of
conftest; no data is needed to build, save and load a checkpoint, so these run
in the fast tier.
"""
import json
import os

import pytest
import torch

from conftest import tiny_plans
from nnunetv2_asyco.nnunet_compat import EXTRA_STATE_KEY, CheckpointStateError
from nnunetv2_asyco.training.labeled_subset_split import SUBSET_KEY, SubsetChangedError

DATASET_JSON = {"channel_names": {"0": "ct"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
                "file_ending": ".nii.gz"}


@pytest.fixture
def folders(tmp_path, monkeypatch):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(tmp_path / key, exist_ok=True)
        monkeypatch.setenv(key, str(tmp_path / key))
    # nnU-Net reads these paths lazily (nnunetv2.paths), so the environment is enough
    monkeypatch.delenv("nnUNet_asyco_seed", raising=False)
    # initialize() infers nnU-Net's dataset class from the preprocessed folder: one real (tiny) case
    import numpy as np
    from nnunetv2_asyco.nnunet_compat import save_unlabeled_case
    data_folder = tmp_path / "nnUNet_preprocessed" / "Dataset999_Unit" / "unit"
    os.makedirs(data_folder)
    data = np.zeros((1, 1, 32, 32), np.float32)
    save_unlabeled_case(data, data.astype(np.int16), {"spacing": [1.0] * 3}, str(data_folder / "c0"), (1, 32, 32))
    return tmp_path


def trainer(cls_name: str):
    from nnunetv2_asyco.training.asyco import nnUNetTrainerAsyCo
    from nnunetv2_asyco.training.labeled_only import nnUNetTrainerLabeledOnly
    from nnunetv2_asyco.training.mean_teacher import nnUNetTrainerMeanTeacher
    cls = {"AsyCo": nnUNetTrainerAsyCo, "LabeledOnly": nnUNetTrainerLabeledOnly,
           "MeanTeacher": nnUNetTrainerMeanTeacher}[cls_name]
    plans = {**tiny_plans(), "continue_training": False}  # as nnU-Net's get_trainer_from_args passes it
    t = cls(plans, "cfg", 0, DATASET_JSON, device=torch.device("cpu"))
    t.initialize()
    return t


def write_subset(folders, labeled, seed):
    folder = folders / "nnUNet_preprocessed" / "Dataset999_Unit"
    os.makedirs(folder, exist_ok=True)
    record = {"dataset": "Dataset999_Unit", "fold": 0, "seed": seed, "n_labeled": len(labeled),
              "n_fold_train_cases": 4, "labeled": labeled,
              "unlabeled": sorted({"c0", "c1", "c2", "c3"} - set(labeled))}
    with open(folder / "asyco_labeled_subset_fold0.json", "w") as f:
        json.dump(record, f)


@pytest.mark.parametrize("name", ["AsyCo", "LabeledOnly"])
def test_checkpoint_records_subset_and_refuses_another(folders, name):
    write_subset(folders, ["c0", "c2"], seed=0)
    t = trainer(name)
    path = str(folders / "checkpoint.pth")
    t.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved[SUBSET_KEY] == {"labeled": ["c0", "c2"], "seed": 0, "n_labeled": 2}
    assert not [f for f in os.listdir(folders) if f.endswith(".tmp")]  # the atomic write left no temporary file

    trainer(name).load_checkpoint(path)  # same subset: accepted
    write_subset(folders, ["c0", "c1", "c2", "c3"], seed=0)  # nnUNetv2_asyco_labeled_subset ... --overwrite
    resumed = trainer(name)
    before = {k: v.clone() for k, v in resumed.network.state_dict().items()}
    with pytest.raises(SubsetChangedError) as e:
        resumed.load_checkpoint(path)
    message = str(e.value)
    assert "2 labeled cases (seed 0): c0, c2" in message and "now has 4 labeled cases" in message
    assert "-n 2 --seed 0 --overwrite" in message and "start a fresh run" in message
    # refused before anything was loaded
    assert all(torch.equal(before[k], v) for k, v in resumed.network.state_dict().items())


def test_subset_removed_after_start_is_refused_too(folders):
    write_subset(folders, ["c1"], seed=3)
    t = trainer("LabeledOnly")
    path = str(folders / "checkpoint.pth")
    t.save_checkpoint(path)
    os.remove(folders / "nnUNet_preprocessed" / "Dataset999_Unit" / "asyco_labeled_subset_fold0.json")
    with pytest.raises(SubsetChangedError, match="now has all training cases of the fold"):
        trainer("LabeledOnly").load_checkpoint(path)


def test_checkpoint_without_our_state_is_refused(folders):
    """A stock-nnU-Net-style checkpoint (no semi_supervised_state) cannot silently continue a semi-supervised run."""
    t = trainer("MeanTeacher")
    path = str(folders / "checkpoint.pth")
    t.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert "mean_teacher" in saved[EXTRA_STATE_KEY]
    del saved[EXTRA_STATE_KEY]
    torch.save(saved, path)
    with pytest.raises(CheckpointStateError, match="no 'semi_supervised_state'.*-pretrained_weights"):
        trainer("MeanTeacher").load_checkpoint(path)


def test_training_stops_when_too_many_steps_are_non_finite(folders):
    t = trainer("AsyCo")
    assert t.max_non_finite_fraction == 0.1
    t.on_train_epoch_start()
    before = {k: v.clone() for k, v in t.network.state_dict().items()}
    assert t.guarded_step(torch.tensor(float("nan"))) is False  # skipped, weights unchanged
    assert all(torch.equal(before[k], v) for k, v in t.network.state_dict().items())
    t.stop_if_mostly_non_finite(10)  # 1 of 10 steps: at the limit, training goes on
    t.guarded_step(torch.tensor(float("inf")))
    with pytest.raises(RuntimeError, match=r"non-finite \(NaN/inf\) in 2 of 10 steps of epoch 0 \(limit 10%"):
        t.stop_if_mostly_non_finite(10)
    assert "Stopping: the loss was non-finite" in open(t.log_file).read()
    t.on_train_epoch_start()  # the count is per epoch; the run total is kept for the checkpoint
    t.stop_if_mostly_non_finite(10)
    assert t.skipped_steps == 2


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(folders, monkeypatch):
    """An interruption at the switch (os.replace) of the one write leaves the previous checkpoint whole."""
    t = trainer("AsyCo")
    path = str(folders / "checkpoint_best.pth")
    t.save_checkpoint(path)
    previous = open(path, "rb").read()
    t.skipped_steps = 5  # the next checkpoint differs

    def interrupted(src, dst):
        raise KeyboardInterrupt("killed at the switch")

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        t.save_checkpoint(path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert open(path, "rb").read() == previous
    assert sorted(os.listdir(folders)) == sorted(f for f in os.listdir(folders) if not f.endswith(".tmp"))
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved[EXTRA_STATE_KEY]["skipped_steps"] == 0 and "network_weights" in saved
