"""MonoDLE detector: shapes, losses, decoding round trip, teacher widening, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from add3d.data.kitti import Object3D, read_calib, read_label
from add3d.errors import Add3dError
from add3d.geometry.calib import Calibration
from add3d.models import ModelConfig, build_detector
from add3d.geometry.tensor_geometry import back_project, gather_at_indices
from add3d.models.decode import top_k_peaks
from add3d.models.heading import decode_heading, encode_heading, heading_from_bin
from add3d.models.pretrained import load_widened_state_dict

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

CLASSES = ["Car", "Pedestrian", "Cyclist"]
# A KITTI-like P2 (frame 000008's intrinsics, with the usual small baseline offsets).
KITTI_P2 = np.array(
    [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
)


META: dict = {}  # MonoDLE's loss and response outputs read nothing from the batch meta


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(backbone="dla34_tiny", head_channels=16, **overrides)


def build(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_detector(tiny_config(**overrides))


def hand_made_targets(batch: int = 2, size=(16, 32), max_objects: int = 8, with_objects: bool = True) -> dict:
    """Targets in the DESIGN.md layout: image 0 holds a Car and a Pedestrian, image 1 a Cyclist."""
    h, w = size
    t = {
        "heatmap": torch.zeros(batch, 3, h, w),
        "indices": torch.zeros(batch, max_objects, dtype=torch.long),
        "mask_2d": torch.zeros(batch, max_objects),
        "mask_3d": torch.zeros(batch, max_objects),
        "cls_ids": torch.zeros(batch, max_objects, dtype=torch.long),
        "offset_2d": torch.zeros(batch, max_objects, 2),
        "size_2d": torch.zeros(batch, max_objects, 2),
        "offset_3d": torch.zeros(batch, max_objects, 2),
        "depth": torch.zeros(batch, max_objects, 1),
        "size_3d": torch.zeros(batch, max_objects, 3),
        "alpha": torch.zeros(batch, max_objects, dtype=torch.float64),
    }
    if not with_objects:
        return t
    objects = [  # (image, slot, class, x, y, offset_2d, size_2d, offset_3d, depth, (h, w, l), alpha)
        (0, 0, 0, 10, 5, (0.3, -0.2), (6.0, 3.0), (0.4, 0.6), 20.0, (1.5, 1.6, 3.9), 0.3),
        (0, 1, 1, 22, 9, (-0.1, 0.4), (1.5, 4.0), (0.2, 0.1), 9.0, (1.8, 0.6, 0.9), -2.0),
        (1, 0, 2, 5, 12, (0.0, 0.0), (3.0, 3.5), (0.7, 0.5), 14.0, (1.7, 0.6, 1.8), 1.4),
    ]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for b, slot, cls, x, y, off2d, size2d, off3d, depth, dims, alpha in objects:
        gaussian = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.0**2))
        t["heatmap"][b, cls] = torch.maximum(t["heatmap"][b, cls], gaussian)
        t["indices"][b, slot] = y * w + x
        t["mask_2d"][b, slot] = t["mask_3d"][b, slot] = 1.0
        t["cls_ids"][b, slot] = cls
        t["offset_2d"][b, slot] = torch.tensor(off2d)
        t["size_2d"][b, slot] = torch.tensor(size2d)
        t["offset_3d"][b, slot] = torch.tensor(off3d)
        t["depth"][b, slot, 0] = depth
        t["size_3d"][b, slot] = torch.tensor(dims)
        t["alpha"][b, slot] = alpha
    return t


def test_output_shapes_and_parameter_count():
    model = build()
    image = torch.randn(2, 3, 64, 128)
    outputs = model(image)
    expected = {"heatmap": 3, "offset_2d": 2, "size_2d": 2, "depth": 2, "offset_3d": 2, "size_3d": 3, "heading": 24}
    for name, channels in expected.items():
        assert outputs[name].shape == (2, channels, 16, 32), name
    assert outputs["features"].shape == (2, model.feature_channels, 16, 32)
    # Heatmap starts at the focal-loss prior sigmoid(-2.19) ~ 0.1; regression heads start near zero.
    assert torch.allclose(torch.sigmoid(outputs["heatmap"]).mean(), torch.tensor(0.1), atol=0.02)
    assert outputs["size_3d"].abs().max() < 0.05

    # Full MonoDLE = MonoDLE's CenterNet3D (20,822,974 parameters with DLA-34) minus the unused
    # ImageNet classifier of the backbone (513,000).
    torch.manual_seed(0)
    full = build_detector(ModelConfig())
    assert sum(p.numel() for p in full.parameters()) == 20_309_974
    assert full.first_conv_key == "backbone.base_layer.0.weight"


def test_bad_input_is_a_clear_error():
    model = build()
    with pytest.raises(Add3dError, match="B x 3 x H x W"):
        model(torch.randn(1, 5, 64, 128))
    with pytest.raises(Add3dError, match="multiples of 32"):
        model(torch.randn(1, 3, 60, 128))
    with pytest.raises(Add3dError, match="unknown detector 'centernet'.*monodle, gupnet, monoflex"):
        build_detector(tiny_config(name="centernet"))
    with pytest.raises(Add3dError, match="unknown model option"):
        build_detector({"name": "monodle", "bakbone": "dla34"})


def test_config_builds_from_omegaconf_and_yaml_overrides():
    base = OmegaConf.structured(ModelConfig)
    override = OmegaConf.create("backbone: dla34_tiny\nhead_channels: 8\nclasses: [Car]\nuse_mean_size: false\n")
    cfg = OmegaConf.merge(base, override)
    model = build_detector(cfg)
    assert model.heads["heatmap"][-1].out_channels == 1
    assert model.heads["heatmap"][0].out_channels == 8
    assert torch.equal(model.mean_size, torch.zeros(1, 3))
    assert "mean_size" not in model.state_dict()  # configs carry the means, not checkpoints


def test_loss_is_finite_and_decreases_on_a_fixed_batch():
    model = build(seed=1).train()
    torch.manual_seed(1)
    image = torch.randn(2, 3, 64, 128)
    targets = hand_made_targets()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(12):
        total, parts = model.loss(model(image), targets, META)
        assert torch.isfinite(total)
        assert set(parts) == {"heatmap", "offset_2d", "size_2d", "depth", "offset_3d", "size_3d", "heading"}
        assert all(not p.requires_grad and torch.isfinite(p) for p in parts.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[-1] < 0.7 * history[0], history
    # Weights are applied per term: the total equals the weighted sum of the parts.
    weighted = build(seed=1, loss_weights={"heatmap": 2.0, "depth": 0.0})
    total, parts = weighted.loss(weighted(image), targets, META)
    expected = 2.0 * parts["heatmap"] + sum(v for k, v in parts.items() if k not in ("heatmap", "depth"))
    assert torch.allclose(total, expected, rtol=1e-5)


def test_individual_losses_have_the_monodle_values():
    model = build()
    targets = hand_made_targets()
    h, w = 16, 32
    # Hand-made outputs: exact 2D/3D offsets and sizes, depth logit 0 (depth = 1/(0.5+1e-6) - 1 ~ 1 m),
    # log-variance 0, heading logits 0.
    outputs = {
        "heatmap": torch.full((2, 3, h, w), -2.19),
        "offset_2d": torch.zeros(2, 2, h, w),
        "size_2d": torch.zeros(2, 2, h, w),
        "depth": torch.zeros(2, 2, h, w),
        "offset_3d": torch.zeros(2, 2, h, w),
        "size_3d": torch.zeros(2, 3, h, w),
        "heading": torch.zeros(2, 24, h, w),
    }
    _, parts = model.loss(outputs, targets, META)
    mask = targets["mask_2d"].bool()
    assert torch.isclose(parts["offset_2d"], targets["offset_2d"][mask].abs().mean())
    assert torch.isclose(parts["size_2d"], targets["size_2d"][mask].abs().mean())
    depth_pred = 1.0 / (0.5 + 1e-6) - 1.0
    assert torch.isclose(parts["depth"], (1.4142 * (targets["depth"][mask] - depth_pred).abs()).mean(), rtol=1e-5)
    # Size residuals from the class means; the dimension-aware loss has the magnitude of plain L1.
    residual = targets["size_3d"][mask] - model.mean_size[targets["cls_ids"][mask]]
    assert torch.isclose(parts["size_3d"], residual.abs().mean(), rtol=1e-5)
    # Uniform logits: CE = log(12); the residual prediction is 0.
    heading_residual = encode_heading(targets["alpha"])[1]
    assert torch.isclose(parts["heading"], math.log(12) + heading_residual[mask].abs().mean(), rtol=1e-5)


def test_region_depth_loss_is_the_laplacian_loss_on_every_region_cell():
    model = build()
    targets = hand_made_targets()
    h, w = 16, 32
    outputs = model(torch.zeros(2, 3, 64, 128))
    _, plain = model.loss(outputs, targets, META)
    assert "depth_region" not in plain  # only runs with data.depth_region get the term
    targets["region_depth"] = torch.zeros(2, h, w)
    targets["region_mask"] = torch.zeros(2, h, w)
    targets["region_depth"][0, 4:7, 8:13] = 20.0
    targets["region_mask"][0, 4:7, 8:13] = 1.0
    total, parts = model.loss(outputs, targets, META)
    logit, log_variance = outputs["depth"][0, 0, 4:7, 8:13], outputs["depth"][0, 1, 4:7, 8:13]
    depth = 1.0 / (torch.sigmoid(logit) + 1e-6) - 1.0
    expected = (1.4142 * torch.exp(-log_variance) * (depth - 20.0).abs() + log_variance).mean()
    assert torch.isclose(parts["depth_region"], expected, rtol=1e-5)
    assert torch.isclose(total, sum(parts.values()), rtol=1e-5)
    weighted = build(loss_weights={"depth_region": 0.0})
    weighted.load_state_dict(model.state_dict())
    total_without, _ = weighted.loss(outputs, targets, META)
    assert torch.isclose(total_without, total - parts["depth_region"], rtol=1e-5)


def test_zero_objects_give_zero_terms_and_finite_gradients():
    model = build().train()
    outputs = model(torch.randn(2, 3, 64, 128))
    total, parts = model.loss(outputs, hand_made_targets(with_objects=False), META)
    assert torch.isfinite(total)
    for name in ("offset_2d", "size_2d", "depth", "offset_3d", "size_3d", "heading"):
        assert parts[name].item() == 0.0, name
    assert parts["heatmap"].item() > 0  # all-negative heatmap still penalises the 0.1 prior
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Every head is still part of the graph (DDP needs a gradient for every parameter).
    assert model.heads["depth"][-1].weight.grad is not None


def test_response_outputs_sample_the_maps_at_the_target_indices():
    model = build()
    outputs = model(torch.randn(2, 3, 64, 128))
    targets = hand_made_targets()
    sampled = model.response_outputs(outputs, targets, META)
    widths = {"offset_2d": 2, "size_2d": 2, "depth": 2, "offset_3d": 2, "size_3d": 3, "heading": 24}
    assert {k: tuple(v.shape) for k, v in sampled.items()} == {k: (2, 8, c) for k, c in widths.items()}
    # Image 0, slot 1 is the Pedestrian at (x=22, y=9).
    assert torch.equal(sampled["depth"][0, 1], outputs["depth"][0, :, 9, 22])
    assert torch.equal(sampled["heading"][1, 0], outputs["heading"][1, :, 12, 5])


# ----- decoding ---------------------------------------------------------------------------------


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def encode_as_outputs(
    frames: list[tuple[Calibration, list[Object3D]]], affines: np.ndarray, feature_size, model, log_variance=0.1
) -> dict[str, torch.Tensor]:
    """Ground truth -> the head outputs a perfect MonoDLE would produce (inverse of decoding)."""
    h, w = feature_size
    batch = len(frames)
    out = {
        "heatmap": np.full((batch, 3, h, w), -8.0),
        "offset_2d": np.zeros((batch, 2, h, w)),
        "size_2d": np.zeros((batch, 2, h, w)),
        "depth": np.zeros((batch, 2, h, w)),
        "offset_3d": np.zeros((batch, 2, h, w)),
        "size_3d": np.zeros((batch, 3, h, w)),
        "heading": np.zeros((batch, 24, h, w)),
    }
    for b, (calib, objects) in enumerate(frames):
        to_input = np.linalg.inv(np.vstack([affines[b], [0.0, 0.0, 1.0]]))[:2]

        def to_feature(u, v):
            x, y = to_input @ np.array([u, v, 1.0])
            return x / 4.0, y / 4.0

        for obj in objects:
            cls = CLASSES.index(obj.cls_type)
            uv, _ = calib.rect_to_image(obj.center_3d[None])
            fx, fy = to_feature(*uv[0])
            ix, iy = int(np.floor(fx)), int(np.floor(fy))
            x1, y1 = to_feature(obj.box2d[0], obj.box2d[1])
            x2, y2 = to_feature(obj.box2d[2], obj.box2d[3])
            out["heatmap"][b, cls, iy, ix] = 8.0
            out["offset_2d"][b, :, iy, ix] = ((x1 + x2) / 2 - ix, (y1 + y2) / 2 - iy)
            out["size_2d"][b, :, iy, ix] = (x2 - x1, y2 - y1)
            out["offset_3d"][b, :, iy, ix] = (fx - ix, fy - iy)
            # depth = 1 / (sigmoid(x) + 1e-6) - 1  <=>  sigmoid(x) = 1 / (depth + 1) - 1e-6
            out["depth"][b, :, iy, ix] = (logit(1.0 / (obj.location[2] + 1.0) - 1e-6), log_variance)
            out["size_3d"][b, :, iy, ix] = obj.dims - model.mean_size[cls].numpy()
            heading_bin, heading_res = encode_heading(obj.alpha)
            out["heading"][b, int(heading_bin), iy, ix] = 5.0
            out["heading"][b, 12 + int(heading_bin), iy, ix] = heading_res
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def check_round_trip(frames, original_sizes, input_size=(384, 1280)):
    model = build()
    # Input = the original image scaled to the input size, then a 16-pixel crop of the top rows
    # (so the affine has a translation as well as a scale).
    affines = np.array(
        [[[W / input_size[1], 0.0, 0.0], [0.0, H / input_size[0], 16.0]] for W, H in original_sizes]
    )
    outputs = encode_as_outputs(frames, affines, (input_size[0] // 4, input_size[1] // 4), model)
    meta = {
        "P2": torch.tensor(np.stack([c.P2 for c, _ in frames]), dtype=torch.float32),
        "input_to_original": torch.tensor(affines, dtype=torch.float32),
    }
    detections = model.decode(outputs, meta, score_threshold=0.2, top_k=50)
    assert len(detections) == len(frames)
    for (calib, expected), found in zip(frames, detections):
        assert len(found) == len(expected)
        for obj in expected:
            match = min(found, key=lambda d: np.linalg.norm(d.location - obj.location))
            assert match.cls_type == obj.cls_type
            np.testing.assert_allclose(match.location, obj.location, atol=2e-3)
            np.testing.assert_allclose(match.dims, obj.dims, atol=1e-5)
            np.testing.assert_allclose(match.box2d, obj.box2d, atol=2e-2)
            assert abs(match.alpha - obj.alpha) < 1e-5
            uv, _ = calib.rect_to_image(obj.center_3d[None])
            assert abs(match.rotation_y - calib.alpha_to_ry(obj.alpha, float(uv[0, 0]))) < 1e-4
            assert match.score == pytest.approx(1.0 / (1.0 + math.exp(-8.0)) * math.exp(-0.1), rel=1e-5)
            assert Object3D.__name__ and len(match.to_line().split()) == 16  # a valid KITTI result line
    return detections


def test_decode_round_trip_with_a_hand_written_calibration():
    calib = Calibration.from_P2(KITTI_P2)
    objects = [
        Object3D("Car", alpha=-1.2, dims=[1.5, 1.6, 3.9], location=[-3.0, 1.7, 18.0], rotation_y=0.0),
        Object3D("Pedestrian", alpha=2.9, dims=[1.8, 0.6, 0.9], location=[2.5, 1.6, 9.5], rotation_y=0.0),
        Object3D("Cyclist", alpha=0.05, dims=[1.7, 0.6, 1.8], location=[6.0, 1.5, 30.0], rotation_y=0.0),
    ]
    for obj in objects:  # 2D boxes: some box around the projected centre
        u, v = calib.rect_to_image(obj.center_3d[None])[0][0]
        obj.box2d = np.array([u - 20.0, v - 30.0, u + 25.0, v + 35.0])
    check_round_trip([(calib, objects)], [(1242, 375)])


def test_decode_round_trip_on_real_kitti_labels(kitti_mini):
    frames, sizes = [], []
    for frame_id, size in (("000000", (1224, 370)), ("000001", (1242, 375)), ("000002", (1242, 375))):
        calib = read_calib(kitti_mini / "training" / "calib" / f"{frame_id}.txt")
        objects = [o for o in read_label(kitti_mini / "training" / "label_2" / f"{frame_id}.txt") if o.cls_type in CLASSES]
        frames.append((calib, objects))
        sizes.append(size)
    detections = check_round_trip(frames, sizes)
    assert [len(d) for d in detections] == [1, 2, 1]
    # The decoder's rotation_y (from the pixel column, as MonoDLE) agrees with the labels' own.
    for (_, expected), found in zip(frames, detections):
        for obj in expected:
            match = min(found, key=lambda d: np.linalg.norm(d.location - obj.location))
            assert abs(match.rotation_y - obj.rotation_y) < 0.02


def test_decode_thresholds_heatmap_scores_and_handles_empty_maps():
    model = build()
    outputs = model(torch.randn(1, 3, 64, 128))
    outputs["heatmap"] = torch.full_like(outputs["heatmap"], -8.0)
    meta = {"P2": torch.tensor(KITTI_P2[None], dtype=torch.float32), "input_to_original": torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])}
    assert model.decode(outputs, meta) == [[]]
    outputs["heatmap"][0, 1, 3, 4] = 0.0  # heatmap score 0.5, passes 0.2
    outputs["heatmap"][0, 0, 10, 20] = -2.0  # 0.12, filtered
    found = model.decode(outputs, meta, score_threshold=0.2)[0]
    assert [d.cls_type for d in found] == ["Pedestrian"]
    assert len(model.decode(outputs, meta, score_threshold=0.1)[0]) == 2
    assert len(model.decode(outputs, meta, score_threshold=0.1, top_k=1)[0]) == 1


def test_shared_decoding_helpers():
    heatmap = torch.zeros(1, 2, 4, 5)
    heatmap[0, 1, 2, 3] = 0.9
    heatmap[0, 0, 1, 1] = 0.7
    peaks = top_k_peaks(heatmap, 2)
    assert peaks["cls_ids"].tolist() == [[1, 0]] and peaks["indices"].tolist() == [[13, 6]]
    assert peaks["xs"].tolist() == [[3.0, 1.0]] and peaks["ys"].tolist() == [[2.0, 1.0]]
    assert top_k_peaks(heatmap, 100)["scores"].shape == (1, 40)
    assert torch.equal(gather_at_indices(heatmap, torch.tensor([[13, 6]])), torch.tensor([[[0.0, 0.9], [0.7, 0.0]]]))

    calib = Calibration.from_P2(KITTI_P2)
    points = np.array([[-3.0, 1.2, 18.0], [5.0, -0.5, 42.0]])
    uv, depth = calib.rect_to_image(points)
    xyz = back_project(
        torch.tensor(KITTI_P2[None]), torch.tensor(uv[None, :, 0]), torch.tensor(uv[None, :, 1]), torch.tensor(depth[None])
    )
    np.testing.assert_allclose(xyz[0].numpy(), points, atol=1e-9)

    alphas = np.linspace(-math.pi + 1e-3, math.pi, 50)
    bins, residuals = encode_heading(alphas)
    assert bins.min() >= 0 and bins.max() <= 11 and np.abs(residuals).max() <= math.pi / 12 + 1e-9
    np.testing.assert_allclose(heading_from_bin(bins, residuals), alphas, atol=1e-9)
    logits = torch.zeros(50, 24, dtype=torch.float64)
    logits[torch.arange(50), torch.tensor(bins)] = 1.0
    logits[torch.arange(50), 12 + torch.tensor(bins)] = torch.tensor(residuals)
    np.testing.assert_allclose(decode_heading(logits).numpy(), alphas, atol=1e-9)


def test_teacher_with_widened_first_conv_matches_the_rgb_model():
    student = build(seed=3).eval()
    teacher = build(seed=4, in_channels=5).eval()
    load_widened_state_dict(teacher, student.state_dict(), teacher.first_conv_key)
    image = torch.randn(2, 3, 64, 128)
    depth_and_validity = torch.rand(2, 2, 64, 128)
    with torch.no_grad():
        expected = student(image)
        zeros = teacher(torch.cat([image, torch.zeros_like(depth_and_validity)], dim=1))
        anything = teacher(torch.cat([image, depth_and_validity], dim=1))
    for name in expected:
        assert torch.allclose(expected[name], zeros[name], atol=1e-6), name
        assert torch.allclose(expected[name], anything[name], atol=1e-6), name
    # The student's state dict is exactly the baseline's (same keys and shapes, no extra modules).
    assert {k: v.shape for k, v in student.state_dict().items()} == {
        k: v.shape for k, v in build(seed=5).state_dict().items()
    }


def test_same_seed_gives_identical_models_and_training_steps():
    def one_step(seed):
        model = build(seed=seed).train()
        torch.manual_seed(seed)
        image = torch.randn(2, 3, 64, 128)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        total, _ = model.loss(model(image), hand_made_targets(), META)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return total.item(), model.state_dict()

    loss_a, state_a = one_step(7)
    loss_b, state_b = one_step(7)
    loss_c, _ = one_step(8)
    assert loss_a == loss_b and loss_a != loss_c
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# ----- agreement with the data pipeline -----------------------------------------------------------


def perfect_outputs(targets: dict, model) -> dict[str, torch.Tensor]:
    """The head outputs that reproduce ``targets`` exactly at every object's heatmap peak."""
    batch, classes, h, w = targets["heatmap"].shape
    out = {name: torch.zeros(batch, c, h, w) for name, c in
           (("offset_2d", 2), ("size_2d", 2), ("depth", 2), ("offset_3d", 2), ("size_3d", 3), ("heading", 24))}
    out["heatmap"] = torch.full((batch, classes, h, w), -8.0)
    for b, m in zip(*torch.nonzero(targets["mask_2d"], as_tuple=True)):
        y, x = divmod(int(targets["indices"][b, m]), w)
        cls = int(targets["cls_ids"][b, m])
        out["heatmap"][b, cls, y, x] = 8.0
        for name in ("offset_2d", "size_2d", "offset_3d"):
            out[name][b, :, y, x] = targets[name][b, m]
        out["depth"][b, 0, y, x] = float(logit(1.0 / (float(targets["depth"][b, m, 0]) + 1.0) - 1e-6))
        out["size_3d"][b, :, y, x] = targets["size_3d"][b, m] - model.mean_size[cls]
        heading_bin, heading_residual = encode_heading(targets["alpha"][b, m])
        out["heading"][b, int(heading_bin), y, x] = 8.0
        out["heading"][b, 12 + int(heading_bin), y, x] = heading_residual
    return out


@pytest.mark.parametrize("augment", [False, True])
def test_decoding_the_data_pipelines_targets_gives_back_the_labels(kitti_mini, augment):
    from add3d.data.config import DataConfig
    from add3d.data.mono_dataset import build_mono_dataset, collate_batch

    cfg = DataConfig(root=str(kitti_mini), input_size=[192, 640])
    model = build()
    checked = {"flipped": 0, "cropped": 0, "plain": 0}
    for seed in range(4 if augment else 1):
        dataset = build_mono_dataset(cfg, str(kitti_mini / "ImageSets" / "train.txt"), augment=augment, seed=seed, classes=KITTI_CLASSES)
        batch = collate_batch([dataset[i] for i in range(len(dataset))])
        targets = batch["targets"]
        outputs = perfect_outputs(targets, model)
        _, parts = model.loss(outputs, targets, batch["meta"])
        for name in ("offset_2d", "size_2d", "offset_3d", "size_3d"):
            assert parts[name] < 1e-5, name
        assert parts["depth"] < 1e-3 and parts["heading"] < 1e-2
        detections = model.decode(outputs, batch["meta"])
        for b, found in enumerate(detections):
            assert len(found) == int(targets["mask_2d"][b].sum())
            labels = [o for o in dataset.ground_truth(b) if o.cls_type in KITTI_CLASSES]
            for det in found:
                label = min(labels, key=lambda o: np.abs(o.box2d - det.box2d).max())
                assert det.cls_type == label.cls_type
                np.testing.assert_allclose(det.box2d, label.box2d, atol=0.05)
                assert abs(det.alpha - label.alpha) < 1e-3  # flips are undone
                np.testing.assert_allclose(det.dims, label.dims, atol=1e-4)
                if targets["mask_3d"][b].sum() > 0:  # crop-scaled depth targets are not metric
                    np.testing.assert_allclose(det.location, label.location, atol=5e-3)
                    assert abs(det.rotation_y - label.rotation_y) < 0.02
            kind = "flipped" if batch["meta"]["flipped"][b] else "cropped" if batch["meta"]["cropped"][b] else "plain"
            checked[kind] += len(found)
    assert sum(checked.values()) > 0
    if augment:
        assert checked["flipped"] > 0


# ----- released MonoDLE checkpoints ---------------------------------------------------------------

# Keys of xinzhuma/monodle's CenterNet3D state dict (lib/models/centernet3d.py + lib/backbones/dlaup.py),
# written down from the public code.
RELEASE_KEYS = {
    "backbone.base_layer.0.weight": (16, 3, 7, 7),
    "backbone.fc.weight": (1000, 512, 1, 1),
    "backbone.level5.root.conv.weight": (512, 1280, 1, 1),
    "neck.ida_0.proj_1.conv.weight": (256, 512, 3, 3),
    "neck.ida_0.proj_1.bn.running_var": (256,),
    "neck.ida_0.up_1.weight": (256, 1, 4, 4),
    "neck.ida_0.node_1.conv.weight": (256, 512, 3, 3),
    "neck.ida_1.proj_2.conv.weight": (128, 256, 3, 3),
    "neck.ida_1.node_2.bn.weight": (128,),
    "neck.ida_2.proj_3.conv.weight": (64, 128, 3, 3),
    "neck.ida_2.up_3.weight": (64, 1, 4, 4),
    "neck.ida_2.node_3.bn.num_batches_tracked": (),
    "heatmap.0.weight": (256, 64, 3, 3),
    "heatmap.2.bias": (3,),
    "depth.2.weight": (2, 256, 1, 1),
    "heading.2.bias": (24,),
    "size_3d.0.bias": (256,),
}
RELEASE_NUM_ENTRIES = 342


def release_style_state_dict(model) -> dict[str, torch.Tensor]:
    """Our MonoDLE's weights under the release's names (heatmap channels as Pedestrian, Car, Cyclist)."""
    import re

    state = {}
    for key, value in model.state_dict().items():
        match = re.match(r"neck\.stages\.(\d)\.(projections|nodes|upsamplers)\.(\d)\.(?:(\d)\.)?(.+)", key)
        if match:
            stage, part, index, layer, rest = match.groups()
            part = {"projections": "proj", "nodes": "node", "upsamplers": "up"}[part]
            layer = {"0": "conv.", "1": "bn.", None: ""}[layer]
            key = f"neck.ida_{stage}.{part}_{int(index) + 1}.{layer}{rest}"
        elif key.startswith("heads."):
            key = key[len("heads.") :]
            if key.startswith("heatmap.2."):
                value = value[[1, 0, 2]]
        state[key] = value
    state["backbone.fc.weight"] = torch.randn(1000, 512, 1, 1)
    state["backbone.fc.bias"] = torch.randn(1000)
    return state


def test_released_monodle_checkpoint_converts_and_reproduces_its_outputs(tmp_path):
    from add3d.cli import main
    from add3d.engine.checkpoints import read_model_state

    torch.manual_seed(0)
    original = build_detector(ModelConfig(use_mean_size=False)).eval()
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0.0, 0.05)
    release = release_style_state_dict(original)
    assert len(release) == RELEASE_NUM_ENTRIES
    assert {k: tuple(release[k].shape) for k in RELEASE_KEYS} == RELEASE_KEYS
    path = tmp_path / "checkpoint_epoch_140.pth"
    torch.save({"epoch": 140, "model_state": release, "optimizer_state": None}, path)

    assert main(["import-monodle", str(path), str(tmp_path / "converted.pth")]) == 0
    converted = build_detector(ModelConfig(use_mean_size=False)).eval()
    converted.load_state_dict(read_model_state(tmp_path / "converted.pth"))
    image = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        expected, got = original(image), converted(image)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    # Single-class configs pick the right heatmap channel; unknown classes and keys are errors.
    from add3d.models.monodle import convert_official_monodle

    car_only = convert_official_monodle(release, ModelConfig(classes=["Car"]))
    assert torch.equal(car_only["heads.heatmap.2.bias"], original.state_dict()["heads.heatmap.2.bias"][:1])
    with pytest.raises(Add3dError, match="also has Van"):
        convert_official_monodle(release, ModelConfig(classes=["Van"]))
    with pytest.raises(Add3dError, match="unexpected key 'mystery.weight'"):
        convert_official_monodle({**release, "mystery.weight": torch.zeros(1)}, ModelConfig(classes=["Car"]))
