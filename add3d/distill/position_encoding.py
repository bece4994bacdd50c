"""3D-aware positional encoding (3D-PE): a frustum encoding of each image location.

Why: attention in ADD should know *where in 3D* a feature can lie, not just where it is in the
image, so that the same pixel position means the same ray for every camera and every augmentation.
For each location we back-project its pixel centre at ``D`` depth bins with the calibration of the
network-input image (``meta["P2_input"]``, which already contains the affine crop/scale and the flip),
normalise the ``D x 3`` rect-frame points to a fixed range and map them to ``C`` channels with a small
MLP (PETR-style). The encoding depends on geometry only; it has no access to image content.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from add3d.geometry.tensor_geometry import back_project, cell_xy


def depth_bin_centres(num_bins: int, depth_min: float, depth_max: float) -> Tensor:
    """Linear-increasing depth spacing: bins get wider with distance, first = min, last = max.

    d_i = d_min + (d_max - d_min) * i (i + 1) / ((D - 1) D), i = 0..D-1 — fine near the camera where
    a pixel spans little depth, coarse far away.
    """
    if num_bins == 1:
        return torch.tensor([float(depth_min)], dtype=torch.float64)
    index = torch.arange(num_bins, dtype=torch.float64)
    return depth_min + (depth_max - depth_min) * index * (index + 1) / ((num_bins - 1) * num_bins)


def feature_cell_centres(height: int, width: int, stride: float, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Input-image pixel centres (u, v) of an ``height x width`` map of the given stride, row-major."""
    rows = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) * stride
    cols = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) * stride
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return u.reshape(-1), v.reshape(-1)


class PositionEncoding3D(nn.Module):
    """Frustum points of image locations -> C-channel embeddings (token layout B x N x C).

    The MLP is two 1x1 projections (``nn.Linear`` on tokens is exactly a 1x1 conv on a map).
    """

    def __init__(
        self,
        channels: int,
        depth_bins: int = 64,
        depth_min: float = 1.0,
        depth_max: float = 60.0,
        position_range: tuple[float, ...] | list[float] = (-60.0, -20.0, 0.0, 60.0, 20.0, 60.0),
    ):
        super().__init__()
        self.register_buffer("depths", depth_bin_centres(depth_bins, depth_min, depth_max).float(), persistent=False)
        bounds = torch.tensor(list(position_range), dtype=torch.float32)
        self.register_buffer("range_min", bounds[:3], persistent=False)
        self.register_buffer("range_size", bounds[3:] - bounds[:3], persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(depth_bins * 3, channels * 2),
            nn.ReLU(inplace=True),
            nn.Linear(channels * 2, channels),
        )

    def frustum_points(self, P2_input: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """B x N x D x 3 rect-frame points on the rays of pixels (u, v) at the depth bins (float64)."""
        return back_project(P2_input, u[..., None], v[..., None], self.depths.double())

    def normalised_points(self, P2_input: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Frustum points mapped to [-1, 1] by the fixed range (not clipped); B x N x D x 3, float32."""
        points = self.frustum_points(P2_input, u, v).to(self.range_min.dtype)
        return (points - self.range_min) / self.range_size * 2.0 - 1.0

    def forward(self, P2_input: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Embeddings B x N x C of pixels (u, v): B x N (or N, shared by the batch) input-image pixels."""
        if u.dim() == 1:
            u = u[None].expand(P2_input.shape[0], -1)
            v = v[None].expand(P2_input.shape[0], -1)
        points = self.normalised_points(P2_input, u, v)
        # float32 under mixed precision too: far frustum points lie well outside [-1, 1].
        with torch.autocast(device_type=points.device.type, enabled=False):
            return self.mlp(points.flatten(2))

    def for_map(self, P2_input: Tensor, height: int, width: int, stride: float) -> Tensor:
        """Embeddings B x (height * width) x C of every cell of a map with the given stride."""
        u, v = feature_cell_centres(height, width, stride, device=P2_input.device)
        return self(P2_input, u, v)

    def for_indices(self, P2_input: Tensor, indices: Tensor, width: int, stride: float) -> Tensor:
        """Embeddings B x M x C of the cells ``indices = y * width + x`` (e.g. targets["indices"])."""
        x, y = (c.to(torch.float64) for c in cell_xy(indices, width))
        return self(P2_input, (x + 0.5) * stride, (y + 0.5) * stride)
