"""One image's detections as a figure: 3D boxes over the image and a bird's-eye view (``add3d predict --vis``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from add3d.data.kitti import Object3D
from add3d.fileio import atomic_path
from add3d.viz.draw import draw_boxes3d, plot_bev


def save_prediction_figure(path: str | Path, image: np.ndarray, objects: list[Object3D], P2: np.ndarray) -> None:
    """Write a PNG: ``objects`` drawn as 3D boxes on ``image`` (left), and seen from above (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes = draw_boxes3d(image, objects, P2)
    height, width = image.shape[:2]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 12 * height / width * 0.9 + 1.5),
                                         gridspec_kw={"width_ratios": [3, 1]})
    left.imshow(boxes)
    left.set_axis_off()
    left.set_title(f"{len(objects)} detections")
    far = max([60.0] + [float(o.location[2]) + 5 for o in objects])
    plot_bev(right, objects, x_range=(-far / 2, far / 2), z_range=(0, far))
    right.set_title("bird's-eye view")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
