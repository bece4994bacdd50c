"""3D boxes in KITTI's convention and their projection into the image.

A box is (h, w, l) with its *bottom* centre at ``location`` in the rectified camera frame (y down)
and a yaw ``rotation_y`` about the camera y axis; ``ry = 0`` points the length along +x.
Corner order (used by MonoFlex keypoints too): 0-3 the bottom face, 4-7 the top face, both
counter-clockwise seen from above starting at (+l/2, +w/2):
(+l,+w) (+l,-w) (-l,-w) (-l,+w) in the object frame, halved.
"""

from __future__ import annotations

import numpy as np

# Faces as corner indices, each ordered consistently (used for rasterising box surfaces).
BOX_FACES = np.array(
    [
        [0, 1, 2, 3],  # bottom
        [4, 5, 6, 7],  # top
        [0, 1, 5, 4],  # front (+x in the object frame)
        [2, 3, 7, 6],  # back
        [1, 2, 6, 5],  # right (-z side in the object frame)
        [3, 0, 4, 7],  # left
    ]
)
BOX_EDGES = np.array(
    [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]]
)


def rotation_y_matrix(ry: np.ndarray) -> np.ndarray:
    """(N,) yaw angles -> (N,3,3) rotations about the camera y axis."""
    ry = np.asarray(ry, dtype=np.float64).reshape(-1)
    c, s = np.cos(ry), np.sin(ry)
    zeros, ones = np.zeros_like(ry), np.ones_like(ry)
    return np.stack([c, zeros, s, zeros, ones, zeros, -s, zeros, c], axis=1).reshape(-1, 3, 3)


def box3d_corners(dims: np.ndarray, location: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Corners of boxes: dims (N,3) as (h,w,l), location (N,3) bottom centre, ry (N,) -> (N,8,3)."""
    dims = np.asarray(dims, dtype=np.float64).reshape(-1, 3)
    location = np.asarray(location, dtype=np.float64).reshape(-1, 3)
    h, w, l = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) / 2
    sz = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64) / 2
    sy = np.array([0, 0, 0, 0, -1, -1, -1, -1], dtype=np.float64)
    local = np.stack([l * sx, h * sy, w * sz], axis=2)  # (N, 8, 3)
    rotated = np.einsum("nij,nkj->nki", rotation_y_matrix(ry), local)
    return rotated + location[:, None, :]


def objects_corners(objects) -> np.ndarray:
    """(N,8,3) corners of a list of :class:`add3d.data.kitti.Object3D`."""
    if not objects:
        return np.zeros((0, 8, 3))
    return box3d_corners(
        np.stack([o.dims for o in objects]),
        np.stack([o.location for o in objects]),
        np.array([o.rotation_y for o in objects]),
    )


def clip_polygon_near(points: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a 3D polygon against the plane z = near (keep z >= near)."""
    out = []
    n = len(points)
    for i in range(n):
        current, following = points[i], points[(i + 1) % n]
        inside_c, inside_f = current[2] >= near, following[2] >= near
        if inside_c:
            out.append(current)
        if inside_c != inside_f:
            t = (near - current[2]) / (following[2] - current[2])
            out.append(current + t * (following - current))
    return np.array(out).reshape(-1, 3)


def project_boxes_to_2d(
    corners: np.ndarray, P2: np.ndarray, image_size: tuple[int, int] | None = None, near: float = 0.1
) -> np.ndarray:
    """2D boxes (N,4) enclosing the projections of 3D boxes (N,8,3).

    Faces reaching behind the camera are clipped at ``z = near`` first, so boxes that straddle the
    image plane still get the right extent. With ``image_size=(width, height)`` the result is clipped
    to the image (as KITTI's labels are). Boxes entirely behind the camera give NaN.
    """
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    boxes = np.full((corners.shape[0], 4), np.nan)
    for i, box in enumerate(corners):
        if np.all(box[:, 2] >= near):
            points = box
        else:
            clipped = [clip_polygon_near(box[face], near) for face in BOX_FACES]
            clipped = [c for c in clipped if len(c)]
            if not clipped:
                continue
            points = np.concatenate(clipped)
        projected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ P2.T
        uv = projected[:, :2] / projected[:, 2:3]
        boxes[i] = [uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()]
    if image_size is not None:
        width, height = image_size
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width - 1)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height - 1)
    return boxes


def box2d_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of axis-aligned boxes (N,4) x (M,4) -> (N,M), float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)
