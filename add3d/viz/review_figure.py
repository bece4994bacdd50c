"""One frame's predictions against its labels: the image and a bird's-eye view (``add3d show-predictions``).

Image: labelled boxes in white (orange: missed), predictions in their class colour with their score on a dark tag.
Bird's-eye view: labels dashed, matched predictions coloured by their depth error (colour bar),
false positives magenta, missed labels orange.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from add3d.evaluation.frame_review import FrameReview
from add3d.fileio import atomic_path
from add3d.viz.draw import CLASS_COLORS, draw_boxes3d, plot_bev

LABEL_COLOR = (255, 255, 255)
MISSED_RGB = (255, 140, 0)  # orange: apart from every class colour
MISSED_COLOR = "#ff8c00"
FALSE_POSITIVE_COLOR = "#d23fd2"
DEPTH_ERROR_CMAP = "viridis"  # no magenta or orange in it
DRAW_WIDTH = 1242  # small frames (e.g. quarter-size synthetic ones) are drawn at KITTI width so labels stay readable


def draw_score_tags(image: np.ndarray, objects, box_scale: float = 1.0) -> np.ndarray:
    """Each object's score in its class colour on a dark tag above its 2D box (times ``box_scale``:
    the image may be an enlarged copy), readable on any background."""
    canvas = np.ascontiguousarray(image.copy())
    font_scale = 0.5 * canvas.shape[1] / 1242
    thickness = max(1, round(canvas.shape[1] / 1242))
    for obj in objects:
        if obj.score is None:
            continue
        text = f"{obj.score:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        x = int(np.clip(obj.box2d[0] * box_scale, 0, canvas.shape[1] - tw - 4))
        y = int(np.clip(obj.box2d[1] * box_scale - 3, th + baseline + 2, canvas.shape[0] - 1))
        cv2.rectangle(canvas, (x, y - th - baseline - 2), (x + tw + 4, y), (20, 20, 20), -1)
        color = tuple(int(c) for c in CLASS_COLORS.get(obj.cls_type, (255, 255, 255)))
        cv2.putText(canvas, text, (x + 2, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, thickness, cv2.LINE_AA)
    return canvas


def upscaled(image: np.ndarray, P2: np.ndarray, width: int = DRAW_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """An image narrower than ``width`` enlarged to it, with the camera that projects into it."""
    factor = width / image.shape[1]
    if factor <= 1.0:
        return image, P2
    size = (width, round(image.shape[0] * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), np.diag([factor, factor, 1.0]) @ P2


def save_review_figure(path: str | Path, image: np.ndarray, P2: np.ndarray, review: FrameReview,
                       max_depth_error: float = 5.0, dpi: int = 100) -> None:
    """Write the PNG of one reviewed frame (see the module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    labels, predictions = review.ground_truth, review.predictions
    original_width = image.shape[1]
    image, P2 = upscaled(image, P2)
    found = [label for index, label in enumerate(labels) if index not in review.missed]
    missed = [labels[index] for index in review.missed]
    canvas = draw_boxes3d(image, found, P2, color=LABEL_COLOR, thickness=1, show_score=False)
    canvas = draw_boxes3d(canvas, missed, P2, color=MISSED_RGB, thickness=2, show_score=False)
    canvas = draw_boxes3d(canvas, predictions, P2, thickness=2, show_score=False)
    canvas = draw_score_tags(canvas, predictions, image.shape[1] / original_width)

    height, width = image.shape[:2]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 13 * 0.72 * height / width + 0.9),
                                         gridspec_kw={"width_ratios": [3.2, 1]})
    left.imshow(canvas)
    left.set_axis_off()
    classes = sorted({o.cls_type for o in labels + predictions}, key=lambda c: list(CLASS_COLORS).index(c) if c in CLASS_COLORS else 99)
    handles = [Line2D([], [], color="white", lw=1.5, label="label (ground truth)"),
               Line2D([], [], color=MISSED_COLOR, lw=2, label="missed label")]
    handles += [Patch(color=np.array(CLASS_COLORS.get(c, (255, 255, 255))) / 255, label=f"predicted {c}") for c in classes]
    legend = left.legend(handles=handles, loc="upper right", fontsize=7, facecolor="#202020", framealpha=0.8)
    for text in legend.get_texts():
        text.set_color("white")
    errors = review.depth_errors()
    left.set_title(f"{review.frame_id}: {len(labels)} labelled, {len(review.matches)} found, {len(review.missed)} missed, "
                   f"{len(review.false_positives)} false positive(s); max |depth error| {review.max_depth_error:.2f} m",
                   fontsize=9)

    norm = Normalize(0.0, max_depth_error)
    cmap = matplotlib.colormaps[DEPTH_ERROR_CMAP]
    objects = labels + predictions
    far = max([40.0] + [float(o.location[2]) + 5 for o in objects])
    half = max([far / 2] + [abs(float(o.location[0])) + 3 for o in objects])
    limits = {"x_range": (-half, half), "z_range": (0, far)}
    for index, label in enumerate(labels):
        missed = index in review.missed
        plot_bev(right, [label], color=MISSED_COLOR if missed else "0.25", linestyle="--", **limits)
    for (label_index, prediction_index), error in zip(review.matches, errors):
        plot_bev(right, [predictions[prediction_index]], color=cmap(norm(abs(error))), **limits)
    for prediction_index in review.false_positives:
        plot_bev(right, [predictions[prediction_index]], color=FALSE_POSITIVE_COLOR, **limits)
    right.set_title("bird's-eye view", fontsize=9)
    right.legend(handles=[
        Line2D([], [], color="0.25", ls="--", label="label"),
        Line2D([], [], color=MISSED_COLOR, ls="--", label="missed label"),
        Line2D([], [], color=cmap(0.1), label="prediction"),
        Line2D([], [], color=FALSE_POSITIVE_COLOR, label="false positive"),
    ], loc="lower left", fontsize=6.5, framealpha=0.85)
    colorbar_axis = make_axes_locatable(right).append_axes("right", size="6%", pad=0.08)
    colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=colorbar_axis)
    colorbar.set_label("|depth error| (m)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    right.tick_params(labelsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi)
    plt.close(figure)
