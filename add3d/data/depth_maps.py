"""Ground-truth depth maps for the teacher: projected LiDAR or object-wise depth from labels.

Stored as 16-bit PNG with value / 256 = metres and 0 = unknown (the usual KITTI depth format).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError, DataFormatError
from add3d.fileio import atomic_path
from add3d.geometry.boxes import objects_corners
from add3d.geometry.calib import Calibration
from add3d.geometry.raster import rasterize_box_depth

DEPTH_PNG_SCALE = 256.0
OBJECT_CLASSES_FOR_DEPTH = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")


def write_depth_png(path: str | Path, depth: np.ndarray) -> None:
    """Write (H,W) metres (0 or non-finite = unknown) as a 16-bit PNG, atomically."""
    depth = np.asarray(depth, dtype=np.float64)
    encoded = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * DEPTH_PNG_SCALE), 0)
    encoded = np.clip(encoded, 0, 65535).astype(np.uint16)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), encoded):
            raise Add3dError(f"{path}: cannot write depth PNG")


def read_depth_png(path: str | Path) -> np.ndarray:
    """Read a 16-bit depth PNG as (H,W) float32 metres, 0 = unknown."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: depth map not found (create it with `add3d make-depth`)")
    encoded = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if encoded is None:
        raise DataFormatError(path, "cannot decode PNG")
    if encoded.dtype != np.uint16 or encoded.ndim != 2:
        raise DataFormatError(path, f"depth PNG must be single-channel 16-bit, found {encoded.dtype} x{encoded.ndim}D")
    return encoded.astype(np.float32) / DEPTH_PNG_SCALE


def lidar_depth_map(points: np.ndarray, calib: Calibration, image_size: tuple[int, int],
                    min_depth: float = 0.1) -> np.ndarray:
    """Project LiDAR points into image_2: (H,W) float32 depth, nearest point wins, 0 = no point.

    ``image_size`` is (width, height). A point lands in the pixel whose area contains it.
    """
    width, height = image_size
    # Project only the points in front of the camera (on a 360-degree scan, about half of them);
    # the comparisons on continuous coordinates equal those on their floors, so only the pixels
    # that are kept are converted to integers.
    rect = calib.velo_to_rect(points, homogeneous=True)
    uv, depth = calib.rect_to_image(rect[rect[:, 2] > min_depth])
    u, v = uv[:, 0], uv[:, 1]
    keep = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    cols = u[keep].astype(np.int64)  # >= 0, so truncation is the floor
    rows = v[keep].astype(np.int64)
    depth = depth[keep]
    # Write far to near so the nearest point of each pixel is written last and wins.
    order = np.argsort(-depth, kind="stable")
    out = np.zeros((height, width), dtype=np.float32)
    out[rows[order], cols[order]] = depth[order]
    return out


def fill_sparse_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """Fill unknown pixels (0) with the smallest valid depth in the ``size`` x ``size`` window around them.

    Known pixels keep their value; ``size`` 1 returns the map unchanged. Why the minimum: the nearest
    surface occludes what lies behind it, and a teacher must never see a depth that blends two objects.
    """
    if size <= 1:
        return depth
    known = depth > 0
    pooled = cv2.erode(np.where(known, depth, np.inf).astype(np.float32), np.ones((size, size), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    filled = np.where(known, depth, np.where(np.isfinite(pooled), pooled, 0.0))
    return filled.astype(np.float32)


def object_depth_map(objects: list[Object3D], calib: Calibration, image_size: tuple[int, int]) -> np.ndarray:
    """Paint every labelled object's 3D box surface with its per-pixel depth; 0 elsewhere.

    Each box is z-buffered on its own (its visible surface) and boxes are painted far to near, so a
    nearer object covers a farther one where they overlap, as the teacher should see it.
    """
    width, height = image_size
    out = np.zeros((height, width), dtype=np.float32)
    objects = [o for o in objects if o.cls_type in OBJECT_CLASSES_FOR_DEPTH]
    if not objects:
        return out
    corners = objects_corners(objects)
    order = np.argsort([-o.location[2] for o in objects], kind="stable")
    for index in order:
        surface = np.full((height, width), np.inf)
        rasterize_box_depth(corners[index], calib.P2, surface)
        painted = np.isfinite(surface)
        out[painted] = surface[painted]
    return out
