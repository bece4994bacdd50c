"""KITTI camera calibration: projections between LiDAR, rectified camera and image coordinates.

Conventions (KITTI's):
- rectified camera frame ("rect"): x right, y down, z forward, metres;
- image coordinates: continuous pixels, pixel i covering [i, i+1) (centre i + 0.5), so a horizontal
  flip maps u to ``width - u`` and pixel column i to ``width - 1 - i``;
- ``depth`` means the rect-frame z of a point.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from add3d.errors import Add3dError
from add3d.geometry.tensor_geometry import (
    alpha_to_rotation_y,
    back_project,
    column_ray_angle,
    rotation_y_to_alpha,
    wrap_angle,
)


def _to_hom(points: np.ndarray) -> np.ndarray:
    """(N,3) points -> (N,4) float64 [x, y, z, 1], in one allocation; (N,4) float64 ones pass as they are."""
    if points.shape[1] == 4 and points.dtype == np.float64:
        return points
    out = np.empty((points.shape[0], 4), dtype=np.float64)
    out[:, :3] = points[:, :3]
    out[:, 3] = 1.0
    return out


def _pad4(matrix: np.ndarray) -> np.ndarray:
    out = np.eye(4, dtype=np.float64)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def _row(values: np.ndarray | float) -> torch.Tensor:
    """numpy values / floats -> a 1 x N float64 tensor (a batch of one camera)."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(1, -1))


def _numpy_like(result: torch.Tensor, like: np.ndarray | float) -> np.ndarray | float:
    array = result.numpy().reshape(np.shape(like))
    return array if array.ndim else float(array)


def normalize_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi): numpy front of :func:`tensor_geometry.wrap_angle`."""
    return _numpy_like(wrap_angle(_row(angle)), angle)


@dataclass
class Calibration:
    """The matrices of a KITTI ``calib/*.txt`` file, as float64 arrays.

    ``P`` holds P0..P3 (3x4 each); the detectors use ``P2`` (left colour camera).
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray = field(default_factory=lambda: np.eye(3))
    Tr_velo_to_cam: np.ndarray = field(default_factory=lambda: np.eye(3, 4))
    Tr_imu_to_velo: np.ndarray = field(default_factory=lambda: np.eye(3, 4))

    def __post_init__(self) -> None:
        for name, shape in self.SHAPES.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise Add3dError(f"calibration matrix {name} must be {shape}, got {value.shape}")
            setattr(self, name, value)

    SHAPES = {
        "P0": (3, 4),
        "P1": (3, 4),
        "P2": (3, 4),
        "P3": (3, 4),
        "R0_rect": (3, 3),
        "Tr_velo_to_cam": (3, 4),
        "Tr_imu_to_velo": (3, 4),
    }

    @classmethod
    def from_P2(cls, P2: np.ndarray) -> "Calibration":
        """A calibration for a user's own camera: only the projection matrix is known."""
        P2 = np.asarray(P2, dtype=np.float64).reshape(3, 4)
        return cls(P0=P2.copy(), P1=P2.copy(), P2=P2, P3=P2.copy())

    # ----- intrinsics of P2 -------------------------------------------------------------------
    @property
    def fu(self) -> float:
        return float(self.P2[0, 0])

    @property
    def fv(self) -> float:
        return float(self.P2[1, 1])

    @property
    def cu(self) -> float:
        return float(self.P2[0, 2])

    @property
    def cv(self) -> float:
        return float(self.P2[1, 2])

    def singular_matrices(self) -> list[str]:
        """Names of matrices that cannot be inverted (the projection needs their inverses)."""
        bad = []
        checks = {
            "P2": self.P2[:, :3],
            "R0_rect": self.R0_rect,
            "Tr_velo_to_cam": self.Tr_velo_to_cam[:, :3],
        }
        for name, matrix in checks.items():
            if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-9 * max(
                1.0, float(np.abs(matrix).max()) ** 3
            ):
                bad.append(name)
        return bad

    # ----- LiDAR <-> rect -----------------------------------------------------------------------
    def velo_to_rect(self, points: np.ndarray, homogeneous: bool = False) -> np.ndarray:
        """(N,3) LiDAR points (extra columns ignored) -> (N,3) rect-frame points, or (N,4) with
        ``homogeneous`` (the last column exactly 1: the transform's last row is [0, 0, 0, 1])."""
        transform = _pad4(self.R0_rect) @ _pad4(self.Tr_velo_to_cam)
        rect = _to_hom(points[:, :3]) @ transform.T
        return rect if homogeneous else rect[:, :3]

    def rect_to_velo(self, points: np.ndarray) -> np.ndarray:
        transform = np.linalg.inv(_pad4(self.R0_rect) @ _pad4(self.Tr_velo_to_cam))
        return (_to_hom(np.asarray(points)) @ transform.T)[:, :3]

    # ----- rect <-> image -----------------------------------------------------------------------
    def rect_to_image(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) rect points (or homogeneous (N,4), last column 1) -> ((N,2) pixels, (N,) depth = rect z)."""
        points = np.asarray(points)
        projected = _to_hom(points) @ self.P2.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = projected[:, :2] / projected[:, 2:3]
        return uv, np.array(points[:, 2], dtype=np.float64)

    def velo_to_image(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.rect_to_image(self.velo_to_rect(points))

    def image_to_rect(self, u: np.ndarray, v: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Back-project pixels with their rect-frame depth to (N,3) rect points (exact for any P2,
        including KITTI's baseline column): numpy front of :func:`tensor_geometry.back_project`."""
        u, v, depth = (torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(1, -1)) for a in (u, v, depth))
        return back_project(torch.from_numpy(self.P2)[None], u, v, depth)[0].numpy()

    # ----- angles -------------------------------------------------------------------------------
    def alpha_to_ry(self, alpha: np.ndarray | float, u: np.ndarray | float) -> np.ndarray | float:
        """Observation angle + pixel column of the object's centre -> global yaw rotation_y."""
        return _numpy_like(alpha_to_rotation_y(_row(alpha), self._column_ray_angle(u)), alpha)

    def ry_to_alpha(self, ry: np.ndarray | float, u: np.ndarray | float) -> np.ndarray | float:
        return _numpy_like(rotation_y_to_alpha(_row(ry), self._column_ray_angle(u)), ry)

    def _column_ray_angle(self, u: np.ndarray | float) -> torch.Tensor:
        return column_ray_angle(_row(u), torch.from_numpy(self.P2)[None])

    # ----- image-space transforms -----------------------------------------------------------------
    def flipped(self, image_width: float) -> "Calibration":
        """Calibration of the horizontally flipped image (u -> width - u) for rect points (-x, y, z).

        Only P2 is meaningful afterwards: a mirror is not a rotation, so the LiDAR chain of a
        flipped frame is not representable; flip depth maps in image space instead.
        """
        # u' w = W w - u w with w the third row; then substitute x = -x'.
        P = self.P2
        P2 = P.copy()
        P2[0] = image_width * P[2] - P[0]
        P2[:, 0] = -P2[:, 0]
        return replace(self, P2=P2)

    def affine_transformed(self, affine: np.ndarray) -> "Calibration":
        """Calibration of an image warped by the 2x3 pixel ``affine`` (crop, resize, shift).

        ``[u', v', 1] = A [u, v, 1]`` holds in homogeneous form too, so P2' = A3 @ P2 exactly.
        """
        affine = np.asarray(affine, dtype=np.float64)
        A3 = np.eye(3)
        A3[:2, :] = affine.reshape(2, 3)
        return replace(self, P2=A3 @ self.P2)
