"""Shared fixtures: tiny nnU-Net plans and networks, and isolated nnU-Net folders."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

VENV_BIN = os.path.dirname(sys.executable)


def nnunet_command(name: str) -> str:
    """Path of an installed console script (nnUNetv2_*), next to this interpreter first."""
    candidate = os.path.join(VENV_BIN, name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def cli_command(args) -> list:
    """``[console script, *arguments]`` -> an argv list (the script's installed path, every argument a string)."""
    return [nnunet_command(args[0])] + [str(a) for a in args[1:]]


def run_cli(args, env=None, check=True, timeout=900):
    """Run a console script with the test's environment; return the CompletedProcess (text)."""
    cmd = cli_command(args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-4000:]}")
    return proc


def run_clis_concurrently(commands, env, timeout=900):
    """Run console scripts side by side; fail on any error.

    Most of a short command's time is single-threaded start-up (imports, nnU-Net's
    spawned export and evaluation pools), so two cores run several at once nearly
    as fast as one.
    """
    procs = [subprocess.Popen(cli_command(c), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for command, proc, output in zip(commands, procs, outputs):
        assert proc.returncode == 0, f"{' '.join(map(str, command))} failed ({proc.returncode}):\n{output[-4000:]}"
    return outputs


def tiny_arch_kwargs(dim: int, features=(4, 8, 16), deep_supervision=True):
    conv = "torch.nn.modules.conv.Conv%dd" % dim
    norm = "torch.nn.modules.instancenorm.InstanceNorm%dd" % dim
    n = len(features)
    return {
        "n_stages": n, "features_per_stage": list(features), "conv_op": conv,
        "kernel_sizes": [[3] * dim] * n, "strides": [[1] * dim] + [[2] * dim] * (n - 1),
        "n_conv_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
        "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }


def tiny_plans(dim: int = 2, patch=(32, 32), features=(4, 8, 16)) -> dict:
    """A minimal but genuine nnU-Net plans dict (one configuration) for unit tests."""
    n = len(features)
    return {
        "dataset_name": "Dataset999_Unit", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * 3, "original_median_shape_after_transp": [1, 64, 64],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {"cfg": {
            "data_identifier": "unit", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [1.0] * dim,
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": tiny_arch_kwargs(dim, features),
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True, "pool_op_kernel_sizes": [[1] * dim] + [[2] * dim] * (n - 1),
        }},
    }


@pytest.fixture
def tiny_configuration():
    pm = PlansManager(tiny_plans())
    return pm, pm.get_configuration("cfg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def nnunet_folders_env(root) -> dict:
    """An environment for child processes with nnU-Net folders under ``root`` and our trainers on the search path."""
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    env = dict(os.environ)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        path = os.path.join(str(root), key)
        os.makedirs(path, exist_ok=True)
        env[key] = path
    # PASSIVE: idle OpenMP threads sleep instead of spinning, which otherwise starves the other processes
    # (data-loader workers, export pools) on a 2-core machine
    env.update(nnUNet_extTrainer=trainer_dir(), nnUNet_def_n_proc="1", nnUNet_compile="false",
               OMP_WAIT_POLICY="PASSIVE")
    env.pop("nnUNet_n_proc_DA", None)  # 0 crashes nnU-Net's planner; set it per training call
    return env


def training_env(env: dict) -> dict:
    """Training in the main process (no augmentation workers), seeded: a test's trainings are the same every time."""
    return {**env, "nnUNet_n_proc_DA": "0", "nnUNet_asyco_seed": "0"}


def plan_tiny_dataset(env: dict, dataset_id: int, dim: int, configuration: str, n_train: int, n_test: int,
                      n_unlabeled: int, shape, patch, small_plans="nnUNetPlansTiny", num_classes=3,
                      n_channels=1, edit_raw=None, verify=False) -> str:
    """Synthetic dataset -> real nnUNetv2_plan_and_preprocess -> tiny plans. Returns the dataset folder name.

    ``edit_raw(folder)`` may change the raw dataset (dataset.json, labels) before planning; ``verify`` adds
    nnU-Net's ``--verify_dataset_integrity`` check.
    """
    from nnunetv2_asyco.demo.synthetic import write_synthetic_dataset
    folder = write_synthetic_dataset(env["nnUNet_raw"], dataset_id, dim=dim, shape=shape, n_train=n_train,
                                     n_test=n_test, n_unlabeled=n_unlabeled, num_classes=num_classes,
                                     n_channels=n_channels)
    if edit_raw is not None:
        edit_raw(folder)
    run_cli(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", configuration, "-np", 1, "-npfp", 1]
            + (["--verify_dataset_integrity"] if verify else []), env=env)
    shrink_plans(env, dataset_id, "nnUNetPlans", small_plans, {configuration: patch},
                 max_stages=3 if dim == 3 else 4)
    return os.path.basename(folder)


def shrink_plans(env: dict, dataset_id: int, source: str, target: str, patch: dict, max_stages: int) -> None:
    """make_small_plans with test-sized settings (it reads nnUNet_preprocessed from this process's environment)."""
    old = os.environ.get("nnUNet_preprocessed")
    os.environ["nnUNet_preprocessed"] = env["nnUNet_preprocessed"]
    try:
        from nnunetv2_asyco.demo.small_plans import make_small_plans
        make_small_plans(dataset_id, source, target, patch_size=patch, batch_size=2, max_features=16,
                         max_stages=max_stages)
    finally:
        if old is None:
            os.environ.pop("nnUNet_preprocessed")
        else:
            os.environ["nnUNet_preprocessed"] = old


IGNORE_LABEL = 4


def add_ignore_label(folder):
    """Partial annotations: label 4 ("ignore") over the top quarter of every training label map."""
    import SimpleITK as sitk
    path = os.path.join(folder, "dataset.json")
    ds = json.load(open(path))
    ds["labels"]["ignore"] = IGNORE_LABEL
    json.dump(ds, open(path, "w"), indent=4)
    for f in glob.glob(os.path.join(folder, "labelsTr", "*.nii.gz")):
        img = sitk.ReadImage(f)
        arr = sitk.GetArrayFromImage(img)
        arr[:, : arr.shape[1] // 4] = IGNORE_LABEL
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(img)
        sitk.WriteImage(out, f, useCompression=True)


# Tiny 2D datasets (128x128 cases, 64x64 patches) that several modules need in the same form. Planning one costs
# about 20 s on 2 cores, so each is planned once per session and copied into the nnU-Net folders of every module
# that asks for it (a module may change its copy freely).
SHARED_PLANS = "nnUNetPlansTiny"
SHARED_2D_DATASETS = {
    "one_channel": dict(dataset_id=901, n_train=10, n_test=2, n_unlabeled=4, n_channels=1, edit_raw=None),
    # two input channels, and partial annotations (ignore label) on every training case
    "two_channel_ignore": dict(dataset_id=902, n_train=8, n_test=1, n_unlabeled=2, n_channels=2,
                               edit_raw=add_ignore_label),
}


@pytest.fixture(scope="session")
def shared_2d_dataset(tmp_path_factory):
    """``copy(kind, root) -> (env, dataset_name)``: a planned dataset of SHARED_2D_DATASETS in fresh folders."""
    planned = {}

    def copy(kind: str, root):
        spec = SHARED_2D_DATASETS[kind]
        if kind not in planned:
            source = tmp_path_factory.mktemp(f"shared_{kind}")
            name = plan_tiny_dataset(nnunet_folders_env(source), spec["dataset_id"], 2, "2d", n_train=spec["n_train"],
                                     n_test=spec["n_test"], n_unlabeled=spec["n_unlabeled"], shape=(128, 128),
                                     patch=(64, 64), small_plans=SHARED_PLANS, n_channels=spec["n_channels"],
                                     edit_raw=spec["edit_raw"], verify=True)
            planned[kind] = (source, name)
        source, name = planned[kind]
        env = nnunet_folders_env(root)
        for key in ("nnUNet_raw", "nnUNet_preprocessed"):
            shutil.copytree(os.path.join(str(source), key, name), os.path.join(env[key], name))
        return env, name

    return copy


# Fixtures that plan datasets or train with nnU-Net's commands (module- or session-scoped); a test that uses one
# belongs to the integration tier. The fast tier (pytest -m "not integration") runs the rest in under a minute.
PLANNING_FIXTURES = {"shared_2d_dataset", "tmp_path_factory"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if PLANNING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
