"""The MonoDetector contract of docs/DESIGN.md, checked for every row of ``add3d.models.DETECTORS``.

A new detector gets all of these for free by adding its table row: output shapes, finite losses
with and without objects, decoding into ORIGINAL image coordinates, per-object response outputs and depths,
zero inference cost under ADD, 5-channel teachers, and a configurable heading-bin count.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from add3d.data.kitti import Object3D
from add3d.distill.config import DistillConfig
from add3d.distill.teacher import teacher_model_config
from add3d.distill.wrapper import DistillationModule
from add3d.errors import Add3dError
from add3d.models import DETECTORS, DetectorEntry, MonoDetector, build_detector
from add3d.models.decode import heatmap_scores, peak_nms, top_k_peaks
from add3d.models.heading import encode_heading, heading_from_bin
from detector_scene import CLASSES, INPUT_SIZE, make_image, make_meta, make_targets, scene_batch, scene_objects, small_config

torch.set_num_threads(1)
NAMES = list(DETECTORS)
FEATURE = (INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4)


def build(name: str, seed: int = 0, **overrides) -> MonoDetector:
    torch.manual_seed(seed)
    return build_detector(small_config(name, **overrides))


@pytest.fixture(scope="module")
def batch():
    return scene_batch()


def test_the_table_holds_the_three_detectors_and_rejects_unknown_names():
    assert NAMES == ["monodle", "gupnet", "monoflex"]
    assert all(isinstance(entry, DetectorEntry) for entry in DETECTORS.values())
    with pytest.raises(Add3dError, match="unknown detector 'centernet'.*monodle, gupnet, monoflex"):
        build_detector(small_config("centernet"))
    with pytest.raises(TypeError, match="abstract"):
        MonoDetector(small_config("monodle"))


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_class_layout(name, batch):
    detector = build(name).train()
    outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
    assert isinstance(detector, MonoDetector) and detector.classes == list(CLASSES) and detector.num_classes == 3
    assert outputs["features"].shape == (2, detector.feature_channels, *FEATURE)
    assert outputs["heatmap"].shape == (2, 3, *FEATURE)  # logits, one channel per class
    assert all(torch.isfinite(v).all() for v in outputs.values() if v.is_floating_point())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_objects", [True, False])
def test_loss_is_finite_detached_and_reaches_the_heads(name, with_objects, batch):
    detector = build(name, seed=1).train()
    targets = batch["targets"] if with_objects else make_targets([[], []])
    outputs = detector(batch["image"], targets, meta=batch["meta"])
    total, parts = detector.loss(outputs, targets, batch["meta"])
    assert total.dim() == 0 and torch.isfinite(total) and float(parts["heatmap"]) > 0
    assert all(not v.requires_grad and torch.isfinite(v) for v in parts.values())
    regression = [float(v) for k, v in parts.items() if k != "heatmap" and not k.startswith("htl_")]
    assert (max(regression) > 0) if with_objects else (max(regression) == 0.0)
    total.backward()
    grads = {n: p.grad for n, p in detector.named_parameters()}
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    # Every parameter after the backbone is in the graph even without objects (DDP needs a gradient
    # for each; DLA's own unused projections are what train.find_unused_parameters is for).
    assert [n for n, g in grads.items() if g is None and not n.startswith("backbone.")] == []


@pytest.mark.parametrize("name", NAMES)
def test_response_outputs_are_per_object(name, batch):
    detector = build(name).train()
    outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
    responses = detector.response_outputs(outputs, batch["targets"], batch["meta"])
    slots = batch["targets"]["indices"].shape
    assert responses and all(v.shape[:2] == slots and v.dim() == 3 for v in responses.values())
    assert all(torch.isfinite(v).all() for v in responses.values())


@pytest.mark.parametrize("name", NAMES)
def test_responses_without_uncertainty_drop_only_the_log_variances(name, batch):
    detector = build(name).train()
    outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
    full = detector.response_outputs(outputs, batch["targets"], batch["meta"])
    values = detector.response_outputs(outputs, batch["targets"], batch["meta"], with_uncertainty=False)
    dropped = {name: full[name].shape[-1] - (values[name].shape[-1] if name in values else 0) for name in full}
    # MonoDLE's and GUPNet's depth responses carry (depth, log-variance); MonoFlex has a separate head.
    expected = {"monoflex": {"depth_uncertainty": 4}}.get(name, {"depth": 1})
    assert {k: v for k, v in dropped.items() if v} == expected
    for key, value in values.items():
        torch.testing.assert_close(value, full[key][..., : value.shape[-1]])


@pytest.mark.parametrize("name", NAMES)
def test_object_depth_is_the_depth_decode_gives_an_object_at_that_slot(name, batch):
    """Targets placed at the detector's own top-K peaks: each decoded box sits at its slot's object_depth."""
    detector = build(name).eval()
    with torch.no_grad():
        outputs = detector(batch["image"], meta=batch["meta"])
        detections = detector.decode(outputs, batch["meta"], score_threshold=0.0)
        peaks = top_k_peaks(peak_nms(heatmap_scores(outputs["heatmap"])), detector.cfg.top_k)
        at_peaks = {"indices": peaks["indices"], "cls_ids": peaks["cls_ids"], "mask_2d": torch.ones_like(peaks["scores"])}
        depth = detector.object_depth(detector(batch["image"], at_peaks, meta=batch["meta"]), at_peaks, batch["meta"])
    assert depth.shape == peaks["indices"].shape and bool((depth > 0).all())
    # GUPNet reorders by score and drops boxes with non-positive sizes: match each box to its slot. Its
    # z is the slot's depth, or that minus the camera's offset along its axis (P2[2, 3], 2.7 mm here),
    # depending on the detector's back-projection.
    camera_offset = batch["meta"]["P2"][:, 2, 3].to(depth.dtype)
    for b, image in enumerate(detections):
        assert len(image) > 0
        for box in image:
            error = torch.minimum((depth[b] - box.location[2]).abs(), (depth[b] - camera_offset[b] - box.location[2]).abs())
            slot = int(error.argmin())
            assert float(error[slot]) < 1e-4 and detector.classes[int(peaks["cls_ids"][b, slot])] == box.cls_type


def _scaled_meta(meta: dict, factor: float) -> dict:
    """The same network input cut from an original image ``factor`` times larger: P2 and the
    input -> original map scale, P2_input (what the network saw) stays."""
    scaled = dict(meta)
    scale = torch.diag(torch.tensor([factor, factor, 1.0]))
    scaled["P2"] = scale @ meta["P2"]
    scaled["input_to_original"] = meta["input_to_original"] * factor
    scaled["original_size"] = meta["original_size"] * factor
    return scaled


@pytest.mark.parametrize("name", NAMES)
def test_decode_gives_object3d_lists_in_original_image_coordinates(name, batch):
    detector = build(name).eval()
    with torch.no_grad():
        outputs = detector(batch["image"], meta=batch["meta"])
    plain = detector.decode(outputs, batch["meta"], score_threshold=0.0, top_k=10)
    doubled = detector.decode(outputs, _scaled_meta(batch["meta"], 2.0), score_threshold=0.0, top_k=10)
    assert len(plain) == 2 and all(isinstance(o, Object3D) for image in plain for o in image)
    assert [len(image) for image in plain] == [len(image) for image in doubled] and len(plain[0]) > 0
    assert all(o.cls_type in CLASSES for image in plain for o in image)
    width, height = batch["meta"]["original_size"][0].tolist()
    limit = torch.tensor([width - 1, height - 1, width - 1, height - 1], dtype=torch.float64)
    for a, b in zip(plain[0] + plain[1], doubled[0] + doubled[1]):
        # Same network output: 2D boxes scale with the original image (except where clipped to
        # its border, as MonoFlex does), 3D boxes do not move.
        box_a, box_b = torch.as_tensor(a.box2d, dtype=torch.float64), torch.as_tensor(b.box2d, dtype=torch.float64)
        inside = (box_a > 0) & (box_a < limit)
        torch.testing.assert_close(box_b[inside], box_a[inside] * 2, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(torch.as_tensor(b.location), torch.as_tensor(a.location), rtol=1e-5, atol=1e-4)
        assert (b.cls_type, b.score) == (a.cls_type, a.score)
        assert b.alpha == pytest.approx(a.alpha, abs=1e-5) and b.rotation_y == pytest.approx(a.rotation_y, abs=1e-5)
    assert len(detector.decode(outputs, batch["meta"], score_threshold=0.0, top_k=3)[0]) <= 3


@pytest.mark.parametrize("name", NAMES)
def test_student_is_the_baseline_and_teachers_take_five_channels(name, batch):
    """Zero inference cost: ADD's student exports exactly the baseline's state dict."""
    cfg = small_config(name)
    torch.manual_seed(0)
    baseline = build_detector(cfg)
    teacher = build_detector(teacher_model_config(cfg))
    module = DistillationModule(build_detector(cfg), teacher, DistillConfig(depth_bins=4))
    exported = module.detector.state_dict()
    assert list(exported) == list(baseline.state_dict())
    assert all(exported[k].shape == v.shape for k, v in baseline.state_dict().items())
    assert sum(p.numel() for p in module.detector.parameters()) == sum(p.numel() for p in baseline.parameters())
    assert sum(p.numel() for n, p in module.named_parameters() if not n.startswith(("detector.", "teacher."))) > 0
    # The 5-channel teacher runs the whole contract on RGB + depth + validity.
    assert teacher.in_channels == 5
    teacher.train()
    image = torch.cat([batch["image"], torch.rand(2, 2, *INPUT_SIZE)], dim=1)
    outputs = teacher(image, batch["targets"], meta=batch["meta"])
    total, _ = teacher.loss(outputs, batch["targets"], batch["meta"])
    assert torch.isfinite(total)
    with pytest.raises(Add3dError, match="B x 5 x H x W"):
        teacher(batch["image"], meta=batch["meta"])


# ----- a heading-bin count other than 12 ---------------------------------------------------------------
HEADING_DETECTORS = [name for name in NAMES if hasattr(build(name), "num_heading_bins")]


def _set_heading(outputs: dict, num_bins: int, alpha: float) -> None:
    """Make every heading output (dense map or per-ROI vector) encode ``alpha`` with ``num_bins`` bins."""
    heading_bin, residual = encode_heading(float(alpha), num_bins)
    heading = outputs["heading"]
    channel_dim = 1 if heading.dim() == 4 else heading.dim() - 1
    shape = [1] * heading.dim()
    shape[channel_dim] = 2 * num_bins
    code = torch.zeros(2 * num_bins, dtype=heading.dtype)
    code[int(heading_bin)] = 10.0
    code[num_bins + int(heading_bin)] = float(residual)
    outputs["heading"] = code.reshape(shape).expand_as(heading).clone()


@pytest.mark.parametrize("name", HEADING_DETECTORS)
def test_eight_heading_bins_train_and_decode_consistently(name, batch):
    assert HEADING_DETECTORS == ["monodle", "gupnet"]
    detector = build(name, seed=2, num_heading_bins=8).train()
    assert detector.num_heading_bins == 8
    optimizer = torch.optim.Adam(detector.parameters(), lr=2e-3)
    history = []
    for _ in range(6):
        outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
        assert outputs["heading"].shape[1 if outputs["heading"].dim() == 4 else -1] == 16
        total, parts = detector.loss(outputs, batch["targets"], batch["meta"])
        assert torch.isfinite(total)
        history.append(float(parts["heading"]))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert history[-1] < history[0], history

    # Ground-truth encode -> decode with 8 bins gives every detection the encoded alpha back.
    detector.eval()
    with torch.no_grad():
        outputs = detector(batch["image"], meta=batch["meta"])
    for alpha in (-3.0, -1.2, 0.0, 0.4, math.pi / 8, 2.9):
        bins, residual = encode_heading(alpha, 8)
        assert heading_from_bin(bins, residual, 8) == pytest.approx(alpha, abs=1e-9)
        _set_heading(outputs, 8, alpha)
        detections = detector.decode(outputs, batch["meta"], score_threshold=0.0, top_k=10)
        alphas = [o.alpha for image in detections for o in image]
        assert alphas and all(abs(math.remainder(a - alpha, 2 * math.pi)) < 1e-5 for a in alphas), (alpha, alphas)


@pytest.mark.parametrize("name", NAMES)
def test_depth_responses_in_metres_are_the_decoded_depths(name, batch):
    detector = build(name).train()
    outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
    default = detector.response_outputs(outputs, batch["targets"], batch["meta"], with_uncertainty=False)
    metres = detector.response_outputs(outputs, batch["targets"], batch["meta"], with_uncertainty=False, depth_in_metres=True)
    real = batch["targets"]["mask_2d"] > 0
    assert metres.keys() == default.keys()
    decoded = metres["ensemble_depth" if name == "monoflex" else "depth"][..., 0]
    torch.testing.assert_close(decoded[real], detector.object_depth(outputs, batch["targets"], batch["meta"])[real])
    for key in default:
        if "depth" in key and name != "monodle":  # log-depth by default
            torch.testing.assert_close(torch.log(metres[key][real]), default[key][real])
        elif key == "depth":  # MonoDLE: the raw logit by default
            torch.testing.assert_close(metres[key][real], 1.0 / torch.sigmoid(default[key][real]) - 1.0, rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(metres[key], default[key])
