"""Shared fixtures: tiny nnU-Net plans and networks, and isolated nnU-Net folders."""
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


def run_cli(args, env=None, check=True, timeout=900):
    """Run a console script with the test's environment; return the CompletedProcess (text)."""
    cmd = [nnunet_command(args[0])] + [str(a) for a in args[1:]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-4000:]}")
    return proc


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


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """Fresh nnUNet_raw/_preprocessed/_results folders and the trainer search path; returns an env dict."""
    folders = {k: tmp_path / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for key, path in folders.items():
        path.mkdir()
        monkeypatch.setenv(key, str(path))
    from nnunetv2_asyco.cli.trainer_dir import trainer_dir
    monkeypatch.setenv("nnUNet_extTrainer", trainer_dir())
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    monkeypatch.setenv("nnUNet_compile", "false")
    env = dict(os.environ)
    return env


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
    return {**env, "nnUNet_n_proc_DA": "0"}


def plan_tiny_dataset(env: dict, dataset_id: int, dim: int, configuration: str, n_train: int, n_test: int,
                      n_unlabeled: int, shape, patch, small_plans="nnUNetPlansTiny", num_classes=3,
                      n_channels=1, edit_raw=None) -> str:
    """Synthetic dataset -> real nnUNetv2_plan_and_preprocess -> tiny plans. Returns the dataset folder name.

    ``edit_raw(folder)`` may change the raw dataset (dataset.json, labels) before planning.
    """
    from nnunetv2_asyco.synthetic import write_synthetic_dataset
    folder = write_synthetic_dataset(env["nnUNet_raw"], dataset_id, dim=dim, shape=shape, n_train=n_train,
                                     n_test=n_test, n_unlabeled=n_unlabeled, num_classes=num_classes,
                                     n_channels=n_channels)
    if edit_raw is not None:
        edit_raw(folder)
    run_cli(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", configuration, "-np", 1, "-npfp", 1],
            env=env)
    shrink_plans(env, dataset_id, "nnUNetPlans", small_plans, {configuration: patch},
                 max_stages=3 if dim == 3 else 4)
    return os.path.basename(folder)


def shrink_plans(env: dict, dataset_id: int, source: str, target: str, patch: dict, max_stages: int) -> None:
    """make_small_plans with test-sized settings (it reads nnUNet_preprocessed from this process's environment)."""
    old = os.environ.get("nnUNet_preprocessed")
    os.environ["nnUNet_preprocessed"] = env["nnUNet_preprocessed"]
    try:
        from nnunetv2_asyco.small_plans import make_small_plans
        make_small_plans(dataset_id, source, target, patch_size=patch, batch_size=2, max_features=16,
                         max_stages=max_stages)
    finally:
        if old is None:
            os.environ.pop("nnUNet_preprocessed")
        else:
            os.environ["nnUNet_preprocessed"] = old
