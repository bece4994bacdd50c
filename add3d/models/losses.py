"""Loss functions shared by the CenterNet-style detectors.

Per-object losses take head outputs gathered at the object centres (``B x M x k``), targets of the
same shape and an object mask ``B x M``. They average over the masked entries only and return an
exact 0 that is still connected to the graph when no object is present, so a batch without
objects neither produces NaN nor leaves parameters without gradient (which DDP would reject).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B x M or B x M x k) over the objects where ``mask`` (B x M) is set."""
    mask = mask.to(values.dtype)
    if values.dim() == mask.dim() + 1:
        weights = mask.unsqueeze(-1).expand_as(values)
    else:
        weights = mask
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CornerNet's penalty-reduced focal loss on a Gaussian heatmap (positives where target == 1).

    Normalised by the number of positives (by 1 when there are none), on the sigmoid of ``logits``
    clamped to [1e-4, 1 - 1e-4] as in CenterNet/MonoDLE for numerical safety.
    """
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1.0 - 1e-4)
    target = target.float()
    positive = target.eq(1.0).float()
    negative = 1.0 - positive
    pos_loss = torch.log(prob) * (1.0 - prob).pow(gamma) * positive
    neg_loss = torch.log(1.0 - prob) * prob.pow(gamma) * (1.0 - target).pow(beta) * negative
    return -(pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 averaged over the masked objects and their components (``F.l1_loss`` on the selection)."""
    return masked_mean((pred - target).abs(), mask)


def laplacian_uncertainty_loss(
    pred: torch.Tensor, target: torch.Tensor, log_variance: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Laplacian aleatoric loss ``sqrt(2) exp(-s) |pred - target| + s`` (s = predicted log-variance).

    The network can down-weight hard (far, occluded) objects by predicting a large s, paying s.
    """
    loss = 1.4142 * torch.exp(-log_variance) * (pred - target).abs() + log_variance
    return masked_mean(loss, mask)


def dimension_aware_l1(pred: torch.Tensor, target: torch.Tensor, dimensions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MonoDLE's dimension-aware L1: errors relative to the object's true size, rescaled to L1 magnitude.

    Each component's error is divided by the true dimension (a 10 cm error matters more on a
    pedestrian's width than on a car's length); a gradient-free factor then brings the loss back to
    the magnitude of the plain L1 so that the loss weights stay comparable.
    ``pred``/``target`` may be residuals from the class mean; ``dimensions`` are the true sizes.
    """
    error = (pred - target).abs()
    relative = error / dimensions.detach().abs().clamp(min=1e-2)
    with torch.no_grad():
        compensation = masked_mean(error, mask) / masked_mean(relative, mask).clamp(min=1e-12)
    return masked_mean(relative, mask) * compensation


def heading_loss(
    heading: torch.Tensor, target_bin: torch.Tensor, target_residual: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Multi-bin heading loss: cross-entropy over bins + L1 on the residual of the true bin.

    ``heading`` is ``B x M x 2N`` (N bin logits, then N residuals), targets ``B x M``.
    """
    num_bins = heading.shape[-1] // 2
    logits, residuals = heading[..., :num_bins], heading[..., num_bins:]
    target_bin = target_bin.long().clamp(0, num_bins - 1)
    classification = F.cross_entropy(logits.reshape(-1, num_bins), target_bin.reshape(-1), reduction="none")
    classification = masked_mean(classification.reshape(target_bin.shape), mask)
    predicted_residual = residuals.gather(-1, target_bin.unsqueeze(-1)).squeeze(-1)
    regression = masked_mean((predicted_residual - target_residual).abs(), mask)
    return classification + regression
