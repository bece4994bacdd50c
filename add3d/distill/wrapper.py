"""ADD's training module: a student detector distilled from a frozen depth-aware teacher.

The trainer treats it like any training module (``forward(batch) -> (loss, logs)``) and saves
``module.detector`` — the plain student — so the deployed model is exactly the baseline detector:
every adapter here (3D-PE, 3D-SA, TCA, 1x1 projections) exists only during training and is never
part of a checkpoint's ``model``. That is ADD's zero-inference-cost property.

Detector-agnostic by construction: it only uses the MonoDetector contract of docs/DESIGN.md —
``outputs["features"]`` (the neck map that feeds the heads), ``outputs["heatmap"]`` (logits),
``response_outputs(outputs, targets, meta)`` (per-object head outputs) and ``targets["indices"]``
(where the objects' centres are) with ``targets["box2d"]`` (their 2D boxes, for L_region). MonoDLE,
GUPNet and MonoFlex plug in unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from add3d.distill import losses
from add3d.distill.attention import SelfAttention3D, TargetCrossAttention
from add3d.distill.config import DistillConfig
from add3d.distill.position_encoding import PositionEncoding3D
from add3d.distill.teacher import freeze
from add3d.distill.teacher_input import InputSpec, make_teacher_input
from add3d.errors import Add3dError
from add3d.models.precision import detector_loss
from add3d.geometry.tensor_geometry import gather_at_indices


class DistillationModule(nn.Module):
    """Student + frozen teacher + ADD adapters; ``forward(batch) -> (loss, logs)``.

    ``teacher_input`` maps a batch to the teacher's B x 5 x H x W input; by default
    :func:`add3d.distill.teacher_input.make_teacher_input` with the teacher's input spec
    (``teacher.input_spec``, set by :func:`load_teacher` from its checkpoint).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        cfg: DistillConfig | None = None,
        teacher_input: Callable[[dict], Tensor] | None = None,
    ):
        super().__init__()
        cfg = cfg or DistillConfig()
        cfg.validate()
        self.cfg = cfg
        # The distillation weights in TERM_NAMES order: the config's, or those `balance_weights` set
        # (a buffer, so a resumed run keeps them).
        self.register_buffer("loss_weights", torch.tensor(
            [cfg.feature_weight, cfg.object_weight, cfg.response_heatmap_weight, cfg.response_regression_weight,
             cfg.region_weight]))
        self.detector = student
        self.teacher = freeze(teacher)
        spec = getattr(teacher, "input_spec", None) or InputSpec(kind="rgbd")
        self.teacher_input = teacher_input or (lambda batch: make_teacher_input(batch, spec))
        student_channels = int(student.feature_channels)
        teacher_channels = int(teacher.feature_channels)

        uses_tokens = cfg.object_distillation or (cfg.maps_distilled and cfg.self_attention)
        self.position_encoding = (
            PositionEncoding3D(student_channels, cfg.depth_bins, cfg.depth_min, cfg.depth_max, cfg.position_range)
            if cfg.position_encoding and uses_tokens
            else None
        )
        self.self_attention = (
            SelfAttention3D(student_channels, cfg.num_heads, cfg.ffn_channels, cfg.pool, cfg.dropout)
            if cfg.self_attention and uses_tokens
            else None
        )
        self.feature_adapter = nn.Conv2d(student_channels, teacher_channels, 1) if cfg.maps_distilled else None
        if cfg.object_distillation:
            self.cross_attention = TargetCrossAttention(
                student_channels,
                cfg.num_heads,
                cfg.ffn_channels,
                int(student.num_classes),
                cfg.class_embedding,
                cfg.dropout,
            )
            self.object_adapter = nn.Linear(student_channels, teacher_channels)
        else:
            self.cross_attention = None
            self.object_adapter = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs saved before L_region existed hold four weights: resume them with the config's fifth.
        key = prefix + "loss_weights"
        saved = state_dict.get(key)
        if saved is not None and saved.numel() == len(TERM_NAMES) - 1:
            state_dict[key] = torch.cat([saved, self.loss_weights[len(TERM_NAMES) - 1:].to(saved)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> "DistillationModule":
        """Switch student and adapters; the teacher always stays in eval mode (fixed BatchNorm stats)."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ----- pieces ---------------------------------------------------------------------------
    def _tokens(self, features: Tensor, P2_input: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(refined stride-4 map, pooled tokens B x N x C, token 3D-PE or None)."""
        stride = float(self.detector.stride)
        pool = self.cfg.pool
        pooled_h, pooled_w = -(-features.shape[-2] // pool), -(-features.shape[-1] // pool)
        position = None
        if self.position_encoding is not None:
            position = self.position_encoding.for_map(P2_input, pooled_h, pooled_w, stride * pool)
        if self.self_attention is not None:
            refined, tokens = self.self_attention(features, position)
            return refined, tokens, position
        pooled = F.avg_pool2d(features, pool, ceil_mode=True) if pool > 1 else features
        return features, pooled.flatten(2).transpose(1, 2), position

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        terms, logs = self.loss_terms(batch)
        total = sum(terms.values())
        logs["loss"] = total.detach()
        return total, logs

    def loss_terms(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(weighted loss terms with their graphs, detached logs); the training loss is their sum.

        Terms: ``detection`` and, for the enabled components, ``distill_feature``, ``distill_object``,
        ``distill_response_heatmap``, ``distill_response_regression``, ``distill_region`` (each already times its
        weight). Separate terms let `benchmarks/add_diagnostics.py` measure each one's gradient.
        """
        targets = batch.get("targets")
        if targets is None:
            raise Add3dError("ADD distillation needs training targets in the batch")
        if "depth" not in batch:
            raise Add3dError("ADD distillation needs batch['depth']: configure a depth source in the data section")
        cfg = self.cfg
        meta = batch["meta"]
        student_out = self.detector(batch["image"], targets, meta=meta)
        detection_loss, logs = detector_loss(self.detector, student_out, targets, meta)
        logs = {name: value.detach() for name, value in logs.items()}
        with torch.no_grad():
            teacher_out = self.teacher(self.teacher_input(batch), targets, meta=meta)

        student_features = student_out["features"]
        teacher_features = teacher_out["features"].detach()
        P2_input = meta["P2_input"].to(student_features.device)
        indices = targets["indices"]
        object_mask = targets["mask_2d"]
        terms = {"detection": detection_loss}

        needs_tokens = self.cross_attention is not None or (self.feature_adapter is not None and self.self_attention is not None)
        refined, tokens, token_position = (
            self._tokens(student_features, P2_input) if needs_tokens else (student_features, None, None)
        )

        adapted = self.feature_adapter(refined) if self.feature_adapter is not None else None
        if cfg.feature_distillation:
            mask = losses.foreground_mask(targets["heatmap"], cfg.background_weight)
            feature_term = losses.feature_loss(adapted, teacher_features, mask)
            terms["distill_feature"] = self.loss_weights[0] * feature_term
            logs["distill_feature"] = feature_term.detach()

        if cfg.region_weight > 0:
            region_term = losses.region_loss(adapted, teacher_features, targets["box2d"], object_mask, cfg.region_size)
            terms["distill_region"] = self.loss_weights[4] * region_term
            logs["distill_region"] = region_term.detach()

        if self.cross_attention is not None:
            object_position = None
            if self.position_encoding is not None:
                width = student_features.shape[-1]
                object_position = self.position_encoding.for_indices(P2_input, indices, width, float(self.detector.stride))
            queries = gather_at_indices(student_features, indices)
            adapted = self.object_adapter(
                self.cross_attention(queries, tokens, object_position, token_position, targets.get("cls_ids"))
            )
            teacher_objects = gather_at_indices(teacher_features, indices)
            object_term = losses.object_loss(adapted, teacher_objects, object_mask, cfg.object_loss)
            terms["distill_object"] = self.loss_weights[1] * object_term
            logs["distill_object"] = object_term.detach()

        if cfg.response_distillation:
            heatmap_term = losses.heatmap_response_loss(student_out["heatmap"], teacher_out["heatmap"], targets["heatmap"])
            with torch.no_grad():
                teacher_responses = self.teacher.response_outputs(teacher_out, targets, meta, cfg.response_uncertainty,
                                                                  cfg.response_depth_metres)
            student_responses = self.detector.response_outputs(student_out, targets, meta, cfg.response_uncertainty,
                                                                cfg.response_depth_metres)
            regression_term, parts = losses.regression_response_loss(student_responses, teacher_responses, object_mask,
                                                                     {"depth": cfg.response_depth_weight})
            terms["distill_response_heatmap"] = self.loss_weights[2] * heatmap_term
            terms["distill_response_regression"] = self.loss_weights[3] * regression_term
            logs["distill_response_heatmap"] = heatmap_term.detach()
            logs["distill_response_regression"] = regression_term.detach()
            for name, value in parts.items():
                logs[f"distill_response_{name}"] = value.detach()

        logs["detection"] = detection_loss.detach()
        return terms, logs


TERM_NAMES = ("distill_feature", "distill_object", "distill_response_heatmap", "distill_response_regression",
              "distill_region")


def student_gradient_norms(module: DistillationModule, batches) -> dict[str, float]:
    """Mean over ``batches`` of ||d(weighted term) / d(student parameters)|| for every loss term."""
    student = [p for p in module.detector.parameters() if p.requires_grad]
    norms: dict[str, float] = {}
    batches = list(batches)
    for batch in batches:
        terms, _ = module.loss_terms(batch)
        for name, value in terms.items():
            grads = torch.autograd.grad(value, student, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item()
            norms[name] = norms.get(name, 0.0) + norm / len(batches)
    return norms


def balance_weights(module: DistillationModule, batches, target: float) -> dict[str, float]:
    """``distill.balance: auto``: set each distillation weight so that its term's gradient norm on the
    student is ``target`` x the detection loss's, measured on ``batches`` with the initial weights.

    Why: the right weight depends on the neck's activation scale and the detector's loss (weight 1
    gave the feature term 0.2 % of the gradient on dla34_tiny, weight 100 gave ~10 %); the rule
    replaces reading gradient shares by hand. A weight of 0 (term off) stays 0. Training state is
    untouched: BatchNorm statistics are restored and the global RNG is forked.
    """
    saved = {key: value.clone() for key, value in module.state_dict().items()}
    with torch.random.fork_rng(devices=[]):
        norms = student_gradient_norms(module, batches)
    module.load_state_dict(saved)
    detection = norms.get("detection", 0.0)
    chosen = {}
    for index, name in enumerate(TERM_NAMES):
        current = float(module.loss_weights[index])
        if name in norms and norms[name] > 0 and current > 0 and detection > 0:
            module.loss_weights[index] = current * target * detection / norms[name]
        chosen[name] = float(module.loss_weights[index])
    return chosen
