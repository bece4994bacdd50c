"""Configuration of the detectors (the ``model`` config section).

A plain dataclass so that OmegaConf can build a typed config from it
(``OmegaConf.structured(ModelConfig)``) and YAML files can override any field. Fields shared by the
detectors come first; each detector's own options are a dataclass defined in the detector's module
(``model.gupnet`` -> :class:`add3d.models.gupnet.GUPNetOptions`, ...). Those modules never import
this one at run time, so the import graph stays acyclic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from add3d.errors import Add3dError
from add3d.models.gupnet import GUPNetOptions
from add3d.models.monoflex import MonoFlexOptions

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


@dataclass
class ModelConfig:
    """Which detector to build and how; the defaults are MonoDLE's published setting."""

    name: str = "monodle"  # monodle | gupnet | monoflex
    backbone: str = "dla34"  # dla34 | dla34_small | dla34_tiny (CPU) | resnet18
    # Backbone weights: "imagenet" (public checkpoint, cached download), a URL, a local path, or null.
    pretrained: Optional[str] = None
    in_channels: int = 3  # 3 for students (RGB), 5 for teachers (RGB + depth + validity)
    classes: list[str] = field(default_factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    head_channels: int = 256  # width of each head's 3x3 conv (MonoDLE: 256; smaller for CPU demos)
    num_heading_bins: int = 12  # MonoDLE / GUPNet multi-bin alpha (MonoFlex: monoflex.orientation_bins)
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
    # "exact": our geometry. "official": reproduce the official code's pixel mapping and
    # back-projection (docs/MODELS.md, "Differences"), which released weights were trained and
    # evaluated with; `add3d import-checkpoint` sets it. Used by MonoDLE and GUPNet.
    compat: str = "exact"

    # ----- detector-specific options (dataclasses owned by the detector modules) -----------------
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
        if not self.classes:
            raise Add3dError("model.classes must name at least one class")
        if len(set(self.classes)) != len(self.classes):
            raise Add3dError(f"model.classes lists a class twice: {list(self.classes)}")
        self.class_mean_sizes()
        if self.in_channels < 1 or self.head_channels < 1 or self.top_k < 1:
            raise Add3dError("model.in_channels, head_channels and top_k must be >= 1")
        if self.compat not in ("exact", "official"):
            raise Add3dError(f"model.compat must be 'exact' or 'official', got '{self.compat}'")
        if self.num_heading_bins < 1:
            raise Add3dError(f"model.num_heading_bins must be >= 1, got {self.num_heading_bins}")
        if any(float(w) < 0 for w in self.loss_weights.values()):
            raise Add3dError(f"model.loss_weights must be >= 0, got {dict(self.loss_weights)}")
