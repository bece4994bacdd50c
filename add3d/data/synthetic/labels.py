"""KITTI labels computed from the rendered geometry, the way KITTI's annotators defined them.

- 2D box: the extent of the object's *visible* pixels (their centres), clipped to the image;
- truncation: the fraction of the full projected 3D box's 2D area that lies outside the image;
- occlusion: from the visible fraction of the object's silhouette inside the image
  (0: >= 90 %, 1: >= 40 %, 2: >= 10 %; objects less visible than that are not labelled, as in KITTI);
- alpha = rotation_y - atan2(x, z) of the bottom centre, dims / location / rotation_y exact.
Far road users (scene objects flagged ``dont_care``) become ``DontCare`` regions.
"""

from __future__ import annotations

import cv2
import numpy as np

from add3d.data.kitti import Object3D
from add3d.data.synthetic.camera import Rig
from add3d.data.synthetic.render import RenderedFrame
from add3d.data.synthetic.scene import Scene
from add3d.geometry.boxes import box3d_corners, project_boxes_to_2d
from add3d.geometry.calib import normalize_angle

OCCLUSION_LEVELS = (0.90, 0.40, 0.10)  # minimum visible fraction of levels 0, 1, 2
MIN_VISIBLE_PIXELS = 4
MAX_TRUNCATION = 0.9


def silhouette_pixels(scene: Scene, rig: Rig, owner: int) -> int:
    """Pixels inside the image that the object would cover with nothing in front of it."""
    parts = scene.parts
    mine = np.nonzero(parts.owner == owner)[0]
    corners = box3d_corners(parts.dims[mine], parts.location[mine], parts.rotation_y[mine])
    projected = np.concatenate([corners.reshape(-1, 3), np.ones((corners.size // 3, 1))], axis=1) @ rig.calib.P2.T
    uv = (projected[:, :2] / projected[:, 2:3]).reshape(-1, 8, 2)
    x0, y0 = np.floor(uv.reshape(-1, 2).min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.reshape(-1, 2).max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, rig.width - 1), min(y1, rig.height - 1)
    if x1 < x0 or y1 < y0:
        return 0
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    for polygon in uv:  # same pixel-centre rule as the rasteriser
        local = np.round((polygon - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(local), 1, lineType=cv2.LINE_8, shift=4)
    return int(mask.sum())


def occlusion_level(visible_fraction: float) -> int | None:
    for level, minimum in enumerate(OCCLUSION_LEVELS):
        if visible_fraction >= minimum:
            return level
    return None


def make_labels(scene: Scene, rig: Rig, frame: RenderedFrame) -> tuple[list[Object3D], list[dict]]:
    """Label lines of a rendered scene, and per-object facts (visible fraction, pixel counts)."""
    labels: list[Object3D] = []
    facts: list[dict] = []
    counts = np.bincount(frame.object_map.reshape(-1) + 1, minlength=len(scene.objects) + 1)[1:]
    for index, obj in enumerate(scene.objects):
        visible = int(counts[index])
        if visible < MIN_VISIBLE_PIXELS:
            continue
        rows, cols = np.nonzero(frame.object_map == index)
        # Centres of the extreme pixels: the rasteriser (cv2 fill) also covers pixels whose centre lies
        # up to about half a pixel outside a polygon, so centres, not pixel edges, are unbiased.
        box2d = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64) + 0.5
        box2d[[0, 2]] = np.clip(box2d[[0, 2]], 0, rig.width - 1)
        box2d[[1, 3]] = np.clip(box2d[[1, 3]], 0, rig.height - 1)
        if obj.dont_care:
            labels.append(Object3D("DontCare", -1.0, -1, -10.0, box2d, (-1, -1, -1), (-1000, -1000, -1000), -10.0))
            facts.append({"index": index, "visible_fraction": None, "visible_pixels": visible})
            continue
        corners = box3d_corners(obj.dims, obj.location, obj.rotation_y)
        full = project_boxes_to_2d(corners, rig.calib.P2)[0]
        full_area = max((full[2] - full[0]) * (full[3] - full[1]), 1e-9)
        inside = np.clip(full, [0, 0, 0, 0], [rig.width, rig.height, rig.width, rig.height])
        truncation = float(np.clip(1.0 - (inside[2] - inside[0]) * (inside[3] - inside[1]) / full_area, 0.0, 1.0))
        visible_fraction = min(1.0, visible / max(silhouette_pixels(scene, rig, index), 1))
        level = occlusion_level(visible_fraction)
        if level is None or truncation > MAX_TRUNCATION:
            continue
        x, _, z = obj.location
        labels.append(
            Object3D(
                cls_type=obj.cls_type,
                truncation=truncation,
                occlusion=level,
                alpha=float(normalize_angle(obj.rotation_y - np.arctan2(x, z))),
                box2d=box2d,
                dims=obj.dims,
                location=obj.location,
                rotation_y=float(normalize_angle(obj.rotation_y)),
            )
        )
        facts.append({"index": index, "visible_fraction": visible_fraction, "visible_pixels": visible})
    return labels, facts
