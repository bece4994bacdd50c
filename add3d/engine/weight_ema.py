"""An exponential moving average of a detector's weights (``train.ema_decay``), for validation and
the saved ``model``.

The synthetic benchmark's depth teachers swing at high learning rates: their validation collapses
just before the LR step while the training loss falls smoothly (docs/RESULTS.md). Averaging the
weights over the last few hundred steps is the usual cure (mmdetection's EMAHook, YOLO's ModelEMA).

The average is ``torch.optim.swa_utils.AveragedModel`` over parameters AND buffers (BatchNorm's
running statistics follow the averaged weights), with TensorFlow's ExponentialMovingAverage
warm-up: the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``, so the first steps'
random weights do not linger in short runs. Integer buffers (BatchNorm's batch counter) are copied.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def ema_rate(decay: float, updates: int | torch.Tensor) -> torch.Tensor:
    """The share of the average kept at an update, after ``updates`` earlier ones (the first copies)."""
    updates = torch.as_tensor(updates, dtype=torch.float64)
    return torch.clamp((1.0 + updates) / (10.0 + updates), max=decay)


def build_weight_ema(detector: torch.nn.Module, decay: float) -> AveragedModel:
    """A copy of ``detector`` whose ``update_parameters(detector)`` moves it towards the current weights."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"train.ema_decay must lie in (0, 1), got {decay}")

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        kept = ema_rate(decay, updates).to(device=averaged.device, dtype=averaged.dtype)
        return averaged * kept + current * (1 - kept)

    return AveragedModel(detector, avg_fn=average, use_buffers=True)
