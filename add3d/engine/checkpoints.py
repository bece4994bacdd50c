"""Training checkpoints: written atomically, loaded safely (``weights_only=True``).

Layout (docs/DESIGN.md): ``model`` is the deployable detector's state dict -- what ``add3d eval`` /
``predict`` and a distillation teacher load. The rest restores a run exactly: ``optimizer``,
``scheduler``, ``scaler`` (AMP), ``epoch`` (completed epochs), ``step_in_epoch`` (batches done in
the current epoch, for mid-epoch checkpoints), ``global_step``, ``rng``, ``best_metric``, and
``module_extra``: trainable state of the training module outside the detector (e.g. ADD's adapters),
and ``input_spec``: the input the model was trained on (add3d.distill.teacher_input.InputSpec).
With ``train.ema_decay``, ``model`` is the weight average and ``training_model`` / ``ema_updates``
the trained weights and the number of averaged steps, to resume.
"""

from __future__ import annotations

from pathlib import Path

import torch

from add3d.distill.teacher_input import InputSpec, check_input_spec
from add3d.errors import Add3dError, DataFormatError
from add3d.fileio import atomic_save, load_torch_file

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` so that a crash (even SIGKILL) leaves either the old or the new file."""
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """A full training checkpoint (for resuming), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"checkpoint not found: {path}")
    state = load_torch_file(path)
    if not isinstance(state, dict):
        raise DataFormatError(path, "not a training checkpoint (expected a dict)")
    return state


def _model_state(state: dict, path: str | Path) -> dict[str, torch.Tensor]:
    if isinstance(state.get("model"), dict):
        return state["model"]
    if state and all(isinstance(value, torch.Tensor) for value in state.values()):
        return state
    raise DataFormatError(path, "no 'model' state dict in this checkpoint")


def read_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The detector weights of a checkpoint; a bare state dict is accepted too."""
    return _model_state(load_checkpoint(path), path)


def stored_compat(checkpoint: dict) -> str:
    """``model.compat`` of the config stored in a checkpoint ("exact" when it stores none)."""
    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    return str(model.get("compat") or "exact") if isinstance(model, dict) else "exact"


def load_detector_weights(
    detector: torch.nn.Module, path: str | Path, expected_spec: InputSpec | None = None, require_compat: bool = True
) -> InputSpec:
    """Load a checkpoint's detector weights strictly and return the input spec it was trained on.

    The spec is the checkpoint's ``input_spec`` (``expected_spec``, the config's, must agree with
    it: :func:`add3d.distill.teacher_input.check_input_spec`); checkpoints written before specs were
    stored get ``expected_spec``. A weight mismatch names the file and the first keys.
    ``require_compat``: the detector's ``model.compat`` must be the one the weights were made with
    (imported official weights need "official"); initialising a new run may switch it.
    """
    checkpoint = load_checkpoint(path)
    compat = getattr(getattr(detector, "cfg", None), "compat", "exact")
    if require_compat and "model" in checkpoint and stored_compat(checkpoint) != compat:
        raise Add3dError(
            f"{path}: these weights were made with model.compat={stored_compat(checkpoint)} and the config says "
            f"model.compat={compat}; add the override model.compat={stored_compat(checkpoint)}"
        )
    expected_spec = expected_spec or InputSpec(kind="rgbd" if getattr(detector, "in_channels", 3) == 5 else "rgb")
    spec = check_input_spec(expected_spec, checkpoint.get("input_spec") if "model" in checkpoint else None, str(path))
    load_weights_strictly(detector, _model_state(checkpoint, path), path)
    return spec


def load_weights_strictly(detector: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``detector.load_state_dict(state)``; a mismatch is one clear error naming the file and the first keys."""
    try:
        result = detector.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches, e.g. a 5-channel teacher into an RGB model
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error).splitlines()[0])
        raise Add3dError(
            f"{path}: weights do not match the configured model ({first}); check the config's model section "
            "(name, backbone, in_channels, classes, head_channels)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise Add3dError(
            f"{path}: weights do not match the configured model "
            f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); "
            "check the config's model section (name, backbone, in_channels, classes)"
        )


def module_extra_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State of a training module that is not its detector's (ADD adapters, frozen teacher, ...)."""
    return {key: value for key, value in module.state_dict().items() if not key.startswith("detector.")}


def load_module_state(module: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Restore a training module (``module.detector`` + its ``module_extra``) from a trainer checkpoint."""
    load_weights_strictly(module.detector, checkpoint["model"], path)
    extra = checkpoint.get("module_extra", {})
    if extra:
        full = {**{f"detector.{k}": v for k, v in checkpoint["model"].items()}, **extra}
        result = module.load_state_dict(full, strict=False)
        if result.unexpected_keys:
            raise Add3dError(f"{path}: the checkpoint was written by a different training module ({result.unexpected_keys[:3]})")
