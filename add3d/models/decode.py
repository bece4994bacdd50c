"""Shared decoding pieces of the CenterNet-style detectors (MonoDLE, GUPNet, MonoFlex).

All functions are vectorised torch on whatever device the outputs live on. Image-space quantities
move through three frames: feature-map pixels (network output, stride S), network-input pixels
(feature * S) and original-image pixels (``meta["input_to_original"]`` applied), in which the
original calibration ``meta["P2"]`` back-projects them to the rectified camera frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from add3d.geometry.tensor_geometry import cell_xy, wrap_angle

from add3d.data.kitti import Object3D


def peak_nms(heatmap: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep only local maxima of a score map (3x3 max-pool "NMS" of CenterNet); others become 0."""
    pooled = F.max_pool2d(heatmap, kernel, stride=1, padding=(kernel - 1) // 2)
    return heatmap * (pooled == heatmap).to(heatmap.dtype)


def top_k_peaks(heatmap: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The ``k`` best (class, position) pairs of a ``B x C x h x w`` score map, jointly over classes.

    Returns ``scores``, ``indices`` (flat y * w + x), ``cls_ids``, ``xs``, ``ys`` (integer feature
    pixels as float), each ``B x k``. ``k`` is capped by the number of cells.
    """
    batch, classes, height, width = heatmap.shape
    k = min(k, classes * height * width)
    scores, flat = heatmap.reshape(batch, -1).topk(k, dim=1)
    cls_ids = torch.div(flat, height * width, rounding_mode="floor")
    indices = flat - cls_ids * height * width
    xs, ys = cell_xy(indices, width)
    return {"scores": scores, "indices": indices, "cls_ids": cls_ids, "xs": xs.to(scores.dtype), "ys": ys.to(scores.dtype)}


def depth_from_logit(logit: torch.Tensor) -> torch.Tensor:
    """MonoDLE's depth transform ``1 / sigmoid(x) - 1``: positive, ~1 m at x = 0, unbounded far away.

    In float32 always: in fp16 it overflows (> 65504) for logits below about -11.
    """
    return 1.0 / (torch.sigmoid(logit.float()) + 1e-6) - 1.0


def apply_affine(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Map ``B x ... x 2`` pixel points with per-image ``B x 2 x 3`` affine matrices."""
    batch = points.shape[0]
    flat = points.reshape(batch, -1, 2)
    mapped = flat @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]
    return mapped.reshape(points.shape)


def feature_to_original(points: torch.Tensor, input_to_original: torch.Tensor, stride: int) -> torch.Tensor:
    """Feature-map pixel coordinates ``B x ... x 2`` -> original-image pixel coordinates."""
    return apply_affine(points * stride, input_to_original.to(points.dtype))


def input_to_frame(input_to_original: torch.Tensor, original_width: torch.Tensor) -> torch.Tensor:
    """``B x 2 x 3`` map of network-input pixels to the augmented frame: the original image, mirrored
    (u -> width - u) when the input was flipped -- the image whose camera is ``input_to_frame @ P2_input``."""
    frame = input_to_original.clone()
    mirrored = torch.linalg.det(input_to_original[:, :, :2].double()) < 0
    flipped_row = torch.cat([-input_to_original[:, 0, :2], original_width[:, None] - input_to_original[:, 0, 2:]], dim=1)
    frame[:, 0] = torch.where(mirrored[:, None], flipped_row.to(frame.dtype), input_to_original[:, 0])
    return frame


def official_input_to_image(
    points: torch.Tensor, input_to_image: torch.Tensor, image_size: torch.Tensor, input_hw: tuple[int, int]
) -> torch.Tensor:
    """Network-input pixels ``B x ... x 2`` -> image pixels the way the official MonoDLE / GUPNet code
    maps them (``compat: official``).

    The official code scales by image size / input size per axis (its ``coord_range`` and
    ``bbox_downsample_ratio``), but the input is a UNIFORM scale of the image set by the width, so
    vertically it is off: it stretches rows about the input's centre row by
    (H_image / W_image) / (H_input / W_input) -- 1.0074 on a 1224x370 KITTI frame into 1280x384,
    up to 1.4 px at the top and bottom. Horizontally it is exact. ``input_to_image`` is the exact
    affine (``input_to_original`` or :func:`input_to_frame`), ``image_size`` ``B x 2`` (W, H).
    """
    height, width = input_hw
    batch = points.shape[0]
    flat = points.reshape(batch, -1, 2).to(input_to_image.dtype)
    u = flat[..., 0] * input_to_image[:, None, 0, 0] + flat[..., 1] * input_to_image[:, None, 0, 1] + input_to_image[:, None, 0, 2]
    centre_row = input_to_image[:, 1, 0] * width / 2.0 + input_to_image[:, 1, 1] * height / 2.0 + input_to_image[:, 1, 2]
    crop_width = input_to_image[:, 0, :2].norm(dim=1) * width
    crop_height = crop_width * image_size[:, 1].to(crop_width.dtype) / image_size[:, 0].to(crop_width.dtype)
    v = (flat[..., 1] / height - 0.5) * crop_height[:, None] + centre_row[:, None]
    return torch.stack([u, v], dim=-1).reshape(points.shape).to(points.dtype)


def official_frame_camera(P2: torch.Tensor, input_to_original: torch.Tensor, original_width: torch.Tensor) -> torch.Tensor:
    """``P2`` of the augmented frame as GUPNet's ``Calibration.flip`` makes it (``compat: official``).

    For a flipped input it mirrors the camera of :func:`official_back_project`: cu -> W - cu and
    P2[0,3] -> -P2[0,3] (exact: W P2[2,3] - P2[0,3], 6 px apart on KITTI); unflipped inputs keep P2.
    """
    mirrored = torch.linalg.det(input_to_original[:, :, :2].double()) < 0
    flipped = P2.clone()
    flipped[:, 0, 2] = original_width.to(P2.dtype) - P2[:, 0, 2]
    flipped[:, 0, 3] = -P2[:, 0, 3]
    return torch.where(mirrored[:, None, None], flipped, P2)


def official_back_project(P2: torch.Tensor, u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """The official code's back-projection ``x = (u - cu) z / fu - P2[0,3] / fu`` (``compat: official``).

    It drops P2[2,3] (KITTI: ~2.7 mm), so it is off by ``u * P2[2,3] / fu`` from ``tensor_geometry.back_project``,
    about 2 mm at 20 m.
    """
    P2 = P2.to(depth.dtype)
    fu, fv, cu, cv = (P2[:, None, 0, 0], P2[:, None, 1, 1], P2[:, None, 0, 2], P2[:, None, 1, 2])
    x = (u - cu) * depth / fu - P2[:, None, 0, 3] / fu
    y = (v - cv) * depth / fv - P2[:, None, 1, 3] / fv
    return torch.stack([x, y, depth], dim=-1)


def heatmap_scores(heatmap_logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid heatmap scores, kept off exactly 0 and 1 (CenterNet's clamp) so logs stay finite."""
    return torch.sigmoid(heatmap_logits.float()).clamp(1e-4, 1.0 - 1e-4)


def mirror_alpha_if_flipped(alpha: torch.Tensor, input_to_original: torch.Tensor) -> torch.Tensor:
    """Observation angles ``B x K`` of a mirrored input (flip augmentation: the affine's determinant
    is negative) expressed in the original image: pi - alpha. Other images pass through."""
    mirrored = torch.linalg.det(input_to_original[:, :, :2].double()) < 0
    return torch.where(mirrored[:, None], wrap_angle(math.pi - alpha), alpha)


def detections_to_objects(classes, keep, cls_ids, alpha, box2d, dims, location, rotation_y, scores):
    """Batched decoded tensors (``B x K`` / ``B x K x n``) -> per-image lists of KITTI ``Object3D``
    for the slots where ``keep`` is true, in slot order."""
    columns = [t.cpu().numpy() for t in (keep, cls_ids, alpha, box2d, dims, location, rotation_y, scores)]
    results = []
    for keep_b, cls_b, alpha_b, box_b, dims_b, loc_b, ry_b, score_b in zip(*columns):
        results.append(
            [
                Object3D(
                    cls_type=classes[int(cls_b[j])],
                    alpha=float(alpha_b[j]),
                    box2d=box_b[j],
                    dims=dims_b[j],
                    location=loc_b[j],
                    rotation_y=float(ry_b[j]),
                    score=float(score_b[j]),
                )
                for j in range(len(keep_b))
                if keep_b[j]
            ]
        )
    return results
