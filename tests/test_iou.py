"""Rotated BEV / 3D IoU in float64: analytic cases, identical boxes, invariants, area sampling."""

from __future__ import annotations

import numpy as np
import pytest

from add3d.geometry.iou import (
    bev_corners,
    bev_iou,
    bev_iou_pairs,
    convex_intersection_area,
    iou_3d,
    iou_3d_pairs,
)


def box(x=0.0, y=1.5, z=10.0, h=1.5, w=1.6, l=3.9, ry=0.0):
    return np.array([[x, y, z, h, w, l, ry]], dtype=np.float64)


@pytest.mark.parametrize("ry", [0.0, 0.3, np.pi / 2, -np.pi / 2, np.pi, 1.234567, -3.0])
def test_identical_boxes_have_iou_one(ry):
    b = box(x=3.21, z=27.4, ry=ry)
    assert bev_iou(b, b)[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert iou_3d(b, b)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_many_identical_random_boxes_are_never_zero():
    # The failure mode of angle-sorting GPU ports: identical boxes scoring 0 or < 0.7.
    rng = np.random.default_rng(0)
    boxes = np.column_stack(
        [rng.uniform(-20, 20, 500), rng.uniform(1, 2, 500), rng.uniform(5, 60, 500),
         rng.uniform(0.5, 3, 500), rng.uniform(0.4, 2.5, 500), rng.uniform(0.5, 12, 500), rng.uniform(-4, 4, 500)]
    )
    np.testing.assert_allclose(bev_iou_pairs(boxes, boxes), 1.0, atol=1e-12)
    np.testing.assert_allclose(iou_3d_pairs(boxes, boxes), 1.0, atol=1e-12)


def test_shift_along_length_axis():
    a, b = box(), box(x=1.0)  # ry = 0: length along x, overlap 2.9 m of 3.9 m
    expected = 2.9 / (2 * 3.9 - 2.9)
    assert bev_iou(a, b)[0, 0] == pytest.approx(expected, rel=1e-12)
    assert iou_3d(a, b)[0, 0] == pytest.approx(expected, rel=1e-12)  # same heights


def test_square_rotated_45_degrees():
    a, b = box(w=2.0, l=2.0, h=1.0), box(w=2.0, l=2.0, h=1.0, ry=np.pi / 4)
    octagon = 8 * (np.sqrt(2) - 1)  # intersection of a 2x2 square with itself rotated by 45 degrees
    assert bev_iou(a, b)[0, 0] == pytest.approx(octagon / (8 - octagon), rel=1e-12)


def test_3d_uses_vertical_overlap_of_bottom_centred_boxes():
    a = box(y=2.0, h=2.0)  # spans y in [0, 2]
    b = box(y=1.0, h=2.0)  # spans y in [-1, 1]: 1 m of 2 m shared
    area = 1.6 * 3.9
    assert iou_3d(a, b)[0, 0] == pytest.approx(area * 1.0 / (2 * area * 2.0 - area * 1.0), rel=1e-12)
    assert bev_iou(a, b)[0, 0] == pytest.approx(1.0, abs=1e-12)
    c = box(y=-0.5, h=1.0)  # spans [-1.5, -0.5]: no vertical overlap with a
    assert iou_3d(a, c)[0, 0] == 0.0


def test_contained_box():
    big, small = box(w=4.0, l=4.0), box(w=1.0, l=2.0, ry=0.7)
    assert bev_iou(big, small)[0, 0] == pytest.approx(2.0 / 16.0, rel=1e-12)
    assert bev_iou_pairs(small, big, criterion="a")[0] == pytest.approx(1.0, rel=1e-12)


def test_disjoint_and_touching_boxes_have_zero_iou():
    a = box()
    assert bev_iou(a, box(x=10.0))[0, 0] == 0.0
    assert bev_iou(a, box(x=3.9))[0, 0] == pytest.approx(0.0, abs=1e-12)  # edges touch


def test_pairwise_shape_and_symmetry():
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.uniform(-2, 2, 5), np.ones(5), rng.uniform(8, 12, 5), np.ones(5) * 1.5,
                         rng.uniform(1, 2, 5), rng.uniform(2, 4, 5), rng.uniform(-3, 3, 5)])
    b = a[::-1] + [0.3, 0, -0.2, 0, 0, 0, 0.4]
    forward, backward = bev_iou(a, b), bev_iou(b, a)
    assert forward.shape == (5, 5) and forward.dtype == np.float64
    np.testing.assert_allclose(forward, backward.T, atol=1e-12)
    np.testing.assert_allclose(iou_3d(a, b), iou_3d(b, a).T, atol=1e-12)
    assert ((forward >= 0) & (forward <= 1 + 1e-12)).all()
    assert bev_iou(a, np.zeros((0, 7))).shape == (5, 0)


def test_intersection_matches_area_sampling():
    rng = np.random.default_rng(2)
    count = 6
    a = np.column_stack([rng.uniform(-1, 1, count), np.ones(count), rng.uniform(-1, 1, count), np.ones(count),
                         rng.uniform(1, 2.5, count), rng.uniform(1.5, 4, count), rng.uniform(-3, 3, count)])
    b = np.roll(a, 1, axis=0)
    exact = convex_intersection_area(bev_corners(a), bev_corners(b))
    grid = np.stack(np.meshgrid(np.linspace(-4, 4, 801), np.linspace(-4, 4, 801)), axis=-1).reshape(-1, 2)
    cell = (8 / 800) ** 2

    def inside(corners):
        keep = np.ones(len(grid), dtype=bool)
        for i in range(4):
            origin, direction = corners[i], corners[(i + 1) % 4] - corners[i]
            rel = grid - origin
            keep &= direction[0] * rel[:, 1] - direction[1] * rel[:, 0] <= 0  # devkit corners run clockwise
        return keep

    for i in range(count):
        sampled = (inside(bev_corners(a)[i]) & inside(bev_corners(b)[i])).sum() * cell
        assert exact[i] == pytest.approx(sampled, abs=0.05)


def test_devkit_corner_layout_and_orientation_independence():
    corners = bev_corners(box(x=1.0, z=2.0, w=2.0, l=4.0))[0]
    np.testing.assert_allclose(corners, [[3, 3], [3, 1], [-1, 1], [-1, 3]])
    a, b = bev_corners(box(w=2.0, l=2.0)), bev_corners(box(w=2.0, l=2.0, x=1.0))
    assert convex_intersection_area(a, b)[0] == pytest.approx(2.0)
    assert convex_intersection_area(a[:, ::-1], b)[0] == pytest.approx(2.0)
    assert convex_intersection_area(a, b[:, ::-1])[0] == pytest.approx(2.0)


def test_degenerate_boxes_give_zero_not_nan():
    flat = box(w=0.0)
    assert bev_iou(flat, flat)[0, 0] == 0.0
    assert iou_3d(box(h=0.0), box(h=0.0))[0, 0] == 0.0


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        bev_iou(np.zeros((2, 6)), np.zeros((2, 7)))


def test_nearly_coincident_rectangles():
    # Same centre, yaw and width, lengths 3.97 vs 3.95: the case where the devkit's boost.geometry
    # (1.74) returns an empty intersection. The true IoU is 3.95 / 3.97.
    a = box(x=6.68, y=1.48, z=16.51, h=1.31, w=1.77, l=3.97, ry=3.05)
    b = box(x=6.68, y=1.48, z=16.51, h=1.31, w=1.77, l=3.95, ry=3.05)
    assert bev_iou(a, b)[0, 0] == pytest.approx(3.95 / 3.97, rel=1e-12)
