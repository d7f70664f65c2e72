"""Small files written atomically: a reader (or a crash) sees the old content or the new, never a part.

Temporary file in the same folder (so os.replace is a rename on one file
system), fsync of the file, os.replace, fsync of the folder (so the rename
itself survives a power cut). No torch import here: the ingestion kill tests
start this module in fresh interpreters. Checkpoints go through
``nnunet_compat.atomic_torch_save``, which uses ``atomic_write``.
"""
import json
import os
import tempfile


def fsync_folder(folder: str) -> None:
    """Make renames in ``folder`` durable. A no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str, write, before_replace=None) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then switch it in atomically;
    ``before_replace()`` runs between the write and the switch."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_folder(folder)


def atomic_write_bytes(data: bytes, path: str, before_replace=None) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), before_replace)


def atomic_write_json(obj, path: str, before_replace=None, sort_keys: bool = False) -> None:
    """json.dump (indented, like nnU-Net's save_json) with atomic_write_bytes."""
    text = json.dumps(obj, indent=4, sort_keys=sort_keys)
    atomic_write_bytes(text.encode("utf-8"), path, before_replace)
