"""Memory modes and the single compiled training graph: the draw is applied outside the forward, micro-batched
steps accumulate the full step's gradient, the automatic choice of mode and the out-of-memory message."""
import pytest
import torch

from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import RemapPlan, TwoBranchNetwork, training_outputs
from nnunetv2_asyco.remapping import RemapSchedule

from test_objective_values import objective

EVERY_PATH = RemapPlan.every_path(2)


def tiny_network(cm, seed=0):
    torch.manual_seed(seed)
    a, b = build_branches(cm, 1, 4, True, "same")
    return TwoBranchNetwork(a, b)


def loss_and_grads(network, x, target, remap_plan, forward_plan):
    network.zero_grad(set_to_none=True)
    obj = objective()
    out_a, out_b = training_outputs(network, x, None, remap_plan, forward_plan)
    total = obj.combine(obj.terms(out_a, out_b, target, n_labeled=2), consistency_weight=0.7)
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("draw", [RemapPlan({"AB": (0, 1), "BA": ()}), RemapPlan({"AB": (), "BA": (1,)}),
                                  RemapPlan(), EVERY_PATH])
def test_every_path_forward_then_draw_equals_forward_of_the_draw(tiny_configuration, draw):
    # the eager path before issue 21 computed only the drawn heads inside the forward
    _, cm = tiny_configuration
    network = tiny_network(cm)
    x, target = torch.randn(4, 1, 32, 32), torch.randint(0, 4, (2, 1, 32, 32))
    targets = [target, target[..., ::2, ::2]]
    loss_draw, grads_draw = loss_and_grads(network, x, targets, draw, None)
    loss_all, grads_all = loss_and_grads(network, x, targets, draw, EVERY_PATH)
    torch.testing.assert_close(loss_all, loss_draw)
    assert grads_all.keys() == grads_draw.keys()
    for name in grads_draw:
        torch.testing.assert_close(grads_all[name], grads_draw[name], msg=name)


def test_a_draw_outside_the_forward_is_refused():
    from nnunetv2_asyco.network import BranchOutputs, select_remapped
    out = BranchOutputs(default=[torch.zeros(1)], remapped={0: torch.zeros(1)}, features=[], bottleneck=torch.zeros(1))
    with pytest.raises(ValueError, match="did not compute"):
        select_remapped(out, RemapPlan({"AB": (0, 1), "BA": ()}), "AB")


def count_graphs(network, plans, x):
    """Graphs dynamo builds for training forwards with these (forward) plans; a backend that only counts."""
    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(network, backend=counting_backend)
    for plan in plans:
        out_a, out_b = compiled(x, remap_plan=plan)
        out_a.default[0].sum().backward()
    torch._dynamo.reset()
    return len(graphs)


def test_training_forward_graph_does_not_depend_on_the_draw(tiny_configuration):
    _, cm = tiny_configuration
    network = tiny_network(cm)
    x = torch.randn(2, 1, 32, 32)
    schedule = RemapSchedule("per_scale", 0.5, (0, 1), seed=3)
    draws = [schedule.draw() for _ in range(6)]
    assert len(set(map(repr, draws))) > 2  # the schedule does draw different plans
    assert count_graphs(network, draws, x) > 1  # the forward of the draw itself: one graph per draw
    assert count_graphs(network, [EVERY_PATH] * len(draws), x) == 1  # what the trainer passes (forward_remap_plan)


# ---- micro-batching ------------------------------------------------------------------------------------------
from nnunetv2_asyco.micro_batching import micro_batched_backward, split_rows  # noqa: E402


def test_micro_batch_weights_add_up_to_the_step():
    for on_labeled in (True, False):
        batches = split_rows(n_labeled=2, n_rows=5, size=2, consistency_on_labeled=on_labeled)
        assert [(b.start, b.stop, b.n_labeled) for b in batches] == [(0, 2, 2), (2, 4, 0), (4, 5, 0)]
        assert sum(b.supervised_share for b in batches) == pytest.approx(1.0)
        assert sum(b.consistency_share for b in batches) == pytest.approx(1.0)
    assert split_rows(2, 4, 3, consistency_on_labeled=False)[0].consistency_share == pytest.approx(0.5)


def full_step_grads(network, obj, x, targets, draw):
    network.zero_grad(set_to_none=True)
    out_a, out_b = training_outputs(network, x, None, draw, EVERY_PATH)
    terms = obj.terms(out_a, out_b, targets, n_labeled=2)
    obj.combine(terms, consistency_weight=0.7).backward()
    return terms, {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def micro_step_grads(network, obj, x, targets, draw, size):
    network.zero_grad(set_to_none=True)
    step = micro_batched_backward(network, obj, x, None, targets, 2, draw, EVERY_PATH, 0.7, size,
                                  backward=lambda loss: loss.backward())
    assert step.finite
    return step.terms, {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("consistency_on_labeled", [True, False])
def test_micro_batched_gradient_equals_the_full_step(tiny_configuration, size, consistency_on_labeled):
    # nnU-Net's Dice+CE with batch_dice False: every term is per sample
    _, cm = tiny_configuration
    network = tiny_network(cm)
    obj = objective(consistency_on_labeled=consistency_on_labeled)
    x, target = torch.randn(4, 1, 32, 32), torch.randint(0, 4, (2, 1, 32, 32))
    targets = [target, target[..., ::2, ::2]]
    draw = RemapPlan({"AB": (0, 1), "BA": (1,)})
    full_terms, full = full_step_grads(network, obj, x, targets, draw)
    micro_terms, micro = micro_step_grads(network, obj, x, targets, draw, size)
    for name in full_terms:
        torch.testing.assert_close(micro_terms[name], full_terms[name].detach(), msg=name)
    assert micro.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(micro[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_dice_is_the_batch_level_term_micro_batching_changes(tiny_configuration):
    # nnU-Net's 2d (and 3d_fullres with a 3d_lowres) plans use batch Dice: pooled over a micro-batch instead
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2_asyco.asyco_objective import AsyCoObjective
    from test_objective_values import SCALE_WEIGHTS, asyco_options_of, nnUNetTrainerAsyCo
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                                 dice_class=MemoryEfficientSoftDiceLoss), SCALE_WEIGHTS)
    obj = AsyCoObjective(loss, "softmax", asyco_options_of(nnUNetTrainerAsyCo))
    _, cm = tiny_configuration
    network = tiny_network(cm)
    x, target = torch.randn(4, 1, 32, 32), torch.randint(0, 4, (2, 1, 32, 32))
    targets = [target, target[..., ::2, ::2]]
    full_terms, _ = full_step_grads(network, obj, x, targets, EVERY_PATH)
    split_terms, _ = micro_step_grads(network, obj, x, targets, EVERY_PATH, 1)
    whole_terms, _ = micro_step_grads(network, obj, x, targets, EVERY_PATH, 2)  # the labeled rows together
    assert not torch.allclose(split_terms["supervised"], full_terms["supervised"].detach())
    torch.testing.assert_close(whole_terms["supervised"], full_terms["supervised"].detach())


# ---- the automatic choice and the out-of-memory message (sizes injected: no GPU needed) ----------------------
from nnunetv2_asyco.memory_choice import (MEMORY_MODE_ENV, StepMemory, choose_memory_mode,  # noqa: E402
                                          out_of_memory_message, requested_memory_mode)

GIB = 2 ** 30
# 3d_fullres-like: 0.5 GiB of weights/gradients/momentum, 1.5 GiB of activations per sample and branch
ESTIMATE = StepMemory(fixed_bytes=GIB // 2, per_sample_branch_bytes=3 * GIB // 2)


def test_auto_keeps_the_default_mode_where_it_fits():
    # batch 2 + 2 unlabeled: 0.5 + 2 * 4 * 1.5 = 12.5 GiB
    mode, line = choose_memory_mode("auto", "cuda", ESTIMATE, step_rows=4, micro_batch_rows=1,
                                    available_bytes=80 * GIB)
    assert mode == "default"
    assert "12.5 GiB" in line and MEMORY_MODE_ENV in line


def test_auto_switches_to_micro_batches_on_a_gpu_sized_for_nnunet():
    # nnU-Net's own step: 0.5 GiB / 3 + 2 samples * 1.5 GiB ~ 3.2 GiB; micro-batches of 1 row: 0.5 + 2 * 1.5 = 3.5
    mode, line = choose_memory_mode("auto", "cuda", ESTIMATE, step_rows=4, micro_batch_rows=1,
                                    available_bytes=8 * GIB)
    assert mode == "micro_batch"
    assert "does not fit" in line and f"{MEMORY_MODE_ENV}=default" in line and "Even" not in line
    mode, line = choose_memory_mode("auto", "cuda", ESTIMATE, 4, 1, available_bytes=3 * GIB)
    assert mode == "micro_batch" and "-gpu_memory_target" in line  # not even micro-batches fit: re-plan


def test_auto_never_switches_to_micro_batches_that_would_change_the_objective():
    # with nnU-Net's batch Dice on, micro-batches pool it per micro-batch: the user decides, the log line says how
    mode, line = choose_memory_mode("auto", "cuda", ESTIMATE, step_rows=4, micro_batch_rows=1,
                                    available_bytes=8 * GIB, micro_batches_exact=False)
    assert mode == "default"
    assert "may not fit" in line and "batch Dice" in line and f"{MEMORY_MODE_ENV}=micro_batch" in line


def test_forced_modes_and_devices_without_a_limit():
    assert choose_memory_mode("default", "cuda", ESTIMATE, 4, 1, 1 * GIB)[0] == "default"
    assert choose_memory_mode("micro_batch", "cpu", None, 4, 1, None)[0] == "micro_batch"
    assert choose_memory_mode("auto", "cpu", None, 4, 1, None)[0] == "default"
    assert requested_memory_mode("auto", {MEMORY_MODE_ENV: "micro_batch"}) == "micro_batch"
    assert requested_memory_mode("micro_batch", {}) == "micro_batch"
    with pytest.raises(ValueError, match=MEMORY_MODE_ENV):
        requested_memory_mode("auto", {MEMORY_MODE_ENV: "small"})


def test_out_of_memory_message_names_the_mode_and_the_planning_option():
    message = out_of_memory_message("default", "nnUNetTrainerAsyCo", 1)
    assert "'default'" in message and f"{MEMORY_MODE_ENV}=micro_batch" in message
    assert "-gpu_memory_target" in message and "nnUNetPlannerResEnc" in message
    assert f"{MEMORY_MODE_ENV}=micro_batch" not in out_of_memory_message("micro_batch", "nnUNetTrainerAsyCo", 1)
