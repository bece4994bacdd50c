"""MonoFlex's depth from keypoints and its uncertainty-weighted depth ensemble.

Why: a box's vertical edges (and the segment between its bottom and top centres) have a known 3D
length, the box height H, so each one gives a depth ``z = f * H / h_pixels`` independently of the
directly regressed depth. MonoFlex solves three such estimates -- from the centre pair (keypoints
8, 9), the diagonal edge pair 0-4 / 2-6 and the other diagonal 1-5 / 3-7 -- and averages them with
the direct depth, weighted by the inverse of each estimate's predicted uncertainty.

Keypoint order is ``geometry/boxes.py``'s: 0-3 bottom corners, 4-7 the corners above them, 8 the
bottom centre, 9 the top centre; keypoints are (x, y) in feature-map pixels.
"""

from __future__ import annotations

import torch

NUM_KEYPOINTS = 10
# (bottom keypoints, top keypoints) of each depth group: centre, diagonal 0-2, diagonal 1-3.
KEYPOINT_GROUPS = (((8,), (9,)), ((0, 2), (4, 6)), ((1, 3), (5, 7)))


def modified_visibility(visible: torch.Tensor) -> torch.Tensor:
    """MonoFlex's relaxed visibility (``KEYPOINT_VISIBLE_MODIFY``), ``(..., 10)`` bool.

    A vertical edge is supervised when either of its ends is visible (both ends then count as
    visible), and likewise the centre pair; a half-visible edge still constrains the projection.
    """
    visible = visible.bool()
    corners = visible[..., :4] | visible[..., 4:8]
    centres = visible[..., 8:9] | visible[..., 9:10]
    return torch.cat([corners, corners, centres, centres], dim=-1)


def depth_groups_valid(visible: torch.Tensor) -> torch.Tensor:
    """``(..., 10)`` keypoint visibility -> ``(..., 3)`` bool: all keypoints of the group visible."""
    visible = visible.bool()
    groups = []
    for bottom, top in KEYPOINT_GROUPS:
        groups.append(visible[..., list(bottom) + list(top)].all(dim=-1))
    return torch.stack(groups, dim=-1)


def depths_from_keypoints(
    keypoints: torch.Tensor,
    height_3d: torch.Tensor,
    focal_length: torch.Tensor,
    stride: int,
    depth_range: tuple[float, float] = (0.1, 100.0),
    eps: float = 1e-3,
) -> torch.Tensor:
    """Solve the three keypoint depths.

    ``keypoints`` ``(..., 10, 2)`` in feature pixels (any common origin), ``height_3d`` ``(...)``
    metres, ``focal_length`` broadcastable to ``(...)``: the vertical focal length of the *network
    input* camera (so ``h_pixels = h_feature * stride``). Returns ``(..., 3)`` depths clamped to
    ``depth_range``. Edges with non-positive height are clipped to ``eps`` (-> far, then clamped),
    as MonoFlex does, instead of producing negative or infinite depths.
    """
    y = keypoints[..., 1]
    depths = []
    for bottom, top in KEYPOINT_GROUPS:
        pixel_heights = (y[..., list(bottom)] - y[..., list(top)]).relu() * stride + eps
        group = (focal_length[..., None] * height_3d[..., None]) / pixel_heights
        depths.append(group.mean(dim=-1))
    return torch.stack(depths, dim=-1).clamp(min=depth_range[0], max=depth_range[1])


def soft_ensemble(depths: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-uncertainty weighted mean of ``(..., N)`` depth estimates with ``log_sigma`` ``(..., N)``.

    Returns ``(depth, sigma)``, each ``(...)``; ``sigma`` is the weighted mean uncertainty, which
    MonoFlex turns into a confidence ``1 - clamp(sigma, 0.01, 1)``.
    """
    sigma = log_sigma.exp()
    weights = 1.0 / sigma
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return (weights * depths).sum(dim=-1), (weights * sigma).sum(dim=-1)
