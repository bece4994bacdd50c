"""Configuration of ADD's training-only distillation (the ``distill`` and ``teacher`` config sections).

Plain dataclasses so that OmegaConf can build typed, validated configs from them
(``OmegaConf.structured(DistillConfig)``). Every component that the paper's abstract leaves open has
a switch here, so each one can be ablated (see docs/ADD.md for which parts are the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from add3d.errors import Add3dError


@dataclass
class DistillConfig:
    """Which ADD components run during training, their loss weights and their sizes."""

    # ----- component switches (ablations) ---------------------------------------------------
    # 3D-aware positional encoding added to the attention queries/keys; off -> attention without PE.
    position_encoding: bool = True
    # 3D-aware self-attention adapter; off -> the student map only goes through a 1x1 conv adapter.
    self_attention: bool = True
    # L_feat: foreground-weighted MSE between the adapted student map and the teacher's neck map.
    feature_distillation: bool = True
    # Target-aware cross-attention + L_obj (one query per ground-truth object).
    object_distillation: bool = True
    # L_resp: heatmap + per-object regression outputs, the teacher's outputs as targets.
    response_distillation: bool = True
    # L_resp also matches the predicted uncertainties (depth log-variances). Off: only the values; a
    # teacher that sees depth has other uncertainties than an RGB student, and GUPNet's students took
    # its larger ones (docs/RESULTS.md, "GUPNet: the teacher's uncertainty").
    response_uncertainty: bool = True

    # ----- loss weights (L = L_det + sum of weight * term) ------------------------------------
    feature_weight: float = 1.0
    object_weight: float = 1.0
    response_heatmap_weight: float = 1.0
    response_regression_weight: float = 1.0
    # Within L_resp's regression term, the weight of each detector's "depth" response (the others: 1).
    # The term matches log-depth, whose pull on a car at depth d is 1/d, against the label's Laplacian
    # sqrt(2)/sigma: at weight 1 GUPNet's students feel their teacher's depth ~10x less than the label's
    # (docs/RESULTS.md, "GUPNet: on the teacher's own training frames").
    response_depth_weight: float = 1.0
    # Compare the depth responses in metres (the decoded depth) instead of log-depth / the raw logit:
    # a car at depth d is then pulled by 1, not 1/d, so far cars — where a LiDAR teacher knows most —
    # feel their teacher as much as near ones. GUPNet's then reaches only its ROI residual: in metres
    # the geometric f*H/h would pass d/h per metre to the 2D box height of a far, small box.
    response_depth_metres: bool = False
    # L_region (0 = off): MSE between the adapted student map and the teacher's neck map, each
    # ROI-aligned (region_size x region_size) at every labelled object's 2D box and averaged per object.
    # L_feat's Gaussian mask weighs an object by its area, so near cars dominate it, where a LiDAR
    # teacher knows no more than an RGB model; here a far car counts as much as a near one, over the
    # whole box that GUPNet's ROI depth head reads (docs/RESULTS.md, "GUPNet: a per-object region term").
    region_weight: float = 0.0
    region_size: int = 7
    # "fixed": the weights above; "auto": before the first step, each distillation weight is set so
    # that its term's gradient norm on the student is balance_target x the detection loss's, measured
    # over balance_batches training batches (add3d.distill.wrapper.balance_weights; logged).
    balance: str = "fixed"
    balance_target: float = 0.1
    balance_batches: int = 4
    # Weight of background cells in L_feat's mask (foreground = max over classes of the Gaussian heatmap).
    background_weight: float = 0.1
    object_loss: str = "mse"  # "mse" | "cosine"

    # ----- 3D-aware positional encoding -----------------------------------------------------
    depth_bins: int = 64
    depth_min: float = 1.0
    depth_max: float = 60.0
    # Fixed rect-frame range used to normalise frustum points: x_min, y_min, z_min, x_max, y_max, z_max.
    position_range: list[float] = field(default_factory=lambda: [-60.0, -20.0, 0.0, 60.0, 20.0, 60.0])

    # ----- attention ------------------------------------------------------------------------
    pool: int = 4  # tokens = avg-pooled stride-4 neck map (4 -> stride 16 tokens)
    num_heads: int = 4
    ffn_channels: int = 256
    dropout: float = 0.0
    class_embedding: bool = True

    @property
    def maps_distilled(self) -> bool:
        """Whether the student's neck map is matched to the teacher's (L_feat or L_region)."""
        return self.feature_distillation or self.region_weight > 0

    def validate(self) -> None:
        if self.balance not in ("fixed", "auto") or not self.balance_target > 0 or self.balance_batches < 1:
            raise Add3dError(f"distill.balance must be fixed or auto with balance_target > 0 and balance_batches >= 1, "
                             f"got {self.balance!r}, {self.balance_target}, {self.balance_batches}")
        if self.object_loss not in ("mse", "cosine"):
            raise Add3dError(f"distill.object_loss must be 'mse' or 'cosine', got {self.object_loss!r}")
        if self.depth_bins < 1 or not 0 < self.depth_min < self.depth_max:
            raise Add3dError(
                f"distill: need depth_bins >= 1 and 0 < depth_min < depth_max, got "
                f"{self.depth_bins}, {self.depth_min}, {self.depth_max}"
            )
        if len(self.position_range) != 6 or any(
            self.position_range[i] >= self.position_range[i + 3] for i in range(3)
        ):
            raise Add3dError(f"distill.position_range must be [x0, y0, z0, x1, y1, z1] with mins < maxes, got {self.position_range}")
        if self.pool < 1 or self.num_heads < 1 or self.region_size < 1:
            raise Add3dError(f"distill.pool, distill.num_heads and distill.region_size must be >= 1, "
                             f"got {self.pool}, {self.num_heads}, {self.region_size}")
        weights = (self.feature_weight, self.object_weight, self.response_heatmap_weight, self.response_regression_weight,
                   self.response_depth_weight, self.region_weight)
        if any(w < 0 for w in weights) or self.background_weight < 0:
            raise Add3dError("distill loss weights must be >= 0")


@dataclass
class TeacherConfig:
    """The depth teacher: how its depth input is encoded, and (for ADD students) its checkpoint.

    The teacher's architecture is the student's ``model`` section with ``in_channels = 5``
    (RGB + encoded depth + validity, add3d.distill.teacher_input); ``checkpoint`` is a teacher run's
    ``checkpoint*.pth``. A teacher run stores the encoding in its checkpoints (``input_spec``); an
    ADD student or an evaluation whose config says otherwise stops with an error.
    """

    checkpoint: str | None = None
    depth_encoding: str = "log"  # linear | log | inverse (add3d.distill.teacher_input)
    depth_scale: float = 80.0  # linear: depth / depth_scale
    # log: (ln depth - mean) / std; ln-depth statistics of the synthetic scenes' LiDAR pixels (2.56, 0.66).
    log_depth_mean: float = 2.6
    log_depth_std: float = 0.65
    inverse_depth_scale: float = 5.0  # inverse: inverse_depth_scale / depth
