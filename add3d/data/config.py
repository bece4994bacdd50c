"""The ``data`` section of a config: where frames come from and how they become network inputs.

Defaults are MonoDLE's published KITTI recipe (xinzhuma/monodle ``kitti_dataset.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from add3d.errors import Add3dError

DEPTH_SOURCES = ("lidar", "object", "dense")


PEAK_ROUNDINGS = ("floor", "round")
DEPTH_JITTER_SCOPES = ("depth", "scene")


@dataclass
class DataConfig:
    root: str = "data/kitti"  # KITTI layout: training/{image_2,calib,label_2,velodyne}, ImageSets/
    train_split: str = "train"  # name in ROOT/ImageSets/ or a path to an ids file
    val_split: str = "val"
    test_split: str = "test"
    input_size: list[int] = field(default_factory=lambda: [384, 1280])  # (height, width), multiples of 32
    # The detected classes are model.classes (one list for the heads, the targets and evaluation).
    # Heatmap-only classes, mapped onto a detected class (MonoDLE's class_merging: Van/Truck -> Car).
    heatmap_only: dict[str, str] = field(default_factory=dict)
    # Objects used for training: rect depth in [min_depth, max_depth] metres (max_depth null: no limit,
    # as MonoFlex), and (MonoDLE) only those of a known KITTI difficulty (2D height >= 25 px,
    # truncation <= 0.5, occlusion <= 2).
    min_depth: float = 2.0
    max_depth: float | None = 65.0
    # MonoFlex's FILTER_ANNOS [0.9, 20]: drop objects with truncation >= [0] whose 2D box's shorter side
    # is <= [1] original-image pixels (mostly mislabelled slivers at the image border). null: keep all.
    truncation_filter: list[float] | None = None
    skip_unknown_difficulty: bool = True
    # The "known difficulty" height limit in ORIGINAL-image pixels (KITTI's 25 px at 1242x375; scale it
    # with the image, e.g. ~6 px for quarter-size synthetic frames).
    min_box_height: float = 25.0
    max_objects: int = 50
    keep_outside_centres: bool = False  # MonoFlex-style: keep objects whose 3D centre leaves the image
    # Heatmap peak = the projected 3D centre / stride, "floor"ed (MonoDLE's int(), GUPNet) or "round"ed
    # (MonoFlex); the 3D offset target is the remainder either way.
    peak_rounding: str = "floor"
    # Augmentation (training split only).
    random_flip: float = 0.5
    random_crop: float = 0.5
    crop_scale: float = 0.4
    crop_shift: float = 0.1
    mask_3d_on_crop: bool = True  # MonoDLE: no 3D losses on crop-augmented samples
    scale_depth_on_crop: bool = True  # depth target (and depth map) times the crop scale
    # Per-pixel depth for teachers / distillation: null | lidar | object | dense (dense: 16-bit PNGs in
    # ROOT/training/<depth_dir>/, e.g. made by `add3d make-depth`; lidar/object are computed on the fly).
    depth_source: str | None = None
    depth_dir: str | None = None
    # Fill holes of the sparse depth map with the nearest (smallest) valid depth in a depth_fill x
    # depth_fill window before any warp, so that a zoom-out crop's nearest-neighbour resize keeps
    # (almost) every point; 1 = no fill. Part of a teacher's input spec.
    depth_fill: int = 1
    # Teacher-only augmentation: input depth AND depth target times k = exp(U(-j, j)), image unchanged.
    # Why: with the image unchanged, only the depth input tells the teacher the true scale, which
    # stops it from reading depth off the image (without it the sensitivity plateaued near 0.7).
    depth_jitter: float = 0.0
    # What the jitter scales besides the input depth: "depth" = the depth target only (MonoDLE, whose
    # depth head is separate from its size head; measured, docs/ADD.md; GUPNet, whose geometric depth
    # then stays at the image's scale and whose residual must read the input); "scene" = the whole
    # labelled scene about the camera centre (depth, location and 3D size; the image is still exact),
    # for detectors whose losses read the 3D location (MonoFlex) or whose 3D height should carry the scale.
    depth_jitter_scope: str = "depth"
    # k = exp(U(0, j)) instead: never nearer. GUPNet's depth is f*H/h plus a positive residual, and a
    # depth-only k < 0.9 puts a third or more of the cars' targets below f*H/h, out of its reach
    # (docs/RESULTS.md, "GUPNet: where its depth sits").
    depth_jitter_farther_only: bool = False
    # A denser depth target (detectors with a dense depth head: MonoDLE): besides its centre cell, every
    # stride cell of an object's central region (this fraction of its 2D box, centred on the heatmap
    # peak) is supervised with the object's depth; 0 = off (MonoDLE's centre cell only). It asks for
    # the object's depth, not the surface's, at every cell, so detections a cell off read it too.
    # Measured (docs/RESULTS.md): 0.5 raises the teacher's AP3D and lowers the matched-car depth error of
    # teacher and RGB baseline alike, not the teacher's error at all labelled cars; MonoDLE's synthetic
    # teacher recipe uses it (its ADD students beat the depth-blind controls' depth on every seed).
    depth_region: float = 0.0
    # Keep up to this many MB of decoded frames (image, calibration, labels and the filled depth map) in
    # each data-loading process, so that later epochs neither read nor project them again; samples are
    # identical either way. A KITTI frame with its LiDAR depth map is ~3.3 MB; 0 = off.
    frame_cache_mb: float = 0.0

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.input_size[0]), int(self.input_size[1])

    def validate(self) -> None:
        # The backbones halve the input five times and the necks add the levels back up, so a side
        # that is not a multiple of 32 gives feature maps that do not align.
        if len(self.input_size) != 2 or any(int(v) <= 0 or int(v) % 32 for v in self.input_size):
            raise Add3dError(f"data.input_size must be [height, width], positive multiples of 32; got {list(self.input_size)}")
        if not (0 <= self.min_depth and (self.max_depth is None or self.min_depth < self.max_depth)):
            raise Add3dError(f"data: need 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.truncation_filter is not None and len(self.truncation_filter) != 2:
            raise Add3dError(f"data.truncation_filter must be null or [truncation, box side px], got {list(self.truncation_filter)}")
        if self.peak_rounding not in PEAK_ROUNDINGS:
            raise Add3dError(f"data.peak_rounding must be one of {', '.join(PEAK_ROUNDINGS)}; got '{self.peak_rounding}'")
        for name in ("random_flip", "random_crop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise Add3dError(f"data.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.crop_scale < 1.0 or self.crop_shift < 0:
            raise Add3dError("data.crop_scale must be in [0, 1) and data.crop_shift >= 0")
        if self.min_box_height < 0:
            raise Add3dError(f"data.min_box_height must be >= 0, got {self.min_box_height}")
        if self.max_objects < 1:
            raise Add3dError(f"data.max_objects must be >= 1, got {self.max_objects}")
        if self.depth_source is not None and self.depth_source not in DEPTH_SOURCES:
            raise Add3dError(f"data.depth_source must be null or one of {', '.join(DEPTH_SOURCES)}; got '{self.depth_source}'")
        if self.depth_fill < 1 or self.depth_fill % 2 == 0:
            raise Add3dError(f"data.depth_fill must be an odd size >= 1 (1 = no fill), got {self.depth_fill}")
        if not 0.0 <= self.depth_jitter < 1.0:
            raise Add3dError(f"data.depth_jitter is a log-range in [0, 1), got {self.depth_jitter}")
        if self.depth_jitter_scope not in DEPTH_JITTER_SCOPES:
            raise Add3dError(f"data.depth_jitter_scope must be one of {', '.join(DEPTH_JITTER_SCOPES)}; got '{self.depth_jitter_scope}'")
        if not 0.0 <= self.depth_region <= 1.0:
            raise Add3dError(f"data.depth_region is a fraction of the 2D box in [0, 1], got {self.depth_region}")
        if self.frame_cache_mb < 0:
            raise Add3dError(f"data.frame_cache_mb must be >= 0 (0 = off), got {self.frame_cache_mb}")
        if self.depth_source == "dense" and not self.depth_dir:
            raise Add3dError("data.depth_source 'dense' needs data.depth_dir (a folder of 16-bit depth PNGs)")
