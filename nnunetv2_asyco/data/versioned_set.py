"""A set of preprocessed cases replaced as a whole: readers see the previous set or the new one, never a mix.

Layout of ``root`` (``nnUNet_preprocessed/DatasetXXX/<data_identifier>_unlabeled``)::

    current.json        {"version": "v0003", "cases": [...]}; the one switch, replaced with os.replace
    v0003/              the set current.json names (complete: renamed from .incomplete after every write)
    v0004.incomplete/   being written; never read, removed by the next ingestion

``publish`` moves a finished staging folder in, in this order (each step is a
crash point the kill test stops at):

1. ``staged``: every file of the new set written and fsynced, still ``.incomplete``;
2. ``renamed``: renamed to ``vNNNN`` (complete, but not yet current);
3. ``pointer_written``: new ``current.json`` written to a temporary file, not yet replaced;
4. ``switched``: ``current.json`` replaced; the new set is current;
5. ``removing_old``: the first old file removed (the rest follow).

Old versions are removed only after the switch, so a crash before it leaves the
previous set current and untouched, and a crash after it leaves the new set.

Releases before this one wrote cases straight into ``root``; with no
``current.json`` that flat set is still read, and the first versioned
ingestion removes its files after the switch.
"""
import json
import os
import re
import shutil
import signal
from typing import List, Optional

from nnunetv2_asyco.atomic_files import atomic_write_json, fsync_file, fsync_folder

POINTER = "current.json"
INCOMPLETE = ".incomplete"
_VERSION = re.compile(r"^v([0-9]{4,})$")
# files nnU-Net 2.x writes per preprocessed case (blosc2 in 2.6+, npz/npy before)
_CASE_FILE = re.compile(r".*(\.b2nd|\.pkl|\.npz|\.npy)$")

# Test hook: the process kills itself (SIGKILL, no cleanup) when it reaches this step of publish().
CRASH_ENV = "nnUNet_asyco_test_crash_at"
STEPS = ("staged", "renamed", "pointer_written", "switched", "removing_old")


class VersionedSetError(RuntimeError):
    """The pointer names a set that is not there (removed or moved by hand)."""


def crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _versions(root: str) -> List[str]:
    return sorted(f for f in os.listdir(root) if _VERSION.match(f)) if os.path.isdir(root) else []


def _pointer(root: str) -> Optional[dict]:
    path = os.path.join(root, POINTER)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _flat_case_files(root: str) -> List[str]:
    return sorted(f for f in os.listdir(root) if _CASE_FILE.match(f) and os.path.isfile(os.path.join(root, f)))


def current_folder(root: str) -> Optional[str]:
    """The folder of the current complete set, or None when nothing was ingested."""
    if not os.path.isdir(root):
        return None
    pointer = _pointer(root)
    if pointer is None:  # an ingestion of an earlier release (flat), or none
        return root if any(f.endswith(".pkl") for f in _flat_case_files(root)) else None
    folder = os.path.join(root, pointer["version"])
    if not os.path.isdir(folder):
        raise VersionedSetError(
            f"{os.path.join(root, POINTER)} names {pointer['version']}, which is missing from {root} (removed by "
            f"hand?). Run nnUNetv2_asyco_preprocess_unlabeled again to rebuild the unlabeled set.")
    return folder


def current_cases(root: str) -> List[str]:
    """Case ids of the current set (as the pointer records them; a flat set: its .pkl files)."""
    folder = current_folder(root)
    if folder is None:
        return []
    pointer = _pointer(root)
    if pointer is None:
        return sorted(f[:-4] for f in _flat_case_files(folder) if f.endswith(".pkl"))
    return list(pointer["cases"])


def new_staging(root: str) -> str:
    """A fresh empty ``vNNNN.incomplete`` folder, after removing what an interrupted ingestion left."""
    os.makedirs(root, exist_ok=True)
    current = (_pointer(root) or {}).get("version")
    for f in os.listdir(root):
        path = os.path.join(root, f)
        leftover = f.endswith(INCOMPLETE) or (_VERSION.match(f) and f != current) or \
            (f.startswith("." + POINTER) and f.endswith(".tmp"))
        if leftover:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    numbers = [int(_VERSION.match(v).group(1)) for v in _versions(root)]
    staging = os.path.join(root, f"v{max(numbers, default=0) + 1:04d}{INCOMPLETE}")
    os.makedirs(staging)
    return staging


def discard_staging(staging: str) -> None:
    if staging.endswith(INCOMPLETE) and os.path.isdir(staging):
        shutil.rmtree(staging)


def publish(staging: str, cases: List[str]) -> str:
    """Make the finished ``staging`` folder the current set (steps in the module docstring). Returns its folder."""
    root = os.path.dirname(staging)
    for f in os.listdir(staging):
        fsync_file(os.path.join(staging, f))
    fsync_folder(staging)
    crash_point("staged")
    final = staging[: -len(INCOMPLETE)]
    os.rename(staging, final)
    fsync_folder(root)
    crash_point("renamed")
    atomic_write_json({"version": os.path.basename(final), "cases": sorted(cases)}, os.path.join(root, POINTER),
                      before_replace=lambda: crash_point("pointer_written"))
    crash_point("switched")
    _remove_old(root, keep=os.path.basename(final))
    return final


def _remove_old(root: str, keep: str) -> None:
    old = [os.path.join(root, v) for v in _versions(root) if v != keep]
    old += [os.path.join(root, f) for f in _flat_case_files(root)]
    for i, path in enumerate(old):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        if i == 0:
            crash_point("removing_old")
