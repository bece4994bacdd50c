"""The teacher's 5-channel input: image, depth / scale (0 where unknown), validity."""

from __future__ import annotations

import pytest
import torch

from add3d.distill.teacher_input import make_teacher_input
from add3d.errors import Add3dError


def test_channels_scale_and_mask():
    image = torch.randn(2, 3, 4, 6)
    depth = torch.zeros(2, 1, 4, 6)
    depth[:, :, 1, 2] = 40.0
    valid = (depth > 0).float()
    out = make_teacher_input({"image": image, "depth": depth, "depth_valid": valid}, depth_scale=80.0)
    assert out.shape == (2, 5, 4, 6)
    assert torch.equal(out[:, :3], image)
    assert out[0, 3, 1, 2] == 0.5 and out[:, 3].sum() == 1.0  # 40 m / 80, zero elsewhere
    assert torch.equal(out[:, 4:], valid)


def test_missing_or_mismatched_depth_is_a_clear_error():
    image = torch.zeros(1, 3, 4, 6)
    with pytest.raises(Add3dError, match="data.depth_source"):
        make_teacher_input({"image": image})
    with pytest.raises(Add3dError, match="do not match"):
        make_teacher_input({"image": image, "depth": torch.zeros(1, 1, 2, 6), "depth_valid": torch.zeros(1, 1, 2, 6)})
    with pytest.raises(Add3dError, match="depth_scale"):
        make_teacher_input({"image": image, "depth": torch.zeros(1, 1, 4, 6), "depth_valid": torch.zeros(1, 1, 4, 6)}, 0)
