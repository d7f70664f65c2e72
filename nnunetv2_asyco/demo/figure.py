"""The demo's picture: for a few test cases, the image, the reference and each method's prediction side by side."""
import os
from typing import Dict, List

import numpy as np
import SimpleITK as sitk


def read_slice(path: str) -> np.ndarray:
    """A 2D case (nnU-Net's one-slice volume) as a 2D array."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(path))
    return array[0] if array.ndim == 3 else array


def write_comparison(png: str, image_files: List[str], reference_files: List[str],
                     predictions: Dict[str, List[str]], num_classes: int) -> str:
    """One row per case: image, reference, then every method's prediction (columns in ``predictions`` order)."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    colours = ListedColormap(["black"] + [plt.get_cmap("tab10")(i) for i in range(num_classes)])
    columns = ["image", "reference"] + list(predictions)
    fig, axes = plt.subplots(len(image_files), len(columns), figsize=(2.2 * len(columns), 2.3 * len(image_files)),
                             squeeze=False)
    for row, (image, reference) in enumerate(zip(image_files, reference_files)):
        panels = [read_slice(image), read_slice(reference)] + [read_slice(p[row]) for p in predictions.values()]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            if col == 0:
                ax.imshow(panel, cmap="gray")
            else:
                ax.imshow(panel, cmap=colours, vmin=0, vmax=num_classes, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=8)
        axes[row][0].set_ylabel(os.path.basename(reference), fontsize=7)
    fig.tight_layout()
    tmp = png + ".part.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png)
    return png
