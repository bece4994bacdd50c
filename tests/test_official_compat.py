"""``model.compat: official``: the official MonoDLE / GUPNet geometry, against hand-derived values
(the side-by-side runs with the official code are in docs/MODELS.md, "Differences")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from add3d.data.config import DataConfig
from add3d.data.mono_dataset import encode_sample
from add3d.data.transforms import AugmentationParams
from add3d.geometry.calib import Calibration
from add3d.geometry.tensor_geometry import back_project
from add3d.models import build_detector
from add3d.models.decode import official_back_project, official_frame_camera, official_input_to_image
from detector_scene import small_config

P2 = np.array([[707.05, 0.0, 604.08, 45.76], [0.0, 707.05, 180.51, -0.35], [0.0, 0.0, 1.0, 0.005]])
FRAME = (1224, 370)  # a KITTI frame size whose aspect differs from the 1280 x 384 input's
INPUT_HW = (384, 1280)


def frame_meta(params: AugmentationParams = AugmentationParams(), input_hw=INPUT_HW) -> dict:
    image = np.zeros((FRAME[1], FRAME[0], 3), np.uint8)
    cfg = DataConfig(input_size=list(input_hw))
    meta = encode_sample("000000", image, Calibration.from_P2(P2), cfg, params)["meta"]
    return {key: value[None] if torch.is_tensor(value) else [value] for key, value in meta.items()}


def test_official_mapping_is_the_per_axis_size_ratio_on_test_frames():
    meta = frame_meta()
    points = torch.tensor([[[0.0, 0.0], [640.0, 192.0], [1280.0, 384.0], [100.0, 30.0]]])
    official = official_input_to_image(points, meta["input_to_original"], meta["original_size"], INPUT_HW)
    # The official decode: feature * image size / feature size, i.e. input * image size / input size.
    torch.testing.assert_close(official, points * torch.tensor([1224 / 1280, 370 / 384]), rtol=0, atol=1e-4)
    exact = points @ meta["input_to_original"][0, :, :2].T + meta["input_to_original"][0, :, 2]
    torch.testing.assert_close(official[..., 0], exact[..., 0], rtol=0, atol=1e-4)  # exact horizontally
    offset = (official - exact)[0, :, 1]
    assert float(offset.abs().max()) == pytest.approx(1.40, abs=0.01)  # rows at the border: ~1.4 px
    assert abs(float(offset[1])) < 1e-4  # the centre row is right


def test_gupnet_official_geometric_depth_is_smaller_by_the_aspect_ratio():
    torch.manual_seed(0)
    exact = build_detector(small_config("gupnet")).eval()
    with torch.no_grad():  # boxes of ~16 input pixels, clear of the 1 px height clamp
        exact.heads["size_2d"][-1].bias.copy_(torch.tensor([6.0, 4.0]))
    official = build_detector(small_config("gupnet", compat="official")).eval()
    official.load_state_dict(exact.state_dict())
    meta = frame_meta(input_hw=(96, 320))  # same aspect as 1280 x 384
    image = torch.randn(1, 3, 96, 320)
    with torch.no_grad():
        out_exact, out_official = exact(image, meta=meta), official(image, meta=meta)

    def focal_over_height(out):  # depth_geometric / H_3d = f / h (the heads' inputs differ between modes)
        height_3d = exact.mean_size[out["roi_cls_ids"], 0] + out["size_3d"][..., 0]
        return out["depth_geometric"][..., 0] / height_3d

    ratio = focal_over_height(out_exact) / focal_over_height(out_official)
    aspect = (FRAME[1] / FRAME[0]) / (96 / 320)  # 1.0076: the official over-estimates box heights
    torch.testing.assert_close(ratio, torch.full_like(ratio, aspect), rtol=2e-4, atol=0)


def test_official_back_projection_and_flipped_camera():
    P = torch.tensor(P2, dtype=torch.float64)[None]
    u, v, z = torch.tensor([[900.0]], dtype=torch.float64), torch.tensor([[200.0]], dtype=torch.float64), torch.tensor([[20.0]], dtype=torch.float64)
    shortcut, exact = official_back_project(P, u, v, z), back_project(P, u, v, z)
    # The shortcut drops P2[2,3]: x is off by -u * P2[2,3] / fu (6 mm here; y likewise by -v P2[2,3] / fv).
    assert float(shortcut[0, 0, 0] - exact[0, 0, 0]) == pytest.approx(-900.0 * 0.005 / 707.05, rel=1e-3)
    mirrored = torch.tensor([[[-1.0, 0.0, 1224.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    flipped = official_frame_camera(P, mirrored, torch.tensor([1224.0], dtype=torch.float64))[0]
    assert float(flipped[0, 2]) == pytest.approx(1224 - 604.08) and float(flipped[0, 3]) == pytest.approx(-45.76)
    unflipped = official_frame_camera(P, mirrored.abs() * torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]]), torch.tensor([1224.0]))
    torch.testing.assert_close(unflipped, P)
