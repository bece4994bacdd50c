"""MonoFlex's overlapping multi-bin orientation: 4 bins centred at 0, pi/2, pi, -pi/2.

Why overlapping bins: an angle near a bin border is a positive for both neighbouring bins (each
bin covers its half-width plus a ``margin`` of the bin size on either side), so the classifier is
never forced to choose at a hard border, and each positive bin regresses the residual as a
(sin, cos) pair, which has no wrap-around.

Head layout ``(..., 4 * num_bins)``: ``num_bins`` pairs of (negative, positive) logits, then
``num_bins`` (sin, cos) residual pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bin_centres(num_bins: int, like: torch.Tensor) -> torch.Tensor:
    centres = torch.arange(num_bins, dtype=like.dtype, device=like.device) * (2.0 * math.pi / num_bins)
    return torch.remainder(centres + math.pi, 2.0 * math.pi) - math.pi


def encode_multibin(alpha: torch.Tensor, num_bins: int = 4, margin: float = 1.0 / 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha ``(...)`` -> (positive mask ``(..., num_bins)`` float, residual from each centre ``(..., num_bins)``)."""
    bin_size = 2.0 * math.pi / num_bins
    reach = bin_size / 2.0 + margin * bin_size
    residual = alpha[..., None] - bin_centres(num_bins, alpha)
    residual = torch.remainder(residual + math.pi, 2.0 * math.pi) - math.pi
    positive = (residual.abs() < reach).to(alpha.dtype)
    return positive, residual


def decode_multibin(prediction: torch.Tensor, num_bins: int = 4) -> torch.Tensor:
    """Head output ``(..., 4 * num_bins)`` -> alpha ``(...)`` in [-pi, pi): the most confident bin's residual."""
    logits = prediction[..., : 2 * num_bins].reshape(*prediction.shape[:-1], num_bins, 2)
    best = logits.softmax(dim=-1)[..., 1].argmax(dim=-1, keepdim=True)  # (..., 1)
    residuals = prediction[..., 2 * num_bins : 4 * num_bins].reshape(*prediction.shape[:-1], num_bins, 2)
    pair = residuals.gather(-2, best[..., None].expand(*best.shape, 2)).squeeze(-2)
    alpha = torch.atan2(pair[..., 0], pair[..., 1]) + bin_centres(num_bins, prediction).gather(
        0, best.reshape(-1)
    ).reshape(best.shape[:-1])
    return torch.remainder(alpha + math.pi, 2.0 * math.pi) - math.pi


def multibin_loss(prediction: torch.Tensor, alpha: torch.Tensor, num_bins: int = 4, margin: float = 1.0 / 6.0) -> torch.Tensor:
    """MonoFlex's orientation loss for ``(N, 4 * num_bins)`` predictions and ``(N,)`` target alphas.

    Mean over bins of the per-bin 2-way cross-entropy, plus the L1 of the normalised (sin, cos)
    residual over every positive (object, bin) pair.
    """
    positive, residual = encode_multibin(alpha, num_bins, margin)
    logits = prediction[:, : 2 * num_bins].reshape(-1, num_bins, 2)
    classification = F.cross_entropy(logits.reshape(-1, 2), positive.reshape(-1).long(), reduction="none")
    classification = classification.reshape(-1, num_bins).mean(dim=0).sum() / num_bins
    pairs = F.normalize(prediction[:, 2 * num_bins : 4 * num_bins].reshape(-1, num_bins, 2), dim=-1)
    mask = positive.bool()
    if not mask.any():
        return classification + pairs.sum() * 0.0
    target = torch.stack([residual.sin(), residual.cos()], dim=-1)
    regression = (pairs[mask] - target[mask]).abs().sum() / mask.sum()
    return classification + regression
