"""What the official MonoDLE (xinzhuma/monodle) and GUPNet (SuperMHP/GUPNet) checkpoints have in
common, for the converters of their detector modules (``convert_official_monodle``,
``convert_official_gupnet``, the ``convert_official`` column of ``models.DETECTORS``).

Both official models share the DLA-34 backbone names (kept as they are) and a DLAUp neck named
``ida_<stage>.{proj,up,node}_<i>``; their heads are ``nn.Sequential`` blocks named like ours. The
official class order is (Pedestrian, Car, Cyclist); the heatmap's output channels -- and GUPNet's
class one-hot input channels of the ROI heads -- are reordered to ``cfg.classes``.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from add3d.errors import Add3dError

OFFICIAL_CLASSES = ("Pedestrian", "Car", "Cyclist")  # class ids of both official code bases
_NECK_KEY = re.compile(r"^ida_(\d+)\.(proj|node|up)_(\d+)\.(?:(conv|bn)\.)?(.+)$")
_NECK_PARTS = {"proj": "projections", "node": "nodes", "up": "upsamplers"}


def official_class_order(classes: list[str]) -> torch.Tensor:
    """Official class id of each of ``classes`` (our class order)."""
    unknown = [name for name in classes if name not in OFFICIAL_CLASSES]
    if unknown:
        raise Add3dError(
            f"the official checkpoints detect {', '.join(OFFICIAL_CLASSES)}; model.classes also has {', '.join(unknown)}"
        )
    return torch.tensor([OFFICIAL_CLASSES.index(name) for name in classes])


def strip_data_parallel(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` prefix of ``nn.DataParallel`` (the official trainers wrap in it)."""
    return {(key[len("module.") :] if key.startswith("module.") else key): value for key, value in state.items()}


def _neck_key(rest: str) -> str | None:
    """``ida_1.proj_2.conv.weight`` -> ``stages.1.projections.1.0.weight`` (None if not a neck key)."""
    match = _NECK_KEY.match(rest)
    if not match:
        return None
    stage, part, index, layer, tail = match.groups()
    position = {"conv": "0.", "bn": "1.", None: ""}[layer]
    return f"stages.{stage}.{_NECK_PARTS[part]}.{int(index) - 1}.{position}{tail}"


def rename_trunk_key(key: str, neck_prefix: str) -> str | None:
    """Backbone keys unchanged (its ImageNet classifier dropped as ''), neck keys renamed, else None."""
    if key.startswith("backbone.fc."):
        return ""
    if key.startswith("backbone."):
        return key
    if key.startswith(neck_prefix):
        renamed = _neck_key(key[len(neck_prefix) :])
        return None if renamed is None else "neck." + renamed
    return None
