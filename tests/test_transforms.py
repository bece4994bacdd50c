"""Geometric augmentation: image, calibration, labels and per-pixel maps must stay consistent."""

from __future__ import annotations

import numpy as np
import pytest

from add3d.data.kitti import Object3D
from add3d.data.transforms import (
    AugmentationParams,
    apply_affine_to_points,
    augment_frame,
    compose_affine,
    crop_resize_matrix,
    invert_affine,
    sample_augmentation,
)
from add3d.geometry.calib import Calibration

P2 = np.array([[721.5, 0.0, 609.6, 44.9], [0.0, 721.5, 172.9, 0.2], [0.0, 0.0, 1.0, 0.003]])
SIZE = (1242, 375)  # width, height
OUT = (320, 96)


def car(x=3.0, z=20.0, ry=0.4) -> Object3D:
    calib = Calibration.from_P2(P2)
    location = np.array([x, 1.6, z])
    u = calib.rect_to_image((location - [0, 0.75, 0])[None])[0][0, 0]
    return Object3D("Car", 0.0, 0, float(calib.ry_to_alpha(ry, u)), [500, 150, 600, 220], [1.5, 1.6, 3.9], location, ry)


def project(P: np.ndarray, point: np.ndarray) -> np.ndarray:
    p = P @ np.append(point, 1.0)
    return p[:2] / p[2]


def test_crop_resize_matrix_is_uniform_scale_about_the_centre():
    A = crop_resize_matrix(np.array([621.0, 187.5]), 1242.0, OUT)
    assert A[0, 0] == pytest.approx(320 / 1242) and A[1, 1] == pytest.approx(320 / 1242)
    np.testing.assert_allclose(apply_affine_to_points(A, [[621.0, 187.5]]), [[160.0, 48.0]])
    np.testing.assert_allclose(compose_affine(invert_affine(A), A), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("params", [
    AugmentationParams(),
    AugmentationParams(flip=True),
    AugmentationParams(crop=True, crop_scale=0.7, center_shift=(80.0, -20.0)),
    AugmentationParams(flip=True, crop=True, crop_scale=1.3, center_shift=(-100.0, 30.0)),
])
def test_labels_and_calibration_move_with_the_image(params):
    """The projected 3D centre under the new calibration equals the warped original projection."""
    image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    obj = car()
    sample = augment_frame(image, Calibration.from_P2(P2), [obj], OUT, params)
    out = sample.objects[0]
    original_uv = project(P2, obj.center_3d)
    expected_uv = apply_affine_to_points(sample.original_to_input, original_uv[None])[0]
    np.testing.assert_allclose(project(sample.calib.P2, out.center_3d), expected_uv, atol=1e-6)
    # The 2D box follows the same warp (a flip swaps its x extremes).
    corners = apply_affine_to_points(sample.original_to_input, obj.box2d.reshape(2, 2))
    np.testing.assert_allclose(out.box2d[[0, 2]], np.sort(corners[:, 0]), atol=1e-9)
    np.testing.assert_allclose(out.box2d[[1, 3]], corners[:, 1], atol=1e-9)
    # alpha stays consistent with rotation_y under the new camera.
    calib_in = Calibration.from_P2(sample.calib.P2)
    u_in = project(sample.calib.P2, out.center_3d)[0]
    assert float(calib_in.ry_to_alpha(out.rotation_y, u_in)) == pytest.approx(out.alpha, abs=1e-6)
    # Back to the original image.
    np.testing.assert_allclose(apply_affine_to_points(sample.input_to_original, expected_uv[None])[0], original_uv, atol=1e-6)
    assert sample.image.shape == (OUT[1], OUT[0], 3)


def test_flip_mirrors_location_and_angles():
    obj = car(x=3.0, ry=0.4)
    sample = augment_frame(np.zeros((375, 1242, 3), np.uint8), Calibration.from_P2(P2), [obj], SIZE,
                           AugmentationParams(flip=True))
    out = sample.objects[0]
    assert out.location[0] == pytest.approx(-3.0)
    assert out.rotation_y == pytest.approx(np.pi - 0.4)
    # Output size == input size and no crop: a pure flip, so the box is mirrored about the width.
    np.testing.assert_allclose(out.box2d, [1242 - 600, 150, 1242 - 500, 220])


def test_image_and_maps_are_warped_identically():
    rng = np.random.default_rng(0)
    image = np.zeros((375, 1242, 3), np.uint8)
    image[100:200, 300:400] = 255
    depth = np.zeros((375, 1242), np.float32)
    depth[100:200, 300:400] = rng.uniform(5, 50, (100, 100)).astype(np.float32)
    params = AugmentationParams(flip=True, crop=True, crop_scale=0.8, center_shift=(30.0, 10.0))
    sample = augment_frame(image, Calibration.from_P2(P2), [], OUT, params, maps={"depth": depth})
    warped = sample.maps["depth"]
    assert warped.shape == (OUT[1], OUT[0]) and warped.dtype == np.float32
    # Nearest-neighbour: every warped depth exists in the source (no blending across edges).
    values = warped[warped > 0]
    assert values.size > 0 and np.isin(values, depth).all()
    # Depth sits where the image's bright square went (up to one pixel at the edges).
    bright = sample.image[..., 0] > 128
    assert (bright == (warped > 0)).mean() > 0.98


def test_sampling_is_reproducible_and_respects_probabilities():
    a = sample_augmentation(np.random.default_rng(5), SIZE)
    b = sample_augmentation(np.random.default_rng(5), SIZE)
    assert a == b
    never = [sample_augmentation(np.random.default_rng(i), SIZE, 0.0, 0.0) for i in range(50)]
    assert all(p == AugmentationParams() for p in never)
    always = [sample_augmentation(np.random.default_rng(i), SIZE, 1.0, 1.0, scale=0.4, shift=0.1) for i in range(200)]
    assert all(p.flip and p.crop for p in always)
    scales = np.array([p.crop_scale for p in always])
    shifts = np.array([p.center_shift for p in always])
    assert scales.min() >= 0.6 and scales.max() <= 1.4 and scales.std() > 0.2
    assert np.abs(shifts[:, 0]).max() <= 0.2 * 1242 + 1e-9 and np.abs(shifts[:, 1]).max() <= 0.2 * 375 + 1e-9
