"""nnUNetv2_asyco_predict_qa through the real commands on a tiny 2D dataset: a seeded AsyCo smoke model,
segmentations compared with nnUNetv2_predict, maps in the input's geometry, qa.csv, refusal of single networks."""
import csv
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_2D_DATASETS, SHARED_PLANS, run_cli, run_clis_concurrently, training_env

DATASET_ID = SHARED_2D_DATASETS["one_channel"]["dataset_id"]
TWO_BRANCH = "nnUNetTrainerAsyCo_smoke"
SINGLE = "nnUNetTrainerLabeledOnly_smoke"
CSV_COLUMNS = ["rank", "case", "case_score", "measure", "label", "class", "predicted_voxels", "predicted_volume",
               "dice_a_b", "mean_disagreement_inside", "mean_disagreement_boundary"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_2d_dataset):
    """AsyCo and the single-network baseline, trained with nnUNetv2_train (smoke length); a test folder with the
    dataset's test cases plus one case whose spacing and origin differ from the training data, so that export
    to the original geometry resamples."""
    root = tmp_path_factory.mktemp("predict_qa")
    env, name = shared_2d_dataset("one_channel", root)
    run_cli(["nnUNetv2_asyco_preprocess_unlabeled", "-d", DATASET_ID, "-c", "2d", "-p", SHARED_PLANS, "-np", 1], env=env)
    run_cli(["nnUNetv2_asyco_labeled_subset", "-d", DATASET_ID, "-f", 0, "-n", 3, "--seed", 0], env=env)
    run_clis_concurrently([["nnUNetv2_train", DATASET_ID, "2d", 0, "-p", SHARED_PLANS, "-tr", tr, "-device", "cpu"]
                           for tr in (TWO_BRANCH, SINGLE)], training_env(env))
    images = root / "images"
    shutil.copytree(os.path.join(env["nnUNet_raw"], name, "imagesTs"), images)
    first = sorted(os.listdir(images))[0]
    img = sitk.ReadImage(str(images / first))
    # the synthetic 2D cases are stored as 3D images of one slice
    img.SetSpacing((0.8, 1.3, img.GetSpacing()[2]))
    img.SetOrigin((12.5, -4.0, img.GetOrigin()[2]))
    sitk.WriteImage(img, str(images / "aniso_0000.nii.gz"))
    return {"env": env, "images": str(images), "root": root}


def predict_args(command, images, out, trainer=TWO_BRANCH, *extra):
    return [command, "-i", images, "-o", out, "-d", DATASET_ID, "-c", "2d", "-p", SHARED_PLANS, "-tr", trainer,
            "-f", 0, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_progress_bar", *extra]


def cases_in(images):
    return sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(images))


def read(path):
    return sitk.ReadImage(str(path))


def same_geometry(a, b):
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetDirection(), b.GetDirection()))


@pytest.fixture(scope="module")
def predicted(models):
    """nnUNetv2_predict and the QA command (both measures), with TTA, side by side; the QA output folder already
    holds a file of the user's."""
    root, images = models["root"], models["images"]
    os.makedirs(root / "qa")
    (root / "qa" / "my_notes.txt").write_text("keep me")
    run_clis_concurrently([predict_args("nnUNetv2_predict", images, root / "stock"),
                           predict_args("nnUNetv2_asyco_predict_qa", images, root / "qa"),
                           predict_args("nnUNetv2_asyco_predict_qa", images, root / "tta", TWO_BRANCH,
                                        "--measure", "tta")], models["env"])
    return {"stock": root / "stock", "qa": root / "qa", "tta": root / "tta", "images": images}


@pytest.mark.parametrize("folder", ["qa", "tta"])
def test_segmentations_identical_to_nnunetv2_predict(predicted, folder):
    for case in cases_in(predicted["images"]):
        stock, ours = read(predicted["stock"] / f"{case}.nii.gz"), read(predicted[folder] / f"{case}.nii.gz")
        assert same_geometry(stock, ours)
        assert np.array_equal(sitk.GetArrayFromImage(stock), sitk.GetArrayFromImage(ours)), case
        assert sitk.GetArrayFromImage(ours).max() > 0, "the seeded smoke model predicts foreground"


@pytest.mark.parametrize("folder,suffix", [("qa", "_disagreement"), ("tta", "_tta_spread")])
def test_maps_in_original_geometry(predicted, folder, suffix):
    maps = []
    for case in cases_in(predicted["images"]):
        image = read(os.path.join(predicted["images"], f"{case}_0000.nii.gz"))
        m = read(predicted[folder] / f"{case}{suffix}.nii.gz")
        assert same_geometry(image, m), case
        maps.append(sitk.GetArrayFromImage(m).astype(np.float64) / 10000)
    values = np.concatenate([m.ravel() for m in maps])
    assert values.min() >= 0 and values.max() <= 1
    assert values.max() > 0, "two differently initialised branches (or mirrors) disagree somewhere"


def rows_of(folder):
    with open(folder / "qa.csv") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_qa_csv_one_row_per_case_and_class_ranked(predicted):
    columns, rows = rows_of(predicted["qa"])
    assert columns == CSV_COLUMNS
    cases = cases_in(predicted["images"])
    assert sorted((r["case"], r["label"]) for r in rows) == sorted((c, l) for c in cases for l in ("1", "2", "3"))
    score = {r["case"]: float(r["case_score"]) for r in rows}
    rank = {r["case"]: int(r["rank"]) for r in rows}
    assert sorted(rank.values()) == list(range(1, len(cases) + 1))
    by_rank = sorted(cases, key=rank.get)
    assert [score[c] for c in by_rank] == sorted(score.values(), reverse=True), "rank 1 = highest score"
    for r in rows:
        assert 0.0 <= float(r["dice_a_b"]) <= 1.0
        assert r["measure"] == "branches"
        seg = sitk.GetArrayFromImage(read(predicted["qa"] / f"{r['case']}.nii.gz"))
        assert int(r["predicted_voxels"]) == int((seg == int(r["label"])).sum())
    aniso = [r for r in rows if r["case"] == "aniso"]
    assert float(aniso[0]["predicted_volume"]) == pytest.approx(int(aniso[0]["predicted_voxels"]) * 0.8 * 1.3)


def test_summary_figures_and_user_files(predicted):
    out = predicted["qa"]
    assert (out / "my_notes.txt").read_text() == "keep me", "nothing of the user's is deleted"
    text = (out / "qa.md").read_text()
    pngs = sorted(os.listdir(out / "qa_figures"))
    assert pngs == sorted(f"{c}.png" for c in cases_in(predicted["images"]))  # fewer cases than --png_top 5
    for png in pngs:
        assert (out / "qa_figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"qa_figures/{png}" in text
    assert not [f for f in os.listdir(out) if f.startswith(".")], "no temporary files left"
    _, tta_rows = rows_of(predicted["tta"])
    assert {r["dice_a_b"] for r in tta_rows} == {""} and {r["measure"] for r in tta_rows} == {"tta"}


def test_single_network_model_refused_before_writing(models):
    out = models["root"] / "refused"
    proc = run_cli(predict_args("nnUNetv2_asyco_predict_qa", models["images"], out, SINGLE), env=models["env"],
                   check=False)
    assert proc.returncode == 2
    assert SINGLE in proc.stderr and "nnUNetTrainerAsyCo" in proc.stderr and "nnUNetTrainerCPS" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "a refused run leaves no output folder behind"


def test_tta_spread_works_for_a_single_network(models):
    out = models["root"] / "single_tta"
    run_cli(predict_args("nnUNetv2_asyco_predict_qa", models["images"], out, SINGLE, "--measure", "tta"),
            env=models["env"])
    _, rows = rows_of(out)
    assert {r["measure"] for r in rows} == {"tta"}
