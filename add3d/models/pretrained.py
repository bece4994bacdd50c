"""Loading pretrained weights: ImageNet backbones, RGB checkpoints into wider-input models.

``source`` strings accepted by :func:`read_state_dict`:
- ``"imagenet"``: the public ImageNet checkpoint of the backbone (downloaded once into the torch
  hub cache, ``$TORCH_HOME/hub/checkpoints``; offline, put the file there by hand);
- an ``http(s)://`` URL (same cache);
- a local file path (a raw state dict, or a checkpoint dict holding one under ``model``,
  ``state_dict`` or ``model_state``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from add3d.errors import Add3dError
from add3d.fileio import load_torch_file

IMAGENET_URLS = {
    "dla34": "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
}

# Parameters of the ImageNet classifiers, absent from the detection backbones.
CLASSIFIER_PREFIXES = ("fc.",)


def _hub_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _unwrap(loaded: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in loaded and isinstance(loaded[key], dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise Add3dError(
            f"{where}: not a state dict (expected a dict of tensors, or one under 'model', 'state_dict' or 'model_state')"
        )
    return dict(loaded)


def read_state_dict(source: str, backbone: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from ``"imagenet"``, a URL or a local path (see module docstring)."""
    source = str(source)
    if source == "imagenet":
        if backbone not in IMAGENET_URLS:
            raise Add3dError(
                f"no ImageNet checkpoint is known for backbone '{backbone}' "
                f"(known: {', '.join(IMAGENET_URLS)}); give a path instead"
            )
        source = IMAGENET_URLS[backbone]
    if urlparse(source).scheme in ("http", "https"):
        file_name = os.path.basename(urlparse(source).path)
        try:
            loaded = torch.hub.load_state_dict_from_url(
                source, map_location="cpu", progress=True, check_hash=False, weights_only=True, file_name=file_name
            )
        except Exception as error:  # network errors come as URLError, HTTPError, OSError, ...
            raise Add3dError(
                f"cannot download pretrained weights from {source} ({type(error).__name__}: {error}). "
                f"Offline? Download the file elsewhere and put it at {_hub_cache_dir() / file_name}, "
                f"or set `pretrained` to its local path"
            ) from None
        return _unwrap(loaded, source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise Add3dError(f"{path}: weights file not found")
    return _unwrap(load_torch_file(path), str(path))


def widen_input_conv(state_dict: dict[str, torch.Tensor], key: str, in_channels: int) -> dict[str, torch.Tensor]:
    """Copy of ``state_dict`` whose conv weight ``key`` takes ``in_channels`` inputs.

    The extra input channels get zero weights, so a wider model fed (RGB, anything) computes exactly
    what the RGB model computes on RGB: the teacher starts as the RGB detector and learns to use
    depth from there.
    """
    if key not in state_dict:
        raise Add3dError(f"state dict has no input conv '{key}'")
    weight = state_dict[key]
    have = weight.shape[1]
    if in_channels < have:
        raise Add3dError(f"cannot narrow '{key}' from {have} to {in_channels} input channels")
    out = dict(state_dict)
    if in_channels > have:
        extra = weight.new_zeros((weight.shape[0], in_channels - have, *weight.shape[2:]))
        out[key] = torch.cat([weight, extra], dim=1)
    return out


def load_widened_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], first_conv_key: str) -> None:
    """Strictly load (possibly RGB) weights into ``module``, widening ``first_conv_key`` to fit.

    Reusable for the teacher: ``load_widened_state_dict(teacher, student_state, detector.first_conv_key)``.
    """
    target = module.state_dict()
    if first_conv_key not in target:
        raise Add3dError(f"module has no parameter '{first_conv_key}'")
    state_dict = widen_input_conv(state_dict, first_conv_key, target[first_conv_key].shape[1])
    load_strict(module, state_dict, "weights")


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    target = module.state_dict()
    missing = [k for k in target if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in target]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(target[k].shape)}"
        for k in state_dict
        if k in target and state_dict[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if keys:
                details.append(f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise Add3dError(f"{what} do not fit the model: " + "; ".join(details))
    module.load_state_dict(state_dict, strict=False)  # strictness checked above (tolerates old BN buffers)


def load_backbone_weights(backbone: nn.Module, source: str, name: str | None = None) -> None:
    """Load ImageNet (or other) weights into a backbone from models/backbones.py.

    The classifier (``fc``) is dropped, and the first conv is widened with zeros when the backbone
    takes more than 3 input channels. A whole detector's checkpoint (keys ``backbone.*``, e.g. an
    add3d run or a MonoDLE release) gives its backbone part.
    """
    state_dict = read_state_dict(source, name)
    if backbone.first_conv_key not in state_dict and "backbone." + backbone.first_conv_key in state_dict:
        state_dict = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    load_widened_state_dict(backbone, state_dict, backbone.first_conv_key)
