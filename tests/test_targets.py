"""Training targets: heatmap peaks at the projected 3D centre, regression values, masks, filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from add3d.data.config import DataConfig
from add3d.data.kitti import Object3D
from add3d.data.mono_dataset import MonoDataset, collate_batch, encode_sample, select_objects, target_options
from add3d.data.targets import TargetOptions, build_targets, draw_gaussian, gaussian_radius
from add3d.errors import Add3dError
from add3d.data.transforms import AugmentationParams
from add3d.geometry.calib import Calibration

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

P2 = np.array([[200.0, 0.0, 96.0, 0.0], [0.0, 200.0, 32.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
INPUT = (64, 192)  # H, W


def obj(cls="Car", x=1.0, z=15.0, box=(60, 20, 100, 45), alpha=0.3, occlusion=0, truncation=0.0) -> Object3D:
    return Object3D(cls, truncation, occlusion, alpha, list(box), [1.5, 1.6, 3.9], [x, 1.6, z], alpha + 0.1)


def projected_centre(o: Object3D) -> np.ndarray:
    p = P2 @ np.append(o.center_3d, 1)
    return p[:2] / p[2]


def test_gaussian_radius_and_peak():
    # A 10x10 box at IoU 0.7: CenterNet's formula gives (sqrt(1120) - 28) / 2 = 2.73 (truncated to 2 by the caller).
    assert gaussian_radius(10, 10, 0.7) == pytest.approx((np.sqrt(1120) - 28) / 2)
    assert gaussian_radius(20, 10) == pytest.approx(gaussian_radius(10, 20))  # symmetric
    heatmap = np.zeros((10, 12), np.float32)
    draw_gaussian(heatmap, (0, 9), 3)  # at a corner: clipped, no error
    draw_gaussian(heatmap, (5, 4), 2)
    assert heatmap[4, 5] == 1.0 and heatmap[9, 0] == 1.0
    assert heatmap[4, 6] == pytest.approx(np.exp(-1 / (2 * (5 / 6) ** 2)), rel=1e-5)
    assert heatmap[4, 8] == 0.0  # outside radius 2


def test_slot_values():
    o = obj()
    t = build_targets([o], P2, INPUT, TargetOptions(), depth_factor=1.0)
    centre = projected_centre(o) / 4
    integer = np.floor(centre).astype(int)
    assert t["mask_2d"][0] == 1 and t["mask_2d"][1:].sum() == 0
    assert t["indices"][0] == integer[1] * 48 + integer[0]
    assert t["heatmap"][0, integer[1], integer[0]] == 1.0 and t["heatmap"][1:].max() == 0
    np.testing.assert_allclose(t["offset_3d"][0], centre - integer, atol=1e-5)
    np.testing.assert_allclose(t["box2d"][0], np.array([60, 20, 100, 45]) / 4)
    np.testing.assert_allclose(t["size_2d"][0], [10, 6.25])
    np.testing.assert_allclose(t["offset_2d"][0], [20 - integer[0], 8.125 - integer[1]], atol=1e-5)
    assert t["depth"][0, 0] == pytest.approx(15.0)
    np.testing.assert_allclose(t["size_3d"][0], [1.5, 1.6, 3.9])
    assert t["alpha"].dtype == np.float64 and t["alpha"][0] == 0.3  # exact: detectors encode it
    # Keypoints: 8 corners + bottom + top centre; the mean of the two centres is the 3D centre.
    kp = t["keypoints"][0]
    np.testing.assert_allclose((kp[8] + kp[9]) / 2, t["offset_3d"][0], atol=0.05)
    assert t["keypoints_visible"][0].all() and t["truncated"][0] == 0
    assert t["heatmap"].shape == (3, 16, 48) and t["keypoints"].shape == (50, 10, 2)


def test_crop_scaling_and_3d_mask():
    t = build_targets([obj()], P2, INPUT, depth_factor=1.25, enable_3d=False)
    assert t["depth"][0, 0] == pytest.approx(18.75)
    assert t["mask_2d"][0] == 1 and t["mask_3d"][0] == 0


def test_region_depth_covers_the_central_box_and_the_nearer_object_wins():
    near, far = obj(x=1.0, z=10.0, box=(60, 20, 100, 45)), obj(x=1.2, z=20.0, box=(64, 24, 96, 40))
    plain = build_targets([near], P2, INPUT, TargetOptions())
    assert "region_depth" not in plain and "region_mask" not in plain  # off by default: MonoDLE's targets
    t = build_targets([far, near], P2, INPUT, TargetOptions(depth_region=0.5), depth_factor=1.5)
    peak = np.floor(projected_centre(near) / 4).astype(int)
    # The near car's box is 10 x 6.25 cells: half of it reaches floor(2.5) = 2 columns and floor(1.56) = 1 row.
    expected = np.zeros((16, 48), bool)
    expected[peak[1] - 1 : peak[1] + 2, peak[0] - 2 : peak[0] + 3] = True
    covered = t["region_mask"] > 0
    assert covered[expected].all()
    # Every cell the near car covers holds its depth (times the crop/jitter factor), not the far car's.
    np.testing.assert_allclose(t["region_depth"][expected], 15.0)
    assert set(np.unique(t["region_depth"][covered])) <= {np.float32(15.0), np.float32(30.0)}
    assert (t["region_depth"][~covered] == 0).all()
    # A sample whose 3D targets are masked (MonoDLE's crop rule) gets no region either.
    masked = build_targets([near], P2, INPUT, TargetOptions(depth_region=0.5), enable_3d=False)
    assert masked["region_mask"].sum() == 0
    assert target_options(DataConfig(depth_region=0.5), KITTI_CLASSES).depth_region == 0.5  # the config's option


def test_outside_centres_dropped_or_clamped():
    outside = obj(x=12.0, z=8.0)  # projects far right of the 192-px input
    assert projected_centre(outside)[0] > 192
    dropped = build_targets([outside], P2, INPUT, TargetOptions())
    assert dropped["mask_2d"].sum() == 0 and dropped["heatmap"].max() == 0
    kept = build_targets([outside], P2, INPUT, TargetOptions(keep_outside_centres=True))
    assert kept["mask_2d"][0] == 1 and kept["truncated"][0] == 1
    assert kept["indices"][0] % 48 == 47  # clamped onto the last column
    assert kept["offset_3d"][0, 0] > 1  # the true centre stays recoverable


def test_heatmap_only_classes_and_max_objects():
    options = TargetOptions(heatmap_only={"Van": "Car"}, max_objects=2)
    objects = [obj("Van", x=-2.0), obj("Car", x=0.0), obj("Pedestrian", x=1.0), obj("Cyclist", x=2.0)]
    t = build_targets(objects, P2, INPUT, options)
    assert t["mask_2d"].tolist() == [1, 1]  # Van has no slot; Car and Pedestrian fill the 2 slots
    assert t["cls_ids"].tolist() == [0, 1]
    van_centre = np.floor(projected_centre(objects[0]) / 4).astype(int)
    assert t["heatmap"][0, van_centre[1], van_centre[0]] == 1.0  # Van drawn on the Car heatmap
    assert t["heatmap"][2].max() == 1.0  # the Cyclist peak is still drawn, only its slot is missing


def test_object_selection_follows_monodle():
    cfg = DataConfig()
    objects = [
        obj(z=15.0),
        obj(z=1.5),  # closer than 2 m
        obj(z=70.0),  # beyond 65 m
        obj(box=(0, 0, 10, 20)),  # 21 px tall: unknown difficulty
        obj(occlusion=3),
        obj("Van"),  # not a detected class
        obj("DontCare"),
    ]
    assert select_objects(objects, cfg, KITTI_CLASSES) == [objects[0]]
    cfg.min_box_height = 20.0  # e.g. smaller images: the 21-px object becomes usable
    assert select_objects(objects, cfg, KITTI_CLASSES) == [objects[0], objects[3]]
    cfg.skip_unknown_difficulty = False
    assert len(select_objects(objects, cfg, KITTI_CLASSES)) == 3


def test_peaks_are_floored_or_rounded():
    o = obj(x=1.0, z=15.0)
    centre = projected_centre(o) / 4
    assert np.any(np.round(centre) != np.floor(centre))  # this centre tells the two apart
    for rounding, expected in (("floor", np.floor(centre)), ("round", np.round(centre))):
        t = build_targets([o], P2, INPUT, TargetOptions(peak_rounding=rounding))
        integer = expected.astype(int)
        assert t["indices"][0] == integer[1] * 48 + integer[0], rounding
        np.testing.assert_allclose(t["offset_3d"][0], centre - integer, atol=1e-5)


def test_monoflex_selection_keeps_far_objects_and_drops_truncated_slivers():
    cfg = DataConfig(min_depth=0.0, max_depth=None, skip_unknown_difficulty=False, truncation_filter=[0.9, 20.0])
    objects = [
        obj(z=150.0),  # far: MonoFlex has no depth limit
        obj(truncation=0.95, box=(0, 10, 15, 60)),  # 15 px wide sliver at the border: dropped
        obj(truncation=0.95, box=(0, 10, 40, 60)),  # truncated but 40 x 50 px: kept
        obj(truncation=0.5, box=(0, 10, 15, 60)),  # narrow but not truncated enough: kept
    ]
    assert select_objects(objects, cfg, KITTI_CLASSES) == [objects[0], objects[2], objects[3]]
    with pytest.raises(Add3dError, match="truncation_filter"):
        DataConfig(truncation_filter=[0.9]).validate()
    with pytest.raises(Add3dError, match="peak_rounding"):
        DataConfig(peak_rounding="ceil").validate()


def test_encode_sample_meta_and_depth_scaling():
    cfg = DataConfig(input_size=[64, 192], skip_unknown_difficulty=False)
    image = np.zeros((64, 192, 3), np.uint8)
    depth = np.full((64, 192), 10.0, np.float32)
    depth[:, :20] = 0
    calib = Calibration.from_P2(P2)
    params = AugmentationParams(crop=True, crop_scale=1.2)
    sample = encode_sample("7", image, calib, cfg, params, objects=[obj()], depth=depth, classes=KITTI_CLASSES)
    assert sample["depth"].shape == (1, 64, 192)
    assert set(np.unique(sample["depth"].numpy())) <= {0.0, 12.0}  # depth map scaled like the depth target
    assert torch.equal(sample["depth_valid"], (sample["depth"] > 0).float())
    assert sample["targets"]["depth"][0, 0] == pytest.approx(18.0)
    assert sample["targets"]["mask_3d"][0] == 0  # 3D losses masked on cropped samples
    meta = sample["meta"]
    assert meta["cropped"] == 1 and meta["flipped"] == 0
    np.testing.assert_allclose(meta["original_size"].numpy(), [192, 64])
    # P2_input == affine(original->input) @ P2
    to_input = np.linalg.inv(np.vstack([meta["input_to_original"].double().numpy(), [0, 0, 1]]))
    np.testing.assert_allclose(meta["P2_input"].double().numpy(), to_input @ P2, rtol=1e-5, atol=1e-4)
    batch = collate_batch([sample, sample])
    assert batch["image"].shape == (2, 3, 64, 192) and batch["meta"]["frame_id"] == ["7", "7"]
    assert batch["targets"]["heatmap"].shape == (2, 3, 16, 48) and batch["meta"]["P2"].shape == (2, 3, 4)


def test_real_kitti_frames(kitti_mini):
    from add3d.data.dataset import KittiDataset

    cfg = DataConfig(root=str(kitti_mini), input_size=[96, 320], depth_source="lidar")
    frames = KittiDataset(kitti_mini, "train", load_lidar=True)
    dataset = MonoDataset(frames, cfg, augment=True, seed=3, classes=KITTI_CLASSES)
    first = dataset[0]
    assert torch.equal(first["image"], dataset[0]["image"])  # augmentation is a function of (seed, epoch, index)
    dataset.set_epoch(1)
    epochs_differ = any(not torch.equal(dataset[i]["image"], dataset.__class__(frames, cfg, True, 3, classes=KITTI_CLASSES)[i]["image"])
                        for i in range(len(dataset)))
    assert epochs_differ
    batch = collate_batch([dataset[i] for i in range(len(dataset))])
    assert batch["depth"].shape == (2, 1, 96, 320) and 0 < batch["depth_valid"].mean() < 0.5
    valid = batch["depth"][batch["depth_valid"] > 0]
    assert valid.min() > 0 and valid.max() < 120
    # Frame 000000 has one pedestrian at 8.4 m (id 0 of Car/Pedestrian/Cyclist -> 1).
    plain = MonoDataset(frames, cfg, augment=False, classes=KITTI_CLASSES)[0]
    assert plain["targets"]["mask_2d"].sum() == 1 and plain["targets"]["cls_ids"][0] == 1
    assert plain["targets"]["depth"][0, 0] == pytest.approx(8.41, abs=0.01)


def test_missing_and_broken_files_are_clear_errors(tmp_path, kitti_mini):
    import shutil

    from add3d.data.mono_dataset import build_mono_dataset
    from add3d.errors import Add3dError

    root = tmp_path / "kitti"
    shutil.copytree(kitti_mini / "ImageSets", root / "ImageSets")
    for kind in ("image_2", "calib", "label_2"):
        shutil.copytree(kitti_mini / "training" / kind, root / "training" / kind)
    cfg = DataConfig(root=str(root), input_size=[64, 192])
    (root / "training" / "calib" / "000001.txt").unlink()
    with pytest.raises(Add3dError, match=r"1 file\(s\) missing, e.g. .*calib/000001.txt"):
        build_mono_dataset(cfg, "train", classes=KITTI_CLASSES)
    shutil.copy(kitti_mini / "training" / "calib" / "000001.txt", root / "training" / "calib" / "000001.txt")
    (root / "training" / "label_2" / "000001.txt").write_text("Car 0 0 0 1 2 3\n")
    dataset = build_mono_dataset(cfg, "train", classes=KITTI_CLASSES)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=collate_batch)
    with pytest.raises(Add3dError, match=r"label_2/000001.txt:1: expected 15 fields"):
        list(loader)
