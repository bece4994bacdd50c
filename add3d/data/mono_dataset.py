"""The torch side of the data: raw KITTI frames -> augmented, normalised tensors + targets + meta.

Randomness is a pure function of (seed, epoch, sample index): every sample draws its augmentation
from its own generator. So the data a model sees does not depend on the number of loader workers,
on the number of processes (DDP) or on where a run was interrupted and resumed -- which is what makes
resumed and multi-process runs reproduce single-process runs exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from add3d.data.config import DataConfig
from add3d.data.dataset import KittiDataset, KittiFrame
from add3d.data.depth_maps import fill_sparse_depth, lidar_depth_map, object_depth_map
from add3d.data.kitti import Object3D
from add3d.data.targets import TargetOptions, build_targets
from add3d.data.transforms import AugmentationParams, augment_frame, sample_augmentation, scale_scene
from add3d.errors import Add3dError
from add3d.geometry.calib import Calibration

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def has_known_difficulty(obj: Object3D, min_box_height: float = 25.0) -> bool:
    """KITTI's "hard" limits (MonoDLE skips objects of unknown difficulty when training)."""
    return obj.height_2d + 1 >= min_box_height and obj.truncation <= 0.5 and obj.occlusion <= 2


def passes_truncation_filter(obj: Object3D, truncation_filter: list[float] | None) -> bool:
    """MonoFlex's FILTER_ANNOS: False for a heavily truncated object with a sliver of a 2D box."""
    if truncation_filter is None:
        return True
    truncation, min_side = truncation_filter
    side = min(obj.box2d[2] - obj.box2d[0], obj.box2d[3] - obj.box2d[1])
    return not (obj.truncation >= truncation and side <= min_side)


def validate_classes(cfg: DataConfig, classes: Sequence[str]) -> None:
    """The detected classes must be non-empty, and every ``data.heatmap_only`` target one of them."""
    if not classes:
        raise Add3dError("model.classes must name at least one class")
    for name, target in cfg.heatmap_only.items():
        if target not in classes:
            raise Add3dError(f"data.heatmap_only maps '{name}' to '{target}', which is not in model.classes {list(classes)}")


def select_objects(objects: list[Object3D], cfg: DataConfig, classes: Sequence[str]) -> list[Object3D]:
    """The labelled objects that become training targets (detected ``classes`` and heatmap-only
    ones, depth range, difficulty, truncation)."""
    wanted = set(classes) | set(cfg.heatmap_only)
    return [
        o
        for o in objects
        if o.cls_type in wanted
        and cfg.min_depth <= o.location[2]
        and (cfg.max_depth is None or o.location[2] <= cfg.max_depth)
        and (not cfg.skip_unknown_difficulty or has_known_difficulty(o, cfg.min_box_height))
        and passes_truncation_filter(o, cfg.truncation_filter)
    ]


def target_options(cfg: DataConfig, classes: Sequence[str], stride: int = 4) -> TargetOptions:
    return TargetOptions(
        classes=tuple(classes),
        heatmap_only=dict(cfg.heatmap_only),
        stride=stride,
        max_objects=cfg.max_objects,
        keep_outside_centres=cfg.keep_outside_centres,
        peak_rounding=cfg.peak_rounding,
        depth_region=cfg.depth_region,
    )


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of one sample in one epoch."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 RGB -> (3,H,W) float32 ImageNet-normalised."""
    return torch.from_numpy(((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy())


def encode_sample(
    frame_id: str,
    image: np.ndarray,
    calib: Calibration,
    cfg: DataConfig,
    params: AugmentationParams = AugmentationParams(),
    objects: list[Object3D] | None = None,
    depth: np.ndarray | None = None,
    stride: int = 4,
    classes: Sequence[str] = (),
) -> dict:
    """One network-input sample (see docs/DESIGN.md). ``objects=None`` means no targets (test/predict);
    targets are built for the detector's ``classes`` (``model.classes``, in class-id order)."""
    if objects is not None and not classes:
        raise Add3dError("training targets need the detected classes (model.classes)")
    height, width = cfg.input_hw
    maps = {} if depth is None else {"depth": depth.astype(np.float32)}
    chosen = select_objects(objects, cfg, classes) if objects is not None else []
    warped = augment_frame(image, calib, chosen, (width, height), params, maps)
    crop_factor = params.crop_scale if (params.crop and cfg.scale_depth_on_crop) else 1.0
    target_objects, target_depth_factor = warped.objects, crop_factor * params.depth_gain
    if params.depth_gain != 1.0 and cfg.depth_jitter_scope == "scene":
        # Depth, location and 3D size scale together; the depth target is then the scaled location's z.
        target_objects = scale_scene(warped.objects, warped.calib.P2, params.depth_gain)
        target_depth_factor = crop_factor
    sample: dict = {"image": normalize_image(warped.image)}
    if depth is not None:
        # The input depth and the depth target get the same factor (the jitter's gain, the crop's scale).
        input_depth = warped.maps["depth"] * np.float32(crop_factor * params.depth_gain)
        sample["depth"] = torch.from_numpy(input_depth[None].copy())
        sample["depth_valid"] = torch.from_numpy((input_depth[None] > 0).astype(np.float32))
    if objects is not None:
        targets = build_targets(
            target_objects,
            warped.calib.P2,
            (height, width),
            target_options(cfg, classes, stride),
            depth_factor=target_depth_factor,
            enable_3d=not (params.crop and cfg.mask_3d_on_crop),
        )
        sample["targets"] = {key: torch.from_numpy(value) for key, value in targets.items()}
    sample["meta"] = {
        "frame_id": frame_id,
        "P2": torch.from_numpy(calib.P2.astype(np.float32)),
        "P2_input": torch.from_numpy(warped.calib.P2.astype(np.float32)),
        "input_to_original": torch.from_numpy(warped.input_to_original.astype(np.float32)),
        "original_size": torch.tensor([image.shape[1], image.shape[0]], dtype=torch.float32),
        "flipped": torch.tensor(int(params.flip)),
        "cropped": torch.tensor(int(params.crop)),
    }
    return sample


class MonoDataset(torch.utils.data.Dataset):
    """KITTI frames as network inputs. ``augment`` turns on MonoDLE's flip/crop (training split).

    ``classes`` are the detector's (``model.classes``, in class-id order): the one list that decides
    which labels become targets and which heatmap channel each class gets.
    """

    def __init__(self, frames: KittiDataset, cfg: DataConfig, augment: bool = False, seed: int = 0, stride: int = 4,
                 *, classes: Sequence[str]):
        cfg.validate()
        validate_classes(cfg, classes)
        self.frames = frames
        self.cfg = cfg
        self.classes = tuple(classes)
        self.augment = augment
        self.seed = seed
        self.stride = stride
        self.epoch = 0
        self._cached_frames: dict[int, tuple[KittiFrame, np.ndarray | None]] = {}
        self._cached_bytes = 0
        if cfg.depth_source == "object" and not frames.load_labels:
            raise Add3dError(f"data.depth_source 'object' needs labels, which split '{frames.subset_dir}' lacks")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation draws are used (call before creating the loader iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def ids(self) -> list[str]:
        return self.frames.ids

    def ground_truth(self, index: int) -> list[Object3D]:
        """The frame's full label (all classes, DontCare included), as the evaluator wants it."""
        return self.frames.read_objects(index)

    def depth_map(self, frame) -> np.ndarray | None:
        size = (frame.image.shape[1], frame.image.shape[0])
        if self.cfg.depth_source == "dense":
            depth = frame.depth
        elif self.cfg.depth_source == "lidar":
            depth = lidar_depth_map(frame.lidar, frame.calib, size)
        elif self.cfg.depth_source == "object":
            depth = object_depth_map(frame.objects, frame.calib, size)
        else:
            return None
        return fill_sparse_depth(depth, self.cfg.depth_fill)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Sample ``index`` of the current epoch, or of ``epoch`` for an ``(epoch, index)`` pair
        (what :class:`add3d.data.loader.EpochIndexSampler` yields to persistent workers)."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        try:
            return self._load(index, epoch)
        except Add3dError as error:
            # Plain Add3dError: DataLoader workers re-create exceptions from a single message.
            raise Add3dError(str(error)) from None

    def frame_and_depth(self, index: int) -> tuple[KittiFrame, np.ndarray | None]:
        """The raw frame and its filled depth map, from the frame cache while it has room
        (``data.frame_cache_mb``; each loader worker keeps its own). Callers must not modify them."""
        cached = self._cached_frames.get(index)
        if cached is not None:
            return cached
        frame = self.frames[index]
        depth = self.depth_map(frame)
        size = frame.image.nbytes + (0 if depth is None else depth.nbytes)
        if self._cached_bytes + size <= self.cfg.frame_cache_mb * 2**20:
            # The map is all a sample needs of the LiDAR points or the dense map: drop them.
            frame = dataclasses.replace(frame, lidar=None, depth=None)
            self._cached_frames[index] = (frame, depth)
            self._cached_bytes += size
        return frame, depth

    def _load(self, index: int, epoch: int) -> dict:
        frame, depth = self.frame_and_depth(index)
        params = AugmentationParams()
        if self.augment:
            params = sample_augmentation(
                sample_generator(self.seed, epoch, index),
                (frame.image.shape[1], frame.image.shape[0]),
                self.cfg.random_flip,
                self.cfg.random_crop,
                self.cfg.crop_scale,
                self.cfg.crop_shift,
                self.cfg.depth_jitter,
                self.cfg.depth_jitter_farther_only,
            )
        return encode_sample(
            frame.frame_id,
            frame.image,
            frame.calib,
            self.cfg,
            params,
            objects=frame.objects if self.frames.load_labels else None,
            depth=depth,
            stride=self.stride,
            classes=self.classes,
        )


def build_mono_dataset(cfg: DataConfig, split: str, augment: bool = False, seed: int = 0,
                       with_depth: bool = True, *, classes: Sequence[str]) -> MonoDataset:
    """The dataset of ``split`` (a name in ROOT/ImageSets/ or a path) with the configured depth source,
    with targets for the detector's ``classes`` (``cfg.model.classes``).

    ``with_depth=False`` skips the depth maps (e.g. validating an RGB student of an ADD run).
    """
    cfg.validate()
    if not with_depth and cfg.depth_source is not None:
        cfg = dataclasses.replace(cfg, depth_source=None, depth_dir=None)
    frames = KittiDataset(
        cfg.root,
        split,
        load_lidar=cfg.depth_source == "lidar",
        depth_dir=cfg.depth_dir if cfg.depth_source == "dense" else None,
    )
    missing = frames.check()
    if missing:
        listed = ", ".join(str(path) for path in missing[:3])
        raise Add3dError(f"split '{split}' of {cfg.root}: {len(missing)} file(s) missing, e.g. {listed}")
    return MonoDataset(frames, cfg, augment=augment, seed=seed, classes=classes)


def collate_batch(samples: list[dict]) -> dict:
    """Stack samples into the batch of docs/DESIGN.md (``meta["frame_id"]`` stays a list)."""
    batch: dict = {"image": torch.stack([s["image"] for s in samples])}
    for key in ("depth", "depth_valid"):
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    if "targets" in samples[0]:
        batch["targets"] = {key: torch.stack([s["targets"][key] for s in samples]) for key in samples[0]["targets"]}
    meta = {"frame_id": [s["meta"]["frame_id"] for s in samples]}
    for key in samples[0]["meta"]:
        if key != "frame_id":
            meta[key] = torch.stack([s["meta"][key] for s in samples])
    batch["meta"] = meta
    return batch


def batch_to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a (nested) batch to ``device``; lists stay as they are."""
    if isinstance(batch, dict):
        return {key: batch_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return batch
