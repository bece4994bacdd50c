"""Camera geometry and 3D boxes, checked against the real KITTI frames and closed-form cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from add3d.data import kitti
from add3d.data.depth_maps import lidar_depth_map, object_depth_map
from add3d.geometry.boxes import box2d_iou, box3d_corners, objects_corners, project_boxes_to_2d
from add3d.geometry.calib import Calibration, normalize_angle

FRAMES = ("000000", "000001", "000002")


def load(kitti_mini: Path, frame: str):
    calib = kitti.read_calib(kitti_mini / f"training/calib/{frame}.txt")
    objects = [o for o in kitti.read_label(kitti_mini / f"training/label_2/{frame}.txt") if o.cls_type != "DontCare"]
    image = kitti.read_image(kitti_mini / f"training/image_2/{frame}.png")
    return calib, objects, image


@pytest.mark.parametrize("frame", FRAMES)
def test_projected_3d_boxes_match_labelled_2d_boxes(kitti_mini: Path, frame: str) -> None:
    calib, objects, image = load(kitti_mini, frame)
    height, width = image.shape[:2]
    boxes = project_boxes_to_2d(objects_corners(objects), calib.P2, (width, height))
    checked = 0
    for obj, box in zip(objects, boxes):
        if obj.truncation == 0:
            assert box2d_iou(box, obj.box2d)[0, 0] > 0.7, obj.to_line()
            checked += 1
    assert checked == len(objects)


@pytest.mark.parametrize("frame", ["000001", "000002"])  # 000000 holds only a pedestrian
def test_lidar_depth_agrees_with_labelled_cars(kitti_mini: Path, frame: str) -> None:
    """On each visible car's surface pixels, LiDAR depth matches the labelled box surface depth."""
    calib, objects, image = load(kitti_mini, frame)
    size = image.shape[1::-1]
    lidar = lidar_depth_map(kitti.read_velodyne(kitti_mini / f"training/velodyne/{frame}.bin"), calib, size)
    cars = [o for o in objects if o.cls_type == "Car" and o.occlusion == 0]
    assert cars
    for car in cars:
        surface = object_depth_map([car], calib, size)
        both = (surface > 0) & (lidar > 0)
        assert both.sum() >= 10
        assert np.median(np.abs(lidar[both] - surface[both])) < 1.5
        # the box centre depth is within half the car's length of what the LiDAR sees
        assert abs(np.median(lidar[both]) - car.location[2]) < 1.5 + car.l / 2


def test_image_rect_round_trip_and_velo_chain(kitti_mini: Path) -> None:
    calib, _, _ = load(kitti_mini, "000000")
    rng = np.random.default_rng(0)
    points = rng.uniform([-20, -2, 2], [20, 3, 70], size=(100, 3))
    uv, depth = calib.rect_to_image(points)
    np.testing.assert_allclose(calib.image_to_rect(uv[:, 0], uv[:, 1], depth), points, atol=1e-9)
    np.testing.assert_allclose(calib.velo_to_rect(calib.rect_to_velo(points)), points, atol=1e-9)
    # the LiDAR origin sits behind and above the camera (KITTI's rig): ~0.27 m back, ~0.08 m up
    origin = calib.velo_to_rect(np.zeros((1, 3)))[0]
    assert -0.35 < origin[2] < -0.2 and -0.15 < origin[1] < 0.0


def test_alpha_rotation_y_conversions(kitti_mini: Path) -> None:
    for frame in FRAMES:
        calib, objects, _ = load(kitti_mini, frame)
        for obj in objects:
            u = calib.rect_to_image(obj.center_3d[None])[0][0, 0]
            assert abs(normalize_angle(calib.ry_to_alpha(obj.rotation_y, u) - obj.alpha)) < 0.05
            assert abs(normalize_angle(calib.alpha_to_ry(obj.alpha, u) - obj.rotation_y)) < 0.05
    angles = np.array([-7.0, -np.pi, 0.0, np.pi, 4.0])
    wrapped = normalize_angle(angles)
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    np.testing.assert_allclose(np.cos(wrapped), np.cos(angles), atol=1e-12)


def test_flip_mirrors_projection(kitti_mini: Path) -> None:
    calib, objects, image = load(kitti_mini, "000001")
    width = image.shape[1]
    flipped = calib.flipped(width)
    points = np.array([[3.0, 1.0, 20.0], [-10.0, 1.5, 40.0]])
    uv, _ = calib.rect_to_image(points)
    uv_f, _ = flipped.rect_to_image(points * [-1, 1, 1])
    np.testing.assert_allclose(uv_f[:, 0], width - uv[:, 0], atol=1e-9)
    np.testing.assert_allclose(uv_f[:, 1], uv[:, 1], atol=1e-9)
    np.testing.assert_allclose(flipped.flipped(width).P2, calib.P2, atol=1e-9)


def test_affine_transformed_calibration() -> None:
    calib = Calibration.from_P2(np.array([[700.0, 0, 600, 45], [0, 700, 180, -0.3], [0, 0, 1, 0.005]]))
    affine = np.array([[0.5, 0.0, -12.0], [0.0, 0.5, 7.0]])
    moved = calib.affine_transformed(affine)
    points = np.array([[1.0, 1.0, 10.0], [-5.0, 0.5, 30.0]])
    uv, _ = calib.rect_to_image(points)
    uv_moved, _ = moved.rect_to_image(points)
    np.testing.assert_allclose(uv_moved, uv @ affine[:, :2].T + affine[:, 2], atol=1e-9)


def test_box_corners_closed_form() -> None:
    corners = box3d_corners([[2.0, 1.0, 4.0]], [[1.0, 2.0, 10.0]], [np.pi / 2])[0]
    # ry = pi/2 turns the length (+x) to -z: front corners at z = 10 - 2
    np.testing.assert_allclose(corners[[0, 1]][:, 2], [8.0, 8.0], atol=1e-12)
    np.testing.assert_allclose(corners[:4, 1], 2.0)  # bottom face on the ground (y = location y)
    np.testing.assert_allclose(corners[4:, 1], 0.0)  # top face h above
    np.testing.assert_allclose(corners.mean(axis=0), [1.0, 1.0, 10.0], atol=1e-12)


def test_projection_clips_boxes_behind_the_camera() -> None:
    calib = Calibration.from_P2(np.array([[700.0, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]]))
    straddling = box3d_corners([[1.5, 1.6, 4.0]], [[2.0, 1.6, 0.5]], [np.pi / 2])
    box = project_boxes_to_2d(straddling, calib.P2, (1242, 375))[0]
    assert np.all(np.isfinite(box)) and box[2] == 1241 and box[0] > 600
    behind = box3d_corners([[1.5, 1.6, 4.0]], [[0.0, 1.6, -10.0]], [0.0])
    assert np.all(np.isnan(project_boxes_to_2d(behind, calib.P2)))


def test_depth_maps_nearest_wins_and_surface_depth() -> None:
    calib = Calibration(P0=np.eye(3, 4), P1=np.eye(3, 4), P3=np.eye(3, 4),
                        P2=np.array([[100.0, 0, 50, 0], [0, 100, 50, 0], [0, 0, 1, 0]]),
                        Tr_velo_to_cam=np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]]))
    # two LiDAR points on the same ray: the nearer one wins
    points = np.array([[10.0, 0, 0, 1], [5.0, 0, 0, 1], [-3.0, 0, 0, 1]])  # the last is behind
    depth = lidar_depth_map(points, calib, (100, 100))
    assert depth[50, 50] == pytest.approx(5.0) and (depth > 0).sum() == 1
    near = kitti.Object3D("Car", dims=[2.0, 2.0, 2.0], location=[0.0, 1.0, 10.0], rotation_y=0.0)
    far = kitti.Object3D("Car", dims=[4.0, 2.0, 16.0], location=[0.0, 2.0, 20.0], rotation_y=0.0)
    painted = object_depth_map([near, far], calib, (100, 100))
    assert painted[50, 50] == pytest.approx(9.0, abs=1e-5)  # front face of the near box, z = 10 - 1
    assert painted[50, 85] == pytest.approx(19.0, abs=1e-5)  # the far box beside it
    assert painted[2, 2] == 0.0


def test_tensor_geometry_back_projection_broadcasts_and_inverts_the_projection() -> None:
    import torch

    from add3d.geometry.tensor_geometry import back_project

    P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]])
    calib = Calibration.from_P2(P2)
    points = np.array([[-3.0, 1.2, 18.0], [5.0, -0.5, 42.0], [0.1, 1.6, 4.0]])
    uv, depth = calib.rect_to_image(points)
    cameras = torch.tensor(np.stack([P2, P2]))  # B = 2
    u = torch.tensor(np.stack([uv[:, 0]] * 2))
    v = torch.tensor(np.stack([uv[:, 1]] * 2))
    per_point = back_project(cameras, u, v, torch.tensor(np.stack([depth] * 2)))
    assert per_point.shape == (2, 3, 3) and per_point.dtype == torch.float64
    np.testing.assert_allclose(per_point[1].numpy(), points, atol=1e-9)
    # Pixels x depth bins: B x N x 1 pixels against D depths give B x N x D points on each ray.
    bins = torch.tensor([4.0, 18.0, 42.0], dtype=torch.float32)
    rays = back_project(cameras, u[..., None], v[..., None], bins)
    assert rays.shape == (2, 3, 3, 3) and rays.dtype == torch.float32  # dtype of the depths
    np.testing.assert_allclose(rays[0, 0, 1].double().numpy(), points[0], atol=1e-5)
    reprojected, z = calib.rect_to_image(rays[0].reshape(-1, 3).double().numpy())
    np.testing.assert_allclose(reprojected, np.repeat(uv, 3, axis=0), atol=1e-3)
    np.testing.assert_allclose(z, np.tile(bins.numpy(), 3), atol=1e-5)


def test_tensor_geometry_cells_gather_and_angles() -> None:
    import math

    import torch

    from add3d.geometry.tensor_geometry import (
        alpha_to_rotation_y,
        cell_xy,
        gather_at_indices,
        ray_angle,
        rotation_y_to_alpha,
        wrap_angle,
    )

    indices = torch.tensor([[0, 7, 13]])
    xs, ys = cell_xy(indices, 5)
    assert xs.tolist() == [[0, 2, 3]] and ys.tolist() == [[0, 1, 2]]
    feature_map = torch.arange(2 * 15, dtype=torch.float32).reshape(1, 2, 3, 5)
    assert gather_at_indices(feature_map, indices).tolist() == [[[0.0, 15.0], [7.0, 22.0], [13.0, 28.0]]]
    assert gather_at_indices(feature_map, torch.tensor([[99]])).tolist() == [[[14.0, 29.0]]]  # clamped

    angles = torch.linspace(-20, 20, 401, dtype=torch.float64)
    wrapped = wrap_angle(angles)
    assert wrapped.min() >= -math.pi and wrapped.max() < math.pi
    assert torch.allclose(torch.sin(wrapped), torch.sin(angles)) and torch.allclose(torch.cos(wrapped), torch.cos(angles))
    # A car straight ahead (x = 0) has alpha = rotation_y; one on the right is seen turned.
    ray = ray_angle(torch.tensor([0.0, 10.0]), torch.tensor([20.0, 10.0]))
    assert torch.allclose(ray, torch.tensor([0.0, math.pi / 4]))
    alpha = torch.tensor([0.5, 3.0])
    rotation_y = alpha_to_rotation_y(alpha, ray)
    assert torch.allclose(rotation_y, wrap_angle(alpha + ray))
    assert torch.allclose(rotation_y_to_alpha(rotation_y, ray), alpha)
