"""One PNG per top-ranked case for a reviewer without a viewer: image, segmentation outline, map heatmap.

Reads the case's input image (first channel), the written segmentation and map, in nnU-Net's array layout
(z, y, x; 2D cases have z = 1), and shows the slice with the most disagreement.
"""
import os
from typing import List

import numpy as np


def review_slice(voxel_map: np.ndarray) -> int:
    """Index along the first axis of the slice with the largest summed map."""
    return int(np.argmax(voxel_map.reshape(voxel_map.shape[0], -1).sum(1)))


def write_review_png(image_files: List[str], seg_file: str, map_file: str, png_path: str, plans_manager,
                     title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    from nnunetv2_asyco.qa.geometry import read_map

    rw = plans_manager.image_reader_writer_class()
    image, _ = rw.read_images(image_files[:1])
    seg, _ = rw.read_seg(seg_file)
    voxel_map = read_map(map_file, plans_manager)
    z = review_slice(voxel_map)
    img, s, m = image[0][z], seg[0][z], voxel_map[z]

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(img, cmap="gray")
    for label in np.unique(s):
        if label > 0:
            axes[1].contour(s == label, levels=[0.5], colors=[plt.cm.tab10(int(label) % 10)], linewidths=1)
    axes[1].set_title("segmentation outline")
    axes[2].imshow(img, cmap="gray")
    heat = axes[2].imshow(m, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(m.max()), 1e-6))
    axes[2].set_title("disagreement")
    fig.colorbar(heat, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{title} (slice {z})" if voxel_map.shape[0] > 1 else title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # room for the title above the panels' titles
    folder, name = os.path.split(png_path)
    tmp = os.path.join(folder, ".tmp_" + name)
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    os.replace(tmp, png_path)
