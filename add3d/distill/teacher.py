"""The depth-aware teacher: the student's own detector with RGB + depth + validity input.

Why the same architecture: ADD's teacher differs from the student only in its input, so its
features live in the same space as the student's ("domain-gap free") and can be distilled without
a cross-modal translation. Its first convolution takes 3 + 2 channels; when it starts from RGB
weights (a trained baseline or ImageNet), the two extra input channels start at zero so that the
teacher initially behaves exactly like the RGB network and learns to use depth from there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor, nn

from add3d.distill.teacher_input import InputSpec, check_input_spec
from add3d.errors import Add3dError, DataFormatError
from add3d.fileio import load_torch_file
from add3d.models import build_detector
from add3d.models.pretrained import load_widened_state_dict

TEACHER_IN_CHANNELS = 5  # RGB + encoded depth + validity (see add3d.distill.teacher_input)


def teacher_model_config(student_model_cfg: Any) -> Any:
    """The teacher's ModelConfig: the student's with 5 input channels and no pretrained download."""
    return dataclasses.replace(student_model_cfg, in_channels=TEACHER_IN_CHANNELS, pretrained=None)


def init_teacher_from_rgb(teacher: nn.Module, rgb_state: Mapping[str, Tensor]) -> nn.Module:
    """Load RGB weights (a baseline's state dict) into a 5-channel teacher. Returns ``teacher``.

    Every tensor must fit exactly except the first convolution (``teacher.first_conv_key``), whose
    extra depth/validity input weights start at zero (``add3d.models.pretrained``). A partial
    initialisation would make a teacher run quietly worse, so any other mismatch is an error.
    """
    load_widened_state_dict(teacher, dict(rgb_state), teacher.first_conv_key)
    return teacher


def read_checkpoint_model(path: str | Path) -> dict[str, Tensor]:
    """The ``model`` state dict of a trainer checkpoint, loaded safely (weights_only=True)."""
    return read_teacher_checkpoint(path)[0]


def read_teacher_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict | None]:
    """(``model`` state dict, stored ``input_spec`` or None) of a checkpoint, loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"checkpoint not found: {path}")
    checkpoint = load_torch_file(path)
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        return checkpoint["model"], checkpoint.get("input_spec")
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return checkpoint, None  # a bare state dict
    raise DataFormatError(path, "expected a trainer checkpoint with a 'model' state dict")


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm statistics and dropout fixed). Returns ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def load_teacher(student_model_cfg: Any, checkpoint: str | Path, expected_spec: InputSpec | None = None) -> nn.Module:
    """Build the teacher for a student config and load a trained teacher checkpoint, frozen.

    The teacher's input spec comes from the checkpoint (``teacher.input_spec``); ``expected_spec``
    (what the ADD config says), when given, must agree with it.
    """
    teacher = build_detector(teacher_model_config(student_model_cfg))
    state, stored_spec = read_teacher_checkpoint(checkpoint)
    if expected_spec is None:
        expected_spec = InputSpec.from_dict(stored_spec, str(checkpoint)) if stored_spec else InputSpec(kind="rgbd")
    teacher.input_spec = check_input_spec(expected_spec, stored_spec, str(checkpoint))
    if teacher.input_spec.kind != "rgbd":
        raise Add3dError(f"{checkpoint}: an RGB model, not a depth teacher (its input spec says '{teacher.input_spec.kind}')")
    try:
        teacher.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise Add3dError(
            f"{checkpoint}: not a teacher checkpoint for this student model (expected a "
            f"{TEACHER_IN_CHANNELS}-channel '{getattr(student_model_cfg, 'name', '?')}' detector): {first_line}"
        ) from error
    return freeze(teacher)
