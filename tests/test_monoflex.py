"""MonoFlex: heads, edge fusion, keypoint depths + ensemble, multi-bin orientation, losses,
decoding round trip, ADD compatibility."""

from __future__ import annotations

import math

import pytest
import torch

from add3d.errors import Add3dError
from add3d.models import build_detector
from add3d.models.edge_fusion import border_indices
from add3d.models.keypoint_depth import depth_groups_valid, depths_from_keypoints, modified_visibility, soft_ensemble
from add3d.models.multibin import decode_multibin, encode_multibin, multibin_loss
from detector_scene import (
    CLASSES,
    P2_input,
    assert_same_objects,
    make_meta,
    make_targets,
    scene_batch,
    scene_objects,
    small_config,
)

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

torch.set_num_threads(1)
FEATURE = (24, 80)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detector(small_config("monoflex"))


@pytest.fixture(scope="module")
def batch():
    return scene_batch()


def test_forward_shapes(detector, batch):
    detector.train()
    out = detector(batch["image"], batch["targets"], meta=batch["meta"])
    B = 2
    assert out["features"].shape == (B, detector.feature_channels, *FEATURE)
    expected = {"heatmap": 3, "box2d": 4, "offset_3d": 2, "keypoints": 20, "keypoint_uncertainty": 3,
                "size_3d": 3, "orientation": 16, "depth": 1, "depth_uncertainty": 1}
    for name, channels in expected.items():
        assert out[name].shape == (B, channels, *FEATURE), name


def test_border_indices_walk_the_border_and_repeat_the_first_corner():
    h, w = 5, 7
    index = border_indices(h, w)
    # MonoFlex's get_edge_utils lists the top-left corner first and last: every border pixel once + 1.
    assert len(index) == 2 * (h + w) - 3 and len(set(index.tolist())) == 2 * (h + w) - 4
    assert index[0] == index[-1] == 0
    ys, xs = index // w, index % w
    assert ((ys == 0) | (ys == h - 1) | (xs == 0) | (xs == w - 1)).all()
    steps = (ys.diff().abs() + xs.diff().abs()).tolist()
    assert steps == [1] * (len(index) - 1)  # a closed walk: neighbours along the border
    assert (xs[1], ys[1]) == (0, 1) and (xs[-2], ys[-2]) == (1, 0)  # down the left column first


def test_edge_fusion_changes_only_border_outputs(batch):
    torch.manual_seed(1)
    det = build_detector(small_config("monoflex")).eval()
    with torch.no_grad():
        fused = det(batch["image"], meta=batch["meta"])
        fusion, det.edge_fusion = det.edge_fusion, None
        plain = det(batch["image"], meta=batch["meta"])
        det.edge_fusion = fusion
    for name in ("heatmap", "offset_3d"):
        difference = (fused[name] - plain[name]).abs().amax(dim=(0, 1))
        assert difference[1:-1, 1:-1].max() == 0, name
        border = torch.zeros(FEATURE, dtype=torch.bool)
        border.view(-1)[border_indices(*FEATURE)] = True
        assert (difference[border] > 0).all(), name
    assert torch.equal(fused["keypoints"], plain["keypoints"])


def test_keypoint_depths_from_projected_ground_truth():
    objects = scene_objects()[:3]
    targets = make_targets([objects])
    mask = targets["mask_2d"][0] > 0
    keypoints = targets["keypoints"][0][mask].double()
    heights = targets["size_3d"][0][mask][:, 0].double()
    focal = torch.tensor(P2_input()[1, 1], dtype=torch.float64)
    depths = depths_from_keypoints(keypoints, heights, focal, stride=4)
    true = targets["location"][0][mask][:, 2].double()
    # KITTI's P2 has a 2.7 mm offset in its last row: depth + 0.0027 is what heights encode.
    torch.testing.assert_close(depths, true[:, None].expand(-1, 3) + 0.0027, atol=2e-3, rtol=0)


def test_keypoint_visibility_rules():
    visible = torch.zeros(10, dtype=torch.bool)
    visible[[0, 2, 4, 6, 8]] = True  # one diagonal fully visible, only the bottom centre
    assert depth_groups_valid(visible).tolist() == [False, True, False]
    relaxed = modified_visibility(visible)
    assert relaxed.tolist() == [True, False, True, False, True, False, True, False, True, True]
    assert depth_groups_valid(relaxed).tolist() == [True, True, False]


def test_soft_ensemble_weights_by_inverse_uncertainty():
    depths = torch.tensor([[10.0, 20.0]])
    depth, sigma = soft_ensemble(depths, torch.log(torch.tensor([[1.0, 3.0]])))
    # weights 1 and 1/3 -> (10 + 20/3) / (4/3) = 12.5; sigma = (1 + 1) / (4/3) = 1.5
    assert float(depth) == pytest.approx(12.5)
    assert float(sigma) == pytest.approx(1.5)


def test_multibin_round_trip_and_overlap():
    alphas = torch.linspace(-math.pi, math.pi - 1e-3, 97)
    positive, residual = encode_multibin(alphas)
    assert (positive.sum(dim=1) >= 1).all()
    assert (positive.sum(dim=1) == 2).any()  # near a border two bins are positives
    best = residual.abs().argmin(dim=1)
    prediction = torch.zeros(len(alphas), 16)
    prediction[:, 0:8:2] = 10.0  # every bin "negative" ...
    prediction[torch.arange(len(alphas)), 2 * best] = -10.0  # ... except the best one
    prediction[torch.arange(len(alphas)), 2 * best + 1] = 10.0
    pairs = torch.stack([residual.sin(), residual.cos()], dim=-1)
    prediction[:, 8:] = pairs.reshape(len(alphas), 8)
    decoded = decode_multibin(prediction)
    error = torch.remainder(decoded - alphas + math.pi, 2 * math.pi) - math.pi
    assert error.abs().max() < 1e-5
    perfect = prediction.clone()
    perfect[:, :8] = torch.where(positive.repeat_interleave(2, dim=1).bool(), 1.0, -1.0) * torch.tensor([-20.0, 20.0]).repeat(4)
    assert float(multibin_loss(perfect, alphas)) < 1e-6


def test_loss_finite_backward_and_camera_required(batch):
    torch.manual_seed(2)
    det = build_detector(small_config("monoflex")).train()
    out = det(batch["image"], batch["targets"], meta=batch["meta"])
    total, parts = det.loss(out, batch["targets"], batch["meta"])
    expected = {"heatmap", "box2d", "depth", "offset_3d", "truncated_offset_3d", "orientation", "size_3d",
                "corners", "keypoints", "keypoint_depth", "ensemble_depth"}
    assert set(parts) == expected
    assert all(torch.isfinite(v) for v in parts.values())
    assert float(parts["truncated_offset_3d"]) > 0  # the scene's truncated car
    total.backward()
    for module in (det.heatmap_trunk, det.regression_trunks, det.regression_outs, det.edge_fusion):
        assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(Add3dError, match="camera"):
        det.loss(det(batch["image"], batch["targets"]), batch["targets"], {})


def test_zero_objects(batch):
    torch.manual_seed(3)
    det = build_detector(small_config("monoflex")).train()
    targets = make_targets([[], []])
    out = det(batch["image"], targets, meta=batch["meta"])
    total, parts = det.loss(out, targets, batch["meta"])
    assert torch.isfinite(total)
    assert all(float(v) == 0.0 for k, v in parts.items() if k != "heatmap")
    total.backward()
    assert all(p.grad is not None for p in det.regression_outs.parameters())


def _gt_encoded_outputs(det, targets, meta) -> dict[str, torch.Tensor]:
    """Dense maps holding, at each object's peak, what a perfect MonoFlex would predict."""
    B, M = targets["indices"].shape
    h, w = targets["heatmap"].shape[2:]
    mask = targets["mask_2d"] > 0
    cls = targets["cls_ids"].long()
    centre = torch.stack([targets["indices"] % w, targets["indices"] // w], dim=-1).float()
    box = targets["box2d"]
    positive, residual = encode_multibin(targets["alpha"])
    orientation = torch.zeros(B, M, 16)
    orientation[..., 0:8:2] = 10.0 - 20.0 * positive  # (negative, positive) logits of each bin
    orientation[..., 1:8:2] = 20.0 * positive - 10.0
    orientation[..., 8:] = torch.stack([residual.sin(), residual.cos()], dim=-1).reshape(B, M, 8)
    per_object = {
        "box2d": torch.cat([centre - box[..., :2], box[..., 2:] - centre], dim=-1),
        "offset_3d": targets["offset_3d"],
        "keypoints": targets["keypoints"].reshape(B, M, 20),
        "keypoint_uncertainty": torch.full((B, M, 3), -5.0),
        "size_3d": torch.log(targets["size_3d"].clamp(min=1e-3) / det.mean_size[cls]),
        "orientation": orientation,
        "depth": -torch.log(targets["location"][..., 2:3].clamp(min=1e-3)),  # 1 / sigmoid(x) - 1 = exp(-x)
        "depth_uncertainty": torch.full((B, M, 1), -5.0),
    }
    outputs = {}
    for name, values in per_object.items():
        dense = torch.zeros(B, values.shape[-1], h * w)
        for b in range(B):
            index = targets["indices"][b][mask[b]]
            dense[b][:, index] = values[b][mask[b]].T
        outputs[name] = dense.view(B, -1, h, w)
    heatmap = torch.full((B, len(CLASSES), h * w), -10.0)
    for b in range(B):
        heatmap[b, cls[b][mask[b]], targets["indices"][b][mask[b]]] = 10.0
    outputs["heatmap"] = heatmap.view(B, len(CLASSES), h, w)
    return outputs


def test_decode_round_trip_recovers_the_labels(detector, batch):
    objects = scene_objects()
    outputs = _gt_encoded_outputs(detector, batch["targets"], batch["meta"])
    detections = detector.decode(outputs, batch["meta"], score_threshold=0.5)
    assert_same_objects(detections[0], objects)
    assert_same_objects(detections[1], objects[:2])
    # score = heatmap (clamped to 1 - 1e-4) x (1 - clamp(sigma = e^-5, 0.01, 1))
    assert all(d.score == pytest.approx((1 - 1e-4) * 0.99, rel=1e-5) for d in detections[0])


def test_confidence_from_the_ensemble_uncertainty(batch):
    """MonoFlex's 1 - clamp(sigma, 0.01, 1) zeroes every detection with sigma >= 1; 'exp' still ranks them."""
    det = build_detector(small_config("monoflex", monoflex={"confidence": "exp"}))
    outputs = _gt_encoded_outputs(det, batch["targets"], batch["meta"])
    for name in ("depth_uncertainty", "keypoint_uncertainty"):
        outputs[name] = torch.where(outputs[name] != 0, torch.full_like(outputs[name], math.log(2.0)), outputs[name])
    exp_scores = [d.score for d in det.decode(outputs, batch["meta"], score_threshold=0.5)[0]]
    assert exp_scores and all(s == pytest.approx((1 - 1e-4) * math.exp(-2.0), rel=1e-4) for s in exp_scores)
    det.options.confidence = "monoflex"
    assert all(d.score == 0.0 for d in det.decode(outputs, batch["meta"], score_threshold=0.5)[0])
    with pytest.raises(Add3dError, match="confidence"):
        build_detector(small_config("monoflex", monoflex={"confidence": "bogus"}))


def test_gt_encoded_outputs_give_near_zero_geometry_losses(detector, batch):
    outputs = _gt_encoded_outputs(detector, batch["targets"], batch["meta"])
    _, parts = detector.loss(outputs, batch["targets"], batch["meta"])
    for name in ("offset_3d", "truncated_offset_3d", "size_3d", "keypoints", "box2d"):
        assert float(parts[name]) < 1e-4, name
    assert float(parts["orientation"]) < 1e-3
    assert float(parts["ensemble_depth"]) < 5e-3
    assert float(parts["corners"]) < 1e-2


def test_add_student_equals_baseline_and_distillation_step_runs(batch):
    """Zero inference cost: the ADD student's state dict is the baseline MonoFlex's."""
    from add3d.distill.config import DistillConfig
    from add3d.distill.wrapper import DistillationModule

    torch.manual_seed(5)
    cfg = small_config("monoflex")
    baseline = build_detector(cfg)
    module = DistillationModule(
        build_detector(cfg), build_detector(small_config("monoflex", in_channels=5)), DistillConfig(ffn_channels=32, depth_bins=8)
    )
    student_state, baseline_state = module.detector.state_dict(), baseline.state_dict()
    assert list(student_state) == list(baseline_state)
    assert all(student_state[k].shape == baseline_state[k].shape for k in baseline_state)

    depth = torch.zeros(2, 1, 96, 320)
    depth[:, :, 40:70, 100:200] = 15.0
    module.train()
    loss, logs = module(dict(batch, depth=depth, depth_valid=(depth > 0).float()))
    assert torch.isfinite(loss)
    assert {"distill_response_keypoints", "distill_response_ensemble_depth"} <= set(logs)
    loss.backward()


def test_deformable_neck_builds_and_runs():
    torch.manual_seed(6)
    det = build_detector(small_config("monoflex", deformable_neck=True)).eval()
    with torch.no_grad():
        out = det(torch.randn(1, 3, 64, 128), meta=make_meta(1))
    assert out["heatmap"].shape == (1, 3, 16, 32) and torch.isfinite(out["heatmap"]).all()


@pytest.mark.parametrize("augment", [False, True])
def test_decoding_the_data_pipelines_targets_gives_back_the_labels(kitti_mini, augment, detector):
    """Real KITTI frames through the shared pipeline (flip / crop-scale, MonoFlex keeps truncated
    objects): decoding GT-encoded outputs returns the original labels, keypoint depths included."""
    import numpy as np

    from add3d.data.config import DataConfig
    from add3d.data.mono_dataset import build_mono_dataset, collate_batch

    cfg = DataConfig(root=str(kitti_mini), input_size=[192, 640], keep_outside_centres=True, skip_unknown_difficulty=False,
                     min_depth=0.0, max_depth=100.0, scale_depth_on_crop=False)
    checked = {"flipped": 0, "cropped": 0, "plain": 0}
    for seed in range(4 if augment else 1):
        dataset = build_mono_dataset(cfg, str(kitti_mini / "ImageSets" / "train.txt"), augment=augment, seed=seed, classes=KITTI_CLASSES)
        batch = collate_batch([dataset[i] for i in range(len(dataset))])
        targets = batch["targets"]
        outputs = _gt_encoded_outputs(detector, targets, batch["meta"])
        detections = detector.decode(outputs, batch["meta"], score_threshold=0.5)
        for b, found in enumerate(detections):
            assert len(found) == int(targets["mask_2d"][b].sum())
            labels = [o for o in dataset.ground_truth(b) if o.cls_type in KITTI_CLASSES]
            for det in found:
                label = min(labels, key=lambda o: np.linalg.norm(o.location - det.location))
                assert det.cls_type == label.cls_type
                np.testing.assert_allclose(det.dims, label.dims, atol=1e-3)
                np.testing.assert_allclose(det.location, label.location, atol=0.05)
                assert abs(det.alpha - label.alpha) < 1e-3  # flips are undone
                assert abs(det.rotation_y - label.rotation_y) < 0.02
            kind = "flipped" if batch["meta"]["flipped"][b] else "cropped" if batch["meta"]["cropped"][b] else "plain"
            checked[kind] += len(found)
    assert sum(checked.values()) > 0
    if augment:
        assert checked["flipped"] > 0


CONFIGS = ("kitti", "synthetic", "teacher_lidar", "teacher_object", "add", "synthetic_teacher", "synthetic_add")


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_and_synthetic_ones_build(name):
    from pathlib import Path

    from add3d.engine.config import load_config
    from add3d.models.monoflex import MONOFLEX_LOSS_WEIGHTS

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "monoflex" / f"{name}.yaml")
    assert cfg.model.name == "monoflex" and cfg.data.keep_outside_centres
    assert cfg.model.in_channels == (5 if "teacher" in name else 3)
    assert (cfg.distill is not None) == name.endswith("add")
    assert cfg.model.monoflex.loss_weights == MONOFLEX_LOSS_WEIGHTS
    if name in ("kitti", "teacher_lidar", "add"):  # MonoFlex's published schedule
        assert (cfg.optim.name, cfg.optim.lr, cfg.train.batch_size, cfg.train.epochs) == ("adamw", 3e-4, 8, 100)
        assert list(cfg.schedule.milestones) == [80, 90] and cfg.model.deformable_neck
    if name.startswith("synthetic"):
        detector = build_detector(cfg.model)
        assert detector.in_channels == cfg.model.in_channels


# ----- official checkpoints (zhangyp15/MonoFlex naming, written out here; no third-party files) -------
OFFICIAL_GROUPS = ["box2d", "offset_3d", "keypoints", "keypoint_uncertainty", "size_3d", "orientation", "depth",
                   "depth_uncertainty"]


def _official_name(key: str) -> str:
    """Our MonoFlex key -> the official KeypointDetector key (the inverse naming, spelt out by hand)."""
    import re

    if key.startswith("backbone."):
        return "backbone.base." + key[len("backbone."):]
    m = re.fullmatch(r"neck\.(dla_up\.stages\.(\d)|ida_up)\.(projections|nodes|upsamplers)\.(\d)\.(.*)", key)
    if m:
        ida = f"dla_up.ida_{m.group(2)}" if m.group(2) is not None else "ida_up"
        kind = {"projections": "proj", "nodes": "node", "upsamplers": "up"}[m.group(3)]
        rest = m.group(5)
        rest = {"offset_mask.weight": "conv.conv_offset_mask.weight", "offset_mask.bias": "conv.conv_offset_mask.bias"}.get(
            rest, rest.replace("bn.", "actf.0."))
        return f"backbone.{ida}.{kind}_{int(m.group(4)) + 1}.{rest}"
    m = re.fullmatch(r"heatmap_trunk\.(\d)\.(.*)", key)
    if m:
        return f"heads.predictor.class_head.{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"regression_trunks\.(\w+)\.(\d)\.(.*)", key)
    if m:
        return f"heads.predictor.reg_features.{OFFICIAL_GROUPS.index(m.group(1))}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"edge_fusion\.(heatmap|offset)_branch\.(\d)\.(.*)", key)
    if m:
        index = {"0": "0", "1": "1", "2": "3"}[m.group(2)]
        return f"heads.predictor.trunc_{m.group(1)}_conv.{index}.{m.group(3)}"
    raise AssertionError(f"no official name for {key}")


def _official_state(ours: dict, classes: list[str]) -> dict:
    """An official-format state dict holding the same network as ``ours`` (class order Car, Pedestrian,
    Cyclist; sizes as (l, h, w); orientation as ori_cls + ori_offset; in-place ABN scales |w| + eps)."""
    official_order = ["Car", "Pedestrian", "Cyclist"]
    state = {}
    for key, value in ours.items():
        if key.startswith(("heatmap_out.", "regression_outs.")) or key.startswith("edge_fusion.heatmap_branch.2."):
            continue
        value = value.clone()
        if key.endswith("1.weight") and (key.startswith("heatmap_trunk") or key.startswith("regression_trunks")):
            # |w| + eps = ours: store half of them negative, as trained in-place ABN weights can be.
            value = value - 1e-5
            value[::2] = -value[::2]
        state[_official_name(key)] = value
    rows = [classes.index(c) for c in official_order]
    for n in ("weight", "bias"):
        state[f"heads.predictor.class_head.2.{n}"] = ours[f"heatmap_out.{n}"][rows]
        state[f"heads.predictor.trunc_heatmap_conv.3.{n}"] = ours[f"edge_fusion.heatmap_branch.2.{n}"][rows]
        for g, name in enumerate(OFFICIAL_GROUPS):
            value = ours[f"regression_outs.{name}.{n}"]
            if name == "size_3d":
                value = value[[2, 0, 1]]  # (h, w, l) -> (l, h, w)
            if name == "orientation":
                state[f"heads.predictor.reg_heads.{g}.0.{n}"], state[f"heads.predictor.reg_heads.{g}.1.{n}"] = value[:8], value[8:]
            else:
                state[f"heads.predictor.reg_heads.{g}.0.{n}"] = value
    state["backbone.base.fc.weight"] = torch.zeros(1000, 8, 1, 1)  # the ImageNet classifier, unused
    state["backbone.base.fc.bias"] = torch.zeros(1000)
    return {"module." + k: v for k, v in state.items()}  # saved from DistributedDataParallel


def test_official_state_dict_converts_loads_strictly_and_predicts_the_same(batch):
    from add3d.models.monoflex import convert_official_monoflex as convert_official

    classes = ["Pedestrian", "Cyclist", "Car"]  # not the official order: heatmap rows must follow
    cfg = small_config("monoflex", deformable_neck=True, classes=classes)
    torch.manual_seed(11)
    reference = build_detector(cfg).eval()
    with torch.no_grad():  # non-trivial BN statistics and deformable offsets
        for name, tensor in reference.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or "offset_mask" in name:
                tensor.normal_(0, 0.05)
    official = _official_state(reference.state_dict(), classes)
    assert "backbone.dla_up.ida_2.proj_3.conv.conv_offset_mask.weight" in {k[7:] for k in official}
    converted = convert_official(official, cfg)
    model = build_detector(cfg).eval()
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        expected = reference(batch["image"], meta=batch["meta"])
        got = model(batch["image"], meta=batch["meta"])
        for name in ["heatmap", *OFFICIAL_GROUPS]:
            torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)
        found = model.decode(got, batch["meta"], score_threshold=0.0, top_k=5)
    assert_same_objects(found[0], reference.decode(expected, batch["meta"], score_threshold=0.0, top_k=5)[0])


def test_official_conversion_names_what_is_missing_or_unexpected():
    from add3d.models.monoflex import convert_official_monoflex as convert_official

    cfg = small_config("monoflex", deformable_neck=True)
    official = _official_state(build_detector(cfg).state_dict(), list(cfg.classes))
    broken = dict(official)
    del broken["module.backbone.ida_up.node_2.conv.weight"]
    with pytest.raises(Add3dError, match="lacks 'backbone.ida_up.node_2.conv.weight'"):
        convert_official(broken, cfg)
    with pytest.raises(Add3dError, match="unexpected tensor.*heads.predictor.extra"):
        convert_official({**official, "heads.predictor.extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(Add3dError, match="deformable_neck: true"):
        convert_official(official, small_config("monoflex"))
    with pytest.raises(Add3dError, match="not Van"):
        convert_official(official, small_config("monoflex", deformable_neck=True, classes=["Car", "Van"]))


def test_box2d_targets_follow_monoflex():
    """Projected 3D box when all corners are inside the image, the label otherwise; no 2D target
    where the peak is outside the box."""
    from add3d.data.targets import build_targets, TargetOptions
    from add3d.models.monoflex import MonoFlex

    objects = scene_objects()
    targets = {k: torch.as_tensor(v)[None] for k, v in build_targets(
        objects, P2_input(), (96, 320), TargetOptions(keep_outside_centres=True, peak_rounding="round")).items()}
    w = targets["heatmap"].shape[-1]
    indices = targets["indices"][0]
    peak = torch.stack([indices % w, indices // w], dim=-1).double()[None]
    box, valid = MonoFlex.box2d_targets(targets, peak)
    used = targets["mask_2d"][0] > 0
    corners = targets["keypoints"][0, :, :8].double() + peak[0, :, None]
    all_inside = targets["keypoints_visible"][0, :, :8].bool().all(dim=-1) & used
    assert all_inside.any() and (used & ~all_inside).any()  # both kinds in the scene
    torch.testing.assert_close(box[0, all_inside, :2], corners[all_inside].amin(dim=1))
    torch.testing.assert_close(box[0, all_inside, 2:], corners[all_inside].amax(dim=1))
    torch.testing.assert_close(box[0, used & ~all_inside], targets["box2d"][0, used & ~all_inside].double())
    # Move one peak outside its box: its 2D target is dropped, the others are unchanged.
    first = int(torch.nonzero(used & valid[0])[0])
    moved, shifted = peak.clone(), dict(targets)
    shift = float(box[0, first, 2] + 1.0 - peak[0, first, 0])
    moved[0, first, 0] += shift
    shifted["keypoints"] = targets["keypoints"].clone()
    shifted["keypoints"][0, first, :, 0] -= shift  # keypoints are stored relative to the peak
    box_moved, valid_moved = MonoFlex.box2d_targets(shifted, moved)
    torch.testing.assert_close(box_moved, box)
    assert not valid_moved[0, first] and torch.equal(valid_moved[0, first + 1 :], valid[0, first + 1 :])


def test_official_neck_and_parameter_count():
    """DLASeg: 3,515,012 (dla_up) + 425,324 (ida_up) parameters on DLA-34, 20,952,538 in all,
    the official count without the ImageNet classifier."""
    from add3d.models.config import ModelConfig

    det = build_detector(ModelConfig(name="monoflex", pretrained=None, deformable_neck=True))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert (count(det.backbone), count(det.neck.dla_up), count(det.neck.ida_up)) == (15_270_832, 3_515_012, 425_324)
    assert count(det) == 20_952_538
