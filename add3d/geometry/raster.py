"""Per-pixel depth of planar 3D polygons seen through a KITTI P2 camera (a tiny z-buffer).

Used to paint object-wise depth maps for the teacher and to render synthetic scenes. Depth of a
pixel on a polygon is found exactly by intersecting the pixel's viewing ray with the polygon's plane.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from add3d.geometry.boxes import BOX_FACES, clip_polygon_near


@functools.lru_cache(maxsize=64)
def _inverse_camera(P2_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(M^-1, camera centre) of P2 = [M | t]; cached because a frame rasterises many polygons."""
    P2 = np.frombuffer(P2_bytes, dtype=np.float64).reshape(3, 4)
    M_inv = np.linalg.inv(P2[:, :3])
    origin = -M_inv @ P2[:, 3]
    for shared in (M_inv, origin):  # cached: callers get the same arrays, so make them immutable
        shared.setflags(write=False)
    return M_inv, origin


def camera_rays(P2: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rect-frame origin (3,) of the P2 camera and ray directions (..., 3) through pixels (u, v),
    scaled so that direction z == 1."""
    M_inv, origin = _inverse_camera(np.ascontiguousarray(P2, dtype=np.float64).tobytes())
    directions = np.stack([u, v, np.ones_like(u)], axis=-1) @ M_inv.T
    return origin, directions / directions[..., 2:3]


def rasterize_polygon_depth(
    polygon: np.ndarray,
    P2: np.ndarray,
    depth: np.ndarray,
    near: float = 0.1,
    index_map: np.ndarray | None = None,
    index: int = 0,
) -> None:
    """Z-buffer one planar convex polygon (K,3 rect points) into ``depth`` (H,W; inf = empty).

    Pixels whose current depth is larger are overwritten with the polygon's depth; if
    ``index_map`` is given it receives ``index`` at those pixels.
    """
    polygon = clip_polygon_near(np.asarray(polygon, dtype=np.float64), near)
    if len(polygon) < 3:
        return
    height, width = depth.shape
    projected = np.concatenate([polygon, np.ones((len(polygon), 1))], axis=1) @ P2.T
    uv = projected[:, :2] / projected[:, 2:3]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return
    # Pixel (i, j) covers [j, j+1) x [i, i+1); sample at its centre. cv2 wants fixed-point input.
    shift = 4
    local = np.round((uv - [x0 + 0.5, y0 + 0.5]) * (1 << shift)).astype(np.int32)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillConvexPoly(mask, local, 1, lineType=cv2.LINE_8, shift=shift)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    a, b = polygon[1] - polygon[0], polygon[2] - polygon[0]
    normal = np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
    norm = float(np.sqrt(normal @ normal))
    if norm < 1e-12:
        return
    normal /= norm
    offset = normal @ polygon[0]
    u = cols + x0 + 0.5
    v = rows + y0 + 0.5
    origin, directions = camera_rays(P2, u, v)
    denominator = directions @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (offset - origin @ normal) / denominator
    z = origin[2] + scale  # directions have z == 1
    valid = np.isfinite(z) & (z >= near)
    rows, cols, z = rows[valid] + y0, cols[valid] + x0, z[valid]
    closer = z < depth[rows, cols]
    rows, cols, z = rows[closer], cols[closer], z[closer]
    depth[rows, cols] = z
    if index_map is not None:
        index_map[rows, cols] = index


def rasterize_box_depth(
    corners: np.ndarray,
    P2: np.ndarray,
    depth: np.ndarray,
    index_map: np.ndarray | None = None,
    index: int = 0,
) -> None:
    """Z-buffer all six faces of a 3D box (8,3 corners, see :mod:`add3d.geometry.boxes`)."""
    for face in BOX_FACES:
        rasterize_polygon_depth(corners[face], P2, depth, index_map=index_map, index=index)
