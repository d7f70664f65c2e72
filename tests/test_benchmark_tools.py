"""The benchmarks' own tools: the real-anatomy dataset builder, the paired statistics and the cost report.

The builder runs on a tiny stand-in for the INIA19 files (same label numbering), so CI needs no Debian package;
the statistics are checked against scipy and against values worked out by hand.
"""
import json
import math
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import stats

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "quality")
sys.path.insert(0, BENCH)
import paired_stats  # noqa: E402
import real_anatomy  # noqa: E402


def tiny_template(folder, slices=24):
    """A (6, slices, 10) T1 + NeuroMaps-numbered label volume: white matter everywhere, a putamen in every third
    slice, a right-hemisphere caudate (left number + 1000) and an unrelated cortex label."""
    t1 = np.random.default_rng(0).uniform(50, 100, (6, slices, 10)).astype(np.float32)
    labels = np.zeros(t1.shape, np.int16)
    labels[1:5, :, 1:4] = 55  # cerebral white matter (left)
    labels[1:5, :, 6:9] = 1055  # cerebral white matter (right)
    labels[2:4, ::3, 2] = 98  # putamen
    labels[2:4, :, 7] = 1082  # caudate, right hemisphere
    labels[0, :, :] = 1  # occipital gyrus: background for the benchmark
    paths = []
    for name, array in (("inia19-t1-brain.nii.gz", t1), ("inia19-NeuroMaps.nii.gz", labels)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.5, 0.5, 0.5))
        paths.append(os.path.join(folder, name))
        sitk.WriteImage(image, paths[-1])
    return paths


def test_real_anatomy_dataset_keeps_test_slices_away_from_training_slices(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    tiny_template(str(templates))
    folder = real_anatomy.build_dataset(str(tmp_path / "raw"), 992, templates=str(templates), train_block=4,
                                        test_block=2, gap=1)
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    train, test = dataset["split"]["train"], dataset["split"]["test"]
    assert len(train) == 12 and len(test) == 6 and dataset["numTraining"] == 12
    assert min(abs(a - b) for a in train for b in test) >= 2  # a gap of one slice at least
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == [f"ts_y{s:03d}_0000.nii.gz" for s in test]
    label_values = dataset["labels"]
    assert list(label_values)[:3] == ["background", "white_matter", "thalamus"] and len(label_values) == 9
    caudate = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(folder, "labelsTr", f"tr_y{train[0]:03d}.nii.gz")))
    image = sitk.ReadImage(os.path.join(folder, "imagesTr", f"tr_y{train[0]:03d}_0000.nii.gz"))
    assert caudate.shape == (1, 6, 10) and image.GetSpacing() == (0.5, 0.5, 999.0)
    assert set(np.unique(caudate)) == {0, label_values["white_matter"], label_values["caudate"]} | (
        {label_values["putamen"]} if train[0] % 3 == 0 else set())


def test_real_anatomy_refuses_missing_package_and_reserved_atlases(tmp_path):
    with pytest.raises(real_anatomy.RealAnatomyError, match="apt-get install mricron-data"):
        real_anatomy.build_dataset(str(tmp_path), 992, templates=str(tmp_path / "nowhere"))
    t1, labels = tiny_template(str(tmp_path))
    reserved = str(tmp_path / "aal.nii.gz")
    os.rename(labels, reserved)
    with pytest.raises(real_anatomy.RealAnatomyError, match="reserved"):
        real_anatomy.build_dataset(str(tmp_path / "raw"), 992, t1_path=t1, label_path=reserved)


def test_paired_summary_matches_scipy_and_hand_values():
    d = [0.01, 0.03, -0.005, 0.02, 0.015, 0.0]
    s = paired_stats.paired_summary(d)
    assert s.n == 6 and s.mean == pytest.approx(np.mean(d)) and s.sd == pytest.approx(np.std(d, ddof=1))
    assert s.p_t == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    half = stats.t.ppf(0.975, 5) * np.std(d, ddof=1) / math.sqrt(6)
    assert s.ci95_t == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert s.ci90_t[0] > s.ci95_t[0] and s.ci90_t[1] < s.ci95_t[1]
    assert min(d) <= s.ci95_bootstrap[0] < s.mean < s.ci95_bootstrap[1] <= max(d)
    assert paired_stats.paired_summary(d) == s  # the bootstrap is seeded: same report every time


def test_paired_differences_and_gap_closure_use_seeds_present_in_all_runs():
    method, lower, upper = {0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.7, 1: 0.6, 3: 0.5}, {0: 0.9, 1: 0.6005, 2: 1.0}
    assert paired_stats.paired_differences(method, lower) == pytest.approx({0: 0.1, 1: 0.1})
    # seed 1's gap (0.0005) is below the threshold, seed 2 has no labeled-only run
    assert paired_stats.gap_closure(method, lower, upper, min_gap=0.005) == pytest.approx({0: 0.5})


def test_power_and_detectable_difference_agree():
    # a textbook value: SD 2, difference 1, 80% power, two-sided 5% -> 34 pairs
    assert paired_stats.seeds_for_power(2.0, 1.0) == 34
    n = 10
    delta = paired_stats.detectable_difference(2.0, n)
    assert paired_stats.achieved_power(2.0, delta, n) == pytest.approx(0.8, abs=1e-3)
    assert paired_stats.achieved_power(2.0, 1.0, 34) >= 0.8 > paired_stats.achieved_power(2.0, 1.0, 33)


def write_fake_runs(folder, dice_by_method_and_seed):
    """Per-run CSVs in run_quality.py's format: two test cases, one class, the given Dice for both."""
    os.makedirs(folder, exist_ok=True)
    for (method, seed), dice in dice_by_method_and_seed.items():
        n_labeled = "all" if method == "full" else 2
        rows = ["method,n_labeled,seed,case,class,dice,hd95"]
        rows += [f"{method},{n_labeled},{seed},case_{c},1,{dice},1.0" for c in range(2)]
        with open(os.path.join(folder, f"{method}__{seed}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")


def test_headline_counts_primary_seeds_and_all_method_seeds_separately_and_replaces_only_its_block(tmp_path):
    import headline
    dice = {("labeled_only", 0): 0.80, ("labeled_only", 1): 0.70, ("labeled_only", 2): 0.10, ("labeled_only", 3): 0.50,
            ("mean_teacher", 0): 0.80, ("mean_teacher", 1): 0.70, ("mean_teacher", 2): 0.10,
            ("cps", 0): 0.82, ("cps", 1): 0.72, ("cps", 3): 0.52,
            ("asyco", 0): 0.83, ("asyco", 1): 0.74, ("asyco", 3): 0.53,
            ("full", 0): 0.90, ("full", 1): 0.90, ("full", 2): 0.90}
    write_fake_runs(tmp_path / "synthetic" / "quality_runs", dice)
    table = headline.headline(2, str(tmp_path))
    rows = [line for line in table.splitlines() if line.startswith("| synthetic")]
    primary, every = rows
    # the primary endpoints use seeds 0, 1, 3 (seed 2 lacks CPS and AsyCo; seed 3 lacks only the other methods)
    assert "| 3 |" in primary and "66.7 [" in primary  # labeled-only over seeds 0, 1, 3
    assert "**+1.33** [" in primary and "**+3.33** [" in primary
    # every method: seeds 0 and 1 only
    assert "| 2 |" in every and "75.0 [" in every and "90.0 [" in every
    readme = f"intro\n{headline.START}\nold\n{headline.END}\noutro\n"
    assert headline.replace_block(readme, table) == f"intro\n{headline.START}\n{table}\n{headline.END}\noutro\n"
    with pytest.raises(SystemExit, match="headline:start"):
        headline.replace_block("no markers here", table)


def test_learning_speed_is_compared_per_seed_over_the_whole_curve_and_its_first_quarter():
    import report
    curves = {("asyco", 0): [0.1, 0.2, 0.5, 0.9], ("cps", 0): [0.3, 0.4, 0.5, 0.9],
              ("asyco", 1): [0.2, 0.3, 0.6, 0.8], ("cps", 1): [0.2, 0.5, 0.6, 0.8],
              ("cps", 2): [0.9, 0.9, 0.9, 0.9]}  # seed 2 has no AsyCo run: left out of the pair
    records = {(m, 2, seed): {"curves": {"mean_fg_dice": c}} for (m, seed), c in curves.items()}
    assert report.curve_score_by_seed(records, "asyco", 2) == pytest.approx({0: 0.425, 1: 0.475})
    assert report.curve_score_by_seed(records, "asyco", 2, first_fraction=0.25) == pytest.approx({0: 0.1, 1: 0.2})
    lines = report.learning_speed_comparison_lines(records, 2)
    asyco_cps = next(line for line in lines if line.startswith("| AsyCo − CPS"))
    # whole curve: -0.1 and -0.05 -> mean -7.5 points; first quarter: -0.2 and 0 -> -10 points; 2 seeds
    assert asyco_cps.startswith("| AsyCo − CPS | 2 | **-7.50** [") and "| **-10.00** [" in asyco_cps
    assert not any(line.startswith("| AsyCo − labeled-only") for line in lines)  # no labeled-only runs


def test_cost_report_gives_wall_and_cpu_ratios_with_their_per_round_range():
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "run_cost", os.path.join(os.path.dirname(BENCH), "cost", "run_cost.py"))
    run_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_cost)

    def run(method, wall, cpu, load):
        return {"method": method, "step_s": wall, "step_cpu_s": cpu, "memory_mb": 100.0, "inference_s": 1.0,
                "threads": 1, "load_avg": load, "steps": 2, "unlabeled_batch": 12, "batch": 12}
    # round 2 ran under twice the load: wall times double, CPU times barely move
    runs = {run_cost.BASELINE: [run(run_cost.BASELINE, 1.0, 0.5, [2, 3]), run(run_cost.BASELINE, 2.0, 0.5, [6, 7])],
            "nnUNetTrainerAsyCo": [run("nnUNetTrainerAsyCo", 4.0, 2.0, [3, 4]),
                                   run("nnUNetTrainerAsyCo", 10.0, 2.2, [7, 8])]}
    ranges = run_cost.round_ratios(runs, "step_cpu_s")
    assert ranges["nnUNetTrainerAsyCo"] == pytest.approx((4.0, 4.4))
    rows = run_cost.summarize(runs)
    assert rows[1]["step_cpu_s"] == pytest.approx(2.1) and rows[1]["load_avg"] == [3, 8]
    args = argparse.Namespace(steps=2, warmup=1, patch=64, batch=12, max_features=256, rounds=2, threads=1, tag="",
                              methods=[run_cost.BASELINE, "nnUNetTrainerAsyCo"])
    report = run_cost.write_report(rows, "cpu", args)
    assert "--rounds 2 --threads 1" in report and "load average 2.0-8.0" in report
    assert "| 7.000 | 4.67x (4.00-5.00) | 2.100 | 4.20x (4.00-4.40) |" in report


def test_cost_report_for_3d_fullres_without_inference():
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "run_cost", os.path.join(os.path.dirname(BENCH), "cost", "run_cost.py"))
    run_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_cost)
    assert run_cost.DATASETS[3][2] == "3d_fullres" and run_cost.DATASETS[3][0] != run_cost.DATASETS[2][0]
    assert run_cost.synthetic_shape(3, 48) == (60, 60, 60) and run_cost.synthetic_shape(2, 64) == (128, 128)

    def run(method, cpu, memory):
        return {"method": method, "step_s": 2 * cpu, "step_cpu_s": cpu, "memory_mb": memory,
                "inference_s": float("nan"), "threads": 1, "load_avg": [5, 6], "steps": 3, "batch": 2,
                "unlabeled_batch": 0 if method == run_cost.BASELINE else 2, "patch": [48, 48, 48],
                "features": [32, 64, 128, 256], "batch_dice": False}
    runs = {run_cost.BASELINE: [run(run_cost.BASELINE, 2.0, 800.0)],
            "nnUNetTrainerAsyCo_microBatch": [run("nnUNetTrainerAsyCo_microBatch", 9.0, 880.0)]}
    args = argparse.Namespace(steps=3, warmup=2, patch=48, batch=2, max_features=320, rounds=1, threads=1,
                              tag="memory3d", dim=3, no_inference=True, methods=list(runs))
    report = run_cost.write_report(run_cost.summarize(runs), "cpu", args)
    assert "--warmup 2 --dim 3 --no-inference --tag memory3d" in report
    assert "3D synthetic data, configuration `3d_fullres`" in report and "patch 48x48x48, batch 2" in report
    assert "[32, 64, 128, 256]), batch Dice off" in report and "inference not measured" in report
    assert "| 880 | 1.10x | nan | n/a |" in report and "| 9.000 | 4.50x |" in report


def test_tensor_peak_is_the_maximum_of_the_running_sum_in_time_order():
    import importlib.util
    sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "cost"))
    spec = importlib.util.spec_from_file_location(
        "tensor_peak", os.path.join(os.path.dirname(BENCH), "cost", "tensor_peak.py"))
    tensor_peak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tensor_peak)
    # out of order on purpose: at t=3 the step holds 10 + 5 - 4 + 7 = 18, the most at any time
    events = [(5, -7), (1, 10), (3, 7), (2, 5), (2.5, -4), (4, -10)]
    assert tensor_peak.running_peak(events) == 18
    assert tensor_peak.running_peak([(0, -3), (1, 2)]) == 0  # frees of tensors held before the step
