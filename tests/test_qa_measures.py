"""The QA measures, statistics and network wrappers on tiny tensors and a tiny TwoBranchNetwork (fast tier)."""
import math

import numpy as np
import pytest
import torch

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from conftest import tiny_plans
from nnunetv2_asyco.branches import build_branches
from nnunetv2_asyco.network import TwoBranchNetwork
from nnunetv2_asyco.qa.measures import jensen_shannon, mirror_spread
from nnunetv2_asyco.qa.outputs import BranchLogits, MirrorSpread
from nnunetv2_asyco.qa.table import boundary_band, case_score, csv_text, dice, ranked

DATASET_JSON = {"labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz", "channel_names": {"0": "x"},
                "numTraining": 1}


def test_jsd_zero_for_equal_one_for_disjoint_certain_and_symmetric():
    p = torch.softmax(torch.randn(3, 5, 5), 0)
    q = torch.softmax(torch.randn(3, 5, 5), 0)
    assert torch.allclose(jensen_shannon(p, p, "softmax"), torch.zeros(5, 5), atol=1e-6)
    one_hot_a, one_hot_b = torch.eye(3)[:, :1, None], torch.eye(3)[:, 1:2, None]
    assert jensen_shannon(one_hot_a, one_hot_b, "softmax").item() == pytest.approx(1.0)
    assert torch.allclose(jensen_shannon(p, q, "softmax"), jensen_shannon(q, p, "softmax"))
    assert 0 < jensen_shannon(p, q, "softmax").mean() < 1
    # regions: binary JSD per region, averaged
    assert jensen_shannon(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [0.0]]), "sigmoid").item() == \
        pytest.approx(0.5)


def test_mirror_spread_is_variance_over_mirrors():
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])[:, :, None]  # 2 mirrors, 2 classes, 1 voxel
    assert mirror_spread(probs, "softmax").item() == pytest.approx(2 * 0.04)
    assert mirror_spread(probs[:1].expand(3, 2, 1), "softmax").item() == 0


def test_dice_boundary_and_ranking():
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)) == pytest.approx(2 / 3)
    mask = np.zeros((1, 7, 7), bool)
    mask[0, 2:5, 2:5] = True
    band = boundary_band(mask)
    assert band[0, 3, 3] == False and band[0, 2, 2] and band[0, 1, 3] and not band[0, 0, 0]  # noqa: E712
    results = [{"case": c, "case_score": s, "measure": "branches", "classes": []} for c, s in
               (("x", 0.1), ("y", 0.7), ("z", 0.3))]
    assert [(r["case"], r["rank"]) for r in ranked(results)] == [("y", 1), ("z", 2), ("x", 3)]
    assert csv_text(results).splitlines()[0].startswith("rank,case,case_score")


def tiny_network(num_classes=3):
    pm = PlansManager(tiny_plans())
    a, b = build_branches(pm.get_configuration("cfg"), 1, num_classes, False, "same")
    return pm, TwoBranchNetwork(a, b).eval()


def test_branch_logits_carry_the_models_own_output_bit_for_bit():
    _, net = tiny_network()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        out = BranchLogits(net)(x)
        assert torch.equal(out[:, :3], net(x))
        assert torch.equal(out[:, 3:6], net.branch_a(x)) and torch.equal(out[:, 6:], net.branch_b(x))


def test_mirror_spread_logits_equal_nnunets_mirroring():
    pm, net = tiny_network()
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=True)
    predictor.manual_initialization(net, pm, pm.get_configuration("cfg"), None, DATASET_JSON, "t", (0, 1))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        nnunet = predictor._internal_maybe_mirror_and_predict(x)
        ours = MirrorSpread(net, (0, 1), "softmax")(x)
    assert torch.equal(ours[:, :3], nnunet)
    assert ours[:, 3].min() >= 0 and ours[:, 3].max() > 0


def test_single_network_is_not_wrapped_as_two_branches():
    pm = PlansManager(tiny_plans())
    a, _ = build_branches(pm.get_configuration("cfg"), 1, 3, False, "same")
    with pytest.raises(TypeError, match="TwoBranchNetwork"):
        BranchLogits(a)
    with pytest.raises(ValueError, match="needs mirroring"):
        MirrorSpread(a, None, "softmax")


def test_case_score_is_mean_inside_predicted_structures_and_max_without_any():
    classes = [{"predicted_voxels": 10, "mean_disagreement_inside": 0.2},
               {"predicted_voxels": 0, "mean_disagreement_inside": float("nan")},
               {"predicted_voxels": 5, "mean_disagreement_inside": 0.4}]
    assert case_score(classes) == pytest.approx(0.3)
    assert case_score([{"predicted_voxels": 0, "mean_disagreement_inside": float("nan")}]) == 1.0
