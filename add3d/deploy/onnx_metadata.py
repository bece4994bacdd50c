"""What an exported ONNX file tells its consumer, stored in the file's ``metadata_props``.

Everything needed to feed the graph and to turn its outputs into KITTI detections: classes, input
size and kind, the pixel normalisation, the decode thresholds, the detector's name and its whole
model config (decode options such as heading bins, mean sizes, MonoFlex's confidence formula).
Values are strings (ONNX metadata is a string map); lists and mappings are JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from add3d import __version__
from add3d.data.mono_dataset import IMAGENET_MEAN, IMAGENET_STD
from add3d.errors import DataFormatError
from add3d.models import ModelConfig

DEFAULT_OPSET = 19  # DeformConv (MonoFlex's deformable neck) first appears in opset 19
FORMAT_VERSION = "1"  # bump when the graph's inputs/outputs or these keys change meaning
KEY_PREFIX = "add3d."
# The graph's inputs, in order. ``P2_input`` is the camera of the network-input image (3 x 4, the
# original P2 with the resize applied): GUPNet's ROI heads need it; the others ignore it.
INPUT_NAMES = ("image", "P2_input")


@dataclass(frozen=True)
class DeployMetadata:
    detector: str  # monodle | gupnet | monoflex
    classes: list[str]
    input_size: list[int]  # (height, width) of the network input
    input_kind: str  # rgb (students, baselines) | rgbd (depth teachers: RGB + encoded depth + validity)
    mean: list[float]  # image = (rgb / 255 - mean) / std, channel order R, G, B, layout N x C x H x W
    std: list[float]
    score_threshold: float  # on the heatmap score, as the detector's decode applies it
    top_k: int
    stride: int  # feature-map pixels -> network-input pixels
    outputs: list[str]  # graph output names, in order
    model_config: dict[str, Any]  # the model section (models.config.ModelConfig) the graph was built from
    input_spec: dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "rgb"})  # distill.teacher_input.InputSpec
    batch_size: int = 1
    add3d_version: str = ""

    def to_props(self) -> dict[str, str]:
        props = {f"{KEY_PREFIX}format": FORMAT_VERSION, f"{KEY_PREFIX}inputs": json.dumps(list(INPUT_NAMES))}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            props[KEY_PREFIX + field.name] = value if isinstance(value, str) else json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], path: str | Path) -> "DeployMetadata":
        """Parse ``metadata_props``; a file not written by ``add3d export-onnx`` is a clear error."""
        version = props.get(f"{KEY_PREFIX}format")
        if version is None:
            raise DataFormatError(path, "no add3d metadata in this ONNX file (export it with `add3d export-onnx`)")
        if version != FORMAT_VERSION:
            raise DataFormatError(path, f"add3d ONNX format {version}, this add3d reads format {FORMAT_VERSION}; re-export the model")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = KEY_PREFIX + field.name
            if key not in props:
                if field.default is not dataclasses.MISSING:
                    continue
                raise DataFormatError(path, f"ONNX metadata lacks '{key}'")
            text = props[key]
            try:
                values[field.name] = text if field.type == "str" else json.loads(text)
            except json.JSONDecodeError:
                raise DataFormatError(path, f"ONNX metadata '{key}' is not JSON: {text[:60]!r}") from None
        return cls(**values)


def metadata_from_config(cfg, spec, stride: int, output_names: list[str], input_size: tuple[int, int],
                         batch_size: int = 1) -> DeployMetadata:
    """The metadata of a graph exported from a detector (of feature ``stride``, trained on input
    ``spec``, a distill.teacher_input.InputSpec) configured by ``cfg`` (an engine.config.Config)."""
    model = cfg.model
    model_dict = dataclasses.asdict(model) if isinstance(model, ModelConfig) else dict(model)
    model_dict["pretrained"] = None  # the graph carries every weight
    return DeployMetadata(
        detector=model.name,
        classes=list(model.classes),
        input_size=[int(input_size[0]), int(input_size[1])],
        input_kind=spec.kind,
        mean=[float(v) for v in IMAGENET_MEAN],
        std=[float(v) for v in IMAGENET_STD],
        score_threshold=float(model.score_threshold),
        top_k=int(model.top_k),
        stride=int(stride),
        outputs=list(output_names),
        model_config=model_dict,
        input_spec=spec.to_dict(),
        batch_size=int(batch_size),
        add3d_version=__version__,
    )
