"""A small synthetic scene shared by the GUPNet and MonoFlex tests.

Objects with known 3D boxes in a KITTI camera, labelled exactly like KITTI (2D box = projected 3D
box clipped to the image, alpha consistent with rotation_y), resized to a CPU-sized network input,
and encoded with the shared target builder -- so the tests exercise the real target contract.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from add3d.data.kitti import Object3D
from add3d.data.targets import TargetOptions, build_targets
from add3d.geometry.boxes import box3d_corners, project_boxes_to_2d
from add3d.models import ModelConfig

# KITTI frame 000000's P2 (with its non-zero fourth column).
P2 = np.array(
    [
        [721.5377, 0.0, 609.5593, 44.85728],
        [0.0, 721.5377, 172.854, 0.2163791],
        [0.0, 0.0, 1.0, 0.002745884],
    ]
)
ORIGINAL_SIZE = (1242, 375)  # (width, height)
INPUT_SIZE = (96, 320)  # (height, width), multiples of 32
CLASSES = ("Car", "Pedestrian", "Cyclist")


def labelled_object(cls_type: str, dims, location, rotation_y: float) -> Object3D:
    """A KITTI-style label for a known 3D box: 2D box from the projection, alpha from the ray."""
    dims, location = np.asarray(dims, float), np.asarray(location, float)
    corners = box3d_corners(dims, location, np.array([rotation_y]))
    box = project_boxes_to_2d(corners, P2, ORIGINAL_SIZE)[0]
    centre = location - np.array([0.0, dims[0] / 2, 0.0])
    alpha = (rotation_y - math.atan2(centre[0], centre[2]) + math.pi) % (2 * math.pi) - math.pi
    return Object3D(cls_type, box2d=box, dims=dims, location=location, rotation_y=rotation_y, alpha=alpha)


def scene_objects() -> list[Object3D]:
    """Four objects: three inside the image, one truncated car whose 3D centre projects outside it."""
    return [
        labelled_object("Car", [1.52, 1.63, 3.9], [2.0, 1.65, 15.0], 0.3),
        labelled_object("Pedestrian", [1.75, 0.65, 0.85], [-3.0, 1.7, 10.0], -1.2),
        labelled_object("Cyclist", [1.72, 0.6, 1.76], [5.0, 1.6, 25.0], 2.8),
        labelled_object("Car", [1.5, 1.6, 4.0], [-5.5, 1.6, 5.0], 1.4),  # truncated at the left border
    ]


def input_scale() -> float:
    return INPUT_SIZE[1] / ORIGINAL_SIZE[0]


def P2_input() -> np.ndarray:
    s = input_scale()
    return np.diag([s, s, 1.0]) @ P2


def make_meta(batch: int) -> dict:
    s = input_scale()
    to_original = np.array([[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0]])

    def repeat(array):
        return torch.tensor(np.asarray(array), dtype=torch.float32)[None].repeat(batch, *([1] * np.ndim(array)))

    return {
        "frame_id": [f"{i:06d}" for i in range(batch)],
        "P2": repeat(P2),
        "P2_input": repeat(P2_input()),
        "input_to_original": repeat(to_original),
        "original_size": repeat(np.array(ORIGINAL_SIZE, float)),
        "flipped": torch.zeros(batch, dtype=torch.long),
        "cropped": torch.zeros(batch, dtype=torch.long),
    }


def make_targets(objects_per_image: list[list[Object3D]]) -> dict[str, torch.Tensor]:
    """Shared targets for objects given in ORIGINAL image coordinates (boxes are rescaled here)."""
    s = input_scale()
    options = TargetOptions(classes=CLASSES, keep_outside_centres=True)
    per_image = []
    for objects in objects_per_image:
        resized = [
            Object3D(o.cls_type, box2d=o.box2d * s, dims=o.dims, location=o.location, rotation_y=o.rotation_y, alpha=o.alpha)
            for o in objects
        ]
        per_image.append(build_targets(resized, P2_input(), INPUT_SIZE, options))
    return {key: torch.stack([torch.as_tensor(t[key]) for t in per_image]) for key in per_image[0]}


def small_config(name: str, **overrides) -> ModelConfig:
    """A CPU-sized detector: narrow DLA, 32-channel heads."""
    return ModelConfig(name=name, backbone="dla34_tiny", head_channels=32, **overrides)


def make_image(batch: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *INPUT_SIZE, generator=generator)


def angle_difference(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


def assert_same_objects(decoded: list[Object3D], expected: list[Object3D], box_tol: float = 0.05, loc_tol: float = 0.02) -> None:
    """Match by class and location; every field must agree."""
    assert len(decoded) == len(expected), f"{len(decoded)} detections for {len(expected)} objects"
    for obj in expected:
        candidates = [d for d in decoded if d.cls_type == obj.cls_type]
        best = min(candidates, key=lambda d: np.linalg.norm(d.location - obj.location))
        np.testing.assert_allclose(best.location, obj.location, atol=loc_tol)
        np.testing.assert_allclose(best.dims, obj.dims, atol=1e-3)
        np.testing.assert_allclose(best.box2d, obj.box2d, atol=box_tol)
        assert angle_difference(best.rotation_y, obj.rotation_y) < 1e-3
        assert angle_difference(best.alpha, obj.alpha) < 1e-3


def scene_batch() -> dict:
    """Two images: the full scene and its first two objects (the fixture both detector tests use)."""
    objects = scene_objects()
    return {"image": make_image(2), "targets": make_targets([objects, objects[:2]]), "meta": make_meta(2)}
