"""Bad input to the two data commands, through the real console scripts.

Every bad input of ``nnUNetv2_asyco_preprocess_unlabeled`` and
``nnUNetv2_asyco_labeled_subset`` must give a clear error on stderr that names
the case/file and the fix, exit non-zero without a traceback, and leave every
file under nnUNet_raw and nnUNet_preprocessed byte-identical: raw scans, the
labeled preprocessed data, the previous successful unlabeled ingestion and the
recorded labeled subsets (``expect_failure`` hashes both trees around each
call).

The module works on its own copy of the session's planned two-channel dataset; each
unlabeled-data test builds its own ``imagesUnlabeled`` content (the
``unlabeled`` fixture restores the original scans afterwards).
"""
import contextlib
import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_2D_DATASETS, run_cli

DATASET_ID = SHARED_2D_DATASETS["two_channel_ignore"]["dataset_id"]
UNPLANNED_ID = 922  # raw data only, never planned
INGEST = "nnUNetv2_asyco_preprocess_unlabeled"
SUBSET = "nnUNetv2_asyco_labeled_subset"
ENDING = ".nii.gz"


def file_hashes(folder) -> dict:
    """Relative path -> sha256 of every file (and '<dir>/' -> None for every folder) under ``folder``."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        state[rel + "/"] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                state[os.path.join(rel, f)] = hashlib.sha256(fh.read()).hexdigest()
    return state


def user_data(ds) -> dict:
    return {root: file_hashes(ds["env"][root]) for root in ("nnUNet_raw", "nnUNet_preprocessed")}


def describe_changes(before: dict, after: dict) -> str:
    lines = []
    for root in before:
        b, a = before[root], after[root]
        lines += [f"{root}: removed {p}" for p in sorted(set(b) - set(a))]
        lines += [f"{root}: added {p}" for p in sorted(set(a) - set(b))]
        lines += [f"{root}: changed {p}" for p in sorted(set(a) & set(b)) if a[p] != b[p]]
    return "\n".join(lines)


class Completed:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_entry_point_in_process(args, env) -> Completed:
    """Call the console script's own ``main(argv)`` in this process (same code path, no interpreter start-up).

    Each subprocess start re-imports torch and nnU-Net (~5 s of CPU); most
    cases run in-process, a few go through the installed script (``via_script``).
    """
    from nnunetv2_asyco.cli import labeled_subset, preprocess_unlabeled
    main = {INGEST: preprocess_unlabeled.main, SUBSET: labeled_subset.main}[args[0]]
    saved = {k: os.environ.get(k) for k in env if k.startswith("nnUNet")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("nnUNet")})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args[1:]])
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Completed(code, out.getvalue(), err.getvalue())


def succeed(args, env) -> Completed:
    proc = run_entry_point_in_process(args, env)
    assert proc.returncode == 0, proc.stderr
    return proc


def expect_failure(ds, args, *needles, returncode=None, via_script=False):
    """Run a data command that must fail cleanly; return its stderr.

    Checks: non-zero exit (or exactly ``returncode``), no traceback, every
    needle in stderr, and no file under nnUNet_raw / nnUNet_preprocessed
    added, removed or changed.
    """
    before = user_data(ds)
    if via_script:
        proc = run_cli(args, env=ds["env"], check=False)
    else:
        proc = run_entry_point_in_process(args, ds["env"])
    after = user_data(ds)
    report = f"\nreturn code {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    assert proc.returncode != 0, "the command should have failed" + report
    if returncode is not None:
        assert proc.returncode == returncode, report
    assert "Traceback" not in proc.stderr, "a bad input should give a message, not a crash" + report
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} missing from the error message" + report
    assert before == after, "a failed run changed user data:\n" + describe_changes(before, after)
    return proc.stderr


@pytest.fixture(scope="module")
def ds(tmp_path_factory, shared_2d_dataset):
    """Planned 2-channel 2D dataset, one successful ingestion and one recorded subset (fold 0, 2 cases)."""
    root = tmp_path_factory.mktemp("bad_input")
    env, name = shared_2d_dataset("two_channel_ignore", root)
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    unplanned = write_synthetic_dataset(env["nnUNet_raw"], UNPLANNED_ID, dim=2, shape=(32, 32), n_train=2,
                                        n_unlabeled=1, n_channels=2)
    run_cli([INGEST, "-d", DATASET_ID, "-c", "2d", "-np", 1], env=env)
    run_cli([SUBSET, "-d", DATASET_ID, "-f", 0, "-n", 2, "--seed", 0], env=env)
    raw = os.path.join(env["nnUNet_raw"], name)
    pre = os.path.join(env["nnUNet_preprocessed"], name)
    pristine = str(root / "pristine_imagesUnlabeled")
    shutil.copytree(os.path.join(raw, "imagesUnlabeled"), pristine)
    return {
        "env": env, "name": name, "raw": raw, "pre": pre, "pristine": pristine,
        "unplanned": os.path.basename(unplanned),
        "splits": json.load(open(os.path.join(pre, "splits_final.json"))),
        # state right after the successful ingestion, for the explicit preservation test
        "ingested": file_hashes(os.path.join(pre, "nnUNetPlans_2d_unlabeled")),
        "labeled": file_hashes(os.path.join(pre, "nnUNetPlans_2d")),
    }


@pytest.fixture
def unlabeled(ds):
    """imagesUnlabeled holding the two good scans unl_000/unl_001; restored after the test."""
    folder = os.path.join(ds["raw"], "imagesUnlabeled")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ds["pristine"], folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ds["pristine"], folder)


def good_channel(ds, channel: int) -> sitk.Image:
    return sitk.ReadImage(os.path.join(ds["pristine"], f"unl_000_{channel:04d}{ENDING}"))


def write_case(ds, folder, case, channels=(0, 1), ending=ENDING):
    """Copy the good scan unl_000 under a new case name, one file per listed channel."""
    for c in channels:
        shutil.copy(os.path.join(ds["pristine"], f"unl_000_{min(c, 1):04d}{ENDING}"),
                    os.path.join(folder, f"{case}_{c:04d}{ending}"))


def ingest(ds, *needles, args=("-d", DATASET_ID, "-c", "2d"), via_script=False):
    return expect_failure(ds, [INGEST, *args, "-np", 1], *needles, returncode=2, via_script=via_script)


# ---------------------------------------------------------------- unlabeled ingestion: files


def test_case_with_too_few_channels(ds, unlabeled):
    write_case(ds, unlabeled, "bad_case", channels=(0,))
    err = ingest(ds, "'bad_case'", "has channels [0]", "2 channel(s)",
                 f"bad_case_0000{ENDING}, bad_case_0001{ENDING}", via_script=True)
    assert "unl_000" not in err  # the good cases are not blamed


def test_case_with_an_extra_channel(ds, unlabeled):
    write_case(ds, unlabeled, "bad_case", channels=(0, 1, 2))
    ingest(ds, "'bad_case'", "has channels [0, 1, 2]", "2 channel(s)",
           f"Provide exactly bad_case_0000{ENDING}, bad_case_0001{ENDING}.")


def test_wrong_file_ending(ds, unlabeled):
    """.nii next to the dataset's .nii.gz (.png and other endings take the same path)."""
    write_case(ds, unlabeled, "bad_case", channels=(0, 1), ending=".nii")
    ingest(ds, "bad_case_0000.nii ", f"not the dataset's '{ENDING}'", f"CASE_XXXX{ENDING}")


def test_missing_channel_suffix(ds, unlabeled):
    shutil.copy(os.path.join(ds["pristine"], f"unl_000_0000{ENDING}"), os.path.join(unlabeled, f"bad_case{ENDING}"))
    ingest(ds, os.path.join(unlabeled, f"bad_case{ENDING}"), "lacks the 4-digit channel suffix",
           f"CASE_0000{ENDING}")


def test_unreadable_file(ds, unlabeled):
    write_case(ds, unlabeled, "bad_case", channels=(0,))
    garbage = os.path.join(unlabeled, f"bad_case_0001{ENDING}")
    with open(garbage, "wb") as f:
        f.write(b"this is not an image\n" * 200)
    ingest(ds, "'bad_case'", f"cannot read {garbage}", "Replace or remove the file")


def test_truncated_file(ds, unlabeled):
    """A partly copied scan (the first half of a valid .nii.gz) is named, not passed to preprocessing."""
    write_case(ds, unlabeled, "bad_case", channels=(0,))
    data = open(os.path.join(ds["pristine"], f"unl_000_0001{ENDING}"), "rb").read()
    truncated = os.path.join(unlabeled, f"bad_case_0001{ENDING}")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    ingest(ds, "'bad_case'", f"cannot read {truncated}", "truncated", "Replace or remove the file")


def test_truncated_uncompressed_nifti_is_detected(tmp_path):
    """The same check for datasets whose file ending is .nii (in-process: no planned .nii dataset here)."""
    from nnunetv2_asyco.data.ingest_unlabeled import check_file_complete
    path = str(tmp_path / "case_0000.nii")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((1, 64, 64), np.float32)), path)
    check_file_complete(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 100])
    with pytest.raises(EOFError, match="truncated"):
        check_file_complete(path)


def test_channels_with_different_shape(ds, unlabeled):
    write_case(ds, unlabeled, "bad_case", channels=(0,))
    ref = good_channel(ds, 1)
    small = sitk.GetImageFromArray(sitk.GetArrayFromImage(ref)[:, :96, :100])
    small.CopyInformation(ref[:100, :96, :])
    sitk.WriteImage(small, os.path.join(unlabeled, f"bad_case_0001{ENDING}"))
    err = ingest(ds, "'bad_case'", f"bad_case_0001{ENDING} differs from bad_case_0000{ENDING}", "'shape'",
                 "(1, 128, 128)", "(1, 96, 100)", "Resample all channels")
    assert "spacing" not in err.split("differs")[1]  # only what actually differs is listed


def test_channels_with_different_spacing(ds, unlabeled):
    write_case(ds, unlabeled, "bad_case", channels=(0,))
    img = good_channel(ds, 1)
    img.SetSpacing((0.8, 1.0, 1.0))  # x spacing; nnU-Net lists spacing as (z, y, x)
    sitk.WriteImage(img, os.path.join(unlabeled, f"bad_case_0001{ENDING}"))
    err = ingest(ds, "'bad_case'", f"bad_case_0001{ENDING} differs from bad_case_0000{ENDING}", "'spacing'",
                 "(1.0, 1.0, 1.0)", "(1.0, 1.0, 0.8)", "Resample all channels")
    assert "'shape'" not in err and "np.float64" not in err


def test_empty_unlabeled_folder(ds, unlabeled):
    for f in os.listdir(unlabeled):
        os.remove(os.path.join(unlabeled, f))
    ingest(ds, f"{unlabeled} is empty", f"CASE_0000{ENDING}")


def test_missing_unlabeled_folder(ds, unlabeled):
    shutil.rmtree(unlabeled)
    ingest(ds, f"No unlabeled images folder at {unlabeled}", f"CASE_0000{ENDING}", SUBSET)


# ---------------------------------------------------------------- unlabeled ingestion: dataset and plans


def test_ingest_unplanned_dataset(ds):
    ingest(ds, f"{ds['unplanned']} is not planned", f"nnUNetv2_plan_and_preprocess -d {UNPLANNED_ID}",
           args=("-d", UNPLANNED_ID, "-c", "2d"))


def test_ingest_unknown_plans(ds):
    ingest(ds, "not planned with NoSuchPlans", "NoSuchPlans.json", "nnUNetv2_plan_and_preprocess",
           args=("-d", DATASET_ID, "-c", "2d", "-p", "NoSuchPlans"))


def test_ingest_unknown_configuration(ds):
    ingest(ds, "Configuration '3d_bogus' is not in", "nnUNetPlans.json", "available:", "'2d'",
           args=("-d", DATASET_ID, "-c", "3d_bogus"))


def test_failed_ingestion_keeps_previous_ingestion(ds, unlabeled):
    """The successful ingestion of the module fixture survives a later failing one byte for byte.

    (Every failure test checks all files; this one spells it out, on a case with a gap in its channels.)
    """
    write_case(ds, unlabeled, "bad_case", channels=(0, 2))
    ingest(ds, "'bad_case'", "has channels [0, 2]", f"bad_case_0001{ENDING}")
    ingested = os.path.join(ds["pre"], "nnUNetPlans_2d_unlabeled")
    assert sorted(f for f in ds["ingested"] if f.endswith(".pkl")) == ["v0001/unl_000.pkl", "v0001/unl_001.pkl"]
    assert file_hashes(ingested) == ds["ingested"]
    assert file_hashes(os.path.join(ds["pre"], "nnUNetPlans_2d")) == ds["labeled"]
    assert sorted(os.listdir(ingested)) == ["current.json", "v0001"]  # no staging folder left


# ---------------------------------------------------------------- unlabeled ingestion: what nnU-Net would get wrong


def write_arrays(folder, case, arrays, spacing=(1.0, 1.0, 1.0), vector=False):
    for c, array in enumerate(arrays):
        img = sitk.GetImageFromArray(array, isVector=vector)
        img.SetSpacing(spacing)
        sitk.WriteImage(img, os.path.join(folder, f"{case}_{c:04d}{ENDING}"))


def good_arrays(ds):
    return [sitk.GetArrayFromImage(good_channel(ds, c)) for c in (0, 1)]


def test_unlabeled_case_named_like_a_training_case(ds, unlabeled):
    write_case(ds, unlabeled, "synth_003")
    ingest(ds, "['synth_003'] have the name of a training case", "imagesTr", "Rename them in imagesUnlabeled")


def test_unlabeled_copy_of_a_validation_case(ds, unlabeled):
    twin = ds["splits"][0]["val"][0]
    for c in (0, 1):
        shutil.copy(os.path.join(ds["raw"], "imagesTr", f"{twin}_{c:04d}{ENDING}"),
                    os.path.join(unlabeled, f"copy_{c:04d}{ENDING}"))
    folds = [i for i, s in enumerate(ds["splits"]) if twin in s["val"]]
    ingest(ds, f"'copy' has exactly the image of training case '{twin}' (a validation case of fold(s) {folds})",
           "Remove it from imagesUnlabeled")


def test_spacing_in_metres(ds, unlabeled):
    write_arrays(unlabeled, "metres", good_arrays(ds), spacing=(0.001, 0.001, 1.0))
    ingest(ds, "'metres'", "resampling would leave no voxels", "wrong unit (metres instead of mm)")


def test_3d_scan_into_2d_dataset(ds, unlabeled):
    write_arrays(unlabeled, "volume", [np.repeat(a, 6, axis=0) for a in good_arrays(ds)])
    ingest(ds, "'volume'", "is a 3D image (shape (6, 128, 128))", "training images are 2D")


def test_vector_image(ds, unlabeled):
    write_arrays(unlabeled, "rgb", [np.stack([a[0]] * 3, axis=-1) for a in good_arrays(ds)], vector=True)
    ingest(ds, "'rgb'", "vector image with 3 components")


def test_intensities_that_overflow_normalisation_fail_in_the_pool_and_leave_nothing(ds, unlabeled):
    """Finite float32 values near 3e37 pass every input check; nnU-Net's z-score in the worker pool overflows.

    The error names the case, and the staging folder is gone (expect_failure compares every file).
    """
    write_arrays(unlabeled, "huge", [a.astype(np.float32) * np.float32(1e35) for a in good_arrays(ds)])
    expect_failure(ds, [INGEST, "-d", DATASET_ID, "-c", "2d", "-np", 2], "'huge'",
                   "normalisation produced non-finite", returncode=2)


# ---------------------------------------------------------------- labeled subset


def fold_size(ds, fold):
    return len(ds["splits"][fold]["train"])


def subset(ds, *args, needles=(), returncode=2, via_script=False):
    return expect_failure(ds, [SUBSET, "-d", DATASET_ID, *args], *needles, returncode=returncode,
                          via_script=via_script)


def subset_record(ds, fold):
    with open(os.path.join(ds["pre"], f"asyco_labeled_subset_fold{fold}.json")) as f:
        return json.load(f)


def test_budget_larger_than_fold(ds):
    n = fold_size(ds, 0)
    subset(ds, "-f", 0, "-n", 50, needles=(f"Fold 0 of {ds['name']} has only {n} training cases",
                                            "budget of 50", f"Use -n {n} or less"), via_script=True)


@pytest.mark.parametrize("n", [0, -3])
def test_budget_not_positive(ds, n):
    subset(ds, "-f", 0, "-n", n, needles=(f"at least 1 case, got {n}",))


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_fraction_out_of_range(ds, fraction):
    subset(ds, "-f", 0, "--fraction", fraction, needles=(f"--fraction must lie in (0, 1], got {float(fraction)}",))


def test_budget_given_twice(ds):
    subset(ds, "-f", 0, "-n", 2, "--fraction", 0.5, needles=("argument --fraction: not allowed with argument -n",))


def test_fold_does_not_exist(ds):
    assert len(ds["splits"]) == 5
    subset(ds, "-f", 7, "-n", 2, needles=("Fold 7 does not exist", "5 folds (0..4)"))


def test_different_subset_refused_without_overwrite(ds):
    before = subset_record(ds, 0)
    subset(ds, "-f", 0, "-n", 3, needles=("asyco_labeled_subset_fold0.json already records a different labeled "
                                          "subset (2 cases, seed 0)", "--overwrite"))
    assert subset_record(ds, 0) == before


def test_same_seed_gives_same_subset(ds):
    path = os.path.join(ds["pre"], "asyco_labeled_subset_fold0.json")
    before = open(path, "rb").read()
    succeed([SUBSET, "-d", DATASET_ID, "-f", 0, "-n", 2, "--seed", 0], ds["env"])
    assert open(path, "rb").read() == before


def test_overwrite_replaces_subset_and_other_seed_differs(ds):
    env = ds["env"]
    succeed([SUBSET, "-d", DATASET_ID, "-f", 1, "-n", 3, "--seed", 0], env)
    first = subset_record(ds, 1)
    succeed([SUBSET, "-d", DATASET_ID, "-f", 1, "-n", 3, "--seed", 1, "--overwrite"], env)
    second = subset_record(ds, 1)
    assert second["seed"] == 1 and second["n_labeled"] == 3 and len(second["labeled"]) == 3
    assert second["labeled"] != first["labeled"]
    assert sorted(second["labeled"] + second["unlabeled"]) == sorted(ds["splits"][1]["train"])


def test_fraction_gives_rounded_budget(ds):
    fold = 4
    n = fold_size(ds, fold)
    proc = succeed([SUBSET, "-d", DATASET_ID, "-f", fold, "--fraction", 0.25], ds["env"])
    record = subset_record(ds, fold)
    assert record["n_labeled"] == len(record["labeled"]) == round(0.25 * n)
    assert f"{round(0.25 * n)} labeled, {n - round(0.25 * n)} unlabeled of {n} training cases" in proc.stdout


def test_subset_of_unpreprocessed_dataset(ds):
    expect_failure(ds, [SUBSET, "-d", UNPLANNED_ID, "-f", 0, "-n", 1], "does not exist",
                   f"nnUNetv2_plan_and_preprocess -d {ds['unplanned']}", returncode=2)


# ---------------------------------------------------------------- interrupted ingestion (kept last: it changes the set)


@pytest.mark.parametrize("step", ["pointer_written", "removing_old"])
def test_ingestion_killed_during_the_swap_leaves_old_or_new_set(ds, unlabeled, step):
    """The real command, SIGKILLed just before and just after the switch: training sees the old or the new set.

    (test_ingest_swap.py kills every step of the same swap on prepared sets.)
    """
    from nnunetv2_asyco.data.unlabeled_data import UnlabeledCases, ingested_unlabeled_sources
    from nnunetv2_asyco.data.versioned_set import CRASH_ENV
    before = sorted(c for _, c in ingested_unlabeled_sources(ds["pre"], "nnUNetPlans_2d"))
    write_case(ds, unlabeled, f"extra_{step}")
    proc = run_cli([INGEST, "-d", DATASET_ID, "-c", "2d", "-np", 1], env={**ds["env"], CRASH_ENV: step}, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    sources = ingested_unlabeled_sources(ds["pre"], "nnUNetPlans_2d")
    expected = before if step == "pointer_written" else sorted(set(before) | {f"extra_{step}", "unl_000", "unl_001"})
    assert sorted(c for _, c in sources) == expected
    cases = UnlabeledCases(sources)
    for case in cases.identifiers:  # every case of the set loads completely
        assert np.isfinite(np.asarray(cases.load_case(case)[0][:])).all()
