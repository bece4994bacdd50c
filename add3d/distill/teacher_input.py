"""What the depth-aware teacher sees: the normalised RGB image plus two depth channels.

Channel 3 is depth / ``depth_scale`` (metres / 80 by default, so typical KITTI depths land in
[0, 1] like the normalised image), channel 4 is the validity mask. The mask is separate because a
sparse LiDAR map's zeros mean "unknown", not "at the camera"; with it the network can tell the two
apart. Both maps went through the same flip/crop as the image (add3d.data.transforms).
"""

from __future__ import annotations

import torch

from add3d.errors import Add3dError


def make_teacher_input(batch: dict, depth_scale: float = 80.0) -> torch.Tensor:
    """B x 5 x H x W teacher input from a collated batch with ``depth`` and ``depth_valid``."""
    if "depth" not in batch or "depth_valid" not in batch:
        raise Add3dError(
            "the teacher needs per-pixel depth: set data.depth_source (lidar | object | dense) in the config"
        )
    if depth_scale <= 0:
        raise Add3dError(f"depth_scale must be > 0, got {depth_scale}")
    image, depth, valid = batch["image"], batch["depth"], batch["depth_valid"]
    if depth.shape[-2:] != image.shape[-2:] or valid.shape != depth.shape:
        raise Add3dError(
            f"depth {tuple(depth.shape)} / validity {tuple(valid.shape)} do not match image {tuple(image.shape)}"
        )
    return torch.cat([image, (depth / depth_scale) * valid, valid], dim=1)
