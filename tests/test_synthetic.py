"""Synthetic KITTI-format scenes: layout, loading, determinism, and the geometry of labels, LiDAR and depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from add3d.cli import main
from add3d.data.dataset import KittiDataset
from add3d.data.depth_maps import read_depth_png
from add3d.data.kitti import read_calib, read_label
from add3d.data.synthetic import generate_dataset, image_size, synthesize_frame
from add3d.data.synthetic.generate import SUBFOLDERS, frame_rngs, split_ids
from add3d.data.synthetic.labels import OCCLUSION_LEVELS
from add3d.data.synthetic.lidar import scan
from add3d.data.synthetic.render import render
from add3d.data.synthetic.scene import CAR_BODY, Scene, SceneObject, _add_object_parts, _PartList
from add3d.errors import Add3dError
from add3d.geometry.boxes import box2d_iou, box3d_corners, project_boxes_to_2d

SMALL = image_size(scale=0.25)  # 310 x 94
MEDIUM = image_size(scale=0.5)  # 621 x 188


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "root"
    generate_dataset(root, frames=8, val_fraction=0.25, scale=0.5, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def medium_frames():
    return [synthesize_frame(11, index, *MEDIUM) for index in range(16)]


def _points_in_box(rect: np.ndarray, obj, margin: float = 0.05, min_height: float = 0.1) -> np.ndarray:
    c, s = np.cos(obj.rotation_y), np.sin(obj.rotation_y)
    d = rect - obj.location
    along, across, up = c * d[:, 0] - s * d[:, 2], s * d[:, 0] + c * d[:, 2], -d[:, 1]
    return (np.abs(along) <= obj.l / 2 + margin) & (np.abs(across) <= obj.w / 2 + margin) & (
        up > min_height) & (up < obj.h + margin)


def test_layout_and_every_frame_loads(synth_root: Path):
    for name in SUBFOLDERS:
        assert sorted(p.name for p in (synth_root / "training" / name).iterdir()) == [
            f"{i:06d}{'.bin' if name == 'velodyne' else '.txt' if name in ('calib', 'label_2') else '.png'}"
            for i in range(8)
        ]
    train = (synth_root / "ImageSets" / "train.txt").read_text().split()
    val = (synth_root / "ImageSets" / "val.txt").read_text().split()
    assert len(train) == 6 and len(val) == 2 and not set(train) & set(val)
    assert (synth_root / "ImageSets" / "trainval.txt").read_text().split() == sorted(train + val)
    assert "--seed 3" in (synth_root / "README.txt").read_text()

    dataset = KittiDataset(synth_root, "trainval", load_lidar=True, depth_dir="depth_dense")
    assert dataset.check() == []
    classes = set()
    for index in range(len(dataset)):
        frame = dataset[index]
        assert frame.image.shape == (188, 621, 3) and frame.image.dtype == np.uint8
        assert frame.depth.shape == (188, 621)
        assert frame.lidar.dtype == np.float32 and frame.lidar.shape[1] == 4 and len(frame.lidar) > 10000
        assert frame.lidar[:, 3].min() >= 0 and frame.lidar[:, 3].max() <= 1
        assert 1 <= len([o for o in frame.objects if o.cls_type != "DontCare"]) <= 12
        classes |= {o.cls_type for o in frame.objects}
        # KITTI-like intrinsics scaled by 0.5, small P2 baseline offset, R0_rect near identity.
        assert 0.5 * 700 <= frame.calib.fu <= 0.5 * 729
        assert 0.5 * 0.05 * frame.calib.fu < frame.calib.P2[0, 3] < 0.5 * 0.07 * 722 * 1.02
        assert np.abs(frame.calib.R0_rect - np.eye(3)).max() < 0.05
        # Tr_velo_to_cam is the usual axis permutation: velo x (forward) -> camera z.
        assert frame.calib.velo_to_rect(np.array([[10.0, 0.0, 0.0]]))[0, 2] == pytest.approx(10.0 - 0.27, abs=0.2)
    assert {"Car", "Pedestrian", "Cyclist"} <= classes


def test_lidar_mount_and_ground(synth_root: Path):
    calib = read_calib(synth_root / "training" / "calib" / "000000.txt")
    points = np.fromfile(synth_root / "training" / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    # The sensor sits 1.73 m above the road: the lowest returns (the road near the car) are near z = -1.73.
    assert np.percentile(points[:, 2], 1) == pytest.approx(-1.73, abs=0.25)
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    assert elevation.min() > -25.5 and elevation.max() < 2.5
    assert np.hypot(points[:, 0], points[:, 1]).max() <= 120.5
    uv, depth = calib.velo_to_image(points[:, :3])
    rows_inside = (depth > 0) & (uv[:, 1] >= 0) & (uv[:, 1] < 188)
    # The columns cover the camera's horizontal field of view; the lowest beams pass below the image.
    assert np.mean((uv[rows_inside, 0] >= -3) & (uv[rows_inside, 0] < 624)) > 0.97
    assert 0.3 < rows_inside.mean() < 0.9


def test_labels_round_trip_through_files(synth_root: Path):
    for index in range(4):
        frame = synthesize_frame(3, index, *MEDIUM)
        written = read_label(synth_root / "training" / "label_2" / f"{index:06d}.txt")
        assert [o.cls_type for o in written] == [o.cls_type for o in frame.labels]
        for got, expected in zip(written, frame.labels):
            np.testing.assert_allclose(got.box2d, expected.box2d, atol=0.006)
            np.testing.assert_allclose(got.location, expected.location, atol=0.006)
            assert got.occlusion == expected.occlusion
        depth = read_depth_png(synth_root / "training" / "depth_dense" / f"{index:06d}.png")
        np.testing.assert_allclose(depth, frame.rendered.depth, atol=1 / 512 + 1e-6)


def test_projected_3d_boxes_reproduce_2d_boxes(medium_frames):
    fully_visible, level_zero = [], []
    for frame in medium_frames:
        calib, size = frame.rig.calib, (frame.rig.width, frame.rig.height)
        for obj, fact in zip(frame.labels, frame.facts):
            if obj.cls_type == "DontCare" or obj.truncation > 0 or obj.height_2d < 25:
                continue
            projected = project_boxes_to_2d(box3d_corners(obj.dims, obj.location, obj.rotation_y), calib.P2, size)
            iou = box2d_iou(projected, obj.box2d[None])[0, 0]
            if fact["visible_fraction"] >= 0.95:
                fully_visible.append(iou)
            if obj.occlusion == 0:
                level_zero.append(iou)
    assert len(fully_visible) >= 30
    assert min(fully_visible) > 0.9
    assert np.mean(np.array(level_zero) > 0.9) >= 0.95  # the <10 % hidden part can cut a box edge


def test_truncation_and_occlusion_follow_the_geometry(medium_frames):
    levels, truncated = [], 0
    for frame in medium_frames:
        width, height = frame.rig.width, frame.rig.height
        for obj, fact in zip(frame.labels, frame.facts):
            if obj.cls_type == "DontCare":
                assert obj.dims.tolist() == [-1, -1, -1] and obj.box2d[2] > obj.box2d[0]
                continue
            fraction = fact["visible_fraction"]
            expected = next(level for level, minimum in enumerate(OCCLUSION_LEVELS) if fraction >= minimum)
            assert obj.occlusion == expected
            levels.append(obj.occlusion)
            full = project_boxes_to_2d(box3d_corners(obj.dims, obj.location, obj.rotation_y), frame.rig.calib.P2)[0]
            outside = full[0] < 0 or full[1] < 0 or full[2] > width or full[3] > height
            assert outside == (obj.truncation > 0)
            if obj.truncation > 0:
                truncated += 1
                visible_width = min(full[2], width) - max(full[0], 0)
                assert obj.truncation >= 1 - visible_width / (full[2] - full[0]) - 1e-6
            # On the ground: 1.65 m below the camera, give or take the road's slope (< 1.3 deg).
            assert 4 <= obj.location[2] <= 60 and abs(obj.location[1] - 1.65) < 0.15 + obj.location[2] * 0.023
            assert np.isclose(obj.alpha, np.angle(np.exp(1j * (obj.rotation_y - np.arctan2(obj.location[0], obj.location[2])))), atol=1e-6)
    counts = np.bincount(levels, minlength=3)
    assert counts[0] > counts[1] > 0 and counts[2] > 0 and truncated > 0


def test_lidar_lands_on_object_pixels_with_matching_depth(synth_root: Path, medium_frames):
    # From the files alone: points inside labelled 3D boxes, projected with the calib, see the same depth.
    errors = []
    for frame in KittiDataset(synth_root, "trainval", load_lidar=True, depth_dir="depth_dense"):
        rect = frame.calib.velo_to_rect(frame.lidar[:, :3])
        uv, z = frame.calib.rect_to_image(rect)
        height, width = frame.depth.shape
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        for obj in frame.objects:
            if obj.cls_type == "DontCare":
                continue
            hit = inside & _points_in_box(rect, obj)
            pixel_depth = frame.depth[uv[hit, 1].astype(int), uv[hit, 0].astype(int)]
            errors.append(np.abs(pixel_depth - z[hit]) / z[hit])
    errors = np.concatenate(errors)
    assert len(errors) > 2000
    assert np.median(errors) < 0.005
    assert np.mean(errors < 0.05) > 0.95  # the rest: LiDAR sees around edges the camera does not (parallax)
    # In memory: those pixels belong to that very object.
    same, total = 0, 0
    for frame in medium_frames[:8]:
        calib = frame.rig.calib
        rect = calib.velo_to_rect(frame.lidar[:, :3])
        uv, z = calib.rect_to_image(rect)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < frame.rig.width) & (uv[:, 1] >= 0) & (uv[:, 1] < frame.rig.height)
        for obj, fact in zip(frame.labels, frame.facts):
            if obj.cls_type == "DontCare":
                continue
            hit = inside & _points_in_box(rect, obj)
            owners = frame.rendered.object_map[uv[hit, 1].astype(int), uv[hit, 0].astype(int)]
            same += int(np.sum(owners == fact["index"]))
            total += int(hit.sum())
    assert total > 1000 and same / total > 0.93


def test_culled_scan_equals_brute_force():
    for index in range(2):
        frame = synthesize_frame(5, index, *SMALL)
        culled = scan(frame.scene, frame.rig, frame_rngs(5, index)[2])
        full = scan(frame.scene, frame.rig, frame_rngs(5, index)[2], cull=False)
        np.testing.assert_array_equal(culled, full)
        np.testing.assert_array_equal(culled, frame.lidar)


def test_dense_depth_is_the_ground_and_sky_geometry():
    frame = synthesize_frame(2, 0, *MEDIUM)
    depth, calib, ground = frame.rendered.depth, frame.rig.calib, frame.scene.ground
    sky = frame.rendered.part_map[0] < 0
    assert sky.any() and np.all(depth[0][sky] == 0)  # top row without a building: sky, unknown depth
    rows, cols = np.nonzero((frame.rendered.part_map < 0) & (depth > 0))
    points = calib.image_to_rect(cols + 0.5, rows + 0.5, depth[rows, cols])
    heights = ground.height_above(points)
    assert np.abs(heights).max() < 0.05 + 0.004 * depth[rows, cols].max()  # float32 storage of far depths
    near = depth[rows, cols] < 30
    assert np.abs(heights[near]).max() < 0.01


def test_same_world_at_every_resolution():
    small, medium = synthesize_frame(7, 4, *SMALL), synthesize_frame(7, 4, *MEDIUM)
    assert len(small.scene.objects) == len(medium.scene.objects)
    for a, b in zip(small.scene.objects, medium.scene.objects):
        np.testing.assert_array_equal(a.location, b.location)
        assert a.rotation_y == b.rotation_y
    np.testing.assert_allclose(medium.rig.calib.P2[0], small.rig.calib.P2[0] * MEDIUM[0] / SMALL[0])
    np.testing.assert_array_equal(small.rig.calib.R0_rect, medium.rig.calib.R0_rect)


def _one_object_scene(template: Scene, cls_type: str, rotation_y: float) -> Scene:
    dims = {"Car": (1.5, 1.65, 3.9), "Pedestrian": (1.75, 0.66, 0.84)}[cls_type]
    location = np.array([0.0, float(template.ground.y_at(0.0, 9.0)), 9.0])
    obj = SceneObject(cls_type, np.array(dims), location, rotation_y)
    parts = _PartList()
    _add_object_parts(parts, obj, 0, np.random.default_rng(0))
    return Scene(template.ground, [obj], parts.build(), template.road, template.lighting)


def test_front_and_back_look_different():
    """Heading must be learnable: a car seen from the front shows white headlights, from behind red lights."""
    base = synthesize_frame(0, 0, *MEDIUM)
    looks = {}
    for name, ry in (("towards", np.pi / 2), ("away", -np.pi / 2)):
        scene = _one_object_scene(base.scene, "Car", ry)
        rendered = render(scene, base.rig, np.random.default_rng(0))
        body = np.isin(rendered.part_map // 6, np.nonzero(scene.parts.kind == CAR_BODY)[0]) & (rendered.part_map >= 0)
        pixels = rendered.image[body].astype(int)
        looks[name] = {
            "white": np.mean(pixels.min(axis=1) > 200 * base.scene.lighting["tint"].min() * 0.9),
            "red": np.mean((pixels[:, 0] > 120) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)),
        }
        assert body.sum() > 500
    assert looks["towards"]["white"] > 0.03 and looks["towards"]["red"] < 0.005
    assert looks["away"]["red"] > 0.03


def test_deterministic_and_independent_of_workers(tmp_path: Path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    other = tmp_path / "other"
    generate_dataset(one, frames=3, scale=0.25, seed=9, workers=1, progress=False)
    generate_dataset(two, frames=3, scale=0.25, seed=9, workers=2, progress=False)
    generate_dataset(other, frames=3, scale=0.25, seed=10, workers=1, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 3 * 5 + 4
    for relative in files:
        assert (one / relative).read_bytes() == (two / relative).read_bytes(), relative
    assert (one / "training/label_2/000000.txt").read_bytes() != (other / "training/label_2/000000.txt").read_bytes()
    assert not list(one.rglob(".*tmp*"))  # atomic writes leave no temporaries


def test_refusals_and_option_errors(tmp_path: Path):
    root = tmp_path / "root"
    generate_dataset(root, frames=1, scale=0.25, progress=False)
    with pytest.raises(Add3dError, match="not empty.*--force"):
        generate_dataset(root, frames=1, scale=0.25, progress=False)
    summary = generate_dataset(root, frames=2, scale=0.25, seed=1, force=True, progress=False)
    assert summary["train"] + summary["val"] and (root / "training/image_2/000001.png").is_file()
    with pytest.raises(Add3dError, match="either --scale or --width"):
        image_size(width=100, scale=0.5)
    with pytest.raises(Add3dError, match="val-fraction"):
        generate_dataset(tmp_path / "x", frames=2, val_fraction=1.0, progress=False)
    with pytest.raises(Add3dError, match="--frames"):
        generate_dataset(tmp_path / "x", frames=0, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Add3dError, match="not a folder"):
        generate_dataset(tmp_path / "file", frames=1, scale=0.25, progress=False)
    with pytest.raises(Add3dError, match="out of range"):
        image_size(width=10, height=10)
    assert image_size(scale=0.25) == (310, 94) and image_size() == (1242, 375)
    train, val = split_ids(10, 0.3, seed=0)
    assert len(val) == 3 and sorted(train + val) == [f"{i:06d}" for i in range(10)]


def test_cli(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    preview = tmp_path / "preview.png"
    assert main(["synth", "--out", str(out), "--frames", "2", "--width", "200", "--height", "64", "--quiet",
                 "--preview", str(preview)]) == 0
    assert "wrote 2 frames (200x64)" in capsys.readouterr().out
    assert preview.stat().st_size > 10000
    assert KittiDataset(out, "trainval")[0].image.shape == (64, 200, 3)
    assert main(["synth", "--out", str(out), "--frames", "2", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
