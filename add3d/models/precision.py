"""Float32 islands of mixed-precision training.

Under autocast the convolutions run in fp16 / bf16 and so do their outputs. The losses must not:
MonoDLE's depth transform 1 / (sigmoid(x) + 1e-6) - 1 overflows fp16 (max 65504) for logits below
about -11, and the Laplacian uncertainties exp(-s), the focal loss's logs and divisions by pixel
heights lose most of their precision. :func:`detector_loss` runs a detector's loss with autocast
off on float32 copies of its outputs; for float32 outputs those are the same tensors, so a
full-precision run computes exactly what it computed before.
"""

from __future__ import annotations

import torch
from torch import Tensor


def float32_outputs(outputs: dict) -> dict:
    """``outputs`` with every floating-point tensor in float32 (others unchanged)."""
    return {name: value.float() if isinstance(value, Tensor) and value.is_floating_point() else value
            for name, value in outputs.items()}


def detector_loss(detector, outputs: dict, targets: dict, meta: dict) -> tuple[Tensor, dict[str, Tensor]]:
    """``detector.loss(outputs, targets, meta)`` in float32 with autocast off."""
    device_type = next((v.device.type for v in outputs.values() if isinstance(v, Tensor)), "cpu")
    with torch.autocast(device_type=device_type, enabled=False):
        return detector.loss(float32_outputs(outputs), targets, meta)
