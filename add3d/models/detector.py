"""The detector interface of docs/DESIGN.md and the trunk (backbone + neck) the detectors share."""

from __future__ import annotations

import torch
from torch import nn

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.models.backbones import build_backbone
from add3d.models.config import ModelConfig
from add3d.models.necks import DLAUp
from add3d.models.pretrained import load_backbone_weights


class MonoDetector(nn.Module):
    """Base class of MonoDLE / GUPNet / MonoFlex; see docs/DESIGN.md ("Detector") for the contract.

    Subclasses own ``backbone`` and ``neck`` (see :func:`build_trunk`) and implement the four methods.
    """

    stride: int = 4
    feature_channels: int

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.classes = list(cfg.classes)
        self.num_classes = cfg.resolved_num_classes()
        self.in_channels = cfg.in_channels

    @property
    def first_conv_key(self) -> str:
        """State-dict key of the first conv's weight: widen it to turn RGB weights into a teacher's."""
        return "backbone." + self.backbone.first_conv_key

    def extract_features(self, image: torch.Tensor) -> torch.Tensor:
        """Backbone + neck: ``B x in_channels x H x W`` -> ``B x feature_channels x H/4 x W/4``."""
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise Add3dError(
                f"detector expects images of shape B x {self.in_channels} x H x W, got {tuple(image.shape)}"
            )
        if image.shape[2] % 32 or image.shape[3] % 32:
            raise Add3dError(f"input height and width must be multiples of 32, got {tuple(image.shape[2:])}")
        return self.neck(self.backbone(image))

    def forward(self, image, targets=None, meta=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, outputs, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def decode(self, outputs, meta, score_threshold=None, top_k=None) -> list[list[Object3D]]:
        raise NotImplementedError

    def response_outputs(self, outputs, targets) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def build_trunk(cfg: ModelConfig) -> tuple[nn.Module, DLAUp]:
    """Backbone (with ``cfg.pretrained`` weights loaded, widened to ``cfg.in_channels``) + DLAUp neck."""
    backbone = build_backbone(cfg.backbone, cfg.in_channels)
    if cfg.pretrained:
        load_backbone_weights(backbone, cfg.pretrained, cfg.backbone)
    neck = DLAUp(backbone.out_channels, deformable=cfg.deformable_neck)
    return backbone, neck
