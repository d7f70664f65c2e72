"""nnU-Net's predictor, running a QA wrapper (``outputs.py``) and exporting a segmentation, a map and statistics.

Preprocessing, sliding window, Gaussian weighting, mirroring, fold averaging and the export of the
segmentation are nnU-Net's own code (``nnUNetPredictor``, ``convert_predicted_logits_to_segmentation_with_correct_shape``,
the dataset's writer). This module only widens the accumulated output to the wrapper's channels and hands each case
to the QA export (``export.py``) instead of nnU-Net's.
"""
import multiprocessing
import os
from time import sleep

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.file_path_utilities import check_workers_alive_and_busy

from nnunetv2_asyco.network import TwoBranchNetwork, unwrap
from nnunetv2_asyco.qa.export import export_case
from nnunetv2_asyco.qa.measures import BRANCHES, TTA
from nnunetv2_asyco.qa.outputs import BranchLogits, MirrorSpread


class NotTwoBranchModelError(ValueError):
    """Branch disagreement was asked of a model with one network."""


class _WidenedHeads:
    """The predictor's label manager, reporting the wrapper's channel count as its number of segmentation heads:
    nnU-Net's sliding window sizes its accumulator by ``label_manager.num_segmentation_heads``."""

    def __init__(self, label_manager, num_channels: int):
        self._label_manager = label_manager
        self.num_segmentation_heads = num_channels

    def __getattr__(self, name):
        return getattr(self._label_manager, name)


def activation_of(network, label_manager) -> str:
    """softmax or sigmoid (nnU-Net's region training), as the model turns its logits into probabilities."""
    net = unwrap(network)
    if isinstance(net, TwoBranchNetwork):
        return net.output_activation
    return "sigmoid" if label_manager.has_regions else "softmax"


class QAPredictor(nnUNetPredictor):
    """Use like ``nnUNetPredictor``; call ``enable_qa(measure)`` after ``initialize_from_trained_model_folder``.
    ``predict_from_files`` then returns one statistics dict per case (``table.case_statistics``)."""

    measure = None

    def enable_qa(self, measure: str, two_branch_trainers: str = "") -> None:
        net = unwrap(self.network)
        self.activation = activation_of(net, self.label_manager)
        if measure == BRANCHES:
            if not isinstance(net, TwoBranchNetwork):
                raise NotTwoBranchModelError(
                    f"Trainer {self.trainer_name} builds a single network ({type(net).__name__}); branch "
                    f"disagreement needs a model with two branches. Supported: {two_branch_trainers}. For a "
                    f"single network, --measure tta gives nnU-Net's mirroring (TTA) spread instead.")
            self.network = BranchLogits(net)
        elif measure == TTA:
            self.network = MirrorSpread(net, self.allowed_mirroring_axes if self.use_mirroring else None,
                                        self.activation)
            self.use_mirroring = False  # the wrapper mirrors (it needs each mirrored prediction)
        else:
            raise ValueError(f"unknown measure {measure!r}")
        self.measure = measure

    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        real = self.label_manager
        self.label_manager = _WidenedHeads(real, self.network.output_channels(real.num_segmentation_heads))
        try:
            return super().predict_logits_from_preprocessed_data(data)
        finally:
            self.label_manager = real

    def predict_from_data_iterator(self, data_iterator, save_probabilities: bool = False,
                                   num_processes_segmentation_export: int = 1):
        """nnU-Net's loop (predict in this process, export in a spawned pool) with the QA export per case."""
        if self.measure is None:
            raise RuntimeError("call enable_qa(measure) before predicting")
        args = (self.plans_manager, self.configuration_manager, self.dataset_json, self.measure, self.activation)
        results = []
        with multiprocessing.get_context("spawn").Pool(max(1, num_processes_segmentation_export)) as pool:
            workers = list(pool._pool)
            for preprocessed in data_iterator:
                data = preprocessed["data"]
                if isinstance(data, str):  # nnU-Net's preprocessing workers hand large cases over as .npy files
                    path, data = data, torch.from_numpy(np.load(data))
                    os.remove(path)
                ofile = preprocessed["ofile"]
                print(f"\nPredicting {os.path.basename(ofile)} (QA: {self.measure}):")
                while check_workers_alive_and_busy(pool, workers, results, allowed_num_queued=2):
                    sleep(0.1)
                outputs = self.predict_logits_from_preprocessed_data(data).cpu().numpy()
                results.append(pool.apply_async(export_case, (outputs, preprocessed["data_properties"], ofile, *args)))
            collected = []
            for r in results:
                while True:
                    if not all(w.is_alive() for w in workers):
                        raise RuntimeError("A QA export worker died (likely killed by the OS for lack of memory).")
                    try:
                        collected.append(r.get(timeout=0.1))
                        break
                    except multiprocessing.TimeoutError:
                        pass
        if hasattr(data_iterator, "_finish"):
            data_iterator._finish()
        return collected

