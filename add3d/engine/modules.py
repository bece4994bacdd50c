"""Training modules: what the trainer optimises. Each has ``forward(batch) -> (loss, logs)`` and a
``detector`` attribute (the deployable network saved as the checkpoint's ``model``).

``DetectorModule`` trains a detector on its own loss: a baseline (RGB input) or a depth teacher
(RGB + depth + validity). ADD students use ``add3d.distill.wrapper``'s module instead.
"""

from __future__ import annotations

import torch
from torch import nn

from add3d.distill.teacher_input import make_teacher_input
from add3d.errors import Add3dError

INPUT_KINDS = ("rgb", "rgbd")


def detector_input(batch: dict, kind: str, depth_scale: float = 80.0) -> torch.Tensor:
    """The image tensor a detector of input ``kind`` consumes."""
    if kind == "rgb":
        return batch["image"]
    return make_teacher_input(batch, depth_scale)


class DetectorModule(nn.Module):
    def __init__(self, detector: nn.Module, input: str = "rgb", depth_scale: float = 80.0):
        super().__init__()
        if input not in INPUT_KINDS:
            raise Add3dError(f"DetectorModule input must be one of {INPUT_KINDS}, got '{input}'")
        self.detector = detector
        self.input = input
        self.depth_scale = depth_scale

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = detector_input(batch, self.input, self.depth_scale)
        targets = batch["targets"]
        meta = batch["meta"]
        outputs = self.detector(image, targets, meta=meta)
        return self.detector.loss(outputs, targets, meta)


def input_kind(model_cfg) -> str:
    """'rgbd' for a 5-channel (depth teacher) model, else 'rgb'."""
    return "rgbd" if getattr(model_cfg, "in_channels", 3) == 5 else "rgb"
