"""ADD's distillation losses. Each is exactly zero when the student matches the teacher.

All losses are normalised by the amount of supervision (mask sum, number of objects) with a floor,
so a batch without objects gives 0, never NaN, and the scale does not depend on batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from add3d.geometry.tensor_geometry import roi_rows


def foreground_mask(heatmap: Tensor, background_weight: float) -> Tensor:
    """B x 1 x h x w weights: max over classes of the Gaussian heatmap target + background weight.

    Why: objects are a tiny part of a driving image; an unweighted feature loss is dominated by
    road and sky, which the teacher's depth input helps least.
    """
    return heatmap.amax(dim=1, keepdim=True) + background_weight


def feature_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """L_feat: per-cell MSE (mean over channels) weighted by ``mask``, normalised by the mask sum."""
    per_cell = (student.float() - teacher.float()).pow(2).mean(dim=1, keepdim=True)
    return (per_cell * mask.float()).sum() / mask.sum().clamp(min=1e-6)


def region_loss(student: Tensor, teacher: Tensor, boxes: Tensor, mask: Tensor, size: int) -> Tensor:
    """L_region: MSE between ``size x size`` ROI-aligned crops of two B x C x h x w maps at the
    B x M x 4 boxes (x1, y1, x2, y2 in map pixels) of the real objects (``mask`` > 0), averaged per object.

    Every object counts once whatever its area, unlike :func:`feature_loss` under a Gaussian mask.
    """
    from torchvision.ops import roi_align  # here: torchvision takes seconds to import (add3d --help)

    real = mask > 0
    if not bool(real.any()):
        return student.sum() * 0.0  # keeps the adapter in the graph (DDP) with zero gradient
    rois = roi_rows(boxes.float(), real)
    student_crops = roi_align(student.float(), rois, (size, size), spatial_scale=1.0)  # AMP: fp32
    teacher_crops = roi_align(teacher.float(), rois, (size, size), spatial_scale=1.0)
    return (student_crops - teacher_crops).pow(2).mean()


def object_loss(student: Tensor, teacher: Tensor, mask: Tensor, kind: str = "mse") -> Tensor:
    """L_obj between B x M x C object features; ``mask`` B x M marks real objects.

    ``kind="mse"``: mean squared error over channels; ``"cosine"``: 1 - cosine similarity.
    """
    student, teacher = student.float(), teacher.float()  # AMP: reduce in fp32
    if kind == "cosine":
        per_object = 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)
    elif kind == "mse":
        per_object = (student - teacher).pow(2).mean(dim=-1)
    else:
        raise ValueError(f"object loss must be 'mse' or 'cosine', got {kind!r}")
    real = mask > 0
    return torch.where(real, per_object, 0.0).sum() / real.sum().clamp(min=1)


def heatmap_response_loss(student_logits: Tensor, teacher_logits: Tensor, gaussian: Tensor) -> Tensor:
    """Heatmap response distillation: MSE of sigmoid scores under the Gaussian object mask.

    ``gaussian`` is the heatmap target (B x C x h x w); its max over classes weights every class
    channel, so the student also learns the teacher's scores for the *other* classes at an object.
    """
    weight = gaussian.float().amax(dim=1, keepdim=True)
    per_cell = (torch.sigmoid(student_logits.float()) - torch.sigmoid(teacher_logits.float())).pow(2).mean(dim=1, keepdim=True)
    return (per_cell * weight).sum() / weight.sum().clamp(min=1.0)


def regression_response_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], mask: Tensor,
                             head_weights: dict[str, float] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """L1 between per-object head outputs (``detector.response_outputs``: name -> B x M x k).

    Returns the sum over heads, each times its ``head_weights`` entry (1 if absent), and each head's
    unweighted term (for logging). Teacher values are targets (detached); heads missing from either
    side are a programming error.
    """
    if student.keys() != teacher.keys():
        raise KeyError(f"student and teacher response outputs differ: {sorted(student)} vs {sorted(teacher)}")
    real = mask > 0
    parts: dict[str, Tensor] = {}
    for name in student:
        s, t = student[name].float(), teacher[name].detach().float()
        s, t = s.reshape(*s.shape[:2], -1), t.reshape(*t.shape[:2], -1)
        # Padded slots may hold anything (even inf from a decoded exp); select, never multiply by 0.
        # A non-finite teacher value is no target: that object is skipped for this head.
        # Both sides are zeroed before subtracting so that no NaN can reach the gradient.
        valid = real & torch.isfinite(t).all(dim=-1)
        s = torch.where(valid[..., None], s, 0.0)
        t = torch.where(valid[..., None], t, 0.0)
        per_object = (s - t).abs().mean(dim=-1)  # B x M
        parts[name] = per_object.sum() / valid.sum().clamp(min=1)
    weights = head_weights or {}
    total = sum(weights.get(name, 1.0) * value for name, value in parts.items()) if parts else mask.new_zeros(())
    return total, parts
