"""MonoDLE (Ma et al., "Delving into Localization Errors for Monocular 3D Object Detection", CVPR 2021).

CenterNet on the projected 3D centre: DLA-34 + DLAUp to stride 4, seven dense heads read at each
object's heatmap peak. Depth comes with a Laplacian aleatoric log-variance whose confidence
exp(-log-variance) multiplies the detection score at test time.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping

import torch

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.geometry.tensor_geometry import alpha_to_rotation_y, back_project, column_ray_angle, gather_at_indices
from add3d.models.decode import (
    depth_from_logit,
    detections_to_objects,
    feature_to_original,
    heatmap_scores,
    mirror_alpha_if_flipped,
    official_back_project,
    official_input_to_image,
    peak_nms,
    top_k_peaks,
)
from add3d.models.detector import MonoDetector, build_trunk
from add3d.models.heading import decode_heading, encode_heading
from add3d.models.heads import build_heads
from add3d.models.losses import dimension_aware_l1, focal_loss, heading_loss, laplacian_uncertainty_loss, masked_l1
from add3d.models.official_weights import official_class_order, rename_trunk_key, strip_data_parallel

if TYPE_CHECKING:  # annotation only (models/config.py imports the detector modules)
    from add3d.models.config import ModelConfig

# Heads read at object centres (everything but the heatmap), for losses and response distillation.
OBJECT_HEADS = ("offset_2d", "size_2d", "depth", "offset_3d", "size_3d", "heading")
MIN_DECODED_SIZE = 0.01  # metres; dims below it would make an invalid KITTI label


class MonoDLE(MonoDetector):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.backbone, self.neck = build_trunk(cfg)
        self.feature_channels = self.neck.out_channels
        self.num_heading_bins = cfg.num_heading_bins
        self.heads = build_heads(
            self.feature_channels,
            cfg.head_channels,
            {
                "heatmap": self.num_classes,
                "offset_2d": 2,
                "size_2d": 2,
                "depth": 2,  # (depth logit, log-variance)
                "offset_3d": 2,
                "size_3d": 3,  # (h, w, l) residual from the class mean
                "heading": 2 * cfg.num_heading_bins,  # bin logits, then per-bin residuals
            },
        )
        self.loss_weights = {name: float(cfg.loss_weights.get(name, 1.0)) for name in ("heatmap", *OBJECT_HEADS, "depth_region")}
        # Not persistent: the state dict stays that of the network alone (configs carry the means).
        self.register_buffer("mean_size", torch.tensor(cfg.class_mean_sizes(), dtype=torch.float32), persistent=False)

    def forward(self, image: torch.Tensor, targets=None, meta=None) -> dict[str, torch.Tensor]:
        """Raw head outputs (heatmap as logits) + ``features``; ``targets``/``meta`` are unused."""
        features = self.extract_features(image)
        outputs = {name: head(features) for name, head in self.heads.items()}
        outputs["features"] = features
        return outputs

    def response_outputs(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], meta: dict,
                         with_uncertainty: bool = True, depth_in_metres: bool = False) -> dict[str, torch.Tensor]:
        """Per-object head outputs at ``targets["indices"]``: name -> ``B x M x k`` (raw, before transforms;
        with ``depth_in_metres`` the depth is decoded); the depth head's second channel is its log-variance."""
        sampled = {name: gather_at_indices(outputs[name], targets["indices"]) for name in OBJECT_HEADS}
        if depth_in_metres:
            sampled["depth"] = torch.cat([depth_from_logit(sampled["depth"][..., :1]), sampled["depth"][..., 1:]], dim=-1)
        if not with_uncertainty:
            sampled["depth"] = sampled["depth"][..., :1]
        return sampled

    def object_depth(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], meta: dict) -> torch.Tensor:
        """Decoded depth (metres) at ``targets["indices"]``: B x M."""
        return depth_from_logit(gather_at_indices(outputs["depth"], targets["indices"])[..., 0])

    def loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], meta: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MonoDLE's seven losses; 2D terms use ``mask_2d``, depth/3D offset/size use ``mask_3d``.

        Heading uses ``mask_2d`` as in the MonoDLE code: alpha is unaffected by the crop/scale
        augmentation that disables the other 3D targets. ``meta`` is unused (MonoDLE needs no camera).
        """
        sampled = self.response_outputs(outputs, targets, meta)
        mask_2d, mask_3d = targets["mask_2d"], targets["mask_3d"]
        depth, log_variance = sampled["depth"][..., 0:1], sampled["depth"][..., 1:2]
        cls_ids = targets["cls_ids"].long().clamp(0, self.num_classes - 1)
        mean_size = self.mean_size[cls_ids]
        size_3d = targets["size_3d"]
        parts = {
            "heatmap": focal_loss(outputs["heatmap"], targets["heatmap"]),
            "offset_2d": masked_l1(sampled["offset_2d"], targets["offset_2d"], mask_2d),
            "size_2d": masked_l1(sampled["size_2d"], targets["size_2d"], mask_2d),
            "depth": laplacian_uncertainty_loss(depth_from_logit(depth), targets["depth"], log_variance, mask_3d),
            "offset_3d": masked_l1(sampled["offset_3d"], targets["offset_3d"], mask_3d),
            "size_3d": dimension_aware_l1(sampled["size_3d"], size_3d - mean_size, size_3d, mask_3d),
            "heading": heading_loss(sampled["heading"], *encode_heading(targets["alpha"], self.num_heading_bins), mask_2d),
        }
        if "region_mask" in targets:  # the dense object-depth target of data.depth_region
            dense = outputs["depth"].permute(0, 2, 3, 1).flatten(1, 2)  # B x HW x 2
            parts["depth_region"] = laplacian_uncertainty_loss(
                depth_from_logit(dense[..., 0]), targets["region_depth"].flatten(1), dense[..., 1], targets["region_mask"].flatten(1)
            )
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return total, {name: value.detach() for name, value in parts.items()}

    @torch.no_grad()
    def decode(
        self,
        outputs: dict[str, torch.Tensor],
        meta: dict,
        score_threshold: float | None = None,
        top_k: int | None = None,
    ) -> list[list[Object3D]]:
        """Detections per image in ORIGINAL image coordinates.

        Peaks: 3x3 max-pool NMS, top-K over all classes. ``score_threshold`` applies to the heatmap
        score (as in MonoDLE); the reported score is heatmap score x exp(-depth log-variance).
        """
        score_threshold = self.cfg.score_threshold if score_threshold is None else score_threshold
        top_k = self.cfg.top_k if top_k is None else top_k
        heatmap = heatmap_scores(outputs["heatmap"])
        peaks = top_k_peaks(peak_nms(heatmap), top_k)
        sampled = {name: gather_at_indices(outputs[name].float(), peaks["indices"]) for name in OBJECT_HEADS}
        device = heatmap.device
        P2 = torch.as_tensor(meta["P2"], dtype=torch.float32, device=device)
        to_original = torch.as_tensor(meta["input_to_original"], dtype=torch.float32, device=device)

        centre = torch.stack([peaks["xs"], peaks["ys"]], dim=-1)  # B x K x 2, feature pixels
        centre_2d = centre + sampled["offset_2d"]
        half_size = sampled["size_2d"] / 2.0
        box_corners = torch.stack([centre_2d - half_size, centre_2d + half_size], dim=2)
        centre_3d = centre + sampled["offset_3d"]
        if self.cfg.compat == "official":  # MonoDLE's decode_detections: per-axis size ratio, its back-projection
            input_hw = (heatmap.shape[2] * self.stride, heatmap.shape[3] * self.stride)
            original_size = torch.as_tensor(meta["original_size"], dtype=torch.float32, device=device)
            corners = official_input_to_image(box_corners * self.stride, to_original, original_size, input_hw)
            centre_3d = official_input_to_image(centre_3d * self.stride, to_original, original_size, input_hw)
            project_back = official_back_project
        else:
            corners = feature_to_original(box_corners, to_original, self.stride)
            centre_3d = feature_to_original(centre_3d, to_original, self.stride)
            project_back = back_project
        box2d = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)  # robust to a flipping affine

        depth = depth_from_logit(sampled["depth"][..., 0])
        confidence = torch.exp(-sampled["depth"][..., 1])
        dims = (sampled["size_3d"] + self.mean_size[peaks["cls_ids"]]).clamp(min=MIN_DECODED_SIZE)
        location = project_back(P2, centre_3d[..., 0], centre_3d[..., 1], depth)
        location[..., 1] += dims[..., 0] / 2.0  # geometric centre -> bottom centre (y points down)
        alpha = decode_heading(sampled["heading"], self.num_heading_bins)
        alpha = mirror_alpha_if_flipped(alpha, to_original)
        rotation_y = alpha_to_rotation_y(alpha, column_ray_angle(centre_3d[..., 0], P2))
        scores = peaks["scores"] * confidence
        keep = peaks["scores"] >= score_threshold

        return detections_to_objects(self.classes, keep, peaks["cls_ids"], alpha, box2d, dims, location,
                                     rotation_y, scores)


def build_monodle(cfg: ModelConfig) -> MonoDLE:
    return MonoDLE(cfg)


def official_monodle_config(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> ModelConfig:
    """The model config released MonoDLE weights need: absolute sizes (``meanshape: False``), the
    official code's decoding geometry."""
    return dataclasses.replace(cfg, use_mean_size=False, compat="official", pretrained=None)


def convert_official_monodle(state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A released xinzhuma/monodle state dict (``checkpoint['model_state']`` of ``CenterNet3D``) ->
    this MonoDLE's: neck renamed, heatmap channels reordered from the release's (Pedestrian, Car,
    Cyclist) to ``cfg.classes``, the backbone's ImageNet classifier dropped. The release regresses
    absolute 3D sizes (``meanshape: False``), so the weights need ``model.use_mean_size: false``.
    """
    order = official_class_order(list(cfg.classes))
    converted = {}
    for key, value in strip_data_parallel(state_dict).items():
        renamed = rename_trunk_key(key, "neck.")
        if renamed == "":
            continue
        if renamed is not None:
            converted[renamed] = value
        elif key.split(".", 1)[0] in OBJECT_HEADS + ("heatmap",):
            converted["heads." + key] = value[order] if key.startswith("heatmap.2.") else value
        else:
            raise Add3dError(f"unexpected key '{key}' in a MonoDLE checkpoint")
    return converted
