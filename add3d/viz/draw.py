"""Drawing 3D boxes, depth maps and bird's-eye views: what people look at to trust a detector."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from add3d.geometry.boxes import BOX_EDGES, clip_polygon_near, objects_corners

# RGB colours per class, shared by every picture the project draws.
CLASS_COLORS = {
    "Car": (0, 200, 255),
    "Van": (0, 130, 200),
    "Truck": (0, 90, 160),
    "Pedestrian": (255, 80, 80),
    "Person_sitting": (200, 60, 60),
    "Cyclist": (80, 230, 80),
    "Tram": (180, 180, 0),
    "Misc": (200, 200, 200),
    "DontCare": (120, 120, 120),
}


def _project(points: np.ndarray, P2: np.ndarray) -> np.ndarray:
    projected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ P2.T
    return projected[:, :2] / projected[:, 2:3]


def draw_boxes3d(
    image: np.ndarray,
    objects: Sequence,
    P2: np.ndarray,
    color: tuple[int, int, int] | None = None,
    thickness: int = 2,
    show_score: bool = True,
) -> np.ndarray:
    """Return a copy of an RGB image with the objects' 3D boxes drawn (edges clipped at the camera).

    The front face (the +x side in the object frame, the heading) gets a cross so direction is visible.
    ``color`` None means the class colour.
    """
    canvas = np.ascontiguousarray(image.copy())
    objects = [o for o in objects if o.cls_type != "DontCare"]
    scale = max(1, round(canvas.shape[1] / 1242 * thickness)) if thickness > 1 else 1
    for obj, corners in zip(objects, objects_corners(objects)):
        obj_color = tuple(int(c) for c in (color or CLASS_COLORS.get(obj.cls_type, (255, 255, 255))))
        segments = [(corners[a], corners[b]) for a, b in BOX_EDGES]
        segments += [(corners[0], corners[5]), (corners[1], corners[4])]  # front cross
        for start, end in segments:
            clipped = clip_polygon_near(np.stack([start, end]), 0.1)
            if len(clipped) < 2:
                continue
            uv = _project(clipped[:2], P2)
            if not np.all(np.isfinite(uv)) or np.abs(uv).max() > 1e5:
                continue
            p, q = (tuple(int(round(x)) for x in point) for point in uv)
            cv2.line(canvas, p, q, obj_color, scale, lineType=cv2.LINE_AA)
        if show_score and obj.score is not None:
            u, v = _project(obj.location[None], P2)[0]
            if np.isfinite(u) and np.isfinite(v):
                font_scale = max(0.25, 0.45 * canvas.shape[1] / 1242)  # readable on KITTI-size and small images
                cv2.putText(canvas, f"{obj.score:.2f}", (int(u), int(v) + int(30 * font_scale)),
                            cv2.FONT_HERSHEY_SIMPLEX, font_scale, obj_color, 1, cv2.LINE_AA)
    return canvas


def colorize_depth(depth: np.ndarray, max_depth: float = 80.0, cmap: str = "turbo") -> np.ndarray:
    """(H,W) metres (0 = unknown) -> (H,W,3) uint8 RGB; unknown pixels are black."""
    import matplotlib

    colormap = matplotlib.colormaps[cmap]
    normalised = np.clip(depth / max_depth, 0.0, 1.0)
    rgb = (colormap(1.0 - normalised)[..., :3] * 255).astype(np.uint8)
    rgb[~(depth > 0)] = 0
    return rgb


def overlay_sparse_depth(image: np.ndarray, depth: np.ndarray, max_depth: float = 80.0, radius: int = 1) -> np.ndarray:
    """Draw each valid depth pixel (e.g. projected LiDAR) as a coloured dot on the image."""
    canvas = np.ascontiguousarray(image.copy())
    colors = colorize_depth(depth, max_depth)
    rows, cols = np.nonzero(depth > 0)
    for r, c in zip(rows, cols):
        cv2.circle(canvas, (int(c), int(r)), radius, tuple(int(x) for x in colors[r, c]), -1)
    return canvas


def plot_bev(ax, objects: Sequence, color=None, label: str | None = None, linestyle: str = "-",
             x_range: tuple[float, float] = (-30, 30), z_range: tuple[float, float] = (0, 70)) -> None:
    """Draw objects' footprints in bird's-eye view (x right, z forward) on a matplotlib axis."""
    objects = [o for o in objects if o.cls_type != "DontCare"]
    first = True
    for obj, corners in zip(objects, objects_corners(objects)):
        footprint = corners[[0, 1, 2, 3, 0]][:, [0, 2]]
        obj_color = color or tuple(c / 255 for c in CLASS_COLORS.get(obj.cls_type, (0, 0, 0)))
        ax.plot(footprint[:, 0], footprint[:, 1], linestyle, color=obj_color, linewidth=1.2,
                label=label if first else None)
        front = corners[[0, 1]][:, [0, 2]].mean(axis=0)
        centre = corners[:4][:, [0, 2]].mean(axis=0)
        ax.plot([centre[0], front[0]], [centre[1], front[1]], linestyle, color=obj_color, linewidth=1.2)
        first = False
    ax.set_xlim(*x_range)
    ax.set_ylim(*z_range)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.grid(True, alpha=0.3)
