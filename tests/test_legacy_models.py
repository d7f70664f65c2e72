"""Models and trainer names of earlier versions keep working (tests/data/legacy_models/README.md)."""
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import nnunet_folders_env, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.legacy_models]

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "legacy_models")
DATASET = "Dataset950_AsyCoSynthetic"


@pytest.mark.parametrize("trainer", ["nnUNetTrainerAsyCo_smoke", "nnUNetTrainerMeanTeacher_smoke"])
def test_model_of_an_earlier_version_predicts_the_same_label_map(tmp_path, trainer):
    env = nnunet_folders_env(tmp_path)
    shutil.copytree(os.path.join(LEGACY, DATASET), os.path.join(env["nnUNet_results"], DATASET))
    out = tmp_path / "pred"
    run_cli(["nnUNetv2_predict", "-i", os.path.join(LEGACY, "input"), "-o", out, "-d", 950, "-c", "2d", "-f", 0,
             "-p", "nnUNetPlansLegacy", "-tr", trainer, "-npp", 1, "-nps", 1, "-device", "cpu"], env=env)
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "test_000.nii.gz")))
    expected = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(LEGACY, "expected", trainer, "test_000.nii.gz")))
    assert len(np.unique(expected)) > 1  # a real segmentation, not an empty map
    np.testing.assert_array_equal(predicted, expected)


@pytest.mark.parametrize("name, epochs", [("nnUNetTrainerAsyCo_noRemap_5epochs", 5),
                                          ("nnUNetTrainerCPS_perturbedViews_1epoch", 1),
                                          ("nnUNetTrainerAsyCo_lowMemory_smoke", 2),
                                          ("nnUNetTrainerAsyCo_250epochs", 250),
                                          ("nnUNetTrainerAsyCo_demo", None)])
def test_trainer_names_of_earlier_versions_are_found_by_nnunet(name, epochs):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    cls = recursive_find_python_class(trainer_dir(), name, current_module=None, cleanup_imports_from_base_folder=True)
    assert cls is not None and cls.__name__ == name
    if epochs is None:  # the demo's budget is the demo's current one, not a fixed number
        from nnunetv2_asyco.demo.demo_trainers import DEMO_EPOCHS
        epochs = DEMO_EPOCHS
    assert cls.training_epochs == epochs


def test_unknown_and_malformed_names_are_not_invented():
    from nnunetv2_asyco.training.variants.legacy_names import legacy_trainer
    for name in ("nnUNetTrainerAsyCo_noRemap_7epochs", "nnUNetTrainerAsyCo_noRemap_5epoch",
                 "nnUNetTrainerNoSuch_5epochs", "nnUNetTrainerAsyCo_noRemap"):
        assert legacy_trainer(name) is None
