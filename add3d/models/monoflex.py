"""MonoFlex (Zhang et al., "Objects are Different: Flexible Monocular 3D Object Detection", CVPR 2021).

DLA-34 + DLAUp with deformable convolutions (``model.deformable_neck``), then per-pixel heads read
at the heatmap peak: FCOS-style 2D box (distances to the left/top/right/bottom edges), 3D-centre
offset, 10 projected keypoints (8 corners + bottom and top centres) with the uncertainties of the
3 keypoint depths, 3D size as a log-ratio to the class mean, 4-bin overlapping orientation, and a
direct depth with its uncertainty.

Why: depth is the weak spot of monocular detection, so MonoFlex estimates it four ways (direct +
three keypoint-height groups, see :mod:`add3d.models.keypoint_depth`) and averages them weighted by
their predicted inverse uncertainties; the same weighted uncertainty lowers the score of unsure
detections. Objects whose projected centre falls outside the image are "truncated": their peak
sits on the border (``targets["truncated"]``), edge fusion (:mod:`add3d.models.edge_fusion`)
refines the border outputs and their 3D offset gets a log-scaled loss.

Camera: keypoint depths need the vertical focal length of the *network input* camera,
``meta["P2_input"]``, which :meth:`loss`, :meth:`response_outputs` and :meth:`decode` read from
the batch meta they are given. Depth targets are ``targets["location"][..., 2]``; 3D losses use
``mask_3d`` (MonoFlex trains without crop augmentation, where that equals ``mask_2d``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.geometry.tensor_geometry import (
    alpha_to_rotation_y,
    back_project,
    cell_xy,
    gather_at_indices,
    ray_angle,
    rotation_y_to_alpha,
)
from add3d.models.decode import (
    depth_from_logit,
    detections_to_objects,
    feature_to_original,
    heatmap_scores,
    mirror_alpha_if_flipped,
    official_back_project,
    peak_nms,
    top_k_peaks,
)
from add3d.models.detector import MonoDetector, build_trunk
from add3d.models.edge_fusion import EdgeFusion
from add3d.models.necks import DLASegNeck
from add3d.models.keypoint_depth import NUM_KEYPOINTS, depth_groups_valid, depths_from_keypoints, modified_visibility, soft_ensemble
from add3d.models.losses import focal_loss, masked_mean
from add3d.models.multibin import decode_multibin, multibin_loss

if TYPE_CHECKING:  # annotation only (models/config.py imports MonoFlexOptions from here)
    from add3d.models.config import ModelConfig

HEATMAP_PRIOR_PROBABILITY = 0.01  # MonoFlex's INIT_P

# MonoFlex's published loss weights (runs/monoflex.yaml INIT_LOSS_WEIGHT), by our term names.
MONOFLEX_LOSS_WEIGHTS = {
    "heatmap": 1.0,
    "box2d": 1.0,  # GIoU of the FCOS-style 2D box
    "depth": 1.0,  # direct depth, uncertainty-attenuated L1
    "offset_3d": 0.5,
    "truncated_offset_3d": 0.1,  # log(1 + L1) for objects whose 3D centre is outside the image
    "orientation": 1.0,
    "size_3d": 1.0,
    "corners": 0.2,
    "keypoints": 1.0,
    "keypoint_depth": 0.2,
    "ensemble_depth": 0.2,
}


@dataclass
class MonoFlexOptions:
    """The ``model.monoflex`` config section."""

    edge_fusion: bool = True
    orientation_bins: int = 4
    depth_range: list[float] = field(default_factory=lambda: [0.1, 100.0])  # clamp of every depth estimate
    uncertainty_range: list[float] = field(default_factory=lambda: [-10.0, 10.0])  # clamp of log-sigma
    relaxed_keypoint_visibility: bool = True  # MonoFlex's KEYPOINT_VISIBLE_MODIFY
    # Detection score = heatmap x confidence(sigma of the depth ensemble). "monoflex": 1 - clamp(sigma,
    # 0.01, 1) (MonoFlex); "exp": exp(-sigma), which still ranks detections when every sigma >= 1 m
    # (short CPU runs, where MonoFlex's formula gives them all score 0).
    confidence: str = "monoflex"
    # MonoFlex reads these (not model.loss_weights, whose defaults are MonoDLE's).
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(MONOFLEX_LOSS_WEIGHTS))


def regression_outputs(orientation_bins: int) -> dict[str, int]:
    """Regression maps and their channels; each gets its own conv3x3-BN-ReLU trunk (MonoFlex)."""
    return {
        "box2d": 4,  # distances (left, top, right, bottom) from the peak, feature pixels (ReLU'd)
        "offset_3d": 2,  # projected 3D centre - peak
        "keypoints": 2 * NUM_KEYPOINTS,  # (x, y) of each keypoint relative to the peak
        "keypoint_uncertainty": 3,  # log-sigma of the 3 keypoint depths
        "size_3d": 3,  # log(size / class mean), (h, w, l)
        "orientation": 4 * orientation_bins,  # multi-bin logits + (sin, cos) residuals
        "depth": 1,  # direct depth logit: depth = 1 / sigmoid(x) - 1
        "depth_uncertainty": 1,  # log-sigma of the direct depth
    }


# The published heads normalise with in-place ABN (runs/monoflex.yaml MODEL.INPLACE_ABN: True), i.e.
# BN followed by a leaky ReLU of slope 0.01; in-place ABN scales by |weight| + eps (see
# :func:`convert_official`), plain BN here so that training needs no extra package.
HEAD_LEAKY_SLOPE = 0.01


def _trunk(in_channels: int, head_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(head_channels),
        nn.LeakyReLU(HEAD_LEAKY_SLOPE, inplace=True),
    )


def box_corners(centre: torch.Tensor, dims: torch.Tensor, rotation_y: torch.Tensor) -> torch.Tensor:
    """Corners ``(..., 8, 3)`` of boxes with geometric ``centre`` (..., 3), dims (h, w, l), yaw (...).

    Same order as :func:`add3d.geometry.boxes.box3d_corners` (which takes the bottom centre).
    """
    h, w, l = dims[..., 0:1], dims[..., 1:2], dims[..., 2:3]
    sx = centre.new_tensor([1, 1, -1, -1, 1, 1, -1, -1]) / 2
    sy = centre.new_tensor([1, 1, 1, 1, -1, -1, -1, -1]) / 2
    sz = centre.new_tensor([1, -1, -1, 1, 1, -1, -1, 1]) / 2
    x, y, z = l * sx, h * sy, w * sz  # (..., 8)
    c, s = torch.cos(rotation_y)[..., None], torch.sin(rotation_y)[..., None]
    return torch.stack([c * x + s * z, y, -s * x + c * z], dim=-1) + centre[..., None, :]


def giou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of boxes given as (left, top, right, bottom) distances from a shared point (FCOS)."""
    pred_area = (pred[..., 0] + pred[..., 2]) * (pred[..., 1] + pred[..., 3])
    target_area = (target[..., 0] + target[..., 2]) * (target[..., 1] + target[..., 3])
    inter_w = torch.minimum(pred[..., 0], target[..., 0]) + torch.minimum(pred[..., 2], target[..., 2])
    inter_h = torch.minimum(pred[..., 1], target[..., 1]) + torch.minimum(pred[..., 3], target[..., 3])
    hull_w = torch.maximum(pred[..., 0], target[..., 0]) + torch.maximum(pred[..., 2], target[..., 2])
    hull_h = torch.maximum(pred[..., 1], target[..., 1]) + torch.maximum(pred[..., 3], target[..., 3])
    inter = inter_w * inter_h
    union = pred_area + target_area - inter
    hull = hull_w * hull_h + 1e-7
    iou = (inter + 1.0) / (union + 1.0)  # +1 smoothing as in MonoFlex (FCOS)
    return 1.0 - (iou - (hull - union) / hull)


class MonoFlex(MonoDetector):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        options = cfg.monoflex
        sizes = torch.tensor(cfg.class_mean_sizes(), dtype=torch.float32)
        if (sizes <= 0).any():
            raise Add3dError("MonoFlex regresses sizes as ratios to model.mean_size: every class needs positive (h, w, l) and model.use_mean_size: true")
        if options.confidence not in ("monoflex", "exp"):
            raise Add3dError(f"model.monoflex.confidence must be 'monoflex' or 'exp', got '{options.confidence}'")
        if options.orientation_bins < 2:
            raise Add3dError(f"model.monoflex.orientation_bins must be >= 2, got {options.orientation_bins}")
        self.options = options
        self.depth_range = (float(options.depth_range[0]), float(options.depth_range[1]))
        self.uncertainty_range = (float(options.uncertainty_range[0]), float(options.uncertainty_range[1]))
        self.loss_weights = {name: float(weight) for name, weight in options.loss_weights.items()}
        self.top_k = cfg.top_k
        self.score_threshold = cfg.score_threshold
        # Not persistent: the state dict stays that of the network alone (configs carry the means).
        self.register_buffer("mean_size", sizes, persistent=False)

        self.backbone, self.neck = build_trunk(cfg, DLASegNeck)
        self.feature_channels = self.neck.out_channels
        head_channels = cfg.head_channels
        self.heatmap_trunk = _trunk(self.feature_channels, head_channels)
        self.heatmap_out = nn.Conv2d(head_channels, self.num_classes, 1)
        nn.init.constant_(self.heatmap_out.bias, -math.log(1.0 / HEATMAP_PRIOR_PROBABILITY - 1.0))
        channels = regression_outputs(options.orientation_bins)
        self.regression_trunks = nn.ModuleDict({name: _trunk(self.feature_channels, head_channels) for name in channels})
        self.regression_outs = nn.ModuleDict({name: nn.Conv2d(head_channels, c, 1) for name, c in channels.items()})
        for name, conv in self.regression_outs.items():
            if name.endswith("uncertainty"):  # start near log-sigma = 0 (MonoFlex's UNCERTAINTY_INIT)
                nn.init.xavier_normal_(conv.weight, gain=0.01)
            nn.init.zeros_(conv.bias)
        self.edge_fusion = EdgeFusion(head_channels, self.num_classes) if options.edge_fusion else None

    # ----- forward ----------------------------------------------------------------------------------
    def forward(self, image, targets=None, meta=None) -> dict[str, torch.Tensor]:
        """Dense outputs (heatmap as logits) + ``features``; ``targets``/``meta`` are unused."""
        features = self.extract_features(image)
        heatmap_features = self.heatmap_trunk(features)
        outputs = {"features": features, "heatmap": self.heatmap_out(heatmap_features)}
        offset_features = None
        for name, trunk in self.regression_trunks.items():
            trunk_features = trunk(features)
            outputs[name] = self.regression_outs[name](trunk_features)
            if name == "offset_3d":
                offset_features = trunk_features
        if self.edge_fusion is not None:
            outputs["heatmap"], outputs["offset_3d"] = self.edge_fusion(
                heatmap_features, offset_features, outputs["heatmap"], outputs["offset_3d"]
            )
        return outputs

    # ----- per-object decoding (shared by loss, responses and detection decoding) --------------------
    def object_predictions(
        self, outputs: dict[str, torch.Tensor], indices: torch.Tensor, cls_ids: torch.Tensor, P2_input: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Head outputs at flat positions ``indices`` (B x K), turned into metric quantities."""
        # Metric decoding in float32 even under mixed precision (exp, divisions by pixel heights).
        sampled = {name: gather_at_indices(outputs[name], indices).float() for name in self.regression_outs}
        batch, slots = indices.shape
        low, high = self.uncertainty_range
        dims = torch.exp(sampled["size_3d"]) * self.mean_size[cls_ids.long().clamp(0, self.num_classes - 1)]
        direct = depth_from_logit(sampled["depth"][..., 0]).clamp(*self.depth_range)
        keypoints = sampled["keypoints"].reshape(batch, slots, NUM_KEYPOINTS, 2)
        focal = P2_input[:, 1, 1].to(dims)[:, None]
        keypoint_depths = depths_from_keypoints(keypoints, dims[..., 0], focal, self.stride, self.depth_range)
        log_sigma = torch.cat(
            [sampled["depth_uncertainty"].clamp(low, high), sampled["keypoint_uncertainty"].clamp(low, high)], dim=-1
        )
        all_depths = torch.cat([direct[..., None], keypoint_depths], dim=-1)
        depth, sigma = soft_ensemble(all_depths, log_sigma)
        return {
            "box2d": F.relu(sampled["box2d"]),
            "offset_3d": sampled["offset_3d"],
            "keypoints": keypoints,
            "size_3d": dims,
            "orientation": sampled["orientation"],
            "direct_depth": direct,
            "keypoint_depths": keypoint_depths,
            "log_sigma": log_sigma,  # (direct, centre, diagonal 02, diagonal 13)
            "depth": depth,
            "sigma": sigma,
        }

    @staticmethod
    def _camera(meta, device: torch.device) -> torch.Tensor:
        """``meta["P2_input"]`` (B x 3 x 4) as float32 on ``device``."""
        if meta is None or "P2_input" not in meta:
            raise Add3dError("MonoFlex needs the network-input camera meta['P2_input'] for its keypoint depths")
        return torch.as_tensor(meta["P2_input"], dtype=torch.float32, device=device)

    # ----- loss ---------------------------------------------------------------------------------------
    @staticmethod
    def box2d_targets(targets: dict[str, torch.Tensor], peak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MonoFlex's 2D box targets ``(B, M, 4)`` (feature pixels) and where the 2D box is trained.

        The box is the projection of the 3D box when all 8 corners project inside the image (it is
        consistent with the 3D label; KITTI's hand-drawn boxes differ from it by up to ~10 px), else
        the labelled box. The 2D box is not trained where the heatmap ``peak`` (B, M, 2) lies outside
        it: the ReLU'd edge distances cannot reach a negative target (a peak outside the box is common
        for small truncated objects), and trying to kills the head. Sources: zhangyp15/MonoFlex
        data/datasets/kitti.py (``projected_box2d``, ``pred_2D``).
        """
        label_box = targets["box2d"].to(peak.dtype)
        corners = targets["keypoints"][..., :8, :].to(peak.dtype) + peak[..., None, :]
        projected = torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)
        inside = (targets["keypoints_visible"][..., :8] > 0).all(dim=-1, keepdim=True)
        box = torch.where(inside, projected, label_box)
        peak_inside = (peak >= box[..., :2]).all(dim=-1) & (peak <= box[..., 2:]).all(dim=-1)
        valid = (box[..., 2] > box[..., 0]) & (box[..., 3] > box[..., 1]) & peak_inside
        return box, valid

    def loss(self, outputs, targets, meta) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        P2_input = self._camera(meta, outputs["heatmap"].device)
        indices = targets["indices"].long()
        width = outputs["heatmap"].shape[3]
        preds = self.object_predictions(outputs, indices, targets["cls_ids"], P2_input)
        mask_2d = targets["mask_2d"] > 0
        mask_3d = (targets["mask_3d"] > 0) & mask_2d
        dtype = preds["depth"].dtype
        centre = torch.stack(cell_xy(indices, width), dim=-1).to(dtype)
        depth_target = targets["location"][..., 2].to(dtype)

        parts = {"heatmap": focal_loss(outputs["heatmap"], targets["heatmap"])}

        box, box_valid = self.box2d_targets(targets, centre)
        box_valid = box_valid & mask_2d
        box_target = torch.cat([centre - box[..., :2], box[..., 2:] - centre], dim=-1)
        parts["box2d"] = masked_mean(giou_loss_ltrb(preds["box2d"], box_target), box_valid)

        # Direct depth: L1 attenuated by its uncertainty (MonoFlex's L1 depth loss with log-sigma).
        log_sigma = preds["log_sigma"]
        depth_error = (preds["direct_depth"] - depth_target).abs()
        parts["depth"] = masked_mean(depth_error * torch.exp(-log_sigma[..., 0]) + log_sigma[..., 0], mask_3d)

        offset_error = (preds["offset_3d"] - targets["offset_3d"]).abs().sum(dim=-1)
        truncated = targets["truncated"] > 0
        parts["offset_3d"] = masked_mean(offset_error, mask_3d & ~truncated)
        parts["truncated_offset_3d"] = masked_mean(torch.log1p(offset_error), mask_3d & truncated)

        if bool(mask_3d.any()):
            # MonoFlex recomputes alpha from the label's rotation_y and location (KITTI's own alpha
            # field is rounded to 0.01 rad and occasionally inconsistent).
            location = targets["location"].to(dtype)
            alpha = rotation_y_to_alpha(targets["rotation_y"].to(dtype), ray_angle(location[..., 0], location[..., 2]))
            parts["orientation"] = multibin_loss(preds["orientation"][mask_3d], alpha[mask_3d], self.options.orientation_bins)
        else:
            parts["orientation"] = preds["orientation"].sum() * 0.0
        parts["size_3d"] = masked_mean((preds["size_3d"] - targets["size_3d"]).abs().sum(dim=-1), mask_3d)

        visible = targets["keypoints_visible"] > 0
        if self.options.relaxed_keypoint_visibility:
            visible = modified_visibility(visible)
        keypoint_weight = (visible & mask_3d[..., None]).to(dtype)
        keypoint_error = (preds["keypoints"] - targets["keypoints"]).abs().sum(dim=-1)
        parts["keypoints"] = (keypoint_error * keypoint_weight).sum() / keypoint_weight.sum().clamp(min=1.0)

        # Keypoint depths: groups with all keypoints visible train depth and uncertainty; the others
        # only learn to report a large uncertainty (their depth is detached), as in MonoFlex.
        group_valid = depth_groups_valid(visible) & mask_3d[..., None]
        group_invalid = ~depth_groups_valid(visible) & mask_3d[..., None]
        keypoint_log_sigma = log_sigma[..., 1:]
        valid_error = (preds["keypoint_depths"] - depth_target[..., None]).abs()
        invalid_error = (preds["keypoint_depths"].detach() - depth_target[..., None]).abs()
        valid_term = (valid_error * torch.exp(-keypoint_log_sigma) + keypoint_log_sigma) * group_valid.to(dtype)
        invalid_term = invalid_error * torch.exp(-keypoint_log_sigma) * group_invalid.to(dtype)
        parts["keypoint_depth"] = valid_term.sum() / group_valid.sum().clamp(min=1) + (
            invalid_term.sum() / group_invalid.sum().clamp(min=1)
        )
        parts["ensemble_depth"] = masked_mean((preds["depth"] - depth_target).abs(), mask_3d)

        # Corner loss: the 8 corners of the box built from the ensemble depth, predicted offset,
        # size and orientation against the ground-truth corners.
        centre_input = (centre + preds["offset_3d"]) * self.stride
        centre_3d = back_project(P2_input, centre_input[..., 0], centre_input[..., 1], preds["depth"])
        alpha = decode_multibin(preds["orientation"], self.options.orientation_bins)
        rotation_y = alpha + ray_angle(centre_3d[..., 0], centre_3d[..., 2])  # unwrapped: only cos/sin follow
        predicted_corners = box_corners(centre_3d, preds["size_3d"], rotation_y)
        size_target = targets["size_3d"].to(dtype)
        target_centre = targets["location"].to(dtype) - torch.stack(
            [torch.zeros_like(size_target[..., 0]), size_target[..., 0] / 2, torch.zeros_like(size_target[..., 0])], dim=-1
        )
        target_corners = box_corners(target_centre, size_target, targets["rotation_y"].to(dtype))
        corner_error = (predicted_corners - target_corners).abs().sum(dim=-1).mean(dim=-1)
        parts["corners"] = masked_mean(corner_error, mask_3d)

        total = sum(self.loss_weights.get(name, 1.0) * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}

    # ----- response distillation -------------------------------------------------------------------
    def response_outputs(self, outputs, targets, meta, with_uncertainty: bool = True,
                         depth_in_metres: bool = False) -> dict[str, torch.Tensor]:
        """Per-object outputs at ``targets["indices"]`` (B x M x k), decoded where MonoFlex decodes them:
        keypoints, the four depths (as log-depth, so that far objects do not dominate the L1; in metres
        with ``depth_in_metres``) and their uncertainties, the ensemble depth, sizes in metres, orientation."""
        depth_space = (lambda depth: depth) if depth_in_metres else torch.log
        preds = self.object_predictions(
            outputs, targets["indices"].long(), targets["cls_ids"], self._camera(meta, outputs["heatmap"].device)
        )
        batch, slots = targets["indices"].shape
        responses = {
            "box2d": preds["box2d"],
            "offset_3d": preds["offset_3d"],
            "keypoints": preds["keypoints"].reshape(batch, slots, -1),
            "size_3d": preds["size_3d"],
            "orientation": preds["orientation"],
            "depth": depth_space(preds["direct_depth"])[..., None],
            "keypoint_depths": depth_space(preds["keypoint_depths"]),
            "depth_uncertainty": preds["log_sigma"],
            "ensemble_depth": depth_space(preds["depth"])[..., None],
        }
        if not with_uncertainty:
            del responses["depth_uncertainty"]
        return responses

    def object_depth(self, outputs, targets, meta) -> torch.Tensor:
        """The uncertainty-weighted ensemble depth (metres, what ``decode`` places boxes at) at the target slots: B x M."""
        camera = self._camera(meta, outputs["heatmap"].device)
        return self.object_predictions(outputs, targets["indices"].long(), targets["cls_ids"], camera)["depth"]

    # ----- decoding -------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, outputs, meta, score_threshold=None, top_k=None) -> list[list[Object3D]]:
        """Detections in original-image coordinates. ``score_threshold`` applies to the heatmap score
        (as in MonoFlex); the reported score is that times ``1 - clamp(sigma, 0.01, 1)`` (or
        ``exp(-sigma)`` with ``monoflex.confidence: exp``)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        top_k = self.top_k if top_k is None else top_k
        heatmap = heatmap_scores(outputs["heatmap"])
        device = heatmap.device
        peaks = top_k_peaks(peak_nms(heatmap), top_k)
        float_outputs = {name: outputs[name].float() for name in self.regression_outs}
        P2_input = self._camera(meta, device)
        preds = self.object_predictions(float_outputs, peaks["indices"], peaks["cls_ids"], P2_input)
        P2 = torch.as_tensor(meta["P2"], dtype=torch.float64, device=device)
        to_original = torch.as_tensor(meta["input_to_original"], dtype=torch.float64, device=device)
        size = torch.as_tensor(meta["original_size"], dtype=torch.float64, device=device)  # (width, height)

        centre = torch.stack([peaks["xs"], peaks["ys"]], dim=-1).double()
        box = preds["box2d"].double()
        corners = feature_to_original(
            torch.stack([centre - box[..., :2], centre + box[..., 2:]], dim=2), to_original, self.stride
        )
        box2d = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)
        box2d[..., 0::2] = torch.minimum(box2d[..., 0::2].clamp(min=0), (size[:, 0, None, None] - 1))
        box2d[..., 1::2] = torch.minimum(box2d[..., 1::2].clamp(min=0), (size[:, 1, None, None] - 1))

        centre_original = feature_to_original(centre + preds["offset_3d"].double(), to_original, self.stride)
        dims = preds["size_3d"].double()
        # model.compat official: zhangyp15/MonoFlex's back-projection, which ignores P2[2,3] (<= 5 mm on KITTI).
        unproject = official_back_project if self.cfg.compat == "official" else back_project
        centre_3d = unproject(P2, centre_original[..., 0], centre_original[..., 1], preds["depth"].double())
        location = centre_3d.clone()
        location[..., 1] += dims[..., 0] / 2
        alpha = decode_multibin(preds["orientation"].double(), self.options.orientation_bins)
        alpha = mirror_alpha_if_flipped(alpha, to_original)
        rotation_y = alpha_to_rotation_y(alpha, ray_angle(centre_3d[..., 0], centre_3d[..., 2]))
        sigma = preds["sigma"].double()
        confidence = torch.exp(-sigma) if self.options.confidence == "exp" else 1.0 - sigma.clamp(0.01, 1.0)
        scores = peaks["scores"].double() * confidence
        keep = (peaks["scores"] >= threshold) & torch.isfinite(location).all(dim=-1)

        return detections_to_objects(self.classes, keep, peaks["cls_ids"], alpha, box2d, dims, location,
                                     rotation_y, scores)


def build_monoflex(cfg: ModelConfig) -> MonoFlex:
    return MonoFlex(cfg)


def official_monoflex_config(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> ModelConfig:
    """The model config released MonoFlex weights need: the official code's decoding geometry."""
    return dataclasses.replace(cfg, compat="official", pretrained=None)


# ----- official checkpoints ---------------------------------------------------------------------------
# zhangyp15/MonoFlex (runs/monoflex.yaml): its class order, its regression groups in order (each one
# trunk; the orientation group has two output convs, bin logits then residuals), and its 3D size
# channel order (l, h, w), ours (h, w, l).
OFFICIAL_CLASSES = ("Car", "Pedestrian", "Cyclist")
OFFICIAL_REGRESSION_GROUPS = ("box2d", "offset_3d", "keypoints", "keypoint_uncertainty", "size_3d", "orientation", "depth", "depth_uncertainty")
OFFICIAL_SIZE_TO_OURS = [1, 2, 0]
INPLACE_ABN_EPS = 1e-5  # in-place ABN scales by |weight| + eps


def _neck_block_keys(prefix: str, ours: str) -> dict[str, str]:
    """Official ``DeformConv`` (``conv`` = DCN with its ``conv_offset_mask``, ``actf.0`` = BN) -> ours."""
    mapping = {
        f"{prefix}.conv.weight": f"{ours}.conv.weight",
        f"{prefix}.conv.bias": f"{ours}.conv.bias",
        f"{prefix}.conv.conv_offset_mask.weight": f"{ours}.offset_mask.weight",
        f"{prefix}.conv.conv_offset_mask.bias": f"{ours}.offset_mask.bias",
    }
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        mapping[f"{prefix}.actf.0.{name}"] = f"{ours}.bn.{name}"
    return mapping


def _ida_keys(official: str, ours: str, num_fused: int) -> dict[str, str]:
    mapping = {}
    for k in range(1, num_fused + 1):
        mapping.update(_neck_block_keys(f"{official}.proj_{k}", f"{ours}.projections.{k - 1}"))
        mapping.update(_neck_block_keys(f"{official}.node_{k}", f"{ours}.nodes.{k - 1}"))
        mapping[f"{official}.up_{k}.weight"] = f"{ours}.upsamplers.{k - 1}.weight"
    return mapping


def _bn_keys(official: str, ours: str) -> dict[str, str]:
    return {f"{official}.{n}": f"{ours}.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def convert_official_monoflex(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A zhangyp15/MonoFlex ``KeypointDetector`` state dict -> this MonoFlex's state dict.

    Renames every tensor; reorders the heatmap rows (and the edge-fusion heatmap rows) from the
    official class order to ``cfg.classes``, the 3D-size rows from (l, h, w) to (h, w, l); joins the
    orientation group's two output convs; turns the heads' in-place ABN scale into BN's
    (|weight| + eps). Drops the backbone's unused ImageNet classifier. Needs ``cfg`` with
    ``deformable_neck: true``, 4 orientation bins and edge fusion, as published; a missing or unknown
    tensor is an :class:`Add3dError` naming it.
    """
    if not cfg.deformable_neck or cfg.monoflex.orientation_bins != 4 or not cfg.monoflex.edge_fusion:
        raise Add3dError("official MonoFlex weights need model.deformable_neck: true, model.monoflex.orientation_bins: 4 "
                         "and model.monoflex.edge_fusion: true")
    unknown_classes = [c for c in cfg.classes if c not in OFFICIAL_CLASSES]
    if unknown_classes:
        raise Add3dError(f"official MonoFlex weights know the classes {', '.join(OFFICIAL_CLASSES)}, not {', '.join(unknown_classes)}")
    class_rows = [OFFICIAL_CLASSES.index(c) for c in cfg.classes]
    state = {k.removeprefix("module."): v for k, v in state.items()}

    mapping: dict[str, str] = {}
    for key in state:
        if key.startswith("backbone.base.") and not key.startswith("backbone.base.fc."):
            mapping[key] = "backbone." + key.removeprefix("backbone.base.")
    for i, fused in enumerate((1, 2, 3)):  # ida_0 fuses strides 16+32, ida_1 8..32, ida_2 4..32
        mapping.update(_ida_keys(f"backbone.dla_up.ida_{i}", f"neck.dla_up.stages.{i}", fused))
    mapping.update(_ida_keys("backbone.ida_up", "neck.ida_up", 2))
    head = "heads.predictor"
    mapping[f"{head}.class_head.0.weight"] = "heatmap_trunk.0.weight"
    mapping.update(_bn_keys(f"{head}.class_head.1", "heatmap_trunk.1"))
    for g, name in enumerate(OFFICIAL_REGRESSION_GROUPS):
        mapping[f"{head}.reg_features.{g}.0.weight"] = f"regression_trunks.{name}.0.weight"
        mapping.update(_bn_keys(f"{head}.reg_features.{g}.1", f"regression_trunks.{name}.1"))
    for official, ours in (("trunc_heatmap_conv", "heatmap_branch"), ("trunc_offset_conv", "offset_branch")):
        for a, b in (("0", "0"), ("3", "2")):
            for n in ("weight", "bias"):
                mapping[f"{head}.{official}.{a}.{n}"] = f"edge_fusion.{ours}.{b}.{n}"
        mapping.update(_bn_keys(f"{head}.{official}.1", f"edge_fusion.{ours}.1"))

    converted: dict[str, torch.Tensor] = {}
    for key, target in mapping.items():
        if key in state:
            converted[target] = state[key]
        elif not key.endswith("num_batches_tracked"):
            raise Add3dError(f"official MonoFlex state dict lacks '{key}'")
    for n in ("weight", "bias"):
        converted[f"heatmap_out.{n}"] = state[f"{head}.class_head.2.{n}"][class_rows]
        converted[f"edge_fusion.heatmap_branch.2.{n}"] = state[f"{head}.trunc_heatmap_conv.3.{n}"][class_rows]
        for g, name in enumerate(OFFICIAL_REGRESSION_GROUPS):
            if name == "orientation":
                value = torch.cat([state[f"{head}.reg_heads.{g}.0.{n}"], state[f"{head}.reg_heads.{g}.1.{n}"]])
            else:
                value = state[f"{head}.reg_heads.{g}.0.{n}"]
            converted[f"regression_outs.{name}.{n}"] = value[OFFICIAL_SIZE_TO_OURS] if name == "size_3d" else value
    for trunk in ["heatmap_trunk.1"] + [f"regression_trunks.{name}.1" for name in OFFICIAL_REGRESSION_GROUPS]:
        converted[f"{trunk}.weight"] = converted[f"{trunk}.weight"].abs() + INPLACE_ABN_EPS

    used = set(mapping) | {k for k in state if k.startswith("backbone.base.fc.")}
    used |= {f"{head}.class_head.2.{n}" for n in ("weight", "bias")} | {f"{head}.trunc_heatmap_conv.3.{n}" for n in ("weight", "bias")}
    used |= {k for k in state if k.startswith(f"{head}.reg_heads.")}
    left = sorted(k for k in state if k not in used)
    if left:
        raise Add3dError(f"official MonoFlex state dict has unexpected tensor(s): {', '.join(left[:5])}")
    return converted
