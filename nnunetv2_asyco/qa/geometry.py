"""A per-voxel map from the network's grid back to the case's original geometry, and its file.

These are the steps nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` applies to
probabilities (resample with the configuration's probability resampler, put the crop back into the
uncropped shape, undo the transpose), for one channel that is not a probability, so no softmax is applied.
"""
import os

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

# map files store integers (value x MAP_SCALE) so that every image format nnU-Net writes segmentations in
# (NIfTI, PNG, TIFF, ...) can hold them, through the dataset's own writer and its geometry handling
MAP_SCALE = 10000


def map_to_original_geometry(voxel_map: np.ndarray, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """(*network grid) -> (*original shape), float32, values clipped to the map's range [0, 1]."""
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = configuration_manager.spacing if len(configuration_manager.spacing) == len(shape) \
        else [spacing_transposed[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_probabilities(
        voxel_map[None].astype(np.float32), shape, current_spacing, spacing_transposed)[0]
    if isinstance(resampled, torch.Tensor):
        resampled = resampled.cpu().numpy()
    full = np.zeros(properties["shape_before_cropping"], dtype=np.float32)  # outside the crop: nothing predicted
    full = insert_crop_into_image(full, np.clip(resampled, 0.0, 1.0).astype(np.float32),
                                  properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(full.transpose(plans_manager.transpose_backward))


def write_map(voxel_map: np.ndarray, path: str, properties: dict, plans_manager) -> None:
    """Write ``voxel_map`` (original geometry, [0, 1]) as integers value x MAP_SCALE with the dataset's writer.

    Written to a temporary name first and renamed, so a reader never sees half a file.
    """
    quantised = np.round(voxel_map * MAP_SCALE).astype(np.uint16)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, ".tmp_" + name)  # same file ending: the writer picks its format from it
    try:
        plans_manager.image_reader_writer_class().write_seg(quantised, tmp, properties)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_map(path: str, plans_manager) -> np.ndarray:
    """A map written by ``write_map`` as float values in [0, 1] (nnU-Net's array layout: (1 or z, y, x))."""
    seg, _ = plans_manager.image_reader_writer_class().read_seg(path)
    return seg[0].astype(np.float32) / MAP_SCALE
