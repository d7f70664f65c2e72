"""Baselines (Mean Teacher, CPS) in the AsyCo pipeline: real nnU-Net trainers on a tiny synthetic 2D dataset.

The module works on its own copy of the session's planned one-channel dataset
(real nnUNetv2_plan_and_preprocess, see conftest). In-process
tests build trainers with nnU-Net's own ``get_trainer_from_args`` and call its
``train_step`` on one fixed labeled and one fixed unlabeled batch, so two runs
from the same state see the same data; the CLI tests train a ``_smoke``
variant and predict with the stock ``nnUNetv2_predict``.
"""
import copy
import itertools
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from conftest import SHARED_2D_DATASETS, SHARED_PLANS, run_cli, run_clis_concurrently, training_env
from nnunetv2_asyco.consistency import cross_pseudo_supervision, pseudo_label_loss
from nnunetv2_asyco.network import RemapPlan

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]
PLANS = SHARED_PLANS
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_2d_dataset):
    env, name = shared_2d_dataset("one_channel", tmp_path_factory.mktemp("baselines"))
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-np", 1], env=env)
    return {"env": env, "name": name, "raw": os.path.join(env["nnUNet_raw"], name)}


@pytest.fixture(scope="module")
def in_process(dataset):
    """This process's environment pointed at the dataset (nnU-Net reads its paths lazily), DA in-process."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in training_env(dataset["env"]).items():
            if key.startswith("nnUNet"):
                mp.setenv(key, value)
        yield dataset


def make_trainer(trainer_name: str, **options):
    """A real, initialized trainer with data loaders; ``options`` override class attributes on the instance."""
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(str(DATASET_ID), "2d", 0, trainer_name, PLANS, device=torch.device("cpu"))
    for key, value in options.items():
        assert hasattr(trainer, key), key
        setattr(trainer, key, value)
    trainer.initialize()
    trainer.dataloader_train, trainer.dataloader_val = trainer.get_dataloaders()
    return trainer


def fix_batches(trainer):
    """One labeled batch to pass to train_step; the unlabeled loader then yields one fixed batch forever."""
    batch = next(trainer.dataloader_train)
    unlabeled = next(trainer.dataloader_unlabeled)
    trainer.dataloader_unlabeled = itertools.repeat(unlabeled)
    return batch


def snapshot(trainer) -> dict:
    state = {"network": copy.deepcopy(trainer.network.state_dict()),
             "optimizer": copy.deepcopy(trainer.optimizer.state_dict())}
    if getattr(trainer, "teacher", None) is not None:
        state["teacher"] = copy.deepcopy(trainer.teacher.state_dict())
        state["ema_updates"] = trainer.ema_updates
    return state


def restore(trainer, state: dict) -> None:
    trainer.network.load_state_dict(state["network"])
    trainer.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    if "teacher" in state:
        trainer.teacher.load_state_dict(state["teacher"])
        trainer.ema_updates = state["ema_updates"]


def params(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def make_teacher_differ(trainer, seed=1):
    """A teacher equal to the student gives a zero consistency gradient; give it other (random) weights."""
    torch.manual_seed(seed)
    other = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                               trainer.num_input_channels,
                                               trainer.label_manager.num_segmentation_heads, True)
    trainer.teacher.load_state_dict(other.state_dict())


# ---- pseudo-label loss (CPS) -------------------------------------------------------------
def test_cps_pseudo_label_loss_value_softmax():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 5, 5, requires_grad=True)
    b = torch.randn(2, 3, 5, 5, requires_grad=True)
    expected_a = -a.log_softmax(1).gather(1, b.argmax(1, keepdim=True)).mean()  # A learns from B's argmax
    expected_b = -b.log_softmax(1).gather(1, a.argmax(1, keepdim=True)).mean()
    loss = cross_pseudo_supervision(a, b, "softmax")
    torch.testing.assert_close(loss, 0.5 * (expected_a + expected_b))
    # the pseudo-labels carry no gradient: d pseudo_label_loss(a <- b) / d b == 0
    pseudo_label_loss(a, b, "softmax").backward()
    assert b.grad is None and a.grad is not None


def test_cps_pseudo_label_loss_value_sigmoid_regions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    expected_a = F.binary_cross_entropy_with_logits(a, (b.sigmoid() > 0.5).float())
    expected_b = F.binary_cross_entropy_with_logits(b, (a.sigmoid() > 0.5).float())
    torch.testing.assert_close(cross_pseudo_supervision(a, b, "sigmoid"), 0.5 * (expected_a + expected_b))


def test_cps_trainer_loss_terms_are_nnunet_loss_and_cross_pseudo_supervision(in_process):
    trainer = make_trainer("nnUNetTrainerCPS")
    batch = fix_batches(trainer)
    data, target = batch["data"], batch["target"]
    unlabeled = next(trainer.dataloader_unlabeled)["data"]
    with torch.no_grad():
        terms = trainer.compute_loss_terms(data, target, unlabeled)
        out_a, out_b = trainer.network(torch.cat((data, unlabeled)), remap_plan=RemapPlan())
    n = data.shape[0]
    expected_sup = trainer.loss([o[:n] for o in out_a.default], target) + \
        trainer.loss([o[:n] for o in out_b.default], target)
    # full resolution, labeled + unlabeled (consistency_on_labeled)
    expected_cps = cross_pseudo_supervision(out_a.default[0], out_b.default[0], "softmax")
    torch.testing.assert_close(terms["supervised"], expected_sup)
    torch.testing.assert_close(terms["cps"], expected_cps)
    trainer.consistency_on_labeled = False
    with torch.no_grad():
        terms = trainer.compute_loss_terms(data, target, unlabeled)
    torch.testing.assert_close(terms["cps"], cross_pseudo_supervision(out_a.default[0][n:], out_b.default[0][n:],
                                                                      "softmax"))


# ---- the consistency gradient acts in the step where it is computed ------------------------
@pytest.mark.parametrize("trainer_name, weight_attr, term", [
    ("nnUNetTrainerMeanTeacher", "weight_consistency", "consistency"),
    ("nnUNetTrainerCPS", "weight_cps", "cps"),
])
def test_consistency_gradient_changes_student_in_same_step(in_process, trainer_name, weight_attr, term):
    """From one state and one batch: two steps with the consistency term on agree exactly (control), and
    differ from a step with the term zeroed. Were the term backpropagated after optimizer.step() (or not
    at all), the step's weights would equal the zeroed ones."""
    trainer = make_trainer(trainer_name, consistency_rampup_fraction=0.0)  # lambda(t) = 1 from the start
    assert trainer.consistency_weight() == 1.0
    if hasattr(trainer, "teacher"):
        make_teacher_differ(trainer)
    batch = fix_batches(trainer)
    start = snapshot(trainer)

    def step(weight):
        restore(trainer, start)
        setattr(trainer, weight_attr, weight)
        torch.manual_seed(123)
        out = trainer.train_step(batch)
        return params(trainer.network), out

    on, out_on = step(1.0)
    on_again, _ = step(1.0)
    off, out_off = step(0.0)
    assert out_on[f"train_{term}"] > 0 and out_off[f"train_{term}"] == 0
    assert_same(on, on_again)
    assert max_difference(on, off) > 1e-6
    assert max_difference(on, start["network"]) > 0


# ---- Mean Teacher: EMA -----------------------------------------------------------------------
def test_ema_arithmetic_after_one_step(in_process):
    trainer = make_trainer("nnUNetTrainerMeanTeacher", ema_warmup=False)
    make_teacher_differ(trainer)
    batch = fix_batches(trainer)
    teacher_old = params(trainer.teacher)
    assert trainer.next_ema_decay() == trainer.ema_decay == 0.99
    trainer.train_step(batch)
    student_new, teacher_new = params(trainer.network), params(trainer.teacher)
    d = 0.99
    for k in teacher_old:
        if teacher_old[k].is_floating_point():
            expected = torch.add(teacher_old[k] * d, student_new[k], alpha=1 - d)
            assert torch.equal(teacher_new[k], expected), k
            torch.testing.assert_close(teacher_new[k].double(),
                                       d * teacher_old[k].double() + (1 - d) * student_new[k].double())
    assert max_difference(teacher_new, teacher_old) > 0 and max_difference(teacher_new, student_new) > 0
    assert trainer.ema_updates == 1


def test_ema_warmup_decays():
    from nnunetv2_asyco.training.mean_teacher import nnUNetTrainerMeanTeacher
    trainer = nnUNetTrainerMeanTeacher.__new__(nnUNetTrainerMeanTeacher)  # next_ema_decay only needs two fields
    decays = []
    for n in range(200):
        trainer.ema_updates, trainer.ema_warmup, trainer.ema_decay = n, True, 0.99
        decays.append(trainer.next_ema_decay())
    assert decays[:3] == pytest.approx([1 / 2, 2 / 3, 3 / 4])  # teacher = plain mean of the weights so far
    assert decays[-1] == 0.99 and max(decays) == 0.99


def test_ema_updated_every_optimizer_step(in_process):
    trainer = make_trainer("nnUNetTrainerMeanTeacher")
    batch = fix_batches(trainer)
    history = [params(trainer.teacher)]
    for i in range(3):
        trainer.train_step(batch)
        assert trainer.ema_updates == i + 1
        history.append(params(trainer.teacher))
        assert max_difference(history[-1], history[-2]) > 0
    # teacher parameters are not trained: not in the optimizer, no gradient
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in optimized or p.requires_grad for p in trainer.teacher.parameters())


def test_online_validation_runs_teacher_and_restores_student(in_process):
    trainer = make_trainer("nnUNetTrainerMeanTeacher")
    make_teacher_differ(trainer)
    x = next(trainer.dataloader_val)["data"]
    student = params(trainer.network)
    with torch.no_grad():
        trainer.on_validation_epoch_start()
        inside = trainer.network(x)[0]
        trainer.on_validation_epoch_end([trainer.validation_step(next(trainer.dataloader_val))])
        expected = trainer.teacher(x)[0]
    torch.testing.assert_close(inside, expected, rtol=0, atol=0)
    assert_same(params(trainer.network), student)


def test_teacher_student_and_ema_count_restored_by_load_checkpoint(in_process, tmp_path):
    trainer = make_trainer("nnUNetTrainerMeanTeacher")
    batch = fix_batches(trainer)
    for _ in range(2):
        trainer.train_step(batch)
    teacher, student = params(trainer.teacher), params(trainer.network)
    assert max_difference(teacher, student) > 0
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    trainer.current_epoch += 1  # as nnU-Net's on_epoch_end after saving; the checkpoint records the next epoch
    trainer.iteration_in_epoch = 0
    assert_same(params(trainer.network), student)  # saving swaps the teacher in and back out

    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert_same(saved["network_weights"], teacher)  # what nnUNetv2_predict loads
    assert_same(saved["semi_supervised_state"]["mean_teacher"]["student_weights"], student)

    resumed = make_trainer("nnUNetTrainerMeanTeacher")
    resumed.load_checkpoint(path)
    assert resumed.current_epoch == trainer.current_epoch  # same point of the ramp-up
    assert_same(params(resumed.teacher), teacher)
    assert_same(params(resumed.network), student)
    assert resumed.ema_updates == trainer.ema_updates == 2
    # and training continues exactly as it would have without the interruption
    resumed.dataloader_unlabeled = trainer.dataloader_unlabeled
    torch.manual_seed(7)
    trainer.train_step(batch)
    torch.manual_seed(7)
    resumed.train_step(batch)
    assert_same(params(resumed.network), params(trainer.network))
    assert_same(params(resumed.teacher), params(trainer.teacher))


# ---- through the real commands -----------------------------------------------------------------
SMOKE_TRAINERS = ("nnUNetTrainerCPS_smoke", "nnUNetTrainerMeanTeacher_smoke")


@pytest.fixture(scope="module")
def trained_and_predicted(dataset, tmp_path_factory):
    """nnUNetv2_train (smoke) for both baselines, then nnUNetv2_predict with each; returns the folders."""
    env = training_env(dataset["env"])
    run_clis_concurrently([["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", PLANS, "-tr", tr, "-device", "cpu"]
                           for tr in SMOKE_TRAINERS], env)
    out = tmp_path_factory.mktemp("predictions")
    run_clis_concurrently([["nnUNetv2_predict", "-i", os.path.join(dataset["raw"], "imagesTs"), "-o", out / tr,
                            "-d", DATASET_ID, "-c", "2d", "-p", PLANS, "-tr", tr, "-f", 0, "-device", "cpu",
                            "-npp", 1, "-nps", 1, "--disable_tta"] for tr in SMOKE_TRAINERS], env)
    return {tr: {"fold": os.path.join(env["nnUNet_results"], dataset["name"], f"{tr}__{PLANS}__2d", "fold_0"),
                 "predictions": out / tr} for tr in SMOKE_TRAINERS}


@pytest.mark.parametrize("trainer", SMOKE_TRAINERS)
def test_train_and_predict_cli(trained_and_predicted, trainer):
    fold_dir, predictions = trained_and_predicted[trainer]["fold"], trained_and_predicted[trainer]["predictions"]
    checkpoint = torch.load(os.path.join(fold_dir, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert os.path.isfile(os.path.join(fold_dir, "validation", "summary.json"))
    if "MeanTeacher" in trainer:
        # one EMA update per optimizer step: 2 epochs x 4 iterations (minus any skipped step)
        state = checkpoint["semi_supervised_state"]
        assert state["mean_teacher"]["ema_updates"] == 2 * 4 - state["skipped_steps"]
        # network_weights is a stock U-Net's state dict (the teacher)
        assert not any(k.startswith(("branch_a.", "teacher.", "module.")) for k in checkpoint["network_weights"])
    for case in ("test_000", "test_001"):
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"{case}.nii.gz")))
        assert seg.shape == (1, 128, 128)
        assert set(np.unique(seg).tolist()) <= set(range(NUM_CLASSES + 1))
