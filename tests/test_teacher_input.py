"""A model's input spec: RGB, or RGB + encoded depth + validity, stored in its checkpoints."""

from __future__ import annotations

import pytest
import torch

from add3d.distill.teacher_input import (
    DEPTH_ENCODINGS,
    InputSpec,
    check_input_spec,
    decode_depth,
    encode_depth,
    make_teacher_input,
)
from add3d.errors import Add3dError

RGBD = InputSpec(kind="rgbd")


@pytest.mark.parametrize("encoding", DEPTH_ENCODINGS)
def test_every_encoding_round_trips_and_keeps_unknown_at_zero(encoding):
    spec = InputSpec(kind="rgbd", depth_encoding=encoding)
    depth = torch.tensor([[0.0, 2.0, 7.5, 30.0, 80.0]])
    valid = (depth > 0).float()
    code = encode_depth(depth, valid, spec)
    assert code[0, 0] == 0 and torch.isfinite(code).all()
    assert torch.allclose(decode_depth(code, valid, spec), depth, rtol=1e-5)
    assert torch.all(torch.diff(code[0, 1:]) != 0)  # distinct depths stay distinct


def test_encodings_have_their_documented_values():
    depth, valid = torch.tensor([40.0]), torch.tensor([1.0])
    assert encode_depth(depth, valid, InputSpec(kind="rgbd", depth_encoding="linear", depth_scale=80.0)) == 0.5
    log = InputSpec(kind="rgbd", depth_encoding="log", log_depth_mean=2.0, log_depth_std=0.5)
    assert torch.allclose(encode_depth(depth, valid, log), (torch.log(depth) - 2.0) / 0.5)
    assert encode_depth(depth, valid, InputSpec(kind="rgbd", depth_encoding="inverse", inverse_depth_scale=4.0)) == 0.1


def test_channels_encoding_and_mask():
    image = torch.randn(2, 3, 4, 6)
    depth = torch.zeros(2, 1, 4, 6)
    depth[:, :, 1, 2] = 40.0
    valid = (depth > 0).float()
    out = make_teacher_input({"image": image, "depth": depth, "depth_valid": valid}, InputSpec(kind="rgbd", depth_encoding="linear"))
    assert out.shape == (2, 5, 4, 6)
    assert torch.equal(out[:, :3], image)
    assert out[0, 3, 1, 2] == 0.5 and out[:, 3].sum() == 1.0  # 40 m / 80, zero elsewhere
    assert torch.equal(out[:, 4:], valid)


def test_missing_or_mismatched_depth_is_a_clear_error():
    image = torch.zeros(1, 3, 4, 6)
    with pytest.raises(Add3dError, match="data.depth_source"):
        make_teacher_input({"image": image}, RGBD)
    with pytest.raises(Add3dError, match="do not match"):
        make_teacher_input({"image": image, "depth": torch.zeros(1, 1, 2, 6), "depth_valid": torch.zeros(1, 1, 2, 6)}, RGBD)
    with pytest.raises(Add3dError, match="depth_encoding"):
        InputSpec(kind="rgbd", depth_encoding="sqrt")
    with pytest.raises(Add3dError, match="depth_fill"):
        InputSpec(kind="rgbd", depth_fill=4)


def test_spec_survives_a_checkpoint_dict_and_a_contradiction_is_one_line():
    spec = InputSpec(kind="rgbd", depth_encoding="inverse", depth_fill=5)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert InputSpec().to_dict() == {"kind": "rgb"}
    assert check_input_spec(spec, spec.to_dict(), "t.pth") == spec
    assert check_input_spec(spec, None, "old.pth") == spec  # checkpoints from before specs: trust the config
    with pytest.raises(Add3dError) as error:
        check_input_spec(InputSpec(kind="rgbd", depth_encoding="log", depth_fill=5), spec.to_dict(), "t.pth")
    message = str(error.value)
    assert "\n" not in message and message.startswith("t.pth:") and "depth_encoding: log != inverse" in message
    with pytest.raises(Add3dError, match="kind: rgb != rgbd"):
        check_input_spec(InputSpec(), spec.to_dict(), "t.pth")
    with pytest.raises(Add3dError, match="not an input spec"):
        check_input_spec(spec, {"colour": 1}, "t.pth")
