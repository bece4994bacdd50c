"""3D-aware positional encoding: the frustum points of a pixel lie on that pixel's camera ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from add3d.distill.position_encoding import PositionEncoding3D, depth_bin_centres, feature_cell_centres
from add3d.geometry.calib import Calibration
from add3d.geometry.tensor_geometry import back_project

# KITTI-like P2 with the usual non-zero baseline column (so the translation path is exercised).
P2_KITTI_LIKE = np.array(
    [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _input_calibrations() -> list[Calibration]:
    """Calibrations of network-input images: affine (crop + scale to 1280x384-like) and flip applied."""
    base = Calibration.from_P2(P2_KITTI_LIKE)
    affine = np.array([[0.9, 0.0, -20.0], [0.0, 0.9, 15.0]])
    return [base, base.affine_transformed(affine), base.flipped(1242.0).affine_transformed(affine)]


def test_depth_bins_cover_range_with_increasing_spacing():
    bins = depth_bin_centres(16, 1.0, 60.0)
    assert bins[0].item() == pytest.approx(1.0)
    assert bins[-1].item() == pytest.approx(60.0)
    gaps = torch.diff(bins)
    assert torch.all(gaps > 0)
    assert torch.allclose(torch.diff(gaps), torch.full((14,), float(gaps[1] - gaps[0]), dtype=torch.float64))


@pytest.mark.parametrize("calib_index", [0, 1, 2])
def test_frustum_points_project_back_to_their_pixel_and_match_calibration(calib_index):
    calib = _input_calibrations()[calib_index]
    stride = 4
    height, width = 12, 40  # feature map of a 48 x 160 input
    encoding = PositionEncoding3D(channels=16, depth_bins=8)
    P2_input = torch.tensor(calib.P2, dtype=torch.float32)[None]
    u, v = feature_cell_centres(height, width, stride)
    points = encoding.frustum_points(P2_input, u[None], v[None])[0]  # N x D x 3, float64
    assert points.shape == (height * width, 8, 3)

    # Cell (i, j) has its pixel centre at ((j + 0.5) S, (i + 0.5) S).
    assert u[width + 3].item() == pytest.approx(3.5 * stride) and v[width + 3].item() == pytest.approx(1.5 * stride)

    # Projecting with P2_input gives back the pixel at every depth, and rect z is the bin depth.
    flat = points.reshape(-1, 3).numpy()
    uv, depth = calib.rect_to_image(flat)
    expected_u = np.repeat(u.numpy(), 8)
    expected_v = np.repeat(v.numpy(), 8)
    # P2_input went through float32 on the way in; compare at that precision (sub-millipixel).
    assert np.allclose(uv[:, 0], expected_u, atol=2e-3)
    assert np.allclose(uv[:, 1], expected_v, atol=2e-3)
    assert np.allclose(depth, np.tile(encoding.depths.double().numpy(), height * width), atol=1e-5)

    # Same points as the numpy Calibration.image_to_rect on the float32-rounded matrix.
    calib32 = Calibration.from_P2(P2_input[0].double().numpy())
    reference = calib32.image_to_rect(expected_u, expected_v, depth)
    assert np.allclose(flat, reference, atol=1e-6)

    # All points of one pixel are collinear with the camera centre: a ray, not just a pixel match.
    centre = -np.linalg.solve(calib32.P2[:, :3], calib32.P2[:, 3])
    directions = points.numpy() - centre
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    assert np.allclose(directions, directions[:, :1], atol=1e-6)


def test_real_kitti_calibration(kitti_mini):
    from add3d.data.kitti import read_calib

    calib_file = kitti_mini / "training" / "calib" / "000000.txt"
    calib = read_calib(calib_file).flipped(1224.0).affine_transformed(np.array([[1.04, 0.0, 3.0], [0.0, 1.04, 0.0]]))
    u = torch.tensor([[10.0, 600.5, 1270.0]], dtype=torch.float64)
    v = torch.tensor([[5.0, 190.0, 380.0]], dtype=torch.float64)
    depth = torch.tensor([2.0, 30.0], dtype=torch.float64)
    points = back_project(torch.tensor(calib.P2)[None], u[..., None], v[..., None], depth)[0].reshape(-1, 3).numpy()
    reference = calib.image_to_rect(np.repeat(u.numpy(), 2), np.repeat(v.numpy(), 2), np.tile(depth.numpy(), 3))
    assert np.allclose(points, reference, atol=1e-9)


def test_encoding_shapes_normalisation_and_index_lookup():
    torch.manual_seed(0)
    encoding = PositionEncoding3D(channels=16, depth_bins=6, position_range=(-60, -20, 0, 60, 20, 60))
    calibs = _input_calibrations()
    P2_input = torch.tensor(np.stack([c.P2 for c in calibs[:2]]), dtype=torch.float32)
    height, width, stride = 6, 20, 4
    full = encoding.for_map(P2_input, height, width, stride)
    assert full.shape == (2, height * width, 16)
    indices = torch.tensor([[0, 5, 119], [27, 27, 60]])
    picked = encoding.for_indices(P2_input, indices, width, stride)
    assert torch.allclose(picked, torch.stack([full[b, indices[b]] for b in range(2)]), atol=1e-6)

    # Over a whole 384 x 1280 KITTI input the default range holds every frustum point in [-1, 1];
    # z maps linearly.
    u, v = feature_cell_centres(height, width, 64)
    normalised = encoding.normalised_points(P2_input, u[None].expand(2, -1), v[None].expand(2, -1))
    assert normalised[0].abs().max() <= 1.0 + 1e-6
    z = normalised[0, 0, :, 2]
    assert torch.allclose(z, encoding.depths / 60.0 * 2 - 1, atol=1e-6)

    # Geometry only: the second camera (affine-warped) encodes the same cells differently.
    assert not torch.allclose(full[0], full[1])
