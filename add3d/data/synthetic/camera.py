"""The synthetic rig: a KITTI-like camera, a Velodyne mounted above it, and the ground under both.

Everything is expressed in KITTI's rectified camera frame ("rect": x right, y down, z forward).
The rig is rigid, so the calibration only changes with the image size and a small per-frame jitter
of the intrinsics; the *road* tilts slightly under the car (slope/roll), which moves the horizon and
makes the ground height in rect coordinates depend on depth, as on real KITTI drives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from add3d.geometry.calib import Calibration

KITTI_WIDTH, KITTI_HEIGHT = 1242, 375
CAMERA_HEIGHT = 1.65  # metres above the ground (KITTI's colour cameras)
LIDAR_OFFSET_RECT = np.array([0.0, -0.08, -0.27])  # Velodyne origin in rect: 8 cm above, 27 cm behind
# Offsets of the four KITTI cameras from cam0 (rect frame, metres): x baseline, tiny y/z offsets.
CAMERA_TRANSLATIONS = {
    "P0": np.array([0.0, 0.0, 0.0]),
    "P1": np.array([-0.537, 0.0, 0.0]),
    "P2": np.array([0.06, -0.0003, 0.0027]),
    "P3": np.array([-0.47, 0.003, 0.0027]),
}
# Focal lengths and principal points of the KITTI drives, at 1242 x 375.
KITTI_INTRINSICS = ((721.54, 609.56, 172.85), (718.34, 607.19, 185.22), (707.05, 604.08, 180.51))


def _rotation(axis: str, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass
class Ground:
    """The plane ``up . p = -height`` in rect, ``up`` the unit normal pointing to the sky.

    ``height`` is the distance of the rect origin (cam0) above the plane.
    """

    up: np.ndarray
    height: float

    def height_above(self, points: np.ndarray) -> np.ndarray:
        """Signed height (metres) of (N,3) rect points above the ground."""
        return np.asarray(points) @ self.up + self.height

    def y_at(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Rect y of the ground under (x, z)."""
        a, b, c = self.up
        return (-self.height - a * np.asarray(x) - c * np.asarray(z)) / b

    def intersect(self, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Ray parameter t of ``origin + t * directions`` on the plane; inf when the ray misses."""
        facing = directions @ self.up
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -(self.height + origin @ self.up) / facing
        return np.where((facing < -1e-9) & (t > 0), t, np.inf)


@dataclass
class Rig:
    calib: Calibration
    width: int
    height: int
    velo_to_rect: np.ndarray  # (3, 4): rect = R @ velo + t
    ground: Ground


def sample_rig_parameters(rng: np.random.Generator) -> dict:
    """Resolution-independent random rig/road parameters (drawn once per frame, in a fixed order)."""
    focal, cu, cv = KITTI_INTRINSICS[int(rng.integers(len(KITTI_INTRINSICS)))]
    return {
        "focal": focal * rng.uniform(0.99, 1.01),
        "cu": cu + rng.uniform(-4, 4),
        "cv": cv + rng.uniform(-4, 4),
        "rect_angles": rng.normal(0.0, 0.004, size=3),  # R0_rect: ~0.2 deg, like KITTI's
        "velo_angles": rng.normal(0.0, 0.003, size=3),
        "road_pitch": np.clip(rng.normal(0.0, np.radians(0.5)), -np.radians(1.2), np.radians(1.2)),
        "road_roll": np.clip(rng.normal(0.0, np.radians(0.4)), -np.radians(1.0), np.radians(1.0)),
        "camera_height": CAMERA_HEIGHT + rng.normal(0.0, 0.03),
    }


def build_rig(params: dict, width: int, height: int) -> Rig:
    """Calibration (all seven KITTI matrices) and ground plane for an image of ``width x height``.

    Intrinsics scale like a resized KITTI image: u with width / 1242, v with height / 375.
    P_i = K [I | t_i], so cam0 is the rect origin and P2 carries KITTI's small baseline offset.
    Tr_velo_to_cam is chosen so that R0_rect @ Tr_velo_to_cam is the usual axis permutation plus
    the Velodyne's offset, i.e. LiDAR points land exactly where the renderer put the surfaces.
    """
    sx, sy = width / KITTI_WIDTH, height / KITTI_HEIGHT
    K = np.array(
        [[params["focal"] * sx, 0.0, params["cu"] * sx], [0.0, params["focal"] * sy, params["cv"] * sy], [0, 0, 1]]
    )
    projections = {name: K @ np.concatenate([np.eye(3), t[:, None]], axis=1) for name, t in CAMERA_TRANSLATIONS.items()}
    ax, ay, az = params["rect_angles"]
    R0 = _rotation("x", ax) @ _rotation("y", ay) @ _rotation("z", az)
    permutation = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # velo (fwd,left,up) -> rect
    vx, vy, vz = params["velo_angles"]
    velo_rotation = _rotation("x", vx) @ _rotation("y", vy) @ _rotation("z", vz) @ permutation
    velo_to_rect = np.concatenate([velo_rotation, LIDAR_OFFSET_RECT[:, None]], axis=1)
    tr_velo_to_cam = R0.T @ velo_to_rect
    tr_imu_to_velo = np.concatenate([np.eye(3), np.array([[-0.81], [0.32], [-0.80]])], axis=1)
    calib = Calibration(
        P0=projections["P0"], P1=projections["P1"], P2=projections["P2"], P3=projections["P3"],
        R0_rect=R0, Tr_velo_to_cam=tr_velo_to_cam, Tr_imu_to_velo=tr_imu_to_velo,
    )
    up = _rotation("x", params["road_pitch"]) @ _rotation("z", params["road_roll"]) @ np.array([0.0, -1.0, 0.0])
    return Rig(calib=calib, width=width, height=height, velo_to_rect=velo_to_rect,
               ground=Ground(up=up, height=params["camera_height"]))
