"""Mixed precision: which autocast dtype a run uses, and its gradient scaler.

``train.amp`` is ``auto`` (bf16 on CUDA GPUs that support it, else fp16; off on CPU), ``off``,
``fp16`` or ``bf16``; a CPU run uses mixed precision only when asked explicitly. The detectors'
losses always run in float32 (:func:`add3d.models.precision.detector_loss`), whatever the forward
ran in.

The gradient scaler: fp16 needs loss scaling against gradient underflow (PyTorch's GradScaler
with its defaults). On CUDA every mode gets a scaler, also bf16 and off (there starting at scale 1;
powers of two scale gradients exactly), because it is what skips a step with non-finite gradients
without a host sync. On CPU only fp16 scales; the trainer checks the loss on the host instead.
"""

from __future__ import annotations

import torch

from add3d.errors import Add3dError

AMP_MODES = ("auto", "off", "fp16", "bf16")
# Configs written before the modes existed said `amp: true` (mixed precision on CUDA) or false.
LEGACY_AMP = {"True": "auto", "False": "off"}


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None = full float32)."""
    if mode not in AMP_MODES:
        raise Add3dError(f"train.amp must be one of {', '.join(AMP_MODES)}, got '{mode}'")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise Add3dError("train.amp is bf16 but this GPU does not support bfloat16; use fp16 or auto")
    return dtype


def build_grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    if dtype == torch.float16:
        return torch.amp.GradScaler(device.type)
    if device.type == "cuda":
        return torch.amp.GradScaler("cuda", init_scale=1.0)
    return torch.amp.GradScaler(device.type, enabled=False)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context of a training forward (a no-op for float32)."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
