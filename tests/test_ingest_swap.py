"""Replacing the ingested unlabeled set is atomic: a process killed at any step leaves the old set or the new one.

The sets are real nnU-Net preprocessed cases (``nnUNetDatasetBlosc2`` files
written by ``save_unlabeled_case``), read back through the trainer's own
reader (``ingested_unlabeled_sources`` + ``UnlabeledCases``). The swap runs in
a fresh interpreter that SIGKILLs itself at the chosen step (``versioned_set``
crash hook), so nothing of the interrupted process gets to clean up.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nnunetv2_asyco.data.unlabeled_data import UnlabeledCases, ingested_unlabeled_sources, unlabeled_folder
from nnunetv2_asyco.data.versioned_set import CRASH_ENV, STEPS, new_staging, publish
from nnunetv2_asyco.nnunet_compat import save_unlabeled_case

OLD = {"old_a": 1.0, "old_b": 2.0}
NEW = {"new_a": 5.0, "old_b": 6.0, "new_c": 7.0}  # one name shared with OLD: its content must not mix
IDENTIFIER = "nnUNetPlans_2d"

# The child copies prepared case files into a new staging folder and publishes it: only the swap is timed.
CHILD = """
import os, shutil, sys
from nnunetv2_asyco.data.versioned_set import new_staging, publish
root, template = sys.argv[1], sys.argv[2]
staging = new_staging(root)
for f in os.listdir(template):
    shutil.copy(os.path.join(template, f), staging)
publish(staging, sorted({f.split('.')[0].replace('_seg', '') for f in os.listdir(template)}))
"""


def write_cases(folder, values: dict):
    os.makedirs(folder, exist_ok=True)
    for case, value in values.items():
        data = np.full((1, 1, 8, 8), value, np.float32)
        save_unlabeled_case(data, np.zeros_like(data, dtype=np.int16), {"spacing": [1.0, 1.0, 1.0]},
                            os.path.join(folder, case), (1, 8, 8))


def ingested(base) -> dict:
    """case -> its single voxel value, read the way training reads the set."""
    sources = ingested_unlabeled_sources(base, IDENTIFIER)
    if not sources:
        return {}
    cases = UnlabeledCases(sources)
    values = {}
    for case in cases.identifiers:
        data = np.asarray(cases.load_case(case)[0][:])
        assert np.unique(data).size == 1, f"{case} mixes two sets"
        values[case] = float(data.flat[0])
    return values


def publish_in_child(base, template, crash_at=None) -> int:
    env = {**os.environ}
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-c", CHILD, unlabeled_folder(base, IDENTIFIER), template], env=env,
                          timeout=60).returncode


@pytest.fixture
def template(tmp_path):
    folder = str(tmp_path / "template")
    write_cases(folder, NEW)
    return folder


def old_versioned(base):
    staging = new_staging(unlabeled_folder(base, IDENTIFIER))
    write_cases(staging, OLD)
    publish(staging, list(OLD))


def old_flat(base):
    """What releases before the versioned layout wrote: the cases straight in <identifier>_unlabeled."""
    write_cases(unlabeled_folder(base, IDENTIFIER), OLD)


@pytest.mark.parametrize("layout", [old_versioned, old_flat], ids=["versioned", "flat"])
@pytest.mark.parametrize("step", STEPS)
def test_killed_swap_leaves_old_or_new_set(tmp_path, template, layout, step):
    base = str(tmp_path / "pre")
    layout(base)
    assert ingested(base) == OLD
    returncode = publish_in_child(base, template, crash_at=step)
    assert returncode == -9, "the child should have been killed at " + step
    expected = OLD if step in ("staged", "renamed", "pointer_written") else NEW
    assert ingested(base) == expected
    # the next ingestion cleans up whatever the killed one left and switches to its set
    assert publish_in_child(base, template) == 0
    assert ingested(base) == NEW
    root = unlabeled_folder(base, IDENTIFIER)
    assert sorted(os.listdir(root)) == ["current.json", "v%04d" % int(sorted(
        f for f in os.listdir(root) if f.startswith("v"))[0][1:])]


def test_swap_without_interruption_replaces_everything(tmp_path, template):
    base = str(tmp_path / "pre")
    old_versioned(base)
    assert publish_in_child(base, template) == 0
    assert ingested(base) == NEW
    assert sorted(os.listdir(unlabeled_folder(base, IDENTIFIER))) == ["current.json", "v0002"]


def test_pointer_to_a_removed_version_is_an_error(tmp_path):
    from nnunetv2_asyco.data.versioned_set import VersionedSetError
    base = str(tmp_path / "pre")
    old_versioned(base)
    shutil.rmtree(os.path.join(unlabeled_folder(base, IDENTIFIER), "v0001"))
    with pytest.raises(VersionedSetError, match="v0001, which is missing.*nnUNetv2_asyco_preprocess_unlabeled"):
        ingested(base)


def test_nothing_ingested_means_no_sources(tmp_path):
    assert ingested(str(tmp_path / "pre")) == {}
