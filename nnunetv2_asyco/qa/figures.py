"""One PNG per top-ranked case for a reviewer without a viewer: image, segmentation outline, map heatmap.

Reads the case's input image (first channel), the written segmentation and map, in nnU-Net's array layout
(z, y, x; 2D cases have z = 1), and shows the slice with the most disagreement.

Cheap to draw, as the figures are most of what the command costs beyond nnUNetv2_predict on small cases
(benchmarks/results/qa/cost.md): a fixed layout instead of tight_layout (which lays out every text to measure it
and draws the figure twice) and zlib level 1 for the PNG halve the CPU time per figure. matplotlib's object API on
the Agg canvas, not pyplot: no global figure state to close and no backend switch that would affect a caller.
"""
from typing import List

import numpy as np

FIGURE_INCHES = (12, 4.4)
DPI = 80
# [left, bottom, width, height] in figure fractions: three square-ish panels, a colorbar, room for the titles
PANEL_RECTS = ([0.01, 0.03, 0.29, 0.80], [0.32, 0.03, 0.29, 0.80], [0.63, 0.03, 0.29, 0.80])
COLORBAR_RECT = [0.935, 0.08, 0.015, 0.70]


def review_slice(voxel_map: np.ndarray) -> int:
    """Index along the first axis of the slice with the largest summed map."""
    return int(np.argmax(voxel_map.reshape(voxel_map.shape[0], -1).sum(1)))


def write_review_png(image_files: List[str], seg_file: str, map_file: str, png_path: str, plans_manager,
                     title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nnunetv2_asyco.atomic_files import atomic_write
    from nnunetv2_asyco.qa.geometry import read_map

    rw = plans_manager.image_reader_writer_class()
    image, _ = rw.read_images(image_files[:1])
    seg, _ = rw.read_seg(seg_file)
    voxel_map = read_map(map_file, plans_manager)
    z = review_slice(voxel_map)
    img, s, m = image[0][z], seg[0][z], voxel_map[z]

    fig = Figure(figsize=FIGURE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself to fig
    axes = [fig.add_axes(rect) for rect in PANEL_RECTS]
    for ax in axes:
        ax.imshow(img, cmap="gray")
        ax.axis("off")
    axes[0].set_title("image")
    tab10 = colormaps["tab10"]
    for label in np.unique(s):
        if label > 0:
            axes[1].contour(s == label, levels=[0.5], colors=[tab10(int(label) % 10)], linewidths=1)
    axes[1].set_title("segmentation outline")
    heat = axes[2].imshow(m, cmap="inferno", alpha=0.6, vmin=0.0, vmax=max(float(m.max()), 1e-6))
    axes[2].set_title("disagreement")
    fig.colorbar(heat, cax=fig.add_axes(COLORBAR_RECT))
    fig.suptitle(f"{title} (slice {z})" if voxel_map.shape[0] > 1 else title)
    # zlib level 1: the default level 6 took about a third of the figure's time, for ~10% smaller files
    atomic_write(png_path, lambda f: fig.savefig(f, dpi=DPI, format="png", pil_kwargs={"compress_level": 1}))
