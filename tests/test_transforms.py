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


def gaussian_spot_image(centre_uv: np.ndarray, size: tuple[int, int], sigma: float = 2.0) -> np.ndarray:
    """A float image with a smooth spot centred at the continuous point ``centre_uv``.

    The project's pixel convention (geometry/calib.py, the renderer, depth_maps.py): pixel (row j,
    column i) covers [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5).
    """
    width, height = size
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    spot = np.exp(-((u - centre_uv[0]) ** 2 + (v - centre_uv[1]) ** 2) / (2 * sigma**2))
    return np.repeat(spot[..., None], 3, axis=2).astype(np.float32)


def spot_centre(image: np.ndarray) -> np.ndarray:
    """Intensity centroid of the spot, in the same pixel-centre convention."""
    weights = image[..., 0].astype(np.float64)
    rows, cols = np.indices(weights.shape)
    return np.array([(weights * (cols + 0.5)).sum(), (weights * (rows + 0.5)).sum()]) / weights.sum()


@pytest.mark.parametrize("params", [
    AugmentationParams(flip=True),
    AugmentationParams(crop=True, crop_scale=1.3, center_shift=(-40.0, 10.0)),
    AugmentationParams(flip=True, crop=True, crop_scale=0.7, center_shift=(60.0, -15.0)),
])
def test_flipped_image_content_sits_at_the_flipped_projection(params):
    """Decides the flip: a 3D point's projection lands on the same image content before and after.

    The original image carries a spot at the projection of a 3D point. After warping image,
    calibration and labels, the spot's centroid must sit at the point's projection through the new
    calibration (mirrored point for a flip), and the 2D label box around it must stay centred on it.
    """
    calib = Calibration.from_P2(P2)
    point = np.array([-2.3, 1.1, 18.0])
    uv = project(P2, point)
    box = np.array([uv[0] - 20.0, uv[1] - 10.0, uv[0] + 20.0, uv[1] + 10.0])
    obj = Object3D("Car", 0.0, 0, 0.0, box, [1.5, 1.6, 3.9], point + [0.0, 0.75, 0.0], 0.0)
    sample = augment_frame(gaussian_spot_image(uv, SIZE), calib, [obj], SIZE, params)
    seen_point = point * ([-1.0, 1.0, 1.0] if params.flip else 1.0)
    expected = project(sample.calib.P2, seen_point)
    np.testing.assert_allclose(spot_centre(sample.image), expected, atol=0.02)
    out_box = sample.objects[0].box2d
    np.testing.assert_allclose([(out_box[0] + out_box[2]) / 2, (out_box[1] + out_box[3]) / 2], expected, atol=1e-6)


def test_flipped_depth_map_keeps_its_depth_under_the_flipped_projection():
    """Per-pixel maps go through the same warp: a depth pixel stays under its 3D point's projection."""
    calib = Calibration.from_P2(P2)
    point = np.array([4.2, 0.9, 25.0])
    uv = project(P2, point)
    depth = np.zeros((SIZE[1], SIZE[0]), np.float32)
    depth[int(np.floor(uv[1])), int(np.floor(uv[0]))] = 25.0
    sample = augment_frame(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), calib, [], SIZE,
                           AugmentationParams(flip=True), maps={"depth": depth})
    flipped_uv = project(sample.calib.P2, point * [-1.0, 1.0, 1.0])
    rows, cols = np.nonzero(sample.maps["depth"])
    assert (rows.tolist(), cols.tolist()) == ([int(np.floor(flipped_uv[1]))], [int(np.floor(flipped_uv[0]))])


def test_flip_is_an_exact_mirror_of_the_pixels():
    """The flipped image is the pixel mirror (column i -> width - 1 - i), nothing shifted or lost."""
    image = np.random.default_rng(1).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    sample = augment_frame(image, Calibration.from_P2(P2), [], SIZE, AugmentationParams(flip=True))
    np.testing.assert_array_equal(sample.image, image[:, ::-1])
