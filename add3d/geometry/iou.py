"""Rotated bird's-eye-view and 3D IoU of KITTI boxes, in float64 on the CPU.

Box parameterisation (all functions here): rows of ``(x, y, z, h, w, l, ry)`` in the rectified camera
frame (x right, y down, z forward, metres) exactly as in a KITTI label line: ``(x, y, z)`` is the
*bottom* centre of the box, ``h`` its height along -y, ``w`` its width, ``l`` its length and ``ry`` the
yaw about the camera y axis (``ry = 0``: length along +x).

Geometry follows the official devkit (``evaluate_object.cpp``): the BEV footprint is the rectangle in
the (x, z) plane with corners ``R(ry) @ (±l/2, ±w/2) + (x, z)``, ``R = [[cos, sin], [-sin, cos]]``;
3D overlap is the BEV intersection times the overlap of the vertical extents ``[y - h, y]``.

The intersection of two convex quadrilaterals is computed by Sutherland-Hodgman clipping, batched
over pairs with numpy. Unlike angle-sorting GPU ports it needs no tie-breaking: a vertex lying
exactly on a clipping edge (identical or touching boxes) counts as inside, so identical boxes give an
IoU of exactly 1 up to rounding, never a spurious 0.
"""

from __future__ import annotations

import numpy as np

BOX_COLUMNS = ("x", "y", "z", "h", "w", "l", "ry")


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise ValueError(f"boxes must be (N, 7) rows of (x, y, z, h, w, l, ry), got shape {boxes.shape}")
    return boxes


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 4, 2) BEV footprint corners in the (x, z) plane, in the devkit's order."""
    boxes = _as_boxes(boxes)
    half_l, half_w = boxes[:, 5] / 2, boxes[:, 4] / 2
    local_x = np.stack([half_l, half_l, -half_l, -half_l], axis=1)  # (N, 4)
    local_z = np.stack([half_w, -half_w, -half_w, half_w], axis=1)
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = cos * local_x + sin * local_z + boxes[:, 0:1]
    z = -sin * local_x + cos * local_z + boxes[:, 2:3]
    return np.stack([x, z], axis=2)


def _cross(origin: np.ndarray, direction: np.ndarray, points: np.ndarray) -> np.ndarray:
    """z of direction x (points - origin); origin/direction (P, 2), points (P, M, 2) -> (P, M)."""
    rel = points - origin[:, None, :]
    return direction[:, None, 0] * rel[..., 1] - direction[:, None, 1] * rel[..., 0]


def polygon_area(points: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Absolute shoelace area of batched polygons: points (P, M, 2), first ``counts`` (P,) valid."""
    num, size = points.shape[:2]
    if num == 0:
        return np.zeros(0)
    index = np.arange(size)[None, :]
    following = np.where(index + 1 < counts[:, None], index + 1, 0)
    nxt = np.take_along_axis(points, following[..., None], axis=1)
    terms = points[..., 0] * nxt[..., 1] - nxt[..., 0] * points[..., 1]
    terms = np.where(index < counts[:, None], terms, 0.0)
    return np.abs(terms.sum(axis=1)) / 2


def convex_intersection_area(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection area of paired convex polygons (P, 4, 2) and (P, 4, 2) -> (P,).

    Sutherland-Hodgman: the subject polygon is clipped by each edge of the clip polygon in turn.
    Each clip edge can add at most one vertex, so the working polygon never exceeds 8 vertices.
    Either vertex orientation is accepted (the inside test follows the clip polygon's winding).
    """
    subject = np.asarray(subject, dtype=np.float64)
    clip = np.asarray(clip, dtype=np.float64)
    num, edges = clip.shape[0], clip.shape[1]
    if num == 0:
        return np.zeros(0)
    winding = np.sign(polygon_signed_area(clip))
    winding[winding == 0] = 1.0  # degenerate clip polygon: intersection area is 0 either way
    points, counts = subject, np.full(num, subject.shape[1])
    for edge in range(edges):
        origin = clip[:, edge]
        direction = clip[:, (edge + 1) % edges] - origin
        size = points.shape[1]
        index = np.arange(size)[None, :]
        valid = index < counts[:, None]
        following = np.where(index + 1 < counts[:, None], index + 1, 0)
        side = _cross(origin, direction, points) * winding[:, None]  # >= 0: inside or on the edge
        side_next = np.take_along_axis(side, following, axis=1)
        nxt = np.take_along_axis(points, following[..., None], axis=1)
        inside, inside_next = side >= 0, side_next >= 0
        keep = valid & inside
        crossing = valid & (inside != inside_next)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(crossing, side / (side - side_next), 0.0)
        crossing_point = points + t[..., None] * (nxt - points)
        # Interleave (vertex, crossing point) per input vertex, then compact the kept ones to the left.
        candidates = np.stack([points, crossing_point], axis=2).reshape(num, 2 * size, 2)
        kept = np.stack([keep, crossing], axis=2).reshape(num, 2 * size)
        target = np.cumsum(kept, axis=1) - 1
        counts = kept.sum(axis=1)
        # A convex polygon gains at most one vertex per clip; size by the data to stay safe when
        # rounding makes a nearly degenerate polygon slightly non-convex.
        out = np.zeros((num, max(int(counts.max()), 1), 2))
        sel_rows, sel_cols = np.nonzero(kept)
        out[sel_rows, target[sel_rows, sel_cols]] = candidates[sel_rows, sel_cols]
        points = out
    area = polygon_area(points, counts)
    return np.where(counts >= 3, area, 0.0)


def polygon_signed_area(points: np.ndarray) -> np.ndarray:
    """Signed shoelace area of batched closed polygons (P, M, 2) -> (P,), positive if counter-clockwise."""
    nxt = np.roll(points, -1, axis=1)
    return (points[..., 0] * nxt[..., 1] - nxt[..., 0] * points[..., 1]).sum(axis=1) / 2


def _may_overlap(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Cheap conservative test on paired boxes: bounding circles of the footprints intersect."""
    radius_a = np.hypot(boxes_a[:, 4], boxes_a[:, 5]) / 2
    radius_b = np.hypot(boxes_b[:, 4], boxes_b[:, 5]) / 2
    distance_sq = (boxes_a[:, 0] - boxes_b[:, 0]) ** 2 + (boxes_a[:, 2] - boxes_b[:, 2]) ** 2
    reach = (radius_a + radius_b) * (1 + 1e-9) + 1e-9
    return distance_sq <= reach * reach


def bev_intersection_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """BEV footprint intersection area of paired boxes (P, 7) and (P, 7) -> (P,), square metres."""
    boxes_a, boxes_b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    if boxes_a.shape != boxes_b.shape:
        raise ValueError(f"paired boxes need equal shapes, got {boxes_a.shape} and {boxes_b.shape}")
    area = np.zeros(len(boxes_a))
    near = np.flatnonzero(_may_overlap(boxes_a, boxes_b))
    if len(near):
        area[near] = convex_intersection_area(bev_corners(boxes_a[near]), bev_corners(boxes_b[near]))
    return area


def height_overlap_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Overlap (P,) of the vertical extents [y - h, y] of paired boxes, 0 when disjoint."""
    top = np.maximum(boxes_a[:, 1] - boxes_a[:, 3], boxes_b[:, 1] - boxes_b[:, 3])
    bottom = np.minimum(boxes_a[:, 1], boxes_b[:, 1])
    return np.maximum(bottom - top, 0.0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is not positive (degenerate boxes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, 0.0)


def bev_iou_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: str = "union") -> np.ndarray:
    """BEV overlap of paired boxes (P, 7), (P, 7) -> (P,).

    ``criterion="union"`` gives the IoU; ``"a"`` gives intersection / area of ``boxes_a`` (the devkit's
    measure for a detection inside a DontCare region).
    """
    boxes_a, boxes_b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    inter = bev_intersection_pairs(boxes_a, boxes_b)
    area_a = boxes_a[:, 4] * boxes_a[:, 5]
    if criterion == "a":
        return _ratio(inter, area_a)
    if criterion != "union":
        raise ValueError(f"criterion must be 'union' or 'a', got {criterion!r}")
    return _ratio(inter, area_a + boxes_b[:, 4] * boxes_b[:, 5] - inter)


def iou_3d_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray, criterion: str = "union") -> np.ndarray:
    """3D overlap of paired boxes (P, 7), (P, 7) -> (P,); ``criterion`` as in :func:`bev_iou_pairs`."""
    boxes_a, boxes_b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    inter = bev_intersection_pairs(boxes_a, boxes_b) * height_overlap_pairs(boxes_a, boxes_b)
    volume_a = boxes_a[:, 3] * boxes_a[:, 4] * boxes_a[:, 5]
    if criterion == "a":
        return _ratio(inter, volume_a)
    if criterion != "union":
        raise ValueError(f"criterion must be 'union' or 'a', got {criterion!r}")
    return _ratio(inter, volume_a + boxes_b[:, 3] * boxes_b[:, 4] * boxes_b[:, 5] - inter)


def _all_pairs(boxes_a: np.ndarray, boxes_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes_a, boxes_b = _as_boxes(boxes_a), _as_boxes(boxes_b)
    return np.repeat(boxes_a, len(boxes_b), axis=0), np.tile(boxes_b, (len(boxes_a), 1))


def bev_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise rotated BEV IoU of (N, 7) and (M, 7) KITTI boxes -> (N, M), float64."""
    pairs_a, pairs_b = _all_pairs(boxes_a, boxes_b)
    return bev_iou_pairs(pairs_a, pairs_b).reshape(len(boxes_a), len(boxes_b))


def iou_3d(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise 3D IoU of (N, 7) and (M, 7) KITTI boxes -> (N, M), float64."""
    pairs_a, pairs_b = _all_pairs(boxes_a, boxes_b)
    return iou_3d_pairs(pairs_a, pairs_b).reshape(len(boxes_a), len(boxes_b))
