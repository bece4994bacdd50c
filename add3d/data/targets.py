"""CenterNet-style training targets: the detector-independent geometry that MonoDLE, GUPNet and
MonoFlex encode their own way (heading bins, size residuals, ... live in each detector's loss).

Input: objects already in the network-input frame (see :mod:`add3d.data.transforms`) and the
input image's calibration. Every object becomes one "slot": a Gaussian peak on the class heatmap
at the integer feature-map position of its PROJECTED 3D CENTRE (MonoDLE's choice, not the 2D box
centre) plus the regression targets read at that position. Field names, shapes and units are the
contract of docs/DESIGN.md ("Network input batch"); image quantities are in feature pixels
(input pixels / stride).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from add3d.data.kitti import Object3D
from add3d.geometry.boxes import objects_corners


@dataclass(frozen=True)
class TargetOptions:
    """How labels become targets (the detector-independent half of ``DataConfig``)."""

    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    # Classes drawn as a heatmap peak of another class but given no regression slot, e.g. MonoDLE's
    # ``class_merging`` draws Van and Truck on the Car heatmap: {"Van": "Car", "Truck": "Car"}.
    heatmap_only: dict[str, str] = field(default_factory=dict)
    stride: int = 4
    max_objects: int = 50
    min_overlap: float = 0.7  # CenterNet's Gaussian radius parameter
    # MonoDLE drops objects whose heatmap centre falls outside the map; MonoFlex keeps them with the
    # centre clamped to the border (and flags them "truncated").
    keep_outside_centres: bool = False
    # "floor" (MonoDLE, GUPNet) or "round" (MonoFlex: numpy's round, halves to even) the peak position.
    peak_rounding: str = "floor"
    # > 0: also a dense depth target ("region_depth", "region_mask"): each object's depth on the cells of
    # this fraction of its 2D box, centred on its peak (the nearer object where two overlap).
    depth_region: float = 0.0


def gaussian_radius(width: float, height: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre error for which a box of this size keeps
    IoU >= ``min_overlap`` with the ground truth (three cases: both corners in, out, mixed).

    Kept exactly as CenterNet/MonoDLE compute it (including their halving of the quadratic root
    without the 1/a factor), because the heatmap's spread is a trained-for hyper-parameter.
    """
    w, h, o = float(width), float(height), float(min_overlap)

    def root(a: float, b: float, c: float) -> float:
        return (b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / 2

    r1 = root(1.0, h + w, w * h * (1 - o) / (1 + o))
    r2 = root(4.0, 2 * (h + w), (1 - o) * w * h)
    r3 = root(4 * o, -2 * o * (h + w), (o - 1) * w * h)
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> None:
    """Max-combine a Gaussian (sigma = diameter / 6) peaking at 1 at integer ``center`` (x, y)."""
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0
    x, y = center
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = kernel[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(region, patch.astype(heatmap.dtype), out=region)


def empty_targets(num_classes: int, feature_size: tuple[int, int], max_objects: int) -> dict[str, np.ndarray]:
    """All-zero targets; ``feature_size`` is (h, w)."""
    h, w = feature_size
    m = max_objects
    f32 = np.float32
    return {
        "heatmap": np.zeros((num_classes, h, w), f32),
        "indices": np.zeros(m, np.int64),
        "mask_2d": np.zeros(m, f32),
        "mask_3d": np.zeros(m, f32),
        "cls_ids": np.zeros(m, np.int64),
        "offset_2d": np.zeros((m, 2), f32),
        "size_2d": np.zeros((m, 2), f32),
        "box2d": np.zeros((m, 4), f32),
        "offset_3d": np.zeros((m, 2), f32),
        "depth": np.zeros((m, 1), f32),
        "size_3d": np.zeros((m, 3), f32),
        # float64: detectors encode alpha (e.g. into heading bins) from the label's exact value.
        "alpha": np.zeros(m, np.float64),
        "rotation_y": np.zeros(m, f32),
        "location": np.zeros((m, 3), f32),
        "keypoints": np.zeros((m, 10, 2), f32),
        "keypoints_visible": np.zeros((m, 10), f32),
        "truncated": np.zeros(m, f32),
    }


def paint_region_depth(
    region_depth: np.ndarray,
    region_mask: np.ndarray,
    peak: np.ndarray,
    box_size: tuple[float, float],
    depth: float,
    fraction: float,
) -> None:
    """Write ``depth`` on the cells within ``fraction`` x the box's half-size (feature pixels) of the
    integer ``peak`` (x, y), the peak always included; cells already holding a nearer depth keep it."""
    height, width = region_depth.shape
    reach_x, reach_y = (int(np.floor(fraction * side / 2.0)) for side in box_size)
    x0, x1 = max(peak[0] - reach_x, 0), min(peak[0] + reach_x + 1, width)
    y0, y1 = max(peak[1] - reach_y, 0), min(peak[1] + reach_y + 1, height)
    cells = region_depth[y0:y1, x0:x1]
    free = (region_mask[y0:y1, x0:x1] == 0) | (cells > depth)
    cells[free] = depth
    region_mask[y0:y1, x0:x1][free] = 1.0


def _project(P2: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    projected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ P2.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return projected[:, :2] / projected[:, 2:3], points[:, 2]


def build_targets(
    objects: list[Object3D],
    P2_input: np.ndarray,
    input_size: tuple[int, int],
    options: TargetOptions = TargetOptions(),
    depth_factor: float = 1.0,
    enable_3d: bool = True,
) -> dict[str, np.ndarray]:
    """Targets for one sample. ``input_size`` is (H, W) of the network input.

    ``depth_factor`` multiplies the depth target (MonoDLE scales depth by the crop scale);
    ``enable_3d=False`` zeroes ``mask_3d`` (MonoDLE masks 3D losses on crop-augmented samples).
    Objects of other classes are ignored; caller-side filtering (depth range, difficulty) happens
    before (see :func:`add3d.data.mono_dataset.select_objects`).
    """
    stride = options.stride
    h, w = input_size[0] // stride, input_size[1] // stride
    targets = empty_targets(len(options.classes), (h, w), options.max_objects)
    if options.depth_region > 0:
        targets["region_depth"] = np.zeros((h, w), np.float32)
        targets["region_mask"] = np.zeros((h, w), np.float32)
    class_index = {name: i for i, name in enumerate(options.classes)}
    heatmap_class = {**class_index, **{k: class_index[v] for k, v in options.heatmap_only.items() if v in class_index}}
    objects = [o for o in objects if o.cls_type in heatmap_class]
    if not objects:
        return targets
    P2 = np.asarray(P2_input, dtype=np.float64)
    corners = objects_corners(objects)  # (N, 8, 3)
    slot = 0
    for obj, box_corners in zip(objects, corners):
        centre_uv, centre_z = _project(P2, obj.center_3d[None])
        if not (centre_z[0] > 0 and np.all(np.isfinite(centre_uv))):
            continue
        centre = centre_uv[0] / stride
        # floor, not int(): MonoDLE's int() truncation puts centres in (-1, 0) on column/row 0.
        integer = (np.round(centre) if options.peak_rounding == "round" else np.floor(centre)).astype(np.int64)
        outside = not (0 <= integer[0] < w and 0 <= integer[1] < h)
        if outside and not options.keep_outside_centres:
            continue
        integer = np.array([np.clip(integer[0], 0, w - 1), np.clip(integer[1], 0, h - 1)])
        box = obj.box2d / stride
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        radius = max(0, int(gaussian_radius(box_w, box_h, options.min_overlap)))
        draw_gaussian(targets["heatmap"][heatmap_class[obj.cls_type]], (int(integer[0]), int(integer[1])), radius)
        if obj.cls_type not in class_index or slot >= options.max_objects:
            continue

        targets["indices"][slot] = integer[1] * w + integer[0]
        targets["mask_2d"][slot] = 1.0
        targets["mask_3d"][slot] = 1.0 if enable_3d else 0.0
        targets["cls_ids"][slot] = class_index[obj.cls_type]
        targets["offset_2d"][slot] = (box[:2] + box[2:]) / 2 - integer
        targets["size_2d"][slot] = (box_w, box_h)
        targets["box2d"][slot] = box
        targets["offset_3d"][slot] = centre - integer
        targets["depth"][slot] = obj.location[2] * depth_factor
        targets["size_3d"][slot] = obj.dims
        if options.depth_region > 0 and enable_3d:
            paint_region_depth(targets["region_depth"], targets["region_mask"], integer, (box_w, box_h),
                               float(targets["depth"][slot, 0]), options.depth_region)
        targets["alpha"][slot] = obj.alpha
        targets["rotation_y"][slot] = obj.rotation_y
        targets["location"][slot] = obj.location
        keypoints_3d = np.concatenate([box_corners, obj.location[None], obj.location[None] - [0, obj.h, 0]])
        keypoints_uv, keypoints_z = _project(P2, keypoints_3d)
        visible = (
            (keypoints_z > 0)
            & (keypoints_uv[:, 0] >= 0) & (keypoints_uv[:, 0] < input_size[1])
            & (keypoints_uv[:, 1] >= 0) & (keypoints_uv[:, 1] < input_size[0])
        )
        keypoints = np.where(np.isfinite(keypoints_uv), keypoints_uv / stride - integer, 0.0)
        targets["keypoints"][slot] = keypoints
        targets["keypoints_visible"][slot] = visible
        targets["truncated"][slot] = float(outside)
        slot += 1
    return targets
