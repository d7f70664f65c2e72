"""nnUNet_asyco_seed: bit-identical training on the CPU, common random numbers across methods, nnU-Net unchanged
without it (nnunetv2_asyco/seeding.py)."""
import glob
import os

import pytest
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

from nnunetv2_asyco.nnunet_compat import finish_augmenter

from conftest import SHARED_2D_DATASETS, SHARED_PLANS, run_cli

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_2d_dataset):
    env, _ = shared_2d_dataset("one_channel", tmp_path_factory.mktemp("seeding"))
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 2, "--seed", 0], env=env)
    return env


def final_weights(results: str) -> dict:
    checkpoint = glob.glob(os.path.join(results, "*", "*", "fold_0", "checkpoint_final.pth"))[0]
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]


@pytest.mark.integration
def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(dataset, tmp_path):
    # two augmentation workers: the order in which workers deliver batches must not matter
    runs = {"a": "0", "b": "0", "c": "1"}
    envs = {k: dict(dataset, nnUNet_results=str(tmp_path / k), nnUNet_asyco_seed=seed, nnUNet_n_proc_DA="2")
            for k, seed in runs.items()}
    for k, env in envs.items():  # one at a time: each run must be reproducible on its own
        run_cli(["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", SHARED_PLANS, "-tr", "nnUNetTrainerAsyCo_smoke",
                 "-device", "cpu"], env=env)
    a, b, c = (final_weights(str(tmp_path / k)) for k in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def trainer(env: dict, monkeypatch, name: str, seed, n_proc_da: int = 0):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("nnUNet_n_proc_DA", str(n_proc_da))
    if seed is None:
        monkeypatch.delenv("nnUNet_asyco_seed", raising=False)
    else:
        monkeypatch.setenv("nnUNet_asyco_seed", str(seed))
    from nnunetv2.run.run_training import get_trainer_from_args
    t = get_trainer_from_args(str(DATASET_ID), "2d", 0, name, SHARED_PLANS, device=torch.device("cpu"))
    t.initialize()
    return t


def first_network(t) -> torch.nn.Module:
    network = t.unwrapped_network() if hasattr(t, "unwrapped_network") else t.network
    return getattr(network, "branch_a", network)


def test_every_method_starts_from_the_same_first_network(dataset, monkeypatch):
    names = ["nnUNetTrainerLabeledOnly", "nnUNetTrainerMeanTeacher", "nnUNetTrainerCPS", "nnUNetTrainerAsyCo"]
    weights = [first_network(trainer(dataset, monkeypatch, n, seed=4)).state_dict() for n in names]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    other_seed = first_network(trainer(dataset, monkeypatch, names[0], seed=5)).state_dict()
    assert not all(torch.equal(weights[0][k], other_seed[k]) for k in weights[0])
    asyco = trainer(dataset, monkeypatch, "nnUNetTrainerAsyCo", seed=4).unwrapped_network()
    assert not torch.equal(asyco.branch_a.encoder.stages[0][0].convs[0].conv.weight,
                           asyco.branch_b.encoder.stages[0][0].convs[0].conv.weight)  # B is its own draw


def labeled_batches(t, n: int, disturb: bool):
    """The first n labeled batches; with ``disturb``, unlabeled batches and other random draws in between."""
    t.dataloader_train, t.dataloader_val = t.get_dataloaders()
    batches = []
    for _ in range(n):
        batches.append(next(t.dataloader_train)["data"])
        if disturb:
            next(t.dataloader_unlabeled)
            torch.rand(100)
    for loader in (t.dataloader_train, t.dataloader_val, getattr(t, "dataloader_unlabeled", None)):
        finish_augmenter(loader)
    return batches


@pytest.mark.integration
@pytest.mark.parametrize("n_proc_da", [0, 2])
def test_labeled_batches_are_the_same_for_every_method(dataset, monkeypatch, n_proc_da):
    reference = labeled_batches(trainer(dataset, monkeypatch, "nnUNetTrainerLabeledOnly", 7, n_proc_da), 4, False)
    asyco = labeled_batches(trainer(dataset, monkeypatch, "nnUNetTrainerAsyCo", 7, n_proc_da), 4, True)
    for r, a in zip(reference, asyco):
        assert torch.equal(r, a)
    other_seed = labeled_batches(trainer(dataset, monkeypatch, "nnUNetTrainerLabeledOnly", 8, n_proc_da), 1, False)
    assert not torch.equal(reference[0], other_seed[0])


@pytest.mark.integration
@pytest.mark.parametrize("seed, augmenter", [(None, NonDetMultiThreadedAugmenter), (0, MultiThreadedAugmenter)])
def test_unseeded_training_keeps_nnunets_augmenters(dataset, monkeypatch, seed, augmenter):
    t = trainer(dataset, monkeypatch, "nnUNetTrainerAsyCo", seed=seed, n_proc_da=2)
    t.dataloader_train, t.dataloader_val = t.get_dataloaders()
    try:
        assert type(t.dataloader_train) is augmenter and type(t.dataloader_unlabeled) is augmenter
    finally:
        t.on_train_end()


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "٣"])
def test_a_malformed_seed_is_refused_with_a_message(dataset, tmp_path, value):
    env = dict(dataset, nnUNet_results=str(tmp_path / "results"), nnUNet_asyco_seed=value, nnUNet_n_proc_DA="0")
    proc = run_cli(["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", SHARED_PLANS, "-tr", "nnUNetTrainerAsyCo_smoke",
                    "-device", "cpu"], env=env, check=False)
    assert proc.returncode != 0
    assert "nnUNet_asyco_seed" in proc.stderr and "whole number" in proc.stderr
    assert not glob.glob(str(tmp_path / "results" / "*" / "*" / "fold_0" / "*.pth"))
