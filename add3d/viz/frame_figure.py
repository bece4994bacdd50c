"""A KITTI frame with its labelled 3D boxes and its depth (LiDAR or a depth map), as one figure.

The quickest way to check that calibration, labels and depth agree on a dataset (``add3d show-frame``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from add3d.fileio import atomic_path
from add3d.viz.draw import colorize_depth, draw_boxes3d, overlay_sparse_depth


def render_frame_figure(frame, depth: np.ndarray | None, out_path: str | Path, title: str = "") -> None:
    """Two panels: 3D boxes over the image; depth (sparse dots or dense map) over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes = draw_boxes3d(frame.image, frame.objects, frame.calib.P2)
    panels = [(boxes, "labelled 3D boxes (front face crossed)")]
    if depth is not None:
        density = float((depth > 0).mean())
        if density < 0.3:
            depth_panel = overlay_sparse_depth(frame.image // 2, depth)
        else:
            depth_panel = (0.4 * frame.image + 0.6 * colorize_depth(depth)).astype(np.uint8)
        panels.append((draw_boxes3d(depth_panel, frame.objects, frame.calib.P2, color=(255, 255, 255), thickness=1),
                       f"depth (near = red, far = blue), {density:.1%} of pixels"))
    height, width = frame.image.shape[:2]
    figure, axes = plt.subplots(len(panels), 1, figsize=(12, 12 * height / width * len(panels) + 0.6 * len(panels)))
    axes = np.atleast_1d(axes)
    for ax, (picture, caption) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(caption, fontsize=10)
        ax.axis("off")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
