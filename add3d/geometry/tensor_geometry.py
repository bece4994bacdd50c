"""Batched torch camera geometry shared by the detectors and ADD's adapters.

One implementation each of: feature-map cells <-> flat indices and sampling a map at cells,
back-projection of pixels with a known depth, the viewing angle of a ray, alpha <-> rotation_y and
angle wrapping. Everything is vectorised over a leading batch dimension B (one camera ``P2`` of
shape B x 3 x 4 per image) and runs on whatever device its inputs live on. Conventions are KITTI's
(see :mod:`add3d.geometry.calib`): rect frame x right, y down, z forward; pixel i covers [i, i+1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


# ----- feature-map cells -------------------------------------------------------------------------
def cell_xy(indices: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Flat cell indices ``y * width + x`` -> integer (x, y), same shape and dtype as ``indices``."""
    return indices % width, torch.div(indices, width, rounding_mode="floor")


def gather_at_indices(feature_map: Tensor, indices: Tensor) -> Tensor:
    """A ``B x C x h x w`` map sampled at flat cell indices ``B x K`` (y * w + x) -> ``B x K x C``.

    Indices are clamped into the map, so padded object slots (index 0 or garbage) stay valid.
    """
    batch, channels = feature_map.shape[:2]
    flat = feature_map.reshape(batch, channels, -1)
    index = indices.long().clamp(0, flat.shape[2] - 1).unsqueeze(1).expand(batch, channels, indices.shape[1])
    return flat.gather(2, index).transpose(1, 2)


def roi_rows(boxes: Tensor, mask: Tensor | None = None) -> Tensor:
    """torchvision ``roi_align``'s ``n x 5`` rows (batch index, x1, y1, x2, y2) from ``B x K x 4`` boxes,
    in the boxes' dtype: the slots where ``mask`` is true, or every slot when it is None (no
    data-dependent shape, so the graph exports)."""
    batch, slots = boxes.shape[:2]
    index = torch.arange(batch, device=boxes.device)[:, None].expand(batch, slots).to(boxes.dtype)
    rows = torch.cat([index[..., None], boxes], dim=-1)
    return rows.flatten(0, 1) if mask is None else rows[mask]


# ----- back-projection ---------------------------------------------------------------------------
def inverse_3x3(matrix: Tensor) -> Tensor:
    """Inverse of ``... x 3 x 3`` matrices by the adjugate (cofactors / determinant).

    Closed form instead of ``torch.linalg.inv`` so that graphs using it export to ONNX, which has no
    matrix-inverse operator (GUPNet's ROI heads back-project inside the network). Singular
    matrices give inf / nan, as a division by a zero determinant.
    """
    a, b, c = matrix[..., 0, 0], matrix[..., 0, 1], matrix[..., 0, 2]
    d, e, f = matrix[..., 1, 0], matrix[..., 1, 1], matrix[..., 1, 2]
    g, h, i = matrix[..., 2, 0], matrix[..., 2, 1], matrix[..., 2, 2]
    cofactor_a, cofactor_b, cofactor_c = e * i - f * h, f * g - d * i, d * h - e * g
    determinant = a * cofactor_a + b * cofactor_b + c * cofactor_c
    adjugate = torch.stack(
        [
            torch.stack([cofactor_a, c * h - b * i, b * f - c * e], dim=-1),
            torch.stack([cofactor_b, a * i - c * g, c * d - a * f], dim=-1),
            torch.stack([cofactor_c, b * g - a * h, a * e - b * d], dim=-1),
        ],
        dim=-2,
    )
    return adjugate / determinant[..., None, None]


def back_project(P2: Tensor, u: Tensor, v: Tensor, depth: Tensor) -> Tensor:
    """Rect-frame points seen at pixels (u, v) with rect z = ``depth``: ``B x ... x 3``.

    ``P2``: B x 3 x 4. ``u`` and ``v`` (B x ...) share a shape; ``depth`` broadcasts against them
    (e.g. u, v: B x N x 1 and depth: D -> B x N x D points on each pixel's ray). Exact for any
    P2 = [M | t] including KITTI's non-zero fourth column (unlike the ``(u - cu) z / fu`` shortcut):
    ``M X + t = w (u, v, 1)`` gives ``X = w M^-1 p - M^-1 t`` and the known z fixes
    ``w = (z + (M^-1 t)_z) / (M^-1 p)_z``. Computed in float64 (autocast off); returned in the
    dtype of ``depth``.
    """
    dtype = depth.dtype
    with torch.autocast(device_type=P2.device.type, enabled=False):  # AMP would run einsum in fp16
        P2 = P2.to(torch.float64)
        M_inv = inverse_3x3(P2[:, :, :3])  # B x 3 x 3
        t = P2[:, :, 3]  # B x 3
        u = u.to(torch.float64)
        pixels = torch.stack([u, v.to(torch.float64), torch.ones_like(u)], dim=-1)  # B x ... x 3
        rays = torch.einsum("bij,bnj->bni", M_inv, pixels.reshape(pixels.shape[0], -1, 3)).reshape(pixels.shape)
        offset = torch.einsum("bij,bj->bi", M_inv, t)  # B x 3, M^-1 t
        offset = offset.reshape(offset.shape[0], *([1] * (pixels.dim() - 2)), 3)
        depth = depth.to(device=P2.device, dtype=torch.float64)
        w = (depth + offset[..., 2]) / rays[..., 2]
        return (w[..., None] * rays - offset).to(dtype)


# ----- angles ------------------------------------------------------------------------------------
def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2.0 * math.pi) - math.pi


def ray_angle(x: Tensor, z: Tensor) -> Tensor:
    """Azimuth of the ray to rect point (x, z) seen from the camera: the alpha <-> rotation_y offset."""
    return torch.atan2(x, z)


def column_ray_angle(u: Tensor, P2: Tensor) -> Tensor:
    """Azimuth of the ray through original-image column ``u`` (B x K) of cameras ``P2`` (B x 3 x 4):
    ``atan2(u - cu, fu)``, the pixel-space form of :func:`ray_angle` (exact when P2's fourth column is 0)."""
    fu, cu = P2[:, 0, 0, None], P2[:, 0, 2, None]
    return torch.atan2(u - cu.to(u.dtype), fu.to(u.dtype))


def alpha_to_rotation_y(alpha: Tensor, ray: Tensor) -> Tensor:
    """Observation angle + the object's ray azimuth (:func:`ray_angle`) -> rotation_y in [-pi, pi)."""
    return wrap_angle(alpha + ray)


def rotation_y_to_alpha(rotation_y: Tensor, ray: Tensor) -> Tensor:
    """rotation_y + the object's ray azimuth -> observation angle alpha in [-pi, pi)."""
    return wrap_angle(rotation_y - ray)
