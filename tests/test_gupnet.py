"""GUPNet: ROI heads, geometry-uncertainty depth, HTL, losses, decoding, ADD compatibility."""

from __future__ import annotations

import math

import pytest
import torch

from add3d.errors import Add3dError
from add3d.models import build_detector
from add3d.models.gupnet import TASK_PREREQUISITES
from add3d.models.heading import encode_heading
from add3d.models.htl import HierarchicalTaskLearning
from add3d.models.losses import laplacian_uncertainty_loss
from detector_scene import (
    CLASSES,
    assert_same_objects,
    make_image,
    make_meta,
    make_targets,
    scene_batch,
    scene_objects,
    small_config,
)

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detector(small_config("gupnet"))


@pytest.fixture(scope="module")
def batch():
    return scene_batch()


def test_training_forward_shapes_and_roi_slots(detector, batch):
    detector.train()
    out = detector(batch["image"], batch["targets"], meta=batch["meta"])
    B, M = batch["targets"]["indices"].shape
    h, w = batch["image"].shape[2] // 4, batch["image"].shape[3] // 4
    assert out["features"].shape == (B, detector.feature_channels, h, w)
    assert out["heatmap"].shape == (B, len(CLASSES), h, w)
    assert out["offset_2d"].shape == out["size_2d"].shape == (B, 2, h, w)
    assert out["depth"].shape == (B, M, 2)
    assert out["offset_3d"].shape == (B, M, 2)
    assert out["size_3d"].shape == (B, M, 3)
    assert out["heading"].shape == (B, M, 24)
    mask = batch["targets"]["mask_2d"] > 0
    assert torch.equal(out["roi_mask"], mask)
    # ROI heads run only at real objects: padded slots stay exactly zero.
    assert out["heading"][~mask].abs().sum() == 0
    assert out["heading"][mask].abs().sum() > 0
    assert torch.isfinite(out["depth"][mask]).all()


def test_forward_without_meta_is_a_clear_error(detector, batch):
    with pytest.raises(Add3dError, match="P2_input"):
        detector(batch["image"], batch["targets"])


def test_geometric_depth_and_combined_uncertainty():
    """z_geo = f * H / h with H = class mean + residual; s = logsumexp(s_net, s_H + 2 log(f / h))."""
    torch.manual_seed(1)
    det = build_detector(small_config("gupnet", gupnet={"train_rois": "gt"})).eval()
    objects = scene_objects()
    targets, meta = make_targets([objects]), make_meta(1)
    with torch.no_grad():
        out = det(make_image(1), targets, meta=meta)
    mask = targets["mask_2d"][0] > 0
    cls = targets["cls_ids"][0][mask]
    box = targets["box2d"][0][mask] * 4  # gt ROI boxes, input pixels
    h2d = (box[:, 3] - box[:, 1]).clamp(min=1.0)
    focal = meta["P2_input"][0, 1, 1]
    height = det.mean_size[cls, 0] + out["size_3d"][0][mask][:, 0]
    expected = height * focal / h2d
    torch.testing.assert_close(out["depth_geometric"][0][mask][:, 0], expected, rtol=1e-5, atol=1e-4)
    log_var_h = out["size_3d_log_variance"][0][mask][:, 0]
    geometric_log_var = log_var_h + 2 * (torch.log(focal) - torch.log(h2d))
    # The combined log-variance can't be below either component (variances add).
    assert (out["depth"][0][mask][:, 1] >= geometric_log_var - 1e-4).all()


def test_loss_is_finite_and_reaches_every_part(batch):
    torch.manual_seed(2)
    det = build_detector(small_config("gupnet")).train()
    out = det(batch["image"], batch["targets"], meta=batch["meta"])
    total, parts = det.loss(out, batch["targets"], batch["meta"])
    assert set(TASK_PREREQUISITES) <= set(parts)
    assert all(torch.isfinite(v) for v in parts.values()) and torch.isfinite(total)
    total.backward()
    for name in ("heads", "roi_heads"):
        assert all(p.grad is not None for p in getattr(det, name).parameters()), name
    for name in ("backbone", "neck", "heads", "roi_heads"):
        grads = [p.grad for p in getattr(det, name).parameters() if p.grad is not None]
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_zero_objects_gives_finite_loss_and_connected_graph(batch):
    torch.manual_seed(3)
    det = build_detector(small_config("gupnet")).train()
    targets = make_targets([[], []])
    out = det(batch["image"], targets, meta=batch["meta"])
    assert out["depth"].abs().sum() == 0
    total, parts = det.loss(out, targets, batch["meta"])
    assert torch.isfinite(total)
    for name in ("depth", "offset_3d", "size_3d", "heading", "offset_2d", "size_2d"):
        assert float(parts[name]) == 0.0
    assert float(parts["heatmap"]) > 0
    total.backward()
    assert all(p.grad is not None for p in det.roi_heads.parameters())  # DDP needs every parameter used


def _gt_encoded_outputs(det, targets, meta) -> dict[str, torch.Tensor]:
    """What a perfect GUPNet would output for the targets' objects, in its inference layout."""
    B, M = targets["indices"].shape
    h, w = targets["heatmap"].shape[2:]
    mask = targets["mask_2d"] > 0
    cls = targets["cls_ids"].long()
    heading = torch.zeros(B, M, 24)
    heading_bin, heading_residual = encode_heading(targets["alpha"])
    heading.scatter_(2, heading_bin[..., None], 20.0)
    heading[..., 12:] = heading_residual[..., None]
    return {
        "heatmap": torch.zeros(B, len(CLASSES), h, w),
        "roi_indices": targets["indices"],
        "roi_cls_ids": cls,
        "roi_mask": torch.ones_like(mask),
        "roi_scores": mask.float() * 0.9,  # padded slots score 0: dropped by any threshold > 0
        "roi_boxes": targets["box2d"],
        "depth": torch.stack([targets["location"][..., 2], torch.full((B, M), -12.0)], dim=-1),
        "offset_3d": targets["offset_3d"],
        "size_3d": targets["size_3d"] - det.mean_size[cls],
        "heading": heading,
    }


def test_decode_round_trip_recovers_the_labels(detector, batch):
    objects = scene_objects()
    outputs = _gt_encoded_outputs(detector, batch["targets"], batch["meta"])
    detections = detector.decode(outputs, batch["meta"], score_threshold=0.5)
    assert_same_objects(detections[0], objects)
    assert_same_objects(detections[1], objects[:2])
    scores = [d.score for d in detections[0]]
    assert scores == sorted(scores, reverse=True)
    assert all(abs(s - 0.9 * math.exp(-math.exp(-6.0))) < 1e-4 for s in scores)  # heat x exp(-sigma)


def test_gt_encoded_roi_outputs_give_zero_regression_loss(detector, batch):
    encoded = _gt_encoded_outputs(detector, batch["targets"], batch["meta"])
    out = dict(encoded, roi_mask=batch["targets"]["mask_2d"] > 0)
    del out["roi_scores"]
    B, M = batch["targets"]["indices"].shape
    dense = torch.zeros(B, 2, 24 * 80)
    for name in ("offset_2d", "size_2d"):
        values = dense.clone()
        values.scatter_(2, batch["targets"]["indices"][:, None, :].expand(B, 2, M), batch["targets"][name].transpose(1, 2))
        out[name] = values.view(B, 2, 24, 80)
    out["heatmap"] = torch.zeros(B, len(CLASSES), 24, 80)
    out["size_3d_log_variance"] = torch.zeros(B, M, 1)
    detector.eval()
    _, parts = detector.loss(out, batch["targets"], batch["meta"])
    for name in ("offset_2d", "size_2d", "offset_3d"):
        assert float(parts[name]) < 1e-5, name
    assert float(parts["heading"]) < 1e-6


def test_depth_loss_reads_the_depth_target_that_a_depth_only_jitter_scales(detector, batch):
    """The depth term follows targets["depth"] (the location's z unless a teacher's jitter scaled it)."""
    def depth_term(output_gain: float, target_gain: float) -> float:
        out = dict(_gt_encoded_outputs(detector, batch["targets"], batch["meta"]), roi_mask=batch["targets"]["mask_2d"] > 0)
        del out["roi_scores"]
        out["depth"] = torch.stack([out["depth"][..., 0] * output_gain, torch.zeros_like(out["depth"][..., 1])], dim=-1)
        B, M = batch["targets"]["indices"].shape
        out.update(offset_2d=torch.zeros(B, 2, 24, 80), size_2d=torch.zeros(B, 2, 24, 80),
                   heatmap=torch.zeros(B, len(CLASSES), 24, 80), size_3d_log_variance=torch.zeros(B, M, 1))
        targets = dict(batch["targets"], depth=batch["targets"]["depth"] * target_gain)
        return float(detector.loss(out, targets, batch["meta"])[1]["depth"])

    detector.eval()
    assert torch.allclose(batch["targets"]["depth"][..., 0], batch["targets"]["location"][..., 2])
    exact = depth_term(1.0, 1.0)
    assert depth_term(1.15, 1.15) == pytest.approx(exact, abs=1e-6)  # location unchanged: only the depth target counts
    assert depth_term(1.0, 1.15) > exact + 0.5


def test_depth_loss_variance_net_attenuates_by_the_depth_heads_own_variance(batch):
    """"combined" (GUPNet) weighs the depth error by the summed variance; "net" by the depth head's own."""
    parts = {}
    for choice in ("combined", "net"):
        torch.manual_seed(4)
        det = build_detector(small_config("gupnet", gupnet={"depth_loss_variance": choice})).train()
        out = det(batch["image"], batch["targets"], meta=batch["meta"])
        mask = batch["targets"]["mask_2d"] > 0
        assert (out["depth"][..., 1][mask] >= out["depth_net_log_variance"][..., 0][mask] - 1e-5).all()  # variances add
        variance = out["depth_net_log_variance"][..., 0] if choice == "net" else out["depth"][..., 1]
        expected = laplacian_uncertainty_loss(out["depth"][..., 0], batch["targets"]["depth"][..., 0], variance / 2, mask)
        parts[choice] = float(det.loss(out, batch["targets"], batch["meta"])[1]["depth"])
        assert parts[choice] == pytest.approx(expected.detach().item(), rel=1e-5)
    assert parts["combined"] != pytest.approx(parts["net"], rel=1e-3)
    with pytest.raises(Add3dError, match="depth_loss_variance must be 'combined' or 'net'"):
        build_detector(small_config("gupnet", gupnet={"depth_loss_variance": "sum"}))


def test_inference_runs_roi_heads_on_top_k_peaks(detector, batch):
    detector.eval()
    with torch.no_grad():
        out = detector(batch["image"], meta=batch["meta"])
    assert out["roi_indices"].shape == (2, detector.top_k) and out["depth"].shape == (2, detector.top_k, 2)
    assert torch.isfinite(out["depth"]).all()
    detections = detector.decode(out, batch["meta"], score_threshold=0.0, top_k=7)
    assert all(len(d) <= 7 for d in detections)
    with pytest.raises(Add3dError, match="without targets"):
        detector.decode(detector(batch["image"], batch["targets"], meta=batch["meta"]), batch["meta"])


def test_htl_weights_follow_the_learning_progress():
    """GUPNet's schedule: a no-grad seed pass counts as epoch -1, and epoch e's weights come from
    the window of epochs before e-1 (the official code appends e-1's losses after weighting)."""
    htl = HierarchicalTaskLearning({"a": [], "b": ["a"]}, window=3)
    assert htl.weight_dict()["b"] == 1.0  # inactive until the trainer calls the hook
    weights = []
    a_losses = [10.0, 6.0, 4.0, 3.0, 2.9, 2.85, 2.85, 2.85]

    def seed_pass():
        for _ in range(2):
            htl.record({"a": torch.tensor(18.0), "b": torch.tensor(5.0)})

    for epoch, a in enumerate(a_losses):
        weights.append(htl.start_epoch(epoch, num_epochs=10, measure_losses=seed_pass))
        for _ in range(2):
            htl.record({"a": torch.tensor(a), "b": torch.tensor(5.0)})
    assert all(w["a"] == 1.0 for w in weights)
    assert [w["b"] for w in weights[:3]] == [0.0, 0.0, 0.0]  # window not full yet
    assert weights[3]["b"] == 0.0  # first full window (18, 10, 6) = the reference: progress 0, time factor 0
    # epoch 4: window (10, 6, 4) drops 6 against the reference 12 -> progress 0.5; t = (4 - 3) / (10 - 3)
    assert weights[4]["b"] == pytest.approx((1 / 7) ** 0.5, rel=1e-5)
    later = [w["b"] for w in weights[4:]]
    assert all(0.0 < b <= 1.0 for b in later)
    assert later == sorted(later)  # a's loss plateaus and time passes: b's weight only grows


def test_htl_weights_lag_one_epoch_and_need_one_more_without_the_seed_pass():
    def run(losses, seed):
        htl = HierarchicalTaskLearning({"a": [], "b": ["a"]}, window=3)
        out = []
        for epoch, a in enumerate(losses):
            out.append(htl.start_epoch(epoch, 10, (lambda: htl.record({"a": torch.tensor(18.0), "b": torch.tensor(1.0)})) if seed else None)["b"])
            htl.record({"a": torch.tensor(a), "b": torch.tensor(1.0)})
        return out

    base = run([10.0, 6.0, 4.0, 3.0, 2.0, 1.5], seed=True)
    assert run([10.0, 6.0, 4.0, 3.0, 0.5, 1.5], seed=True) == base  # epoch 4's losses first count at epoch 6
    assert run([10.0, 6.0, 4.0, 2.0, 2.0, 1.5], seed=True)[5] != base[5]  # epoch 3's count at epoch 5
    unseeded = run([10.0, 6.0, 4.0, 3.0, 2.0, 1.5], seed=False)
    # Without the seed pass the window fills one epoch later: at epoch 4 it is the reference (progress 0).
    assert unseeded[:4] == [0.0] * 4 and unseeded[4] == pytest.approx(1 / 7, rel=1e-6)


def test_htl_state_survives_a_checkpoint():
    htl = HierarchicalTaskLearning({"a": [], "b": ["a"]}, window=3)
    for epoch, a in enumerate([5.0, 3.0, 2.0, 1.5]):
        htl.start_epoch(epoch, 10)
        htl.record({"a": torch.tensor(a), "b": torch.tensor(1.0)})
    restored = HierarchicalTaskLearning({"a": [], "b": ["a"]}, window=3)
    restored.load_state_dict(htl.state_dict())
    assert restored.start_epoch(4, 10) == htl.start_epoch(4, 10)
    # A new run (epoch 0) initialised from these weights starts its statistics afresh.
    assert restored.start_epoch(0, 10) == {"a": 1.0, "b": 0.0}
    assert int(restored.history_length) == 0 and not bool(restored.has_first_drop)


def test_on_epoch_start_switches_dependent_losses_off_at_first(batch):
    torch.manual_seed(4)
    det = build_detector(small_config("gupnet")).train()
    det.on_epoch_start(0, num_epochs=140)
    out = det(batch["image"], batch["targets"], meta=batch["meta"])
    total, parts = det.loss(out, batch["targets"], batch["meta"])
    root = parts["heatmap"] + parts["offset_2d"] + parts["size_2d"]
    torch.testing.assert_close(total.detach(), root, rtol=1e-5, atol=1e-5)
    assert float(parts["htl_weight_depth"]) == 0.0
    det_no_htl = build_detector(small_config("gupnet", gupnet={"htl": False}))
    assert det_no_htl.task_weighting is None


def test_add_student_equals_baseline_and_distillation_step_runs(batch):
    """Zero inference cost: the ADD student's state dict is the baseline GUPNet's."""
    from add3d.distill.config import DistillConfig
    from add3d.distill.wrapper import DistillationModule

    torch.manual_seed(5)
    cfg = small_config("gupnet")
    baseline = build_detector(cfg)
    teacher = build_detector(small_config("gupnet", in_channels=5))
    module = DistillationModule(build_detector(cfg), teacher, DistillConfig(ffn_channels=32, depth_bins=8))
    student_state, baseline_state = module.detector.state_dict(), baseline.state_dict()
    assert list(student_state) == list(baseline_state)
    assert all(student_state[k].shape == baseline_state[k].shape for k in baseline_state)
    assert sum(p.numel() for p in module.detector.parameters()) == sum(p.numel() for p in baseline.parameters())

    depth = torch.zeros(2, 1, 96, 320)
    depth[:, :, 40:70, 100:200] = 15.0
    full_batch = dict(batch, depth=depth, depth_valid=(depth > 0).float())
    module.train()
    loss, logs = module(full_batch)
    assert torch.isfinite(loss)
    assert {"distill_response_depth", "distill_response_heading"} <= set(logs)
    loss.backward()


@pytest.mark.parametrize("augment", [False, True])
def test_decoding_the_data_pipelines_targets_gives_back_the_labels(kitti_mini, augment, detector):
    """Real KITTI frames through the shared pipeline (flip / crop-scale): decoding GT-encoded
    outputs returns the original labels, because GUPNet's depth is the true depth under crops."""
    import numpy as np

    from add3d.data.config import DataConfig
    from add3d.data.mono_dataset import build_mono_dataset, collate_batch

    cfg = DataConfig(root=str(kitti_mini), input_size=[192, 640], mask_3d_on_crop=False, scale_depth_on_crop=False)
    checked = {"flipped": 0, "cropped": 0, "plain": 0}
    for seed in range(4 if augment else 1):
        dataset = build_mono_dataset(cfg, str(kitti_mini / "ImageSets" / "train.txt"), augment=augment, seed=seed, classes=KITTI_CLASSES)
        batch = collate_batch([dataset[i] for i in range(len(dataset))])
        targets = batch["targets"]
        detections = detector.decode(_gt_encoded_outputs(detector, targets, batch["meta"]), batch["meta"], score_threshold=0.5)
        for b, found in enumerate(detections):
            assert len(found) == int(targets["mask_2d"][b].sum())
            labels = [o for o in dataset.ground_truth(b) if o.cls_type in KITTI_CLASSES]
            for det in found:
                label = min(labels, key=lambda o: np.abs(o.box2d - det.box2d).max())
                assert det.cls_type == label.cls_type
                np.testing.assert_allclose(det.box2d, label.box2d, atol=0.05)
                np.testing.assert_allclose(det.dims, label.dims, atol=1e-4)
                np.testing.assert_allclose(det.location, label.location, atol=5e-3)
                assert abs(det.alpha - label.alpha) < 1e-3  # flips are undone
                assert abs(det.rotation_y - label.rotation_y) < 0.02
            kind = "flipped" if batch["meta"]["flipped"][b] else "cropped" if batch["meta"]["cropped"][b] else "plain"
            checked[kind] += len(found)
    assert sum(checked.values()) > 0
    if augment:
        assert checked["flipped"] > 0 and checked["cropped"] > 0


CONFIGS = ("kitti", "synthetic", "teacher_lidar", "teacher_object", "add", "synthetic_teacher", "synthetic_add")


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_and_synthetic_ones_build(name):
    from pathlib import Path

    from add3d.engine.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "gupnet" / f"{name}.yaml")
    assert cfg.model.name == "gupnet" and cfg.model.gupnet.htl
    assert cfg.model.in_channels == (5 if "teacher" in name else 3)
    assert (cfg.distill is not None) == name.endswith("add")
    if name in ("kitti", "teacher_lidar", "add"):  # GUPNet's published schedule
        assert (cfg.optim.name, cfg.optim.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 1.25e-3, 32, 140)
        assert list(cfg.schedule.milestones) == [90, 120] and cfg.schedule.gamma == 0.1
    if name.startswith("synthetic"):
        detector = build_detector(cfg.model)
        assert detector.in_channels == cfg.model.in_channels


def test_training_seeds_htl_with_one_no_grad_pass(tmp_path):
    """The trainer's measure_losses pass gives HTL the untrained losses as epoch -1 (GUPNet's
    compute_e0_loss)."""
    from add3d.engine.checkpoints import load_checkpoint
    from add3d.engine.config import load_config
    from add3d.engine.trainer import train
    from engine_helpers import make_fake_kitti, tiny_config_overrides

    root = make_fake_kitti(tmp_path / "data", frames=8, val_frames=2)
    overrides = tiny_config_overrides(root, tmp_path / "run") + [
        "model.name=gupnet", "model.backbone=dla34_tiny", "model.head_channels=16", "model.pretrained=null",
        "data.scale_depth_on_crop=false",
        "train.epochs=1"]
    train(load_config(None, overrides))
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pth")["model"]
    assert int(state["task_weighting.history_length"]) == 1  # the seed pass; epoch 0 closes at epoch 1
    seed = state["task_weighting.history"][0]
    assert bool((seed > 0).all()) and bool(torch.isfinite(seed).all())
    assert float(state["task_weighting.epoch_steps"]) >= 1  # epoch 0's own steps, not yet in the history


def test_depth_response_in_metres_reaches_only_the_roi_depth_residual(batch):
    """In metres, f*H/h would pull a far box's 2D height with d/h per metre: the geometric part is detached,
    so the 3D-height head gets nothing and every parameter gets exactly the residual's gradient."""
    torch.manual_seed(0)
    det = build_detector(small_config("gupnet")).train()
    outputs = det(batch["image"], batch["targets"], meta=batch["meta"])
    real = batch["targets"]["mask_2d"] > 0

    def gradients(value: torch.Tensor) -> dict[str, torch.Tensor]:
        det.zero_grad()
        value[real].sum().backward(retain_graph=True)
        return {name: p.grad.clone() for name, p in det.named_parameters() if p.grad is not None}

    metres = gradients(det.response_outputs(outputs, batch["targets"], batch["meta"], False, True)["depth"][..., 0])
    residual = gradients(outputs["depth"][..., 0] - outputs["depth_geometric"][..., 0])
    log_depth = gradients(det.response_outputs(outputs, batch["targets"], batch["meta"], False, False)["depth"][..., 0])
    assert metres.keys() == residual.keys()
    for name in metres:
        torch.testing.assert_close(metres[name], residual[name])
    assert all(float(grad.abs().sum()) == 0 for name, grad in metres.items() if name.startswith("roi_heads.size_3d."))
    assert any(name.startswith("roi_heads.size_3d.") and float(grad.abs().sum()) > 0 for name, grad in log_depth.items())
