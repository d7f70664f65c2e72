"""Per-case export of ``nnUNetv2_asyco_predict_qa``: the segmentation, the map in original geometry, the statistics.

Runs in the spawned export workers, which import this module to unpickle ``export_case``. It imports only what the
export needs (nnU-Net's export functions, the measures, the geometry, the table), not the predictor: its
``nnunetv2.inference.predict_from_raw_data`` pulls in torch._dynamo, about 1.5 s of CPU per worker start on a
2-core machine (benchmarks/results/qa/cost.md).
"""
import os

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

from nnunetv2_asyco.qa.geometry import map_to_original_geometry, write_map
from nnunetv2_asyco.qa.measures import BRANCHES, TTA, jensen_shannon, probabilities
from nnunetv2_asyco.qa.table import case_statistics

MAP_SUFFIX = {BRANCHES: "_disagreement", TTA: "_tta_spread"}


def export_case(outputs: np.ndarray, properties: dict, ofile: str, plans_manager, configuration_manager,
                dataset_json: dict, measure: str, activation: str) -> dict:
    """One case: the segmentation exactly as ``nnUNetv2_predict`` writes it, the map, the statistics.

    Runs in a spawned worker (module-level, picklable arguments only).
    """
    label_manager = plans_manager.get_label_manager(dataset_json)
    c = label_manager.num_segmentation_heads
    # the same two calls as nnU-Net's export_prediction_from_logits (without --save_probabilities)
    seg = convert_predicted_logits_to_segmentation_with_correct_shape(
        outputs[:c], plans_manager, configuration_manager, label_manager, properties, return_probabilities=False)
    rw = plans_manager.image_reader_writer_class()
    rw.write_seg(seg, ofile + dataset_json["file_ending"], properties)

    seg_a = seg_b = None
    if measure == BRANCHES:
        # branch segmentations and the map on the network's grid, from the branches' tile- and mirror-averaged logits
        p_a = probabilities(torch.from_numpy(outputs[c:2 * c]), activation)
        p_b = probabilities(torch.from_numpy(outputs[2 * c:3 * c]), activation)
        voxel_map = jensen_shannon(p_a, p_b, activation).numpy()
        seg_a = np.asarray(label_manager.convert_probabilities_to_segmentation(p_a))
        seg_b = np.asarray(label_manager.convert_probabilities_to_segmentation(p_b))
    else:
        voxel_map = outputs[c].astype(np.float32)
    voxel_map = map_to_original_geometry(voxel_map, properties, plans_manager, configuration_manager)
    write_map(voxel_map, ofile + MAP_SUFFIX[measure] + dataset_json["file_ending"], properties, plans_manager)
    return case_statistics(os.path.basename(ofile), seg, voxel_map, label_manager, dataset_json, properties, measure,
                           seg_a, seg_b)
