"""The depth teacher's data recipe: depth supervision on cropped samples (input depth and target
rescaled alike), nearest-valid fill of the sparse map, and the depth-only scale jitter."""

from __future__ import annotations

import numpy as np
import pytest

from add3d.data.config import DataConfig
from add3d.data.depth_maps import fill_sparse_depth
from add3d.data.kitti import Object3D
from add3d.data.mono_dataset import encode_sample, sample_generator
from add3d.data.transforms import AugmentationParams, camera_centre, sample_augmentation
from add3d.errors import Add3dError
from add3d.geometry.calib import Calibration

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

P2 = np.array([[721.5, 0.0, 609.6, 44.9], [0.0, 721.5, 172.9, 0.2], [0.0, 0.0, 1.0, 0.003]])
SIZE = (1242, 375)


def frame():
    calib = Calibration.from_P2(P2)
    location = np.array([1.0, 1.6, 20.0])
    u = calib.rect_to_image((location - [0, 0.75, 0])[None])[0][0, 0]
    car = Object3D("Car", 0.0, 0, float(calib.ry_to_alpha(0.3, u)), [560, 150, 700, 230], [1.5, 1.6, 3.9], location, 0.3)
    image = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    depth = np.full((SIZE[1], SIZE[0]), 15.0, np.float32)  # a wall at 15 m everywhere
    return image, calib, [car], depth


def cfg(**changes) -> DataConfig:
    return DataConfig(input_size=[96, 320], skip_unknown_difficulty=False, depth_source="dense", depth_dir="d", **changes)


def encoded(params: AugmentationParams, **changes) -> dict:
    image, calib, objects, depth = frame()
    return encode_sample("000000", image, calib, cfg(**changes), params, objects, depth, classes=KITTI_CLASSES)


@pytest.mark.parametrize("crop_scale", [0.7, 1.3])
def test_a_crop_rescales_input_depth_and_target_depth_by_the_same_factor(crop_scale):
    params = AugmentationParams(crop=True, crop_scale=crop_scale, center_shift=(10.0, -5.0))
    plain = encoded(AugmentationParams(), mask_3d_on_crop=False)
    cropped = encoded(params, mask_3d_on_crop=False)
    input_ratio = cropped["depth"][0, 48, 160] / plain["depth"][0, 48, 160]
    target_ratio = cropped["targets"]["depth"][0, 0] / plain["targets"]["depth"][0, 0]
    assert input_ratio == pytest.approx(crop_scale) and target_ratio == pytest.approx(crop_scale)
    assert cropped["targets"]["mask_3d"][0] == 1  # the teacher keeps 3D supervision on crops
    assert encoded(params)["targets"]["mask_3d"][0] == 0  # MonoDLE's default masks it


def test_depth_jitter_scales_depth_input_and_target_but_not_the_image():
    plain = encoded(AugmentationParams())
    jittered = encoded(AugmentationParams(depth_gain=1.15))
    assert np.array_equal(plain["image"].numpy(), jittered["image"].numpy())
    assert np.allclose(jittered["depth"].numpy(), 1.15 * plain["depth"].numpy())
    assert jittered["targets"]["depth"][0, 0] == pytest.approx(1.15 * float(plain["targets"]["depth"][0, 0]))
    assert np.allclose(jittered["targets"]["size_3d"].numpy(), plain["targets"]["size_3d"].numpy())


def test_scene_jitter_scales_depth_location_and_size_about_the_camera_and_keeps_every_projection():
    plain = encoded(AugmentationParams(), depth_jitter_scope="scene")
    jittered = encoded(AugmentationParams(depth_gain=1.15), depth_jitter_scope="scene")
    assert np.array_equal(plain["image"].numpy(), jittered["image"].numpy())
    assert np.allclose(jittered["depth"].numpy(), 1.15 * plain["depth"].numpy())
    assert np.allclose(jittered["targets"]["size_3d"].numpy(), 1.15 * plain["targets"]["size_3d"].numpy())
    centre = camera_centre(P2)
    assert -0.07 < centre[0] < -0.05  # KITTI's camera 2 sits ~6 cm beside the rect origin
    location = jittered["targets"]["location"][0].numpy().astype(np.float64)
    assert np.allclose(location, centre + 1.15 * (plain["targets"]["location"][0].numpy() - centre), atol=1e-4)
    assert float(jittered["targets"]["depth"][0]) == pytest.approx(location[2], abs=1e-4)
    for key in ("heatmap", "indices", "offset_2d", "size_2d", "offset_3d", "alpha", "keypoints"):
        assert np.allclose(jittered["targets"][key].numpy(), plain["targets"][key].numpy(), atol=1e-4), key
    # Uniform scaling about the camera centre moves points along their rays: same pixels.
    calib, corners = Calibration.from_P2(P2), np.random.default_rng(0).normal(size=(20, 3)) * 3 + [0, 1, 20]
    scaled = centre + 1.15 * (corners - centre)
    assert np.allclose(calib.rect_to_image(scaled)[0], calib.rect_to_image(corners)[0], atol=1e-9)


def test_depth_jitter_is_seeded_bounded_and_leaves_the_other_draws_alone():
    gains = []
    for index in range(200):
        without = sample_augmentation(sample_generator(3, 1, index), SIZE)
        with_jitter = sample_augmentation(sample_generator(3, 1, index), SIZE, depth_jitter=0.2)
        again = sample_augmentation(sample_generator(3, 1, index), SIZE, depth_jitter=0.2)
        assert with_jitter == again
        assert (with_jitter.flip, with_jitter.crop, with_jitter.crop_scale) == (without.flip, without.crop, without.crop_scale)
        gains.append(with_jitter.depth_gain)
    assert without.depth_gain == 1.0
    assert np.exp(-0.2) <= min(gains) < 0.85 and 1.18 < max(gains) <= np.exp(0.2)


def test_a_farther_only_depth_jitter_never_brings_the_scene_nearer():
    gains = []
    for index in range(200):
        both = sample_augmentation(sample_generator(3, 1, index), SIZE, depth_jitter=0.2)
        farther = sample_augmentation(sample_generator(3, 1, index), SIZE, depth_jitter=0.2, depth_jitter_farther_only=True)
        assert (farther.flip, farther.crop, farther.crop_scale) == (both.flip, both.crop, both.crop_scale)
        # The same uniform draw u, mapped to (0, j) instead of (-j, j): ln k_farther = (ln k_both + j) / 2.
        assert np.log(farther.depth_gain) == pytest.approx((np.log(both.depth_gain) + 0.2) / 2)
        gains.append(farther.depth_gain)
    assert 1.0 <= min(gains) < 1.02 and 1.2 < max(gains) <= np.exp(0.2)


def test_min_pool_fill_takes_the_nearest_surface_and_keeps_known_pixels():
    sparse = np.zeros((7, 7), np.float32)
    sparse[3, 3] = 10.0
    sparse[3, 5] = 30.0
    filled = fill_sparse_depth(sparse, 5)
    assert filled[3, 3] == 10.0 and filled[3, 5] == 30.0  # known pixels unchanged
    assert filled[3, 4] == 10.0  # between both: the nearer surface wins
    assert filled[1, 1] == 10.0 and filled[3, 6] == 30.0  # 2 px from the 10 m point; 3 px from it, 1 px from 30 m
    assert filled[0, 0] == 0.0  # farther than 2 px from any point: still unknown
    assert fill_sparse_depth(sparse, 1) is sparse


def test_fill_keeps_points_through_a_zoom_out_crop():
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random((SIZE[1], SIZE[0])) < 0.1, 20.0, 0.0).astype(np.float32)  # 10 % of pixels
    image, calib, objects, _ = frame()
    zoom_out = AugmentationParams(crop=True, crop_scale=1.4)
    inside = float(encode_sample("0", image, calib, cfg(), zoom_out, objects, np.ones_like(sparse), classes=KITTI_CLASSES)["depth_valid"].mean())
    coverage = {}
    for size in (1, 5):
        sample = encode_sample("0", image, calib, cfg(depth_fill=size), zoom_out, objects, fill_sparse_depth(sparse, size),
                               classes=KITTI_CLASSES)
        coverage[size] = float(sample["depth_valid"].mean()) / inside  # share of the pixels inside the frame
    assert coverage[1] < 0.15 and coverage[5] > 0.9


def test_jitter_is_only_for_depth_teachers():
    from add3d.engine.config import load_config

    with pytest.raises(Add3dError, match="depth_jitter"):
        load_config(None, ["data.depth_jitter=0.2"])
    with pytest.raises(Add3dError, match="depth_fill"):
        load_config(None, ["data.depth_fill=2"])
    with pytest.raises(Add3dError, match="depth_jitter_scope"):
        load_config(None, ["data.depth_jitter_scope=everything"])
    load_config(None, ["data.depth_jitter=0.2", "model.in_channels=5", "data.depth_source=lidar"])


def test_region_depth_needs_a_detector_whose_loss_reads_it():
    from add3d.engine.config import load_config

    assert load_config(None, ["data.depth_region=0.5"]).data.depth_region == 0.5  # MonoDLE's loss reads it
    with pytest.raises(Add3dError, match="depth_region: gupnet has no dense depth head.*only monodle"):
        load_config(None, ["data.depth_region=0.5", "model.name=gupnet"])
    with pytest.raises(Add3dError, match="fraction of the 2D box"):
        load_config(None, ["data.depth_region=1.5"])


def test_depth_only_jitter_needs_a_detector_whose_depth_loss_reads_only_the_depth_target():
    from add3d.engine.config import load_config

    teacher = ["data.depth_jitter=0.2", "model.in_channels=5", "data.depth_source=lidar", "data.scale_depth_on_crop=false"]
    for name in ("monodle", "gupnet"):  # their depth losses read targets["depth"], which the jitter scales
        assert load_config(None, teacher + [f"model.name={name}"]).data.depth_jitter_scope == "depth"
    with pytest.raises(Add3dError, match="depth_jitter_scope depth: monoflex's losses read the 3D location"):
        load_config(None, teacher + ["model.name=monoflex"])
    load_config(None, teacher + ["model.name=monoflex", "data.depth_jitter_scope=scene"])


def test_geometric_depth_detectors_refuse_crop_rescaled_depth_targets():
    from add3d.engine.config import load_config

    for name in ("gupnet", "monoflex"):
        with pytest.raises(Add3dError, match=f"scale_depth_on_crop: {name} takes depth from 3D/2D heights"):
            load_config(None, [f"model.name={name}", "data.scale_depth_on_crop=true"])
        load_config(None, [f"model.name={name}", "data.scale_depth_on_crop=true", "data.random_crop=0"])
    assert load_config(None, ["data.scale_depth_on_crop=true"]).data.scale_depth_on_crop  # MonoDLE's convention
