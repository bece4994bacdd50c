"""GUPNet (Lu et al., "Geometry Uncertainty Projection Network for Monocular 3D Object Detection",
ICCV 2021): dense 2D heads, 3D heads on ROI-aligned features, geometric depth with propagated
uncertainty, and Hierarchical Task Learning.

Why the ROI design: the 3D heads see a fixed 7x7 crop of the neck features around each object's
2D box, plus where that box lies in the camera (a 2-channel map of normalised camera coordinates)
and the object's class, so they reason per object instead of per pixel.

Geometry Uncertainty Projection: depth follows from the 3D height H and the 2D box height h as
``z_geo = f * H / h``. The size head predicts H with a Laplacian log-variance s_H; the projection
carries it over, ``s_geo = s_H + 2 log(f / h)``. A depth head adds a learned residual with its own
log-variance s_net; the final depth ``z = z_geo + residual`` has log-variance
``logsumexp(s_net, s_geo)`` (the variances add). The decoding score is
``heatmap * exp(-sigma)`` with ``sigma = exp(s / 2)``.

Camera: we use the *network input* camera ``meta["P2_input"]`` and input-pixel box heights. That
equals the original-image camera with original-pixel heights GUPNet means (the affine resize scales f and h
alike) and stays right under flip / crop augmentation, so the depth target is the true depth
(``targets["depth"]``: the location's z, ``data.scale_depth_on_crop`` being off) and 3D losses apply
to cropped samples too, as in GUPNet. A depth teacher's depth-only jitter scales that target (and its
input depth) but not the 3D height, so the geometric depth stays at the image's scale and the residual
must read the depth input to reach the target.
``model.compat: official`` instead reproduces GUPNet's code, whose ``coord_range`` mapping makes
box heights 0.76 % too large on KITTI (docs/MODELS.md, "Differences"); released weights need it.

ROIs: at the object slots ``targets["indices"]`` during training and at the top-K heatmap peaks
otherwise. The boxes are the *predicted* 2D boxes at those slots, as in GUPNet's code (training
and inference then see the same kind of box), or the ground-truth ``targets["box2d"]`` with
``gupnet.train_rois: gt``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.geometry.tensor_geometry import (
    alpha_to_rotation_y,
    back_project,
    cell_xy,
    column_ray_angle,
    gather_at_indices,
    ray_angle,
    roi_rows,
    wrap_angle,
)
from add3d.models.decode import (
    depth_from_logit,
    feature_to_original,
    heatmap_scores,
    input_to_frame,
    mirror_alpha_if_flipped,
    official_back_project,
    official_frame_camera,
    official_input_to_image,
    peak_nms,
    top_k_peaks,
)
from add3d.models.detector import MonoDetector, build_trunk
from add3d.models.heading import decode_heading, encode_heading
from add3d.models.heads import build_heads
from add3d.models.htl import HierarchicalTaskLearning
from add3d.models.losses import focal_loss, heading_loss, laplacian_uncertainty_loss, masked_l1
from add3d.models.official_weights import OFFICIAL_CLASSES, official_class_order, rename_trunk_key, strip_data_parallel

if TYPE_CHECKING:  # annotation only (models/config.py imports GUPNetOptions from here)
    from add3d.models.config import ModelConfig


@dataclass
class GUPNetOptions:
    """The ``model.gupnet`` config section."""

    roi_size: int = 7  # ROI-align output size of the 3D heads
    train_rois: str = "predicted"  # predicted (GUPNet's code: predicted 2D boxes at GT centres) | gt
    htl: bool = True  # Hierarchical Task Learning loss weights (needs the trainer's on_epoch_start)
    htl_window: int = 5  # epochs of loss statistics HTL compares
    # Which log-variance attenuates the depth loss: "combined" (GUPNet: the residual's and the geometric
    # depth's variances added, so an object's weight can never exceed what its 2D/3D heights allow) or
    # "net" (the depth head's own): for a depth teacher whose residual reads metric depth, the geometric
    # variance would cap the weight of far, small objects (sigma ~5.7 m at 35-50 m on the synthetic benchmark).
    depth_loss_variance: str = "combined"

# Loss terms and the terms they build on (GUPNet's HTL graph).
TASK_PREREQUISITES = {
    "heatmap": [],
    "size_2d": [],
    "offset_2d": [],
    "offset_3d": ["size_2d", "offset_2d"],
    "size_3d": ["size_2d", "offset_2d"],
    "heading": ["size_2d", "offset_2d"],
    "depth": ["size_2d", "size_3d", "offset_2d"],
}
DENSE_OUTPUTS = ("heatmap", "offset_2d", "size_2d")  # heads on the whole feature map
ROI_OUTPUTS = {"depth": 2, "offset_3d": 2, "size_3d": 4, "heading": None}  # heading: 2 x bins


def _roi_head(in_channels: int, head_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU -> global average -> conv1x1: one vector per ROI (Xavier init as GUPNet)."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=True),
        nn.BatchNorm2d(head_channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(head_channels, out_channels, 1, bias=True),
    )
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return head


class GUPNet(MonoDetector):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        options = cfg.gupnet
        if options.train_rois not in ("predicted", "gt"):
            raise Add3dError(f"model.gupnet.train_rois must be 'predicted' or 'gt', got '{options.train_rois}'")
        if options.depth_loss_variance not in ("combined", "net"):
            raise Add3dError(f"model.gupnet.depth_loss_variance must be 'combined' or 'net', got '{options.depth_loss_variance}'")
        self.depth_loss_variance = options.depth_loss_variance
        if options.roi_size < 1:
            raise Add3dError(f"model.gupnet.roi_size must be >= 1, got {options.roi_size}")
        self.backbone, self.neck = build_trunk(cfg)
        self.feature_channels = self.neck.out_channels
        self.roi_size = options.roi_size
        self.train_rois = options.train_rois
        self.num_heading_bins = cfg.num_heading_bins
        self.top_k = cfg.top_k
        self.score_threshold = cfg.score_threshold
        self.loss_weights = {term: float(cfg.loss_weights.get(term, 1.0)) for term in TASK_PREREQUISITES}
        # Not persistent: the state dict stays that of the network (+ HTL statistics); configs carry the means.
        self.register_buffer("mean_size", torch.tensor(cfg.class_mean_sizes(), dtype=torch.float32), persistent=False)

        self.heads = build_heads(
            self.feature_channels, cfg.head_channels, {"heatmap": self.num_classes, "offset_2d": 2, "size_2d": 2}
        )
        roi_channels = self.feature_channels + 2 + self.num_classes
        self.roi_heads = nn.ModuleDict(
            {
                name: _roi_head(roi_channels, cfg.head_channels, channels or 2 * self.num_heading_bins)
                for name, channels in ROI_OUTPUTS.items()
            }
        )
        self.task_weighting = HierarchicalTaskLearning(TASK_PREREQUISITES, window=options.htl_window) if options.htl else None

    # ----- training schedule hook -----------------------------------------------------------------
    def on_epoch_start(self, epoch: int, num_epochs: int, measure_losses: Callable[[], None] | None = None) -> None:
        """Update the HTL loss weights from the loss statistics of the past epochs (DESIGN.md);
        ``measure_losses`` runs the no-grad pass over the training data that seeds them at epoch 0."""
        if self.task_weighting is not None:
            self.task_weighting.start_epoch(epoch, num_epochs, measure_losses)

    # ----- forward ----------------------------------------------------------------------------------
    def forward(self, image, targets=None, meta=None) -> dict[str, torch.Tensor]:
        if meta is None or "P2_input" not in meta:
            raise Add3dError("GUPNet needs meta['P2_input'] (the network-input camera): call detector(image, targets, meta=batch['meta'])")
        features = self.extract_features(image)
        outputs = {"features": features}
        for name, head in self.heads.items():
            outputs[name] = head(features)

        if targets is not None:
            indices = targets["indices"].long()
            cls_ids = targets["cls_ids"].long()
            mask = targets["mask_2d"] > 0
        else:
            peaks = top_k_peaks(peak_nms(heatmap_scores(outputs["heatmap"].detach())), self.top_k)
            indices, cls_ids = peaks["indices"], peaks["cls_ids"]
            mask = torch.ones_like(indices, dtype=torch.bool)
            outputs["roi_scores"] = peaks["scores"]
        outputs["roi_indices"], outputs["roi_cls_ids"], outputs["roi_mask"] = indices, cls_ids, mask

        if targets is not None and self.train_rois == "gt":
            boxes = targets["box2d"].to(features.dtype)
        else:
            boxes = self._predicted_boxes(outputs, indices)
        outputs["roi_boxes"] = boxes
        # Inference runs every top-K slot: no mask, so no data-dependent shapes (the graph exports to ONNX).
        outputs.update(self._roi_outputs(features, boxes, cls_ids, mask if targets is not None else None, meta))
        return outputs

    def _predicted_boxes(self, outputs: dict[str, torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
        """Predicted 2D boxes (x1, y1, x2, y2) in feature pixels at the flat positions ``indices`` (B x K)."""
        width = outputs["heatmap"].shape[3]
        xs, ys = (c.to(outputs["offset_2d"].dtype) for c in cell_xy(indices, width))
        centre = torch.stack([xs, ys], dim=-1) + gather_at_indices(outputs["offset_2d"], indices)
        half = gather_at_indices(outputs["size_2d"], indices) / 2
        return torch.cat([centre - half, centre + half], dim=-1)

    def _roi_camera(
        self, boxes: torch.Tensor, meta: dict, input_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per ROI slot (``B x K``): normalised camera coordinates (z = 1) of the top-left and
        bottom-right box corners, the box height in pixels (>= 1) and the focal length it pairs with.

        Exact: network-input pixels with the network-input camera. ``compat: official``: GUPNet's
        code, which maps the boxes to the (possibly flipped) original image with its per-axis
        ``coord_range`` scale (decode.official_input_to_image) and back-projects with its own
        camera model (decode.official_frame_camera, official_back_project).
        """
        P2_input = meta["P2_input"].to(device=boxes.device, dtype=torch.float32)
        corners = (boxes * self.stride).float()
        if self.cfg.compat == "official":
            original_size = meta["original_size"].to(device=boxes.device, dtype=torch.float32)
            to_frame = input_to_frame(meta["input_to_original"].to(device=boxes.device, dtype=torch.float32), original_size[:, 0])
            P2 = meta["P2"].to(device=boxes.device, dtype=torch.float32)
            frame_P2 = official_frame_camera(P2, meta["input_to_original"].to(P2), original_size[:, 0])
            pairs = official_input_to_image(corners.reshape(*corners.shape[:2], 2, 2), to_frame, original_size, input_hw)
            ones = torch.ones_like(pairs[..., 0, 0])
            top_left = official_back_project(frame_P2, pairs[..., 0, 0], pairs[..., 0, 1], ones)[..., :2]
            bottom_right = official_back_project(frame_P2, pairs[..., 1, 0], pairs[..., 1, 1], ones)[..., :2]
            box_height = pairs[..., 1, 1] - pairs[..., 0, 1]
            focal = frame_P2[:, 0, 0, None].expand_as(box_height)
        else:
            ones = torch.ones_like(corners[..., 0])
            top_left = back_project(P2_input, corners[..., 0], corners[..., 1], ones)[..., :2]
            bottom_right = back_project(P2_input, corners[..., 2], corners[..., 3], ones)[..., :2]
            box_height = corners[..., 3] - corners[..., 1]
            focal = P2_input[:, 1, 1, None].expand_as(box_height)
        return top_left, bottom_right, box_height.clamp(min=1.0), focal

    def _roi_outputs(
        self, features: torch.Tensor, boxes: torch.Tensor, cls_ids: torch.Tensor, mask: torch.Tensor | None, meta: dict
    ) -> dict[str, torch.Tensor]:
        """Run the ROI heads on the slots selected by ``mask`` (None: every slot); outputs are
        ``B x K x k`` with zeros elsewhere."""
        batch, slots = boxes.shape[:2]
        dtype, device = features.dtype, features.device
        channels = {
            "depth": 2,  # (depth in metres, log-variance)
            "depth_geometric": 1,
            "depth_net_log_variance": 1,  # the depth head's own, before the geometric variance is added
            "offset_3d": 2,
            "size_3d": 3,  # residual from the class mean (h, w, l)
            "size_3d_log_variance": 1,  # of the 3D height
            "heading": 2 * self.num_heading_bins,
        }
        # float32 even under mixed precision: depths divide by pixel heights and exponentiate.
        result = {name: torch.zeros(batch, slots, c, device=device) for name, c in channels.items()}
        count = batch * slots if mask is None else int(mask.sum())
        if count == 0:
            return result

        def select(tensor: torch.Tensor) -> torch.Tensor:  # B x K x ... -> n x ...
            return tensor.flatten(0, 1) if mask is None else tensor[mask]

        input_hw = (features.shape[2] * self.stride, features.shape[3] * self.stride)
        top_left, bottom_right, box_height, focal = (select(t) for t in self._roi_camera(boxes, meta, input_hw))
        top_left, bottom_right = top_left.to(dtype), bottom_right.to(dtype)  # n x 2

        rois = roi_rows(boxes, mask)
        size = self.roi_size
        from torchvision.ops import roi_align  # here: torchvision takes seconds to import (add3d --help)

        roi_features = roi_align(features, rois, (size, size), spatial_scale=1.0)

        steps = torch.linspace(0.0, 1.0, size, dtype=dtype, device=device)
        grid_x = top_left[:, 0:1] + steps[None, :] * (bottom_right[:, 0:1] - top_left[:, 0:1])  # n x size
        grid_y = top_left[:, 1:2] + steps[None, :] * (bottom_right[:, 1:2] - top_left[:, 1:2])
        coordinate_map = torch.stack(
            [grid_x[:, None, :].expand(count, size, size), grid_y[:, :, None].expand(count, size, size)], dim=1
        )
        selected_cls = select(cls_ids).clamp(0, self.num_classes - 1)
        one_hot = F.one_hot(selected_cls, self.num_classes).to(dtype)[:, :, None, None].expand(-1, -1, size, size)
        roi_input = torch.cat([roi_features, coordinate_map, one_hot], dim=1)

        size_out = self.roi_heads["size_3d"](roi_input).flatten(1).float()
        size_residual, height_log_variance = size_out[:, :3], size_out[:, 3]
        height_3d = self.mean_size[selected_cls, 0] + size_residual[:, 0]

        depth_geometric = height_3d * focal / box_height
        geometric_log_variance = height_log_variance + 2.0 * (torch.log(focal) - torch.log(box_height))

        depth_out = self.roi_heads["depth"](roi_input).flatten(1).float()
        depth = depth_from_logit(depth_out[:, 0]) + depth_geometric
        depth_log_variance = torch.logsumexp(torch.stack([depth_out[:, 1], geometric_log_variance], dim=1), dim=1)

        values = {
            "depth": torch.stack([depth, depth_log_variance], dim=1),
            "depth_geometric": depth_geometric[:, None],
            "depth_net_log_variance": depth_out[:, 1:2],
            "offset_3d": self.roi_heads["offset_3d"](roi_input).flatten(1).float(),
            "size_3d": size_residual,
            "size_3d_log_variance": height_log_variance[:, None],
            "heading": self.roi_heads["heading"](roi_input).flatten(1).float(),
        }
        if mask is None:
            return {name: value.reshape(batch, slots, -1) for name, value in values.items()}
        for name, value in values.items():
            result[name] = result[name].index_put((mask,), value)
        return result

    # ----- loss ---------------------------------------------------------------------------------------
    def loss(self, outputs, targets, meta) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._check_slots(outputs, targets)
        mask = targets["mask_2d"] > 0
        indices = targets["indices"].long()
        cls_ids = targets["cls_ids"].long().clamp(0, self.num_classes - 1)
        terms = {"heatmap": focal_loss(outputs["heatmap"], targets["heatmap"])}
        terms["size_2d"] = masked_l1(gather_at_indices(outputs["size_2d"], indices), targets["size_2d"], mask)
        terms["offset_2d"] = masked_l1(gather_at_indices(outputs["offset_2d"], indices), targets["offset_2d"], mask)
        terms["offset_3d"] = masked_l1(outputs["offset_3d"], targets["offset_3d"], mask)

        size_target = targets["size_3d"] - self.mean_size[cls_ids]
        size_residual = outputs["size_3d"]
        # GUPNet: L1 on (w, l) weighted 2/3, Laplacian on the height weighted 1/3. Its log-variance is
        # halved because losses.laplacian_uncertainty_loss is parameterised by log-sigma.
        terms["size_3d"] = masked_l1(size_residual[..., 1:], size_target[..., 1:], mask) * 2.0 / 3.0 + (
            laplacian_uncertainty_loss(
                size_residual[..., 0], size_target[..., 0], outputs["size_3d_log_variance"][..., 0] / 2, mask
            )
            / 3.0
        )
        heading_bin, heading_residual = encode_heading(targets["alpha"], self.num_heading_bins)
        terms["heading"] = heading_loss(outputs["heading"], heading_bin, heading_residual, mask)
        depth_target = targets["depth"][..., 0]
        depth_log_variance = (outputs["depth_net_log_variance"][..., 0] if self.depth_loss_variance == "net"
                              else outputs["depth"][..., 1])
        terms["depth"] = laplacian_uncertainty_loss(outputs["depth"][..., 0], depth_target, depth_log_variance / 2, mask)
        if not bool(mask.any()):  # keep every ROI-head parameter in the graph (DDP), with zero gradient
            terms["depth"] = terms["depth"] + sum(p.sum() for p in self.roi_heads.parameters()) * 0.0

        if self.training and self.task_weighting is not None:
            self.task_weighting.record(terms)
        task_weights = self._task_weights()
        total = sum(self.loss_weights[name] * task_weights[name] * value for name, value in terms.items())
        parts = {name: value.detach() for name, value in terms.items()}
        if self.task_weighting is not None:
            for name, needs in TASK_PREREQUISITES.items():
                if needs:
                    parts[f"htl_weight_{name}"] = task_weights[name].detach().clone()
        return total, parts

    def _task_weights(self) -> dict[str, torch.Tensor]:
        if self.task_weighting is None or not bool(self.task_weighting.active):
            return {name: self.mean_size.new_tensor(1.0) for name in TASK_PREREQUISITES}
        return self.task_weighting.weight_dict()

    def _check_slots(self, outputs, targets) -> None:
        if "roi_scores" in outputs or outputs["roi_indices"].shape != targets["indices"].shape:
            raise Add3dError(
                "GUPNet's ROI outputs must come from forward(image, targets, meta) with the same targets "
                "(its 3D heads run at the target objects)"
            )

    # ----- response distillation -------------------------------------------------------------------
    def response_outputs(self, outputs, targets, meta, with_uncertainty: bool = True,
                         depth_in_metres: bool = False) -> dict[str, torch.Tensor]:
        """Per-object outputs at the target slots: 2D heads sampled at the centres, ROI heads as they are.

        Depth is compared as log-depth (plus its log-variance): an L1 in metres lets one far or
        untrained ROI (geometric depths of hundreds of metres early on) dominate the distillation, and
        through f*H/h it pulls a small box's 2D height with d/h per metre. ``depth_in_metres`` compares
        metres with the geometric depth detached, so that the pull reaches only the ROI depth residual.
        """
        self._check_slots(outputs, targets)
        indices = targets["indices"].long()
        depth = outputs["depth"]
        if depth_in_metres:
            geometric = outputs["depth_geometric"][..., 0]
            value = depth[..., 0] - geometric + geometric.detach()
        else:
            value = torch.log(depth[..., 0].clamp(min=0.1))
        return {
            "offset_2d": gather_at_indices(outputs["offset_2d"], indices),
            "size_2d": gather_at_indices(outputs["size_2d"], indices),
            "depth": torch.stack([value, depth[..., 1]], dim=-1) if with_uncertainty else value[..., None],
            "offset_3d": outputs["offset_3d"],
            "size_3d": outputs["size_3d"],
            "heading": outputs["heading"],
        }

    @staticmethod
    def depth_sigma(outputs) -> torch.Tensor:
        """The depth sigma (metres) per ROI slot, exp(log-variance / 2): what the score is discounted by."""
        return torch.exp(0.5 * outputs["depth"][..., 1])

    def object_depth(self, outputs, targets, meta) -> torch.Tensor:
        """The ROI depth head's depth (metres) at the target slots: B x M."""
        self._check_slots(outputs, targets)
        return outputs["depth"][..., 0]

    # ----- decoding -------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, outputs, meta, score_threshold=None, top_k=None) -> list[list[Object3D]]:
        """Detections in original-image coordinates from the outputs of ``forward(image, meta=meta)``."""
        if "roi_scores" not in outputs:
            raise Add3dError("GUPNet.decode needs the outputs of forward() without targets (top-K ROIs)")
        threshold = self.score_threshold if score_threshold is None else score_threshold
        top_k = self.top_k if top_k is None else top_k
        width = outputs["heatmap"].shape[3]
        indices = outputs["roi_indices"]
        cls_ids = outputs["roi_cls_ids"].clamp(0, self.num_classes - 1)
        xs, ys = (c.to(outputs["depth"].dtype) for c in cell_xy(indices, width))
        P2 = meta["P2"].to(outputs["depth"].device, torch.float64)
        to_original = meta["input_to_original"].to(outputs["depth"].device, torch.float64)

        depth = outputs["depth"][..., 0]
        scores = outputs["roi_scores"] * torch.exp(-self.depth_sigma(outputs))
        boxes = outputs["roi_boxes"].double()
        box_corners = torch.stack([boxes[..., :2], boxes[..., 2:]], dim=2)
        centre_feature = (torch.stack([xs, ys], dim=-1) + outputs["offset_3d"]).double()
        dims = (self.mean_size[cls_ids] + outputs["size_3d"]).double()
        alpha = wrap_angle(decode_heading(outputs["heading"].double(), self.num_heading_bins))
        alpha = mirror_alpha_if_flipped(alpha, to_original)
        if self.cfg.compat == "official":  # GUPNet's decode_detections (see _roi_camera)
            input_hw = (outputs["heatmap"].shape[2] * self.stride, outputs["heatmap"].shape[3] * self.stride)
            original_size = meta["original_size"].to(to_original)
            corners = official_input_to_image(box_corners * self.stride, to_original, original_size, input_hw)
            centre_original = official_input_to_image(centre_feature * self.stride, to_original, original_size, input_hw)
            centre_3d = official_back_project(P2, centre_original[..., 0], centre_original[..., 1], depth.double())
            rotation_y = alpha_to_rotation_y(alpha, column_ray_angle(corners[..., 0].mean(dim=2), P2))  # 2D box centre
        else:
            corners = feature_to_original(box_corners, to_original, self.stride)
            centre_original = feature_to_original(centre_feature, to_original, self.stride)
            centre_3d = back_project(P2, centre_original[..., 0], centre_original[..., 1], depth.double())
            rotation_y = alpha_to_rotation_y(alpha, ray_angle(centre_3d[..., 0], centre_3d[..., 2]))
        box_original = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)  # robust to a mirroring map
        location = centre_3d + torch.stack([torch.zeros_like(dims[..., 0]), dims[..., 0] / 2, torch.zeros_like(dims[..., 0])], dim=-1)

        detections = []
        for b in range(indices.shape[0]):
            keep = (scores[b] >= threshold) & (dims[b] > 0).all(dim=-1) & torch.isfinite(location[b]).all(dim=-1)
            order = torch.argsort(scores[b][keep], descending=True)[:top_k]
            chosen = torch.nonzero(keep).flatten()[order].tolist()
            detections.append(
                [
                    Object3D(
                        cls_type=self.classes[int(cls_ids[b, i])],
                        alpha=float(alpha[b, i]),
                        box2d=box_original[b, i].cpu().numpy(),
                        dims=dims[b, i].cpu().numpy(),
                        location=location[b, i].cpu().numpy(),
                        rotation_y=float(rotation_y[b, i]),
                        score=float(scores[b, i]),
                    )
                    for i in chosen
                ]
            )
        return detections


def build_gupnet(cfg: ModelConfig) -> GUPNet:
    return GUPNet(cfg)


def official_gupnet_config(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> ModelConfig:
    """The model config released GUPNet weights need: the class means stored in them (its
    ``mean_size`` parameter, official class order) and the official code's ROI / decoding geometry."""
    mean_size = dict(cfg.mean_size)
    released = strip_data_parallel(state_dict).get("mean_size")
    if released is not None:
        if tuple(released.shape) != (len(OFFICIAL_CLASSES), 3):
            raise Add3dError(f"a GUPNet checkpoint's mean_size must be {len(OFFICIAL_CLASSES)} x 3, got {tuple(released.shape)}")
        mean_size.update({name: [float(v) for v in released[i]] for i, name in enumerate(OFFICIAL_CLASSES)})
    return dataclasses.replace(cfg, mean_size=mean_size, use_mean_size=True, compat="official", pretrained=None)


def convert_official_gupnet(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A SuperMHP/GUPNet state dict (``checkpoint['model_state']`` of its ``GUPNet``) -> this GUPNet's.

    Neck (``feat_up``) renamed, heads moved under ``heads`` / ``roi_heads``, classes reordered from
    the official (Pedestrian, Car, Cyclist) to ``cfg.classes`` -- the heatmap's outputs and the class
    one-hot inputs of the ROI heads' first convs -- the backbone's ImageNet classifier dropped, fresh
    HTL statistics added. Its ``mean_size`` parameter must equal ``cfg``'s class means (ours live
    in the config, not in the weights). Use the result with ``model.compat: official``.
    """
    order = official_class_order(list(cfg.classes))
    state = strip_data_parallel(state_dict)
    converted = {}
    for key, value in state.items():
        renamed = rename_trunk_key(key, "feat_up.")
        head = key.split(".", 1)[0]
        if renamed == "" or key == "mean_size":
            continue
        if renamed is not None:
            converted[renamed] = value
        elif head in DENSE_OUTPUTS:
            converted["heads." + key] = value[order] if key.startswith("heatmap.2.") else value
        elif head in ROI_OUTPUTS:
            converted["roi_heads." + key] = value
        else:
            raise Add3dError(f"unexpected key '{key}' in a GUPNet checkpoint")
    if "heads.heatmap.0.weight" not in converted:
        raise Add3dError("not a GUPNet checkpoint: it has no 'heatmap.0.weight'")
    # The ROI heads see [features, 2 coordinate channels, class one-hot]: reorder the one-hot inputs.
    feature_channels = converted["heads.heatmap.0.weight"].shape[1]
    one_hot = feature_channels + 2 + order
    for head in ROI_OUTPUTS:
        key = f"roi_heads.{head}.0.weight"
        if key in converted:
            weight = converted[key]
            converted[key] = torch.cat([weight[:, : feature_channels + 2], weight[:, one_hot]], dim=1)
    if cfg.gupnet.htl:  # a released model carries no HTL statistics: start them fresh
        fresh = HierarchicalTaskLearning(TASK_PREREQUISITES, window=cfg.gupnet.htl_window).state_dict()
        converted.update({"task_weighting." + key: value for key, value in fresh.items()})
    if "mean_size" in state:
        released = state["mean_size"].double()[order]
        expected = torch.tensor(cfg.class_mean_sizes(), dtype=torch.float64)
        if released.shape != expected.shape or not torch.allclose(released, expected, atol=1e-6):
            raise Add3dError(
                f"the checkpoint's class mean sizes {released.tolist()} differ from model.mean_size "
                f"{expected.tolist()} (classes {', '.join(cfg.classes)}); set model.mean_size to the checkpoint's"
            )
    return converted
