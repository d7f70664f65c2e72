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
