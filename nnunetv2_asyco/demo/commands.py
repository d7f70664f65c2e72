"""Locating installed console scripts (nnUNetv2_*, ours) for the tools that run them as child processes."""
import os
import shutil
import sys


class CommandNotFound(RuntimeError):
    pass


def find_cli(name: str) -> str:
    """An installed console script: next to this interpreter first (the active venv), then on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(candidate):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise CommandNotFound(f"Command {name} not found next to {sys.executable} or on PATH. Is nnunetv2 "
                              f"installed in this environment?")
    return found
