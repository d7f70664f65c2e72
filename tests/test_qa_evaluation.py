"""The QA evaluation's statistics (benchmarks/quality/qa_evaluation.py), checked against scipy and by hand."""
import os
import sys

import numpy as np
import pytest
from scipy import stats

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality")
sys.path.insert(0, BENCH)
import qa_evaluation  # noqa: E402


def test_auroc_matches_mann_whitney_and_hand_values():
    assert qa_evaluation.auroc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert qa_evaluation.auroc(np.array([1.0, 2.0, 3.0]), np.array([True, False, False])) == 0.0
    assert qa_evaluation.auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=40), rng.random(40) < 0.3
    u = stats.mannwhitneyu(s[y], s[~y]).statistic
    assert qa_evaluation.auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()))


def test_worst_fraction_and_statistics():
    dice = np.array([0.9, 0.2, 0.8, 0.5, 0.95, 0.7, 0.85, 0.6, 0.3, 0.99])
    assert list(np.flatnonzero(qa_evaluation.worst(dice, 0.1))) == [1]
    assert sorted(np.flatnonzero(qa_evaluation.worst(dice, 0.2))) == [1, 8]
    perfect = qa_evaluation.statistics(1 - dice, dice)
    assert perfect == {"spearman": pytest.approx(1.0), "auroc_worst10": 1.0, "auroc_worst20": 1.0}


def test_bootstrap_interval_contains_point_and_pairs_measures():
    rng = np.random.default_rng(1)
    dice = rng.uniform(0.3, 1.0, 50)
    per_run = [({"branches: case_score": 1 - dice + rng.normal(0, 0.05, 50), "tta: case_score": rng.random(50),
                 "branches: one_minus_dice_ab": rng.random(50)}, dice)]
    table = qa_evaluation.bootstrap(per_run, 200)
    diff = "branches: case_score - tta: case_score"
    assert set(table) == {"branches: case_score", "tta: case_score", "branches: one_minus_dice_ab", diff}
    for key in table:
        point, lo, hi = table[key]["auroc_worst20"]
        assert lo <= point <= hi
    assert table["branches: case_score"]["spearman"][0] > 0.8 and table[diff]["spearman"][1] > 0


def test_bootstrap_shared_cases_and_seed_groups():
    rng = np.random.default_rng(2)
    dice = rng.uniform(0.3, 1.0, 40)
    runs = [({"branches: case_score": 1 - dice + rng.normal(0, s, 40), "tta: case_score": rng.random(40)}, dice)
            for s in (0.01, 0.3, 0.02, 0.25)]
    one = qa_evaluation.bootstrap(runs[:1], 50)
    assert one == qa_evaluation.bootstrap(runs[:1], 50, groups=["a"], shared_cases=True)  # one run: unchanged
    plain = qa_evaluation.bootstrap(runs, 200)
    grouped = qa_evaluation.bootstrap(runs, 200, groups=["a", "a", "b", "b"], shared_cases=True)
    for key in plain:  # same point estimate (mean over runs), whatever the resampling
        assert grouped[key]["spearman"][0] == pytest.approx(plain[key]["spearman"][0])
        point, lo, hi = grouped[key]["auroc_worst10"]
        assert lo <= point <= hi
    # resampling seeds of very different quality widens the interval
    width = lambda t: t["branches: case_score"]["spearman"][2] - t["branches: case_score"]["spearman"][1]
    assert width(grouped) > width(qa_evaluation.bootstrap(runs, 200, shared_cases=True))
    with pytest.raises(AssertionError):
        qa_evaluation.bootstrap([runs[0], (runs[1][0], dice[:-1])], 5, shared_cases=True)


def test_main_reuses_predictions_and_writes_suffixed_report(tmp_path):
    import csv
    import json
    import SimpleITK as sitk
    labels = tmp_path / "raw" / "labelsTs"
    labels.mkdir(parents=True)
    (tmp_path / "raw" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1},
                                                               "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(3)
    cases = [f"c{i:02d}" for i in range(12)]
    for c in cases:
        sitk.WriteImage(sitk.GetImageFromArray((rng.random((8, 8)) < 0.5).astype(np.uint8)), str(labels / f"{c}.nii.gz"))
    runs = []
    for i, trainer in enumerate(["T_A", "T_A", "T_B"]):
        runs += ["--run", f"/nowhere/r{i}", "D", trainer, "P", "2d"]
        for m in ("branches", "tta"):
            out = tmp_path / "work" / f"run{i}_{m}"
            out.mkdir(parents=True)
            with open(out / "qa.csv", "w", newline="") as f:
                w = csv.DictWriter(f, ["case", "case_score", "mean_disagreement_inside", "dice_a_b"])
                w.writeheader()
                for k, c in enumerate(cases):
                    score = str(rng.random())
                    w.writerow({"case": c, "case_score": score, "mean_disagreement_inside": score,
                                "dice_a_b": str(rng.random()) if m == "branches" else ""})
            for k, c in enumerate(cases):  # prediction: reference with k flipped voxels, same for both measures
                ref = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{c}.nii.gz")))
                pred = ref.copy().ravel()
                pred[:k] = 1 - pred[:k]
                sitk.WriteImage(sitk.GetImageFromArray(pred.reshape(ref.shape)), str(out / f"{c}.nii.gz"))
    qa_evaluation.main(runs + ["--images", str(tmp_path), "--labels", str(labels), "--work", str(tmp_path / "work"),
                               "--out", str(tmp_path / "res"), "--suffix", "_x", "--reuse", "--bootstrap", "20"])
    text = (tmp_path / "res" / "qa_detection_x.md").read_text()
    assert "## T_A (2 runs)" in text and "## T_B (1 run)" in text and "## all runs (mean over 2 T_A, 1 T_B)" in text
    assert "over cases and seeds" in text and (tmp_path / "res" / "qa_scatter_x.png").is_file()
    result = json.loads((tmp_path / "res" / "qa_detection_x.json").read_text())
    assert result["per_case"][0]["cases"] == cases and len(result["per_case"]) == 3
    assert set(result["by_trainer"]) == {"T_A (2 runs)", "T_B (1 run)"}
    assert "branches: case_score - tta: case_score" in result["table"]
    excluded = qa_evaluation.draw(cases, 5, 0)
    qa_evaluation.main(runs + ["--images", str(tmp_path), "--labels", str(labels), "--work", str(tmp_path / "work"),
                               "--out", str(tmp_path / "res"), "--suffix", "_y", "--reuse", "--bootstrap", "5",
                               "--exclude_subset", "5", "0"])
    held_out = json.loads((tmp_path / "res" / "qa_detection_y.json").read_text())["per_case"][0]
    assert held_out["cases"] == [c for c in cases if c not in excluded] and len(held_out["cases"]) == 7
    assert held_out["dice"] == [d for c, d in zip(cases, result["per_case"][0]["dice"]) if c not in excluded]
    assert "leaving out the 5 cases of the subset of seed 0" in (tmp_path / "res" / "qa_detection_y.md").read_text()


def test_case_dice_both_empty_convention():
    ref = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 0, 0, 0], [0, 0, 0, 0]])
    # class 1: 2*1/3; class 2 absent from both
    assert qa_evaluation.case_dice(pred, ref, [1, 2]) == pytest.approx(2 / 3)
    assert qa_evaluation.case_dice(pred, ref, [1, 2], both_empty="one") == pytest.approx((2 / 3 + 1) / 2)
    assert qa_evaluation.case_dice(pred, ref, [2, 3]) == 1.0  # nothing to find, nothing predicted
    assert qa_evaluation.case_dice(np.zeros_like(ref), ref, [1, 2]) == 0.0
