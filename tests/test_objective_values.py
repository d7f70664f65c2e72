"""Value tests of the AsyCo objective: how the terms are combined, normalised and where consistency applies.

Every expected value is computed here from nnU-Net's own loss and our consistency functions by hand, so a change
in the plumbing (not in the terms themselves) fails these tests.
"""
import dataclasses

import pytest
import torch

from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_asyco.asyco_objective import AsyCoObjective
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.consistency import branch_output_consistency, probability_mse
from nnunetv2_asyco.network import RemapPlan, TwoBranchNetwork
from nnunetv2_asyco.training.asyco import asyco_options_of, nnUNetTrainerAsyCo

SCALE_WEIGHTS = [2 / 3, 1 / 3]


def nnunet_loss():
    return DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                                 dice_class=MemoryEfficientSoftDiceLoss), SCALE_WEIGHTS)


@pytest.fixture
def outputs(tiny_configuration):
    _, cm = tiny_configuration
    torch.manual_seed(0)
    a, b = build_branches(cm, 1, 4, True, "same")
    network = TwoBranchNetwork(a, b)
    x = torch.randn(4, 1, 32, 32)  # 2 labeled, 2 unlabeled
    target = torch.randint(0, 4, (2, 1, 32, 32))
    return network, x, [target, target[..., ::2, ::2]]


def objective(**changes):
    return AsyCoObjective(nnunet_loss(), "softmax", asyco_options_of(nnUNetTrainerAsyCo, **changes))


def test_combine_is_supervised_plus_ramped_weighted_consistency():
    obj = objective(weight_branch_output=3.0, weight_inter_head=5.0, weight_representation=0.5)
    terms = {"supervised": torch.tensor(1.25), "branch_output": torch.tensor(0.1), "inter_head": torch.tensor(0.02),
             "representation": torch.tensor(0.3)}
    total = obj.combine(terms, consistency_weight=0.4)
    assert total.item() == pytest.approx(1.25 + 0.4 * (3 * 0.1 + 5 * 0.02 + 0.5 * 0.3))


def test_remapped_supervision_is_normalised_by_the_active_scales(outputs):
    network, x, targets = outputs
    obj = objective()
    base = nnunet_loss().loss  # nnU-Net's Dice+CE of one scale
    for plan in (RemapPlan({"AB": (0, 1), "BA": ()}), RemapPlan({"AB": (1,), "BA": ()})):
        out_a, _ = network(x, remap_plan=plan)
        active = plan.active("AB")
        expected = sum(SCALE_WEIGHTS[s] * base(out_a.remapped[s][:2], targets[s]) for s in active) \
            / sum(SCALE_WEIGHTS[s] for s in active)
        torch.testing.assert_close(obj.supervised_remapped(out_a.remapped, targets, n_labeled=2), expected)
    out_a, _ = network(x, remap_plan=RemapPlan())
    assert obj.supervised_remapped(out_a.remapped, targets, n_labeled=2) is None  # no remapped path this step


def test_supervised_term_sums_both_default_paths_and_the_active_remapped_ones(outputs):
    network, x, targets = outputs
    plan = RemapPlan({"AB": (0, 1), "BA": (0, 1)})
    out_a, out_b = network(x, remap_plan=plan)
    obj = objective()
    loss = nnunet_loss()
    expected = loss([o[:2] for o in out_a.default], targets) + loss([o[:2] for o in out_b.default], targets) \
        + obj.supervised_remapped(out_a.remapped, targets, 2) + obj.supervised_remapped(out_b.remapped, targets, 2)
    torch.testing.assert_close(obj.terms(out_a, out_b, targets, n_labeled=2)["supervised"], expected)
    without = objective(supervise_remapped_paths=False).terms(out_a, out_b, targets, n_labeled=2)["supervised"]
    torch.testing.assert_close(without, loss([o[:2] for o in out_a.default], targets)
                               + loss([o[:2] for o in out_b.default], targets))


def test_consistency_on_unlabeled_only_ignores_the_labeled_rows(outputs):
    network, x, targets = outputs
    plan = RemapPlan({"AB": (0, 1), "BA": (0, 1)})
    obj = objective(consistency_on_labeled=False)
    out_a, out_b = network(x, remap_plan=plan)
    terms = obj.terms(out_a, out_b, targets, n_labeled=2)
    expected_bo = branch_output_consistency([o[2:] for o in out_a.default], [o[2:] for o in out_b.default],
                                            SCALE_WEIGHTS, "softmax")
    torch.testing.assert_close(terms["branch_output"], expected_bo)
    # changing only the labeled rows of branch A's input leaves every consistency term unchanged
    x_changed = x.clone()
    x_changed[:2] += 3 * torch.randn_like(x_changed[:2])
    changed = obj.terms(*network(x_changed, remap_plan=plan, x_b=x), targets, n_labeled=2)
    for name in ("branch_output", "inter_head", "representation"):
        torch.testing.assert_close(changed[name], terms[name])
    # positive control: with consistency on labeled rows too, the same change moves the terms
    both = objective(consistency_on_labeled=True)
    assert not torch.allclose(both.terms(*network(x_changed, remap_plan=plan, x_b=x), targets, 2)["branch_output"],
                              both.terms(out_a, out_b, targets, 2)["branch_output"])


def test_inter_head_term_is_the_weighted_mean_over_active_paths(outputs):
    network, x, targets = outputs
    plan = RemapPlan({"AB": (0,), "BA": (0, 1)})
    out_a, out_b = network(x, remap_plan=plan)
    terms = objective().terms(out_a, out_b, targets, n_labeled=2)
    pairs = [(out_a.default[0], out_a.remapped[0], SCALE_WEIGHTS[0]), (out_b.default[0], out_b.remapped[0],
             SCALE_WEIGHTS[0]), (out_b.default[1], out_b.remapped[1], SCALE_WEIGHTS[1])]
    expected = sum(w * probability_mse(d, r, "softmax") for d, r, w in pairs) / sum(w for *_, w in pairs)
    torch.testing.assert_close(terms["inter_head"], expected)


def test_options_have_one_source_the_trainer_attributes():
    options = asyco_options_of(nnUNetTrainerAsyCo)
    for field in dataclasses.fields(options):
        assert getattr(options, field.name) == getattr(nnUNetTrainerAsyCo, field.name)
    with pytest.raises(TypeError):
        type(options)()  # no second set of defaults
    with pytest.raises(ValueError, match="branch_output_mode"):
        asyco_options_of(nnUNetTrainerAsyCo, branch_output_mode="hard")


@pytest.mark.parametrize("ratio, batch, expected", [(1.0, 4, 4), (0.5, 4, 2), (0.5, 1, 1), (2.0, 3, 6)])
def test_unlabeled_batch_size_follows_the_ratio(ratio, batch, expected):
    trainer = nnUNetTrainerAsyCo.__new__(nnUNetTrainerAsyCo)  # only the batch arithmetic, no data
    trainer.batch_size, trainer.unlabeled_batch_ratio = batch, ratio
    assert trainer.dataloader_unlabeled_batch_size == expected
