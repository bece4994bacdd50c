"""The monocular 3D detectors (MonoDLE, GUPNet, MonoFlex) and their shared parts.

``DETECTORS`` is the explicit table of detectors: adding one is a module with a
:class:`~add3d.models.detector.MonoDetector` subclass and its builder, plus one row here
(docs/DESIGN.md, "Adding a detector"). ``build_detector(cfg)`` is the only entry point the engine
and the distillation wrapper need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from add3d.errors import Add3dError
from add3d.models.config import ModelConfig
from add3d.models.detector import MonoDetector
from add3d.models.gupnet import build_gupnet, convert_official_gupnet, official_gupnet_config
from add3d.models.monodle import build_monodle, convert_official_monodle, official_monodle_config
from add3d.models.monoflex import build_monoflex, convert_official_monoflex, official_monoflex_config


@dataclass(frozen=True)
class DetectorEntry:
    """How to build one detector, and how to convert its authors' released weights (if known)."""

    build: Callable[[ModelConfig], MonoDetector]
    # Official (released) state dict + the target config -> this package's state dict, strict-loadable.
    convert_official: Callable[[Mapping[str, Tensor], ModelConfig], dict[str, Tensor]] | None = None
    # Official state dict + a config -> the model config its weights need (class means, size
    # encoding); ``add3d import-checkpoint`` applies it before ``convert_official``.
    official_config: Callable[[Mapping[str, Tensor], ModelConfig], ModelConfig] | None = None
    # Whether its depth head predicts a depth at every stride cell (``object_depth`` decodes any cell), so
    # that dense depth targets apply: ``data.depth_region`` in its loss, benchmarks/depth_copy_probe.py.
    dense_depth_head: bool = False
    # Whether targets["depth"] is the only target that carries depth into its loss (location and 3D
    # size do not), so that the depth-only jitter (data.depth_jitter_scope: depth) is consistent.
    # MonoFlex's keypoint and 3D-corner losses read the 3D location too: it needs the scene-wide jitter.
    depth_only_target: bool = False
    # Whether its depth comes from 3D/2D heights through the network-input camera, so a crop leaves an
    # object's depth unchanged: its depth target must not be rescaled by the crop (scale_depth_on_crop).
    geometric_depth: bool = False


DETECTORS: dict[str, DetectorEntry] = {
    "monodle": DetectorEntry(build=build_monodle, convert_official=convert_official_monodle,
                             official_config=official_monodle_config, dense_depth_head=True,
                             depth_only_target=True),
    "gupnet": DetectorEntry(build=build_gupnet, convert_official=convert_official_gupnet,
                            official_config=official_gupnet_config, depth_only_target=True, geometric_depth=True),
    "monoflex": DetectorEntry(build=build_monoflex, convert_official=convert_official_monoflex,
                              official_config=official_monoflex_config, geometric_depth=True),
}


def as_model_config(cfg: ModelConfig | DictConfig | Mapping[str, Any]) -> ModelConfig:
    """Accept a ModelConfig, an OmegaConf node built from it, or a plain mapping."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
        if isinstance(cfg, ModelConfig):
            return cfg
    if isinstance(cfg, Mapping):
        unknown = sorted(set(cfg) - set(ModelConfig.__dataclass_fields__))
        if unknown:
            raise Add3dError(f"unknown model option(s): {', '.join(unknown)}")
        return ModelConfig(**cfg)
    raise Add3dError(f"model config must be a ModelConfig or a mapping, got {type(cfg).__name__}")


def detector_entry(name: str) -> DetectorEntry:
    """The table row of detector ``name``; an unknown name is an Add3dError listing the known ones."""
    if name not in DETECTORS:
        raise Add3dError(f"unknown detector '{name}' (model.name must be one of {', '.join(DETECTORS)})")
    return DETECTORS[name]


def build_detector(cfg: ModelConfig | DictConfig | Mapping[str, Any]) -> MonoDetector:
    """Build the detector named by ``cfg.name`` (a key of ``DETECTORS``)."""
    cfg = as_model_config(cfg)
    return detector_entry(cfg.name).build(cfg)


__all__ = ["DETECTORS", "DetectorEntry", "ModelConfig", "MonoDetector", "build_detector", "detector_entry"]
