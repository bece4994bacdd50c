"""The monocular 3D detectors (MonoDLE, GUPNet, MonoFlex) and their shared parts.

``build_detector(cfg)`` is the only entry point the engine and the distillation wrapper need.
"""

from __future__ import annotations

from typing import Any

from add3d.errors import Add3dError
from add3d.models.config import ModelConfig


def _as_model_config(cfg: Any) -> ModelConfig:
    """Accept a ModelConfig, an OmegaConf node built from it, or a plain mapping."""
    if isinstance(cfg, ModelConfig):
        return cfg
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_object(cfg)
            if isinstance(cfg, ModelConfig):
                return cfg
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, dict):
        known = set(ModelConfig.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise Add3dError(f"unknown model option(s): {', '.join(unknown)}")
        return ModelConfig(**cfg)
    raise Add3dError(f"model config must be a ModelConfig or a mapping, got {type(cfg).__name__}")


def build_detector(cfg: Any):
    """Build the detector named by ``cfg.name`` (monodle | gupnet | monoflex)."""
    cfg = _as_model_config(cfg)
    if cfg.name == "monodle":
        from add3d.models.monodle import build_monodle

        return build_monodle(cfg)
    # ---- GUPNet / MonoFlex: their modules plug in here -------------------------------------------
    if cfg.name == "gupnet":
        from add3d.models.gupnet import build_gupnet

        return build_gupnet(cfg)
    if cfg.name == "monoflex":
        from add3d.models.monoflex import build_monoflex

        return build_monoflex(cfg)
    raise Add3dError(f"unknown detector '{cfg.name}' (choose from monodle, gupnet, monoflex)")


__all__ = ["ModelConfig", "build_detector"]
