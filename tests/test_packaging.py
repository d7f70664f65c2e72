"""A plain (non-editable) `pip install .` must ship every subpackage; the editable install would hide a gap."""
import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_subpackage_is_listed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    on_disk = {"nnunetv2_asyco.trainers"}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "nnunetv2_asyco")):
        if "__init__.py" in files and "__pycache__" not in dirpath:
            on_disk.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "."))
    assert on_disk == listed, f"missing in pyproject: {on_disk - listed}; stale: {listed - on_disk}"


def test_console_scripts_point_at_existing_functions():
    import importlib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"nnUNetv2_asyco_trainer_dir", "nnUNetv2_asyco_preprocess_unlabeled", "nnUNetv2_asyco_labeled_subset",
            "nnUNetv2_asyco_demo"} <= set(scripts)
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
