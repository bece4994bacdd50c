"""What a detector sees: its input spec (RGB, or RGB + encoded depth + validity) and the encodings.

The input is a property of the trained model, not of whoever runs it later: the trainer stores the
:class:`InputSpec` in every checkpoint (``input_spec``), and evaluation, prediction, distillation and
export read it from there (``add3d.engine.checkpoints.read_input_spec``). A config that asks for a
different input than the checkpoint was trained with is an error, never a silent re-interpretation.

A depth teacher's input is ``[image (3), encoded depth (1), validity (1)]``. The mask is separate
because a sparse LiDAR map's zeros mean "unknown", not "at the camera"; unknown pixels encode as 0
in every encoding. Encodings of metric depth ``d`` (metres):

- ``linear``:  ``d / depth_scale`` (80 m -> 1)
- ``log``:     ``(ln d - log_depth_mean) / log_depth_std`` -- standardised log depth. Why: MonoDLE's
  depth head works in roughly ``-log(depth)`` and a relative change (x1.2) is the same step at 5 m
  and at 50 m; with the linear code near pixels hardly vary and the teacher learned to ignore them.
- ``inverse``: ``inverse_depth_scale / d`` (disparity-like; near objects get the most resolution)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from add3d.errors import Add3dError

INPUT_KINDS = ("rgb", "rgbd")
DEPTH_ENCODINGS = ("linear", "log", "inverse")
IN_CHANNELS = {"rgb": 3, "rgbd": 5}


@dataclass(frozen=True)
class InputSpec:
    """The input a detector was trained on. ``depth_*`` fields only matter for ``kind == "rgbd"``."""

    kind: str = "rgb"
    depth_encoding: str = "log"
    depth_scale: float = 80.0
    log_depth_mean: float = 3.0
    log_depth_std: float = 0.6
    inverse_depth_scale: float = 5.0
    # Side length of the nearest-valid (min-pool) fill of the sparse map before warping; 1 = none.
    depth_fill: int = 1

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise Add3dError(f"input kind must be one of {INPUT_KINDS}, got '{self.kind}'")
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise Add3dError(f"teacher.depth_encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got '{self.depth_encoding}'")
        if not (self.depth_scale > 0 and self.log_depth_std > 0 and self.inverse_depth_scale > 0):
            raise Add3dError("teacher.depth_scale, log_depth_std and inverse_depth_scale must be > 0")
        if self.depth_fill < 1 or self.depth_fill % 2 == 0:
            raise Add3dError(f"data.depth_fill must be an odd size >= 1 (1 = no fill), got {self.depth_fill}")

    @property
    def in_channels(self) -> int:
        return IN_CHANNELS[self.kind]

    def to_dict(self) -> dict:
        """Plain dict for a checkpoint; an RGB spec keeps only its kind (no depth to describe)."""
        return dataclasses.asdict(self) if self.kind == "rgbd" else {"kind": "rgb"}

    @classmethod
    def from_dict(cls, content: dict, source: str = "<checkpoint>") -> "InputSpec":
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(content) - names)
        if unknown or "kind" not in content:
            raise Add3dError(f"{source}: not an input spec (unknown keys {unknown} or no 'kind')")
        return cls(**content)

    def differences(self, other: "InputSpec") -> list[str]:
        """``name: mine != other's`` for every field that matters and differs."""
        if self.kind != other.kind:
            return [f"kind: {self.kind} != {other.kind}"]
        if self.kind == "rgb":
            return []
        return [
            f"{field.name}: {getattr(self, field.name)} != {getattr(other, field.name)}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(other, field.name)
        ]


def encode_depth(depth: torch.Tensor, valid: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Metric depth -> the network's depth channel (0 where ``valid`` is 0)."""
    known = valid > 0
    safe = torch.where(known, depth, torch.ones_like(depth)).clamp(min=1e-3)
    if spec.depth_encoding == "linear":
        code = safe / spec.depth_scale
    elif spec.depth_encoding == "log":
        code = (torch.log(safe) - spec.log_depth_mean) / spec.log_depth_std
    else:
        code = spec.inverse_depth_scale / safe
    return torch.where(known, code, torch.zeros_like(code))


def decode_depth(code: torch.Tensor, valid: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """The inverse of :func:`encode_depth` on valid pixels (0 elsewhere)."""
    if spec.depth_encoding == "linear":
        depth = code * spec.depth_scale
    elif spec.depth_encoding == "log":
        depth = torch.exp(code * spec.log_depth_std + spec.log_depth_mean)
    else:
        depth = spec.inverse_depth_scale / code.clamp(min=1e-12)
    return torch.where(valid > 0, depth, torch.zeros_like(depth))


def make_teacher_input(batch: dict, spec: InputSpec) -> torch.Tensor:
    """B x 5 x H x W input of an RGB+depth model from a collated batch with ``depth`` and ``depth_valid``."""
    if "depth" not in batch or "depth_valid" not in batch:
        raise Add3dError(
            "the teacher needs per-pixel depth: set data.depth_source (lidar | object | dense) in the config"
        )
    image, depth, valid = batch["image"], batch["depth"], batch["depth_valid"]
    if depth.shape[-2:] != image.shape[-2:] or valid.shape != depth.shape:
        raise Add3dError(
            f"depth {tuple(depth.shape)} / validity {tuple(valid.shape)} do not match image {tuple(image.shape)}"
        )
    return torch.cat([image, encode_depth(depth, valid, spec), valid], dim=1)


def detector_input(batch: dict, spec: InputSpec) -> torch.Tensor:
    """The image tensor a detector with input ``spec`` consumes."""
    if spec.kind == "rgb":
        return batch["image"]
    return make_teacher_input(batch, spec)


def check_input_spec(expected: InputSpec, stored: dict | None, source: str) -> InputSpec:
    """The checkpoint's spec if it agrees with the config's ``expected`` one; else a one-line error.

    ``stored`` None (a checkpoint written before specs were stored) trusts the config.
    """
    if stored is None:
        return expected
    if not isinstance(stored, dict):
        raise Add3dError(f"{source}: 'input_spec' is not a mapping")
    trained = InputSpec.from_dict(stored, source)
    differences = expected.differences(trained)
    if differences:
        raise Add3dError(
            f"{source}: the config's input does not match the one this checkpoint was trained on "
            f"(config != checkpoint: {'; '.join(differences)}); set model.in_channels / teacher.depth_* / "
            "data.depth_fill as the checkpoint's"
        )
    return trained
