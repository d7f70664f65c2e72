"""Unit tests: remapped paths, consistency terms, their gradients, ramp-up, ensemble, checkpoint round trip."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_asyco.branch_views import branch_inputs, cutout, view_perturbation
from nnunetv2_asyco.view_mixing import CutMixBoxes, ViewMix
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.consistency import (branch_output_consistency, cross_pseudo_supervision,
                                        inter_head_consistency, representation_consistency, sigmoid_rampup)
from nnunetv2_asyco.network import BranchOutputs, RemapPlan, TwoBranchNetwork, head_for_scale
from nnunetv2_asyco.remapping import RemapSchedule

ALL = RemapPlan({"AB": (0, 1), "BA": (0, 1)})


def make_network(configuration_manager, branch_b_encoder="same", num_classes=3):
    a, b = build_branches(configuration_manager, 1, num_classes, True, branch_b_encoder)
    return TwoBranchNetwork(a, b)


def identical_network(configuration_manager):
    net = make_network(configuration_manager)
    net.branch_b.load_state_dict(net.branch_a.state_dict())
    return net


def test_remapped_path_is_other_branch_head_on_own_features(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    x = torch.randn(2, 1, 32, 32)
    out_a, out_b = net(x, remap_plan=ALL)
    for s in (0, 1):
        expected_ab = head_for_scale(net.branch_b.decoder, s)(out_a.features[s])
        expected_ba = head_for_scale(net.branch_a.decoder, s)(out_b.features[s])
        assert torch.equal(out_a.remapped[s], expected_ab)
        assert torch.equal(out_b.remapped[s], expected_ba)
        # and it is not simply the default path
        assert not torch.allclose(out_a.remapped[s], out_a.default[s])


def test_default_paths_equal_stock_unet_outputs(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    x = torch.randn(2, 1, 32, 32)
    out_a, out_b = net(x, remap_plan=RemapPlan())
    stock_a, stock_b = net.branch_a(x), net.branch_b(x)
    for s in range(len(stock_a)):
        assert torch.allclose(out_a.default[s], stock_a[s], atol=1e-6)
        assert torch.allclose(out_b.default[s], stock_b[s], atol=1e-6)
    assert out_a.remapped == {} and out_b.remapped == {}


def test_remap_plan_only_computes_active_scales(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    out_a, out_b = net(torch.randn(1, 1, 32, 32), remap_plan=RemapPlan({"AB": (1,), "BA": ()}))
    assert set(out_a.remapped) == {1} and out_b.remapped == {}


def test_residual_branch_b_keeps_heads_interchangeable(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm, branch_b_encoder="residual")
    assert type(net.branch_b).__name__ == "ResidualEncoderUNet"
    out_a, out_b = net(torch.randn(1, 1, 32, 32), remap_plan=ALL)
    assert out_a.remapped[0].shape == out_a.default[0].shape


def test_branches_start_different(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    pa = torch.cat([p.flatten() for p in net.branch_a.parameters()])
    pb = torch.cat([p.flatten() for p in net.branch_b.parameters()])
    assert not torch.allclose(pa, pb)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_consistency_terms_zero_for_identical_branches_positive_otherwise(tiny_configuration, activation):
    _, cm = tiny_configuration
    weights = [2 / 3, 1 / 3]
    x = torch.randn(2, 1, 32, 32)
    for net, expect_zero in ((identical_network(cm), True), (make_network(cm), False)):
        a, b = net(x, remap_plan=ALL)
        terms = {
            "branch_output": branch_output_consistency(a.default, b.default, weights, activation, "soft"),
            "inter_head": inter_head_consistency(a.default, a.remapped, b.default, b.remapped, weights, activation),
            "representation": representation_consistency(a.features, b.features, weights),
        }
        for name, value in terms.items():
            if expect_zero:
                assert value.item() == pytest.approx(0.0, abs=1e-6), name
            else:
                assert value.item() > 1e-6, name


def test_cps_mode_is_pseudo_label_cross_entropy():
    logits_a = torch.randn(2, 3, 8, 8)
    logits_b = torch.randn(2, 3, 8, 8)
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits_a, logits_b.argmax(1))
                      + torch.nn.functional.cross_entropy(logits_b, logits_a.argmax(1)))
    assert cross_pseudo_supervision(logits_a, logits_b, "softmax").item() == pytest.approx(expected.item(), rel=1e-5)
    value = branch_output_consistency([logits_a], [logits_b], [1.0], "softmax", mode="cps")
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="Unknown branch-output"):
        branch_output_consistency([logits_a], [logits_b], [1.0], "softmax", mode="nope")


def _grad_owners(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()
    owners = set()
    for name, p in net.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            owners.add(name.split(".")[0] + ("/head" if ".seg_layers." in name else "/body"))
    return owners


def test_each_term_reaches_exactly_the_parameters_it_should(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    x = torch.randn(2, 1, 32, 32)
    weights = [2 / 3, 1 / 3]
    everything = {"branch_a/body", "branch_a/head", "branch_b/body", "branch_b/head"}

    a, b = net(x, remap_plan=ALL)
    assert _grad_owners(net, branch_output_consistency(a.default, b.default, weights, "softmax")) == everything

    # inter-head with only the AB path: A's features and both branches' heads, but never B's body
    a, b = net(x, remap_plan=RemapPlan({"AB": (0, 1), "BA": ()}))
    owners = _grad_owners(net, inter_head_consistency(a.default, a.remapped, b.default, b.remapped, weights,
                                                      "softmax"))
    assert owners == {"branch_a/body", "branch_a/head", "branch_b/head"}

    # representation: both bodies, no head
    a, b = net(x, remap_plan=RemapPlan())
    assert _grad_owners(net, representation_consistency(a.features, b.features, weights)) == \
        {"branch_a/body", "branch_b/body"}

    # cps: the teacher side is detached, so each pseudo-label direction only trains its student
    a, b = net(x, remap_plan=RemapPlan())
    from nnunetv2_asyco.consistency import pseudo_label_loss
    assert _grad_owners(net, pseudo_label_loss(a.default[0], b.default[0], "softmax")) == \
        {"branch_a/body", "branch_a/head"}


def test_zero_weight_scale_contributes_nothing(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    a, b = net(torch.randn(1, 1, 32, 32), remap_plan=ALL)
    only_full = branch_output_consistency(a.default, b.default, [1.0, 0.0], "softmax")
    from nnunetv2_asyco.consistency import probability_mse
    assert only_full.item() == pytest.approx(probability_mse(a.default[0], b.default[0], "softmax").item())


def _one_hot_logits(label_map, num_classes):
    return F.one_hot(label_map, num_classes).permute(0, 3, 1, 2).float() * 20.0  # near-certain softmax


def test_class_balanced_branch_output_weighs_small_classes_like_large_ones():
    from nnunetv2_asyco.consistency import class_balanced_mse, probability_mse
    ref = torch.zeros(1, 32, 32, dtype=torch.long)
    ref[:, :16] = 1  # large class: 512 voxels
    ref[:, 20:22, 20:22] = 2  # small class: 4 voxels
    large_wrong, small_wrong = ref.clone(), ref.clone()
    large_wrong[:, :8] = 0  # half of the large class missed
    small_wrong[:, 20:21, 20:22] = 0  # half of the small class missed
    ref_l, large_l, small_l = (_one_hot_logits(m, 3) for m in (ref, large_wrong, small_wrong))
    assert class_balanced_mse(ref_l, ref_l, "softmax").item() == pytest.approx(0.0, abs=1e-6)
    # plain MSE barely sees the small structure; the class-balanced term gives both misses the same size
    assert probability_mse(ref_l, small_l, "softmax") < probability_mse(ref_l, large_l, "softmax") / 50
    cb_large, cb_small = class_balanced_mse(ref_l, large_l, "softmax"), class_balanced_mse(ref_l, small_l, "softmax")
    assert cb_small.item() == pytest.approx(cb_large.item(), rel=0.3)
    via_mode = branch_output_consistency([ref_l], [small_l], [1.0], "softmax", mode="class_balanced")
    assert via_mode.item() == pytest.approx(cb_small.item())
    with pytest.raises(ValueError, match="class_balanced"):
        branch_output_consistency([ref_l], [small_l], [1.0], "softmax", mode="balanced")


def test_rampup_values():
    assert sigmoid_rampup(0.0, 0.4) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.2, 0.4) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(0.4, 0.4) == 1.0
    assert sigmoid_rampup(0.9, 0.4) == 1.0
    assert sigmoid_rampup(0.1, 0.0) == 1.0
    values = [sigmoid_rampup(t / 10, 0.5) for t in range(11)]
    assert values == sorted(values)


def test_remap_schedules():
    always = RemapSchedule("always", 0.5, (0, 1, 2)).draw()
    assert always.active("AB") == (0, 1, 2) and always.active("BA") == (0, 1, 2)
    assert not RemapSchedule("off", 0.5, (0, 1)).draw().any_active
    draws = [RemapSchedule("per_direction", 0.5, (0, 1), seed=3) for _ in range(2)]
    seq1 = [draws[0].draw().scales for _ in range(50)]
    seq2 = [draws[1].draw().scales for _ in range(50)]
    assert seq1 == seq2, "same seed, same schedule"
    assert {tuple(s["AB"]) for s in seq1} == {(), (0, 1)}, "per_direction switches whole directions"
    per_scale = RemapSchedule("per_scale", 0.5, (0, 1, 2), seed=0)
    assert len({per_scale.draw().active("AB") for _ in range(200)}) > 2
    with pytest.raises(ValueError, match="Unknown remap schedule"):
        RemapSchedule("sometimes", 0.5, (0,))
    # the random state round-trips (resume)
    s = RemapSchedule("per_scale", 0.5, (0, 1, 2), seed=1)
    s.draw()
    state = copy.deepcopy(s.state_dict())
    nxt = [s.draw().scales for _ in range(5)]
    s.load_state_dict(state)
    assert [s.draw().scales for _ in range(5)] == nxt


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_ensemble_averages_probabilities(tiny_configuration, activation):
    _, cm = tiny_configuration
    net = make_network(cm)
    net.set_output_activation(activation)
    net.set_deep_supervision(False)
    net.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        ens = net(x)
        la, lb = net.branch_a(x), net.branch_b(x)
    act = (lambda t: torch.softmax(t, 1)) if activation == "softmax" else torch.sigmoid
    assert ens.shape == la.shape
    assert torch.allclose(act(ens), 0.5 * (act(la) + act(lb)), atol=1e-5)


def test_checkpoint_round_trips_both_branches_and_activation(tiny_configuration, tmp_path):
    _, cm = tiny_configuration
    net = make_network(cm)
    net.set_output_activation("sigmoid")
    torch.save(net.state_dict(), tmp_path / "w.pth")
    fresh = make_network(cm)
    assert fresh.output_activation == "softmax"
    fresh.load_state_dict(torch.load(tmp_path / "w.pth"))
    assert fresh.output_activation == "sigmoid"
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert any(k.startswith("branch_a.") for k in fresh.state_dict())
    assert any(k.startswith("branch_b.") for k in fresh.state_dict())


def test_activation_checkpointing_gives_the_same_outputs_and_gradients(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    x = torch.randn(2, 1, 32, 32)
    grads = []
    for checkpointed in (False, True):
        net.activation_checkpointing = checkpointed
        net.zero_grad(set_to_none=True)
        a, b = net(x, remap_plan=ALL)
        (branch_output_consistency(a.default, b.default, [2 / 3, 1 / 3], "softmax")
         + representation_consistency(a.features, b.features, [1.0, 1.0])).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_residual_encoder_branches_match_stock_forward(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm, branch_b_encoder="residual")
    x = torch.randn(1, 1, 32, 32)
    _, out_b = net(x, remap_plan=RemapPlan())
    assert torch.allclose(out_b.default[0], net.branch_b(x)[0], atol=1e-6)


def test_supervised_terms_skip_ignore_label_voxels_consistency_does_not(tiny_configuration):
    """With nnU-Net's ignore label, logits on ignored voxels of labeled cases must not change the supervised
    terms (default and remapped paths), while consistency still sees them."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2_asyco.asyco_objective import AsyCoObjective
    from nnunetv2_asyco.training.asyco import asyco_options_of, nnUNetTrainerAsyCo
    from nnunetv2_asyco.network import BranchOutputs

    ignore = 4  # background + 3 classes, then the ignore label
    _, cm = tiny_configuration
    out_a, out_b = make_network(cm, num_classes=4)(torch.randn(2, 1, 32, 32), remap_plan=ALL)
    target = torch.randint(0, 4, (1, 1, 32, 32))
    target[..., :8, :] = ignore  # top quarter of the labeled sample unannotated
    targets = [target, target[..., ::2, ::2]]
    loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss),
                                  [2 / 3, 1 / 3])
    objective = AsyCoObjective(loss, "softmax", asyco_options_of(nnUNetTrainerAsyCo))

    def scramble_ignored(t: torch.Tensor, scale: int) -> torch.Tensor:
        t = t.detach().clone()
        rows = 8 >> scale
        t[0, :, :rows] += 5 * torch.randn_like(t[0, :, :rows])  # sample 0 is the labeled one
        return t

    def scrambled(out: BranchOutputs) -> BranchOutputs:
        return BranchOutputs(default=[scramble_ignored(t, s) for s, t in enumerate(out.default)],
                             remapped={s: scramble_ignored(t, s) for s, t in out.remapped.items()},
                             features=out.features, bottleneck=out.bottleneck)

    before = objective.terms(out_a, out_b, targets, n_labeled=1)
    after = objective.terms(scrambled(out_a), scrambled(out_b), targets, n_labeled=1)
    torch.testing.assert_close(after["supervised"], before["supervised"])
    assert not torch.allclose(after["branch_output"], before["branch_output"])
    # positive control: the same change on annotated voxels does change the supervised terms
    targets_all = [torch.zeros_like(t) for t in targets]
    assert not torch.allclose(objective.terms(scrambled(out_a), scrambled(out_b), targets_all, n_labeled=1)["supervised"],
                              objective.terms(out_a, out_b, targets_all, n_labeled=1)["supervised"])


def test_branch_b_reads_its_own_view_when_given(tiny_configuration):
    _, cm = tiny_configuration
    net = make_network(cm)
    x, x_b = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    out_a, out_b = net(x, remap_plan=ALL, x_b=x_b)
    stock_a, stock_b = net.branch_a(x), net.branch_b(x_b)
    for s in range(len(stock_a)):
        assert torch.allclose(out_a.default[s], stock_a[s], atol=1e-6)
        assert torch.allclose(out_b.default[s], stock_b[s], atol=1e-6)
        # inter-head pairs still share features: O_BA is A's head on B's features of B's own view
        assert torch.equal(out_b.remapped[s], head_for_scale(net.branch_a.decoder, s)(out_b.features[s]))


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack((a.flatten(), b.flatten())))[0, 1])


@pytest.mark.parametrize("spatial", [(32, 32), (8, 16, 16)])
@pytest.mark.parametrize("views", ["perturbed", "perturbed_cutout"])
def test_perturbed_views_differ_per_branch_only_on_unlabeled_samples(views, spatial):
    torch.manual_seed(0)
    data, unlabeled = torch.randn(2, 2, *spatial), torch.randn(3, 2, *spatial)
    kept = unlabeled.clone()
    x_a, x_b, mix = branch_inputs(data, unlabeled, view_perturbation(views))
    assert mix is None
    assert x_a.shape == x_b.shape == (5, 2) + spatial
    assert torch.equal(x_a[:2], data) and torch.equal(x_b[:2], data)  # labeled samples untouched
    assert torch.equal(unlabeled, kept)  # the loader's batch is not modified in place
    for view in (x_a[2:], x_b[2:]):
        assert not torch.allclose(view, unlabeled, atol=0.05)
        # geometry kept: each view still correlates voxel by voxel with the unperturbed samples
        assert corr(view, unlabeled) > 0.5
    assert not torch.allclose(x_a[2:], x_b[2:], atol=0.05)


@pytest.mark.parametrize("spatial", [(16, 24), (8, 16, 16)])
def test_mixed_views_paste_a_partner_box_into_one_branch_only(spatial):
    torch.manual_seed(1)
    data, unlabeled = torch.randn(2, 2, *spatial), torch.randn(3, 2, *spatial)
    seen_mixed = set()
    for _ in range(12):
        x_a, x_b, mix = branch_inputs(data, unlabeled, view_perturbation("perturbed_mixed"))
        assert torch.equal(x_a[:2], data) and torch.equal(x_b[:2], data)  # labeled samples never mixed
        seen_mixed.add(mix.mixed_branch)
        mixed, plain = (x_a, x_b) if mix.mixed_branch == "A" else (x_b, x_a)
        box = mix.boxes.mask(spatial, mixed.device)  # (3, 1, *spatial)
        assert box.any() and not box.all()
        for i, j in enumerate(mix.boxes.partner.tolist()):
            inside, outside = box[i, 0], ~box[i, 0]
            # outside the box the mixed view still shows sample i, inside it shows sample j (both perturbed)
            assert corr(mixed[2 + i][:, outside], unlabeled[i][:, outside]) > 0.5
            assert corr(mixed[2 + i][:, inside], unlabeled[j][:, inside]) > 0.5
            assert corr(plain[2 + i], unlabeled[i]) > 0.5  # the other branch reads sample i everywhere
    assert seen_mixed == {"A", "B"}  # either branch can be the mixed one


def test_mixing_the_outputs_aligns_them_with_the_mixed_branch():
    """For a voxel-wise map f, mixing f's outputs equals f on the mixed input, at every grid the box fits."""
    torch.manual_seed(2)
    x = torch.randn(4, 3, 16, 16)
    boxes = CutMixBoxes(starts=torch.tensor([[0.25, 0.5], [0.0, 0.0], [0.5, 0.25]]),
                        ends=torch.tensor([[0.75, 1.0], [0.5, 0.25], [1.0, 0.5]]),
                        partner=torch.tensor([2, 0, 1]))
    mix = ViewMix(boxes, mixed_branch="A", first=1)  # the first sample is labeled: kept

    def branch(inp):  # a voxel-wise "network" with a full- and a half-resolution output
        half = F.avg_pool2d(inp, 2)
        return BranchOutputs(default=[2 * inp, 3 * half], remapped={1: -half}, features=[inp.exp(), half],
                             bottleneck=F.avg_pool2d(inp, 4))

    on_mixed, aligned_a, aligned = branch(mix.mix(x)), *mix.align(branch(x), branch(x))
    assert torch.equal(aligned_a.default[0], branch(x).default[0])  # the mixed branch's outputs are kept
    for got, want in [(aligned.default, on_mixed.default), (aligned.features, on_mixed.features),
                      ([aligned.remapped[1]], [on_mixed.remapped[1]]), ([aligned.bottleneck], [on_mixed.bottleneck])]:
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=1e-6)
    assert torch.equal(aligned.default[0][:1], 2 * x[:1])
    assert not torch.allclose(aligned.default[0][1:], 2 * x[1:])


def test_cutout_zeroes_one_box_per_sample():
    torch.manual_seed(0)
    x = torch.ones(4, 2, 20, 30)
    cutout(x, p=1.0, size=(0.3, 0.3))
    for sample in x:
        zero = (sample == 0)
        assert torch.equal(zero[0], zero[1])  # every channel of the box
        rows, cols = zero[0].any(1).sum().item(), zero[0].any(0).sum().item()
        assert (rows, cols) == (6, 9) and zero[0].sum().item() == 54  # one 0.3 x 0.3 box


def test_shared_views_and_unknown_name():
    data, unlabeled = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    x_a, x_b, mix = branch_inputs(data, unlabeled, view_perturbation("shared"))
    assert x_b is None and mix is None and torch.equal(x_a, torch.cat((data, unlabeled)))
    with pytest.raises(ValueError, match="branch_views must be one of"):
        view_perturbation("strong")
