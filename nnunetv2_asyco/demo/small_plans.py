"""CPU-friendly copy of a dataset's nnU-Net plans under a new plans name.

The copy caps the feature widths and can set batch size, patch size and the
number of resolution stages. Each configuration keeps the source's
``data_identifier``: nnU-Net locates preprocessed data at
``nnUNet_preprocessed/<dataset>/<data_identifier>`` (nnUNetTrainer and
DefaultPreprocessor both build the folder from it), so the small plans reuse
the data already preprocessed for the source plans. Patch size, batch size and
architecture are read at training time, so nothing needs re-preprocessing.

When the patch size changes, the network topology is recomputed the way
nnU-Net's ExperimentPlanner does it (``get_pool_and_conv_props``) and every
per-stage list of the architecture kwargs is resized to the new stage count.
"""
import os
from copy import deepcopy
from typing import Dict, List, Optional, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

# Same value as ExperimentPlanner.UNet_featuremap_min_edge_length: the smallest
# bottleneck edge length nnU-Net pools down to.
FEATUREMAP_MIN_EDGE_LENGTH = 4

# arch_kwargs with one entry per encoder stage (PlainConvUNet uses
# n_conv_per_stage, ResidualEncoderUNet n_blocks_per_stage and optionally
# bottleneck_channels); the decoder list has one entry fewer.
_ENCODER_STAGE_KEYS = ("n_conv_per_stage", "n_blocks_per_stage", "bottleneck_channels")
_DECODER_STAGE_KEY = "n_conv_per_stage_decoder"


def _resize(values, n: int):
    """Truncate a per-stage list to n entries, or extend it by repeating its last entry.

    Repeating the last entry matches nnU-Net's planners, whose per-stage
    tuples are constant from some stage on ((2, 2, ...) and (1, 3, 4, 6, 6, ...)).
    Scalars and None are valid arch kwargs for every stage and stay as they are.
    """
    if not isinstance(values, (list, tuple)):
        return values
    values = list(values)
    return values[:n] + [values[-1]] * max(0, n - len(values))


def _features(old: Sequence[int], n_stages: int, max_features: Optional[int]) -> List[int]:
    if len(old) == n_stages:
        return [int(f) if max_features is None else min(int(f), max_features) for f in old]
    # stage count changed: continue nnU-Net's rule base * 2**i, capped like the source
    cap = max(old) if max_features is None else min(max(old), max_features)
    return [min(cap, int(old[0]) * 2 ** i) for i in range(n_stages)]


def _topology(spacing: Sequence[float], patch_size: Sequence[int]):
    """(patch_size, strides, kernel_sizes) for a patch, as ExperimentPlanner computes them."""
    _, strides, kernels, patch, _ = get_pool_and_conv_props(
        spacing, patch_size, FEATUREMAP_MIN_EDGE_LENGTH, 999999)
    return [int(p) for p in patch], [list(s) for s in strides], [list(k) for k in kernels]


def _set_stages(arch: dict, strides: list, kernels: list) -> None:
    """Set a new stage layout and resize every per-stage arch kwarg to match it."""
    n = len(strides)
    arch.update(n_stages=n, strides=strides, kernel_sizes=kernels)
    for key in _ENCODER_STAGE_KEYS:
        if key in arch:
            arch[key] = _resize(arch[key], n)
    if _DECODER_STAGE_KEY in arch:
        arch[_DECODER_STAGE_KEY] = _resize(arch[_DECODER_STAGE_KEY], n - 1)


def _small_configuration(cfg: dict, patch_size: Optional[Sequence[int]], batch_size: Optional[int],
                         max_features: Optional[int], max_stages: Optional[int]) -> dict:
    """Edited copy of one fully resolved configuration dict."""
    if "architecture" not in cfg:
        raise ValueError("Plans without an 'architecture' entry (old nnU-Net plans format) are not supported; "
                         "rerun nnUNetv2_plan_experiment.")
    cfg = deepcopy(cfg)
    arch = cfg["architecture"]["arch_kwargs"]

    layout = None
    if patch_size is not None:
        if len(patch_size) != len(cfg["patch_size"]):
            raise ValueError(f"patch_size {tuple(patch_size)} has {len(patch_size)} axes; this configuration "
                             f"needs {len(cfg['patch_size'])}.")
        layout = _topology(cfg["spacing"], patch_size)
    elif max_stages is not None and max_stages < int(arch["n_stages"]):
        layout = cfg["patch_size"], list(arch["strides"]), list(arch["kernel_sizes"])
    if layout is not None:
        new_patch, strides, kernels = layout
        if max_stages is not None:
            # Dropping the deepest stages equals stopping the planner's pooling loop
            # early; the patch stays divisible by the (now smaller) total stride.
            strides, kernels = strides[:max_stages], kernels[:max_stages]
        cfg["patch_size"] = new_patch
        _set_stages(arch, strides, kernels)

    feats = arch["features_per_stage"]
    if isinstance(feats, (list, tuple)):
        arch["features_per_stage"] = _features(feats, int(arch["n_stages"]), max_features)
    elif max_features is not None:
        arch["features_per_stage"] = min(int(feats), max_features)
    if batch_size is not None:
        cfg["batch_size"] = int(batch_size)
    return cfg


def _resolve(configurations: dict, name: str, seen=()) -> dict:
    """Configuration dict with ``inherits_from`` chains merged (as PlansManager does)."""
    cfg = deepcopy(configurations[name])
    parent = cfg.get("inherits_from")
    if parent is None:
        return cfg
    if parent in seen:
        raise ValueError(f"Circular 'inherits_from' in plans: {seen + (name,)}")
    base = _resolve(configurations, parent, seen + (name,))
    base.update(cfg)
    return base


def _inheritance_depth(configurations: dict, name: str) -> int:
    depth = 0
    while "inherits_from" in configurations[name]:
        name, depth = configurations[name]["inherits_from"], depth + 1
        if depth > len(configurations):
            raise ValueError(f"Circular 'inherits_from' in plans at {name!r}.")
    return depth


def make_small_plans(dataset_name_or_id: Union[int, str], source_plans: str = "nnUNetPlans",
                     target_plans: str = "nnUNetPlansSmall",
                     patch_size: Optional[Dict[str, Sequence[int]]] = None,
                     batch_size: Optional[int] = None, max_features: Optional[int] = 64,
                     max_stages: Optional[int] = None) -> str:
    """Write ``nnUNet_preprocessed/<dataset>/<target_plans>.json`` and return its path.

    patch_size maps configuration names to patch sizes, e.g. ``{"2d": (64, 64)}``;
    configurations not named keep theirs. The patch size actually written can
    be padded up so that it is divisible by the network's total downsampling
    (as nnU-Net's planner does). batch_size, max_features (cap on
    features_per_stage; None: no cap) and max_stages (None: no cap) apply to
    every configuration. The source plans file is only read.
    """
    if target_plans == source_plans:
        raise ValueError(f"target_plans must differ from source_plans ({source_plans!r}); "
                         f"refusing to overwrite the source plans.")
    if max_stages is not None and max_stages < 1:
        raise ValueError(f"max_stages must be >= 1, got {max_stages}.")
    dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
    folder = os.path.join(nnUNet_preprocessed, dataset_name)
    plans = load_json(os.path.join(folder, source_plans + ".json"))
    configurations = plans["configurations"]
    patch_size = dict(patch_size or {})
    unknown = set(patch_size) - set(configurations)
    if unknown:
        raise ValueError(f"patch_size names configurations {sorted(unknown)} that {source_plans} does not have "
                         f"(it has {sorted(configurations)}).")

    edited = deepcopy(configurations)
    # Parents first, so that a child (e.g. 3d_cascade_fullres) builds on its edited parent.
    for name in sorted(configurations, key=lambda c: _inheritance_depth(configurations, c)):
        small = _small_configuration(_resolve(edited, name), patch_size.get(name), batch_size,
                                     max_features, max_stages)
        own = configurations[name]
        parent = own.get("inherits_from")
        if parent is None:
            edited[name] = small
        else:
            # Keep the child's inheritance: store its own keys plus what now differs from the parent.
            inherited = _resolve(edited, parent)
            edited[name] = {**own, **{k: v for k, v in small.items() if k in own or inherited.get(k) != v}}

    plans["configurations"] = edited
    plans["plans_name"] = target_plans
    recursive_fix_for_json_export(plans)
    target = os.path.join(folder, target_plans + ".json")
    save_json(plans, target, sort_keys=False)
    return target
