"""Configuration of the detectors (the ``model`` config section).

A plain dataclass so that OmegaConf can build a typed config from it
(``OmegaConf.structured(ModelConfig)``) and YAML files can override any field. Fields shared by the
three detectors come first; detector-specific options go in the marked section at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from add3d.errors import Add3dError

# Mean (h, w, l) in metres of the KITTI training labels, as used by MonoDLE/GUPNet for size residuals.
KITTI_MEAN_SIZE = {
    "Car": [1.52563191, 1.62856739, 3.52588311],
    "Pedestrian": [1.76255119, 0.66068622, 0.84422524],
    "Cyclist": [1.73698127, 0.59706367, 1.76282397],
}

MONODLE_LOSS_WEIGHTS = {
    "heatmap": 1.0,
    "offset_2d": 1.0,
    "size_2d": 1.0,
    "depth": 1.0,
    "offset_3d": 1.0,
    "size_3d": 1.0,
    "heading": 1.0,
}


# ----- GUPNet / MonoFlex options (owned by models/gupnet.py and models/monoflex.py) ----------------
# MonoFlex's published loss weights (runs/monoflex.yaml INIT_LOSS_WEIGHT), by our term names.
MONOFLEX_LOSS_WEIGHTS = {
    "heatmap": 1.0,
    "box2d": 1.0,  # GIoU of the FCOS-style 2D box
    "depth": 1.0,  # direct depth, uncertainty-attenuated L1
    "offset_3d": 0.5,
    "truncated_offset_3d": 0.1,  # log(1 + L1) for objects whose 3D centre is outside the image
    "orientation": 1.0,
    "size_3d": 1.0,
    "corners": 0.2,
    "keypoints": 1.0,
    "keypoint_depth": 0.2,
    "ensemble_depth": 0.2,
}


@dataclass
class GUPNetOptions:
    roi_size: int = 7  # ROI-align output size of the 3D heads
    train_rois: str = "predicted"  # predicted (GUPNet's code: predicted 2D boxes at GT centres) | gt
    htl: bool = True  # Hierarchical Task Learning loss weights (needs the trainer's on_epoch_start)
    htl_window: int = 5  # epochs of loss statistics HTL compares


@dataclass
class MonoFlexOptions:
    edge_fusion: bool = True
    orientation_bins: int = 4
    depth_range: list[float] = field(default_factory=lambda: [0.1, 100.0])  # clamp of every depth estimate
    uncertainty_range: list[float] = field(default_factory=lambda: [-10.0, 10.0])  # clamp of log-sigma
    relaxed_keypoint_visibility: bool = True  # MonoFlex's KEYPOINT_VISIBLE_MODIFY
    # Detection score = heatmap x confidence(sigma of the depth ensemble). "monoflex": 1 - clamp(sigma,
    # 0.01, 1) (MonoFlex); "exp": exp(-sigma), which still ranks detections when every sigma >= 1 m
    # (short CPU runs, where MonoFlex's formula gives them all score 0).
    confidence: str = "monoflex"
    # MonoFlex reads these (not model.loss_weights, whose defaults are MonoDLE's).
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(MONOFLEX_LOSS_WEIGHTS))


@dataclass
class ModelConfig:
    """Which detector to build and how; the defaults are MonoDLE's published setting."""

    name: str = "monodle"  # monodle | gupnet | monoflex
    backbone: str = "dla34"  # dla34 | dla34_small | dla34_tiny (CPU) | resnet18
    # Backbone weights: "imagenet" (public checkpoint, cached download), a URL, a local path, or null.
    pretrained: Optional[str] = None
    in_channels: int = 3  # 3 for students (RGB), 5 for teachers (RGB + depth + validity)
    classes: list[str] = field(default_factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    # Must equal len(classes); null means "len(classes)". Kept because DESIGN.md names it.
    num_classes: Optional[int] = None
    head_channels: int = 256  # width of each head's 3x3 conv (MonoDLE: 256; smaller for CPU demos)
    max_objects: int = 50
    num_heading_bins: int = 12
    deformable_neck: bool = False  # DCNv2 in the IDA convs (MonoFlex)
    # Per-class mean (h, w, l): size heads regress the residual from it (missing classes -> zeros).
    # use_mean_size: false regresses absolute sizes, as MonoDLE's released config (meanshape: False).
    use_mean_size: bool = True
    mean_size: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in KITTI_MEAN_SIZE.items()})
    # Loss weights by loss-term name (each detector reads the names it defines; MonoDLE's are above).
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(MONODLE_LOSS_WEIGHTS))
    # Decoding defaults (MonoDLE: top-50 peaks, heatmap score threshold 0.2).
    top_k: int = 50
    score_threshold: float = 0.2

    # ----- detector-specific options -------------------------------------------------------------
    # GUPNet / MonoFlex add their own fields (or a nested dataclass) below this line.
    gupnet: GUPNetOptions = field(default_factory=GUPNetOptions)
    monoflex: MonoFlexOptions = field(default_factory=MonoFlexOptions)

    def __post_init__(self) -> None:
        # ModelConfig(**plain_dict) leaves the nested option sections as dicts: type them.
        for name, kind in (("gupnet", GUPNetOptions), ("monoflex", MonoFlexOptions)):
            value = getattr(self, name)
            if isinstance(value, dict):
                unknown = sorted(set(value) - set(kind.__dataclass_fields__))
                if unknown:
                    raise Add3dError(f"unknown model.{name} option(s): {', '.join(unknown)}")
                setattr(self, name, kind(**value))

    def resolved_num_classes(self) -> int:
        if self.num_classes is not None and self.num_classes != len(self.classes):
            raise Add3dError(
                f"model.num_classes = {self.num_classes} but model.classes lists {len(self.classes)} "
                f"({', '.join(self.classes)}); set num_classes to null or make them agree"
            )
        return len(self.classes)

    def class_mean_sizes(self) -> list[list[float]]:
        """Mean (h, w, l) per class, in class-id order (zeros for classes without an entry, or all
        zeros with ``use_mean_size = False``)."""
        sizes = []
        for name in self.classes:
            size = list(self.mean_size.get(name, [0.0, 0.0, 0.0]))
            if len(size) != 3:
                raise Add3dError(f"model.mean_size.{name} must be 3 numbers (h, w, l), got {size}")
            sizes.append([float(v) if self.use_mean_size else 0.0 for v in size])
        return sizes

    def validate(self) -> None:
        self.resolved_num_classes()
        self.class_mean_sizes()
        if not self.classes:
            raise Add3dError("model.classes must name at least one class")
        if self.in_channels < 1 or self.head_channels < 1 or self.max_objects < 1 or self.top_k < 1:
            raise Add3dError("model.in_channels, head_channels, max_objects and top_k must be >= 1")
        if self.num_heading_bins < 1:
            raise Add3dError(f"model.num_heading_bins must be >= 1, got {self.num_heading_bins}")
        if any(float(w) < 0 for w in self.loss_weights.values()):
            raise Add3dError(f"model.loss_weights must be >= 0, got {dict(self.loss_weights)}")
