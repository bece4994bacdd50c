"""A simulated 64-beam Velodyne scan, ray-cast analytically against the ground and every box.

Beams: 64 elevations evenly from +2.0 to -24.9 degrees (the HDL-64E's field of view). Azimuth:
columns every ``azimuth_step`` degrees over +-``half_fov`` degrees around the forward axis only
(0.16 and 41 by default: 513 columns, about the camera's horizontal field of view);
KITTI's detectors use the points inside the camera frustum, so the rest of the 360-degree sweep is
not simulated. Returns beyond 120 m are dropped; ranges get 1.5 cm Gaussian noise and ~2 % of the
returns are lost. Intersections use the slab method in each box's own frame, and each box only
tests the columns inside its azimuth interval, which keeps a frame at a few milliseconds.
"""

from __future__ import annotations

import numpy as np

from add3d.data.synthetic import scene as S
from add3d.data.synthetic.camera import Rig
from add3d.geometry.boxes import box3d_corners

ELEVATIONS_DEG = np.linspace(2.0, -24.9, 64)
MAX_RANGE = 120.0
RANGE_NOISE = 0.015
DROPOUT = 0.02
# Diffuse reflectance per part kind (ground materials are set in ``_ground_reflectance``).
REFLECTANCE = {
    S.CAR_BODY: 0.45, S.CAR_CABIN: 0.15, S.PED_LEGS: 0.3, S.PED_TORSO: 0.35, S.PED_HEAD: 0.3, S.BIKE: 0.4,
    S.BUILDING: 0.3, S.POLE: 0.6, S.CLUTTER: 0.4, S.TREE: 0.2,
}


def _slab(origin: np.ndarray, directions: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance (inf for a miss) and entry axis of rays against an axis-aligned box at 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions
        t1 = (-half - origin) * inverse
        t2 = (half - origin) * inverse
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.where(np.isnan(near), -np.inf, near)
    far = np.where(np.isnan(far), np.inf, far)
    entry, leave = near.max(axis=1), far.min(axis=1)
    hit = (entry <= leave) & (entry > 0)
    return np.where(hit, entry, np.inf), near.argmax(axis=1)


def _azimuth_columns(corner_azimuths: np.ndarray, azimuths: np.ndarray) -> tuple[int, int] | None:
    """Column range [lo, hi) that can hit a box: its horizontal outline spans the corners' azimuths."""
    lo = max(int(np.searchsorted(azimuths, corner_azimuths.min(), side="left")) - 1, 0)
    hi = min(int(np.searchsorted(azimuths, corner_azimuths.max(), side="right")) + 1, len(azimuths))
    return (lo, hi) if hi > lo else None


def _beam_rows(velo_corners: np.ndarray, nearest: float, elevations: np.ndarray) -> tuple[int, int] | None:
    """Beam range [r0, r1) (elevations descend with the row) that can hit a box.

    The steepest elevations over a box are reached at its lowest / highest z and either the
    nearest horizontal distance to its footprint or the farthest corner, depending on the sign of z.
    """
    z_low, z_high = velo_corners[:, 2].min(), velo_corners[:, 2].max()
    farthest = np.hypot(velo_corners[:, 0], velo_corners[:, 1]).max()
    nearest = max(nearest, 1e-3)
    top = np.arctan2(z_high, nearest if z_high > 0 else farthest)
    bottom = np.arctan2(z_low, nearest if z_low < 0 else farthest)
    margin = np.radians(0.5)  # the Velodyne is slightly tilted against the box axes
    rows = np.nonzero((elevations <= top + margin) & (elevations >= bottom - margin))[0]
    return (int(rows[0]), int(rows[-1]) + 1) if rows.size else None


def scan(scene: S.Scene, rig: Rig, rng: np.random.Generator, azimuth_step: float = 0.16,
         half_fov: float = 41.0, cull: bool = True) -> np.ndarray:
    """(N, 4) float32 Velodyne points (x forward, y left, z up; reflectance in [0, 1]).

    ``cull=False`` tests every ray against every box (slow; the tests compare it with the culled scan).
    """
    azimuths = np.radians(np.arange(-half_fov, half_fov + 1e-9, azimuth_step))
    elevations = np.radians(ELEVATIONS_DEG)
    el, az = np.meshgrid(elevations, azimuths, indexing="ij")  # (64, columns)
    velo_dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
    rotation, origin = rig.velo_to_rect[:, :3], rig.velo_to_rect[:, 3]
    rect_dirs = velo_dirs @ rotation.T  # (64, C, 3)
    flat_dirs = rect_dirs.reshape(-1, 3)
    ground = scene.ground
    best = ground.intersect(origin, flat_dirs).reshape(el.shape)
    cos_incidence = np.abs(flat_dirs @ ground.up).reshape(el.shape)
    albedo = np.full(el.shape, -1.0)  # -1: ground, filled below

    parts = scene.parts
    if len(parts):
        corners = box3d_corners(parts.dims, parts.location, parts.rotation_y)  # rect
        velo_corners = (corners - origin) @ rotation  # rect -> velo (rotation is orthonormal)
        corner_az = np.arctan2(velo_corners[..., 1], velo_corners[..., 0])
        centres = parts.location - np.stack([np.zeros(len(parts)), parts.dims[:, 0] / 2, np.zeros(len(parts))], 1)
        for index in range(len(parts)):
            if np.all(velo_corners[index, :, 0] <= 0.1):
                continue  # behind the sensor
            c, s = np.cos(parts.rotation_y[index]), np.sin(parts.rotation_y[index])
            to_local = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # inverse of rotation_y
            h, w, l = parts.dims[index]
            start = to_local @ (origin - centres[index])
            # Horizontal distance to the footprint bounds the elevations the box can cover.
            nearest = np.hypot(max(abs(start[0]) - l / 2, 0.0), max(abs(start[2]) - w / 2, 0.0))
            if nearest > MAX_RANGE:
                continue
            rows = _beam_rows(velo_corners[index], nearest, elevations) if cull else (0, len(elevations))
            columns = _azimuth_columns(corner_az[index], azimuths) if cull else (0, len(azimuths))
            if rows is None or columns is None:
                continue
            (r0, r1), (lo, hi) = rows, columns
            shape = (r1 - r0, hi - lo)
            dirs = rect_dirs[r0:r1, lo:hi].reshape(-1, 3) @ to_local.T
            t, axis = _slab(start, dirs, np.array([l / 2, h / 2, w / 2]))
            t, axis = t.reshape(shape), axis.reshape(shape)
            window = best[r0:r1, lo:hi]
            closer = t < window
            if not closer.any():
                continue
            window[closer] = t[closer]
            unit = dirs.reshape(*shape, 3)
            cos_incidence[r0:r1, lo:hi][closer] = np.abs(np.take_along_axis(unit, axis[..., None], axis=2)[..., 0])[closer]
            albedo[r0:r1, lo:hi][closer] = REFLECTANCE.get(int(parts.kind[index]), 0.3) * (0.8 + 0.4 * rng.random())

    keep = np.isfinite(best) & (best <= MAX_RANGE) & (rng.random(best.shape) >= DROPOUT)
    ranges = best[keep] + rng.normal(0.0, RANGE_NOISE, size=int(keep.sum()))
    points = velo_dirs[keep] * ranges[:, None]
    ground_hit = albedo[keep] < 0
    reflectance = np.where(ground_hit, _ground_reflectance(scene, points, rig), albedo[keep])
    reflectance = np.clip(reflectance * (0.5 + 0.5 * cos_incidence[keep]) + rng.normal(0, 0.02, len(ranges)), 0, 1)
    return np.concatenate([points, reflectance[:, None]], axis=1).astype(np.float32)


def _ground_reflectance(scene: S.Scene, velo_points: np.ndarray, rig: Rig) -> np.ndarray:
    """Asphalt is dark to the laser, lane paint bright, sidewalk and verge in between."""
    rect = velo_points @ rig.velo_to_rect[:, :3].T + rig.velo_to_rect[:, 3]
    c, s = np.cos(scene.road["yaw"]), np.sin(scene.road["yaw"])
    lateral = np.abs((rect[:, 0] - scene.road["offset"]) * c - rect[:, 2] * s)
    half = scene.road["half_width"]
    value = np.where(lateral < half, 0.12, np.where(lateral < half + scene.road["sidewalk"], 0.25, 0.35))
    return np.where((lateral > half - 0.4) & (lateral < half - 0.25), 0.8, value)
