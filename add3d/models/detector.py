"""The detector contract of docs/DESIGN.md ("Detector") and the trunk (backbone + neck) the
detectors share.

Every detector is one :class:`MonoDetector` subclass in its own module plus one row of the
``DETECTORS`` table in :mod:`add3d.models`. The engine, the distillation wrapper, export and the
benchmarks only use the five abstract methods below (plus ``stride``, ``feature_channels``,
``classes``, ``num_classes`` and ``first_conv_key``).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.models.backbones import build_backbone
from add3d.models.necks import DLAUp, DLASegNeck
from add3d.models.pretrained import load_backbone_weights

if TYPE_CHECKING:  # annotation only: models/config.py imports the detector modules' option classes
    from add3d.models.config import ModelConfig

Outputs = dict[str, Tensor]
Targets = dict[str, Tensor]
Meta = dict[str, Any]  # batch["meta"]: P2, P2_input, input_to_original, original_size, ... (DESIGN.md)


class MonoDetector(nn.Module, abc.ABC):
    """Base class of MonoDLE / GUPNet / MonoFlex; see docs/DESIGN.md ("Detector") for the contract.

    Subclasses own ``backbone`` and ``neck`` (see :func:`build_trunk`) and implement the five
    abstract methods. ``meta`` is always the batch's meta dict: a detector that needs the camera
    (``meta["P2_input"]``) reads it there, never from ``outputs``.
    """

    stride: int = 4
    feature_channels: int

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.classes = list(cfg.classes)
        self.num_classes = len(self.classes)
        self.in_channels = cfg.in_channels

    @property
    def first_conv_key(self) -> str:
        """State-dict key of the first conv's weight: widen it to turn RGB weights into a teacher's."""
        return "backbone." + self.backbone.first_conv_key

    def extract_features(self, image: Tensor) -> Tensor:
        """Backbone + neck: ``B x in_channels x H x W`` -> ``B x feature_channels x H/4 x W/4``."""
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise Add3dError(
                f"detector expects images of shape B x {self.in_channels} x H x W, got {tuple(image.shape)}"
            )
        if image.shape[2] % 32 or image.shape[3] % 32:
            raise Add3dError(f"input height and width must be multiples of 32, got {tuple(image.shape[2:])}")
        return self.neck(self.backbone(image))

    @abc.abstractmethod
    def forward(self, image: Tensor, targets: Targets | None = None, meta: Meta | None = None) -> Outputs:
        """Raw head outputs + ``features`` (the neck map feeding the heads, B x feature_channels x h x w).

        ``targets`` are given when training (detectors with per-object heads run them at the target
        slots); ``meta`` is the batch meta.
        """

    @abc.abstractmethod
    def loss(self, outputs: Outputs, targets: Targets, meta: Meta) -> tuple[Tensor, dict[str, Tensor]]:
        """(total loss, detached named parts) of ``forward(image, targets, meta)``'s outputs.

        Detector-specific target encodings (heading bins, size residuals, ...) are computed here
        from the generic targets of :mod:`add3d.data.targets`.
        """

    @abc.abstractmethod
    def decode(
        self, outputs: Outputs, meta: Meta, score_threshold: float | None = None, top_k: int | None = None
    ) -> list[list[Object3D]]:
        """Detections per image in ORIGINAL image coordinates (``None`` = the config's defaults)."""

    @abc.abstractmethod
    def response_outputs(self, outputs: Outputs, targets: Targets, meta: Meta, with_uncertainty: bool = True,
                         depth_in_metres: bool = False) -> dict[str, Tensor]:
        """Per-object outputs at the target slots, name -> ``B x M x k``, for response distillation.

        ``with_uncertainty=False`` leaves out the predicted uncertainties (log-variances): a teacher
        that sees depth is uncertain about other things than an RGB student (``distill.response_uncertainty``).
        ``depth_in_metres=True`` gives the depth responses as decoded metres rather than the detector's
        default (log-depth or raw logit) (``distill.response_depth_metres``).
        """

    @abc.abstractmethod
    def object_depth(self, outputs: Outputs, targets: Targets, meta: Meta) -> Tensor:
        """``B x M`` depth in metres that ``decode`` would give an object peaking at each target slot,
        from ``forward(image, targets, meta)``'s outputs: per-object depth errors at labelled objects
        (``benchmarks/add_diagnostics.py``), the same objects for every model."""


def build_trunk(cfg: ModelConfig, neck: type[DLAUp | DLASegNeck] = DLAUp) -> tuple[nn.Module, nn.Module]:
    """Backbone (with ``cfg.pretrained`` weights loaded, widened to ``cfg.in_channels``) + ``neck``
    (MonoDLE's and GUPNet's DLAUp by default, MonoFlex passes its DLASegNeck)."""
    backbone = build_backbone(cfg.backbone, cfg.in_channels)
    if cfg.pretrained:
        load_backbone_weights(backbone, cfg.pretrained, cfg.backbone)
    return backbone, neck(backbone.out_channels, deformable=cfg.deformable_neck)
