"""nnU-Net's LocalLogger plus one list per loss term, drawn as a fourth panel of progress.png.

nnU-Net's three panels are drawn by nnU-Net itself; we then append the
loss-term panel below them in the same progress.png (and keep nothing else).
"""
import io

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
from PIL import Image
from batchgenerators.utilities.file_and_folder_operations import join

from nnunetv2.training.logging.nnunet_logger import LocalLogger


class TermLocalLogger(LocalLogger):
    """Logs ``train_<term>`` per epoch for every registered loss term and plots them."""

    def __init__(self, term_keys, verbose: bool = False):
        super().__init__(verbose)
        self.term_keys = list(term_keys)
        for key in self.term_keys:
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict):
        # a checkpoint from before a term existed still loads; the missing term starts empty
        super().load_checkpoint(checkpoint)
        for key in self.term_keys:
            self.my_fantastic_logging.setdefault(key, [])

    def plot_progress_png(self, output_folder):
        super().plot_progress_png(output_folder)
        epochs = min(len(v) for v in self.my_fantastic_logging.values())
        if epochs == 0:
            return
        path = join(output_folder, "progress.png")
        with Image.open(path) as nnunet_panels:
            nnunet_panels.load()
        width, height = nnunet_panels.size
        dpi = 100
        fig, ax = plt.subplots(1, 1, figsize=(width / dpi, height / 3 / dpi), dpi=dpi)
        for key in self.term_keys:
            ax.plot(range(epochs), self.my_fantastic_logging[key][:epochs], label=key, linewidth=4)
        ax.set_xlabel("epoch", fontsize=30)
        ax.set_ylabel("loss term (unweighted)", fontsize=30)
        ax.tick_params(labelsize=24)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(loc="upper right", fontsize=24)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        plt.close(fig)
        buffer.seek(0)
        terms_panel = Image.open(buffer).convert(nnunet_panels.mode)
        # paste the loss-term panel under nnU-Net's own panels (cheaper than redrawing them)
        combined = Image.new(nnunet_panels.mode, (width, height + terms_panel.size[1]), "white")
        combined.paste(nnunet_panels, (0, 0))
        combined.paste(terms_panel, (0, height))
        combined.save(path)
