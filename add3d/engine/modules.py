"""Training modules: what the trainer optimises. Each has ``forward(batch) -> (loss, logs)`` and a
``detector`` attribute (the deployable network saved as the checkpoint's ``model``).

``DetectorModule`` trains a detector on its own loss: a baseline (RGB input) or a depth teacher
(RGB + depth + validity). ADD students use ``add3d.distill.wrapper``'s module instead.
"""

from __future__ import annotations

import torch
from torch import nn

from add3d.distill.teacher_input import IN_CHANNELS, InputSpec, detector_input
from add3d.errors import Add3dError
from add3d.models.precision import detector_loss


def input_spec_from_config(cfg) -> InputSpec:
    """The input a config trains its ``model`` on: RGB (3 channels) or RGB + encoded depth (5).

    Only a training run derives it from the config; everything after reads the checkpoint's copy.
    """
    channels = int(getattr(cfg.model, "in_channels", 3))
    kinds = {count: kind for kind, count in IN_CHANNELS.items()}
    if channels not in kinds:
        raise Add3dError(f"model.in_channels must be 3 (RGB) or 5 (RGB + depth + validity), got {channels}")
    if kinds[channels] == "rgb":
        return InputSpec()
    teacher = cfg.teacher
    return InputSpec(
        kind="rgbd",
        depth_encoding=teacher.depth_encoding,
        depth_scale=float(teacher.depth_scale),
        log_depth_mean=float(teacher.log_depth_mean),
        log_depth_std=float(teacher.log_depth_std),
        inverse_depth_scale=float(teacher.inverse_depth_scale),
        depth_fill=int(cfg.data.depth_fill),
    )


def teacher_input_spec(cfg) -> InputSpec:
    """The input spec an ADD config expects of its teacher (the student's model with 5 channels)."""
    import dataclasses

    return input_spec_from_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_channels=5)))


class DetectorModule(nn.Module):
    def __init__(self, detector: nn.Module, spec: InputSpec = InputSpec()):
        super().__init__()
        if spec.in_channels != getattr(detector, "in_channels", spec.in_channels):
            raise Add3dError(f"a {spec.kind} input has {spec.in_channels} channels, the detector takes {detector.in_channels}")
        self.detector = detector
        self.spec = spec

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = detector_input(batch, self.spec)
        targets = batch["targets"]
        meta = batch["meta"]
        outputs = self.detector(image, targets, meta=meta)
        return detector_loss(self.detector, outputs, targets, meta)


__all__ = ["DetectorModule", "detector_input", "input_spec_from_config", "teacher_input_spec"]
