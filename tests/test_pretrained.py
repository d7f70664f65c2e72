"""-pretrained_weights: a stock nnU-Net network's weights initialise both branches (unit level).

The real ``nnUNetv2_train -pretrained_weights`` run is in test_pipeline_2d.py.
"""
import pytest
import torch

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import tiny_plans
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import TwoBranchNetwork
from nnunetv2_asyco.pretrained import HEAD_KEY, install_pretrained_weights_hook, load_into_two_branches


def configuration(features=(4, 8, 16)):
    return PlansManager(tiny_plans(features=features)).get_configuration("cfg")


def stock_network(cm):
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, 4, allow_init=True,
                                  deep_supervision=True)


def two_branch(cm, branch_b_encoder="same"):
    return TwoBranchNetwork(*build_branches(cm, 1, 4, True, branch_b_encoder))


def test_stock_weights_go_to_both_branches_heads_stay_own():
    cm = configuration()
    stock = stock_network(cm).state_dict()
    net = two_branch(cm)
    heads_before = {b: {k: v.clone() for k, v in getattr(net, b).state_dict().items() if HEAD_KEY in k}
                    for b in ("branch_a", "branch_b")}
    loaded, skipped = load_into_two_branches(net, stock)
    assert loaded == ["branch_a", "branch_b"] and skipped == {}
    for b in ("branch_a", "branch_b"):
        for k, v in getattr(net, b).state_dict().items():
            if HEAD_KEY in k:
                assert torch.equal(v, heads_before[b][k]), k  # nnU-Net's rule: heads are not transferred
            else:
                assert torch.equal(v, stock[k]), k
    # the branches still differ (their heads), so co-training has something to work with
    x = torch.randn(1, 1, 32, 32)
    assert not torch.allclose(net.branch_a(x)[0], net.branch_b(x)[0])


def test_residual_branch_b_keeps_its_init_and_says_why():
    cm = configuration()
    net = two_branch(cm, "residual")
    b_before = {k: v.clone() for k, v in net.branch_b.state_dict().items()}
    loaded, skipped = load_into_two_branches(net, stock_network(cm).state_dict())
    assert loaded == ["branch_a"] and "missing" in skipped["branch_b"]
    assert all(torch.equal(v, b_before[k]) for k, v in net.branch_b.state_dict().items())


def test_other_architecture_is_refused_with_the_reason():
    net = two_branch(configuration())
    other = stock_network(configuration(features=(4, 8, 32))).state_dict()
    with pytest.raises(RuntimeError, match="does not fit branch A.*shape.*same plans and configuration"):
        load_into_two_branches(net, other, "ckpt.pth")


def test_two_branch_checkpoint_loads_branch_by_branch():
    cm = configuration()
    source, target = two_branch(cm), two_branch(cm)
    load_into_two_branches(target, source.state_dict())
    for b in ("branch_a", "branch_b"):
        for k, v in getattr(target, b).state_dict().items():
            if HEAD_KEY not in k:
                assert torch.equal(v, getattr(source, b).state_dict()[k]), (b, k)
    assert not torch.equal(target.branch_a.encoder.stages[0][0].convs[0].conv.weight,
                           target.branch_b.encoder.stages[0][0].convs[0].conv.weight)


def test_hook_routes_two_branch_networks_and_leaves_others_to_nnunet(tmp_path):
    import nnunetv2.run.run_training as run_training
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as original
    before = run_training.load_pretrained_weights  # a trainer built earlier in this process may have hooked it
    try:
        run_training.load_pretrained_weights = original
        install_pretrained_weights_hook()
        install_pretrained_weights_hook()  # idempotent
        hooked = run_training.load_pretrained_weights
        assert hooked is not original and getattr(hooked, "handles_two_branch_networks")
        cm = configuration()
        stock = stock_network(cm)
        ckpt = tmp_path / "stock.pth"
        torch.save({"network_weights": stock.state_dict()}, ckpt)
        net = two_branch(cm)
        hooked(net, str(ckpt))
        key = "encoder.stages.0.0.convs.0.conv.weight"
        assert torch.equal(net.branch_b.state_dict()[key], stock.state_dict()[key])
        single = stock_network(cm)  # a plain network still goes through nnU-Net's own function
        hooked(single, str(ckpt))
        assert torch.equal(single.state_dict()[key], stock.state_dict()[key])
    finally:
        run_training.load_pretrained_weights = before
