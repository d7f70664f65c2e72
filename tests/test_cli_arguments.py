"""Argument errors of the data commands: one line, exit 2, and nothing written before validation passes.

The console scripts' own ``main(argv)`` in this process, on a tiny raw dataset
that is not planned (no planning needed to reach these checks).
"""
import os
import shutil

import pytest

from nnunetv2_asyco.cli import labeled_subset, preprocess_unlabeled
from nnunetv2_asyco.data.ingest_unlabeled import UnlabeledDataError, group_channel_files

DATASET_ID = 977


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """nnU-Net folders with Dataset977: raw data, and a preprocessed folder holding only dataset.json (no split)."""
    env = {}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(tmp_path / key)
        monkeypatch.setenv(key, str(tmp_path / key))
        env[key] = str(tmp_path / key)
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    raw = write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, dim=2, shape=(16, 16), n_train=5)
    pre = os.path.join(env["nnUNet_preprocessed"], os.path.basename(raw))
    os.makedirs(pre)
    shutil.copy(os.path.join(raw, "dataset.json"), pre)
    return {"raw": raw, "pre": pre}


def run(main, argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    return code, err


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_negative_seed_is_refused(folders, capsys):
    one_line_error(*run(labeled_subset.main, ["-d", DATASET_ID, "-f", 0, "-n", 2, "--seed", -1], capsys),
                   "--seed must be 0 or larger, got -1")
    assert os.listdir(folders["pre"]) == ["dataset.json"]


@pytest.mark.parametrize("main, extra", [(labeled_subset.main, ["-f", 0, "-n", 2]),
                                         (preprocess_unlabeled.main, ["-c", "2d"])], ids=["subset", "ingest"])
def test_unknown_dataset_id(folders, capsys, main, extra):
    one_line_error(*run(main, ["-d", 976, *extra], capsys), "-d 976: Could not find a dataset with the ID 976",
                   "nnUNet_raw")


def test_no_split_written_before_the_budget_is_validated(folders, capsys):
    one_line_error(*run(labeled_subset.main, ["-d", DATASET_ID, "-f", 0, "-n", 0], capsys), "at least 1 case, got 0")
    assert os.listdir(folders["pre"]) == ["dataset.json"]  # no splits_final.json
    code, err = run(labeled_subset.main, ["-d", DATASET_ID, "-f", 0, "-n", 1], capsys)
    assert code == 0, err
    assert sorted(os.listdir(folders["pre"])) == ["asyco_labeled_subset_fold0.json", "dataset.json",
                                                  "splits_final.json"]


def test_non_positive_process_count(folders, capsys):
    one_line_error(*run(preprocess_unlabeled.main, ["-d", DATASET_ID, "-c", "2d", "-np", 0], capsys),
                   "-np must be 1 or more, got 0")


def test_channel_suffix_must_be_ascii_digits(tmp_path):
    """'\\u0660' is ARABIC-INDIC DIGIT ZERO: a digit to Python's \\d and int(), not to nnU-Net's naming."""
    folder = tmp_path / "imagesUnlabeled"
    folder.mkdir()
    (folder / "case_\u0660\u0660\u0660\u0660.nii.gz").write_bytes(b"")
    with pytest.raises(UnlabeledDataError, match="lacks the 4-digit channel suffix"):
        group_channel_files(str(folder), ".nii.gz", 1)
    os.remove(folder / "case_\u0660\u0660\u0660\u0660.nii.gz")
    (folder / "case_0000.nii.gz").write_bytes(b"")
    assert group_channel_files(str(folder), ".nii.gz", 1) == {"case": [str(folder / "case_0000.nii.gz")]}
