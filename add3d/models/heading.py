"""Multi-bin encoding of the observation angle alpha (MonoDLE / GUPNet convention).

The circle is cut into ``num_bins`` bins whose centres sit at ``k * 2pi / num_bins`` (bin 0 is
centred on alpha = 0). A network classifies the bin and regresses the residual from the bin centre,
which avoids the wrap-around discontinuity of regressing an angle directly.

The functions take numpy arrays (the data pipeline) or torch tensors (the detectors).
"""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_HEADING_BINS = 12


def encode_heading(alpha, num_bins: int = NUM_HEADING_BINS):
    """alpha (radians, any range) -> (bin index int64, residual from the bin centre in radians).

    Takes a torch tensor (the detectors' losses, from ``targets["alpha"]``; computed in float64,
    residual returned as float32) or a numpy array / float (returned as float64 numpy arrays).
    """
    bin_size = 2.0 * math.pi / num_bins
    if isinstance(alpha, torch.Tensor):
        # Shift by half a bin so that bin k covers [k*size - size/2, k*size + size/2).
        shifted = torch.remainder(torch.remainder(alpha.double(), 2.0 * math.pi) + bin_size / 2.0, 2.0 * math.pi)
        bins = torch.floor(shifted / bin_size).clamp(max=num_bins - 1)
        residual = shifted - (bins * bin_size + bin_size / 2.0)
        return bins.long(), residual.float()
    shifted = (np.asarray(alpha, dtype=np.float64) % (2.0 * math.pi) + bin_size / 2.0) % (2.0 * math.pi)
    bins = np.minimum(np.floor(shifted / bin_size).astype(np.int64), num_bins - 1)
    residual = shifted - (bins * bin_size + bin_size / 2.0)
    return bins, residual


def heading_from_bin(bins, residual, num_bins: int = NUM_HEADING_BINS):
    """Inverse of :func:`encode_heading`, wrapped to (-pi, pi] as in KITTI labels."""
    bin_size = 2.0 * math.pi / num_bins
    angle = bins * bin_size + residual
    if isinstance(angle, torch.Tensor):
        return torch.where(angle > math.pi, angle - 2.0 * math.pi, angle)
    return np.where(angle > math.pi, angle - 2.0 * math.pi, angle)


def decode_heading(heading: torch.Tensor, num_bins: int = NUM_HEADING_BINS) -> torch.Tensor:
    """Head output ``(..., 2 * num_bins)`` = (bin logits, residuals) -> alpha ``(...)``.

    The residual of the arg-max bin is used, as in MonoDLE.
    """
    logits, residuals = heading[..., :num_bins], heading[..., num_bins : 2 * num_bins]
    bins = logits.argmax(dim=-1, keepdim=True)
    residual = residuals.gather(-1, bins).squeeze(-1)
    return heading_from_bin(bins.squeeze(-1).to(residual.dtype), residual, num_bins)
