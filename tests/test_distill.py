"""ADD distillation: zero inference cost, frozen teacher, TCA shape/leakage, zero losses, 0 objects."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from add3d.distill import losses
from add3d.distill.attention import TargetCrossAttention
from add3d.geometry.tensor_geometry import gather_at_indices
from add3d.distill.config import DistillConfig
from add3d.distill.teacher_input import InputSpec, make_teacher_input
from add3d.distill.teacher import init_teacher_from_rgb, load_teacher, teacher_model_config
from add3d.distill.wrapper import DistillationModule, balance_weights, student_gradient_norms
from add3d.errors import Add3dError

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order

B, H, W, M, C = 2, 32, 64, 6, 3  # batch, input size, object slots, classes
h, w = H // 4, W // 4


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


class TinyDetector(nn.Module):
    """The smallest model honouring the MonoDetector contract of docs/DESIGN.md (stride 4)."""

    stride = 4
    first_conv_key = "body.0.weight"
    num_classes = 3

    def __init__(self, in_channels: int = 3, feature_channels: int = 16):
        super().__init__()
        self.feature_channels = feature_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, feature_channels, 3, stride=2, padding=1), nn.BatchNorm2d(feature_channels), nn.ReLU(),
        )
        self.heatmap = nn.Conv2d(feature_channels, C, 1)
        self.depth = nn.Conv2d(feature_channels, 2, 1)
        self.size_3d = nn.Conv2d(feature_channels, 3, 1)

    def forward(self, image, targets=None, meta=None):
        features = self.body(image)
        return {"features": features, "heatmap": self.heatmap(features), "depth": self.depth(features), "size_3d": self.size_3d(features)}

    def response_outputs(self, outputs, targets, meta, with_uncertainty=True, depth_in_metres=False):
        sampled = {name: gather_at_indices(outputs[name], targets["indices"]) for name in ("depth", "size_3d")}
        if depth_in_metres:  # channel 0 plays a log-depth
            sampled["depth"] = torch.cat([sampled["depth"][..., :1].exp(), sampled["depth"][..., 1:]], dim=-1)
        if not with_uncertainty:  # channel 1 plays a log-variance
            sampled["depth"] = sampled["depth"][..., :1]
        return sampled

    def loss(self, outputs, targets, meta):
        heat = F.binary_cross_entropy_with_logits(outputs["heatmap"], targets["heatmap"])
        mask = targets["mask_2d"]
        depth = gather_at_indices(outputs["depth"], targets["indices"])[..., :1]
        depth_loss = ((depth - targets["depth"]).abs().squeeze(-1) * mask).sum() / mask.sum().clamp(min=1)
        return heat + depth_loss, {"heatmap": heat.detach(), "depth": depth_loss.detach()}


def make_batch(num_objects: int = 3, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    heatmap = torch.zeros(B, C, h, w)
    indices = torch.zeros(B, M, dtype=torch.long)
    mask = torch.zeros(B, M)
    cls_ids = torch.zeros(B, M, dtype=torch.long)
    box2d = torch.zeros(B, M, 4)
    for b in range(B):
        for k in range(num_objects):
            y = int(torch.randint(0, h, (1,), generator=generator))
            x = int(torch.randint(0, w, (1,), generator=generator))
            indices[b, k] = y * w + x
            mask[b, k] = 1
            cls_ids[b, k] = k % C
            box2d[b, k] = torch.tensor([x - 1.5, y - 1.0, x + 1.5, y + 1.0])
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            gauss = torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)
            heatmap[b, k % C] = torch.maximum(heatmap[b, k % C], gauss)
    P2 = torch.tensor([[180.0, 0.0, 32.0, 11.0], [0.0, 180.0, 14.0, 0.05], [0.0, 0.0, 1.0, 0.003]]).expand(B, 3, 4).clone()
    depth = torch.rand(B, 1, H, W, generator=generator) * 50
    valid = (torch.rand(B, 1, H, W, generator=generator) > 0.5).float()
    return {
        "image": torch.randn(B, 3, H, W, generator=generator),
        "depth": depth * valid,
        "depth_valid": valid,
        "targets": {
            "heatmap": heatmap,
            "indices": indices,
            "mask_2d": mask,
            "mask_3d": mask.clone(),
            "cls_ids": cls_ids,
            "box2d": box2d,
            "depth": torch.rand(B, M, 1, generator=generator) * 40 + 5,
        },
        "meta": {"P2": P2.clone(), "P2_input": P2},
    }


def teacher_input(batch):
    return torch.cat([batch["image"], batch["depth"] / 80.0, batch["depth_valid"]], dim=1)


def make_module(cfg: DistillConfig | None = None, seed: int = 0) -> DistillationModule:
    torch.manual_seed(seed)
    student = TinyDetector(3)
    teacher = TinyDetector(5)
    return DistillationModule(student, teacher, cfg or DistillConfig(depth_bins=8, ffn_channels=32, pool=2), teacher_input=teacher_input)


def flops(model: nn.Module, image: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(image)
    return counter.get_total_flops()


# ----- zero inference cost ------------------------------------------------------------------------
def test_student_is_exactly_the_baseline_detector():
    module = make_module()
    baseline = TinyDetector(3)
    student_state = module.detector.state_dict()
    assert list(student_state) == list(baseline.state_dict())
    baseline.load_state_dict(student_state, strict=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(module.detector) == count(baseline)
    image = make_batch()["image"]
    assert flops(module.detector.eval(), image) == flops(baseline.eval(), image) > 0
    # Every adapter lives outside the detector: nothing of ADD leaks into the saved model.
    adapter_names = [n for n, _ in module.named_parameters() if not n.startswith(("detector.", "teacher."))]
    assert adapter_names and all(not n.startswith("detector.") for n in adapter_names)
    assert sum(p.numel() for n, p in module.named_parameters() if n.startswith("detector.")) == count(baseline)


# ----- frozen teacher ------------------------------------------------------------------------------
def test_teacher_frozen_and_unchanged_after_a_step():
    module = make_module()
    module.train()
    assert not module.teacher.training and module.detector.training
    assert all(not p.requires_grad for p in module.teacher.parameters())
    teacher_before = copy.deepcopy(module.teacher.state_dict())  # incl. BatchNorm running stats
    student_before = copy.deepcopy(module.detector.state_dict())
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2, weight_decay=1e-5)
    loss, logs = module(make_batch())
    loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert module.self_attention.attention.in_proj_weight.grad.abs().sum() > 0
    assert module.cross_attention.attention.in_proj_weight.grad.abs().sum() > 0
    assert module.position_encoding.mlp[0].weight.grad.abs().sum() > 0
    optimizer.step()
    for name, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), name
    assert any(not torch.equal(v, student_before[k]) for k, v in module.detector.state_dict().items())
    for key in ("distill_feature", "distill_object", "distill_response_heatmap", "distill_response_regression", "detection", "loss"):
        assert torch.isfinite(logs[key]) and logs[key].dim() == 0
    expected = logs["detection"] + logs["distill_feature"] + logs["distill_object"] + logs["distill_response_heatmap"] + logs["distill_response_regression"]
    assert torch.allclose(logs["loss"], expected)


def test_loss_weights_scale_the_terms():
    batch = make_batch()
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, feature_weight=3.0, object_weight=0.5, response_heatmap_weight=2.0, response_regression_weight=0.0)
    module = make_module(cfg).eval()
    loss, logs = module(batch)
    expected = logs["detection"] + 3.0 * logs["distill_feature"] + 0.5 * logs["distill_object"] + 2.0 * logs["distill_response_heatmap"]
    assert torch.allclose(loss, expected)
    # The separate weighted terms (for gradient diagnostics) are exactly what the loss sums.
    terms, _ = module.loss_terms(batch)
    assert list(terms) == ["detection", "distill_feature", "distill_object", "distill_response_heatmap",
                           "distill_response_regression"]
    assert torch.equal(sum(terms.values()), loss)
    assert torch.allclose(terms["distill_feature"], 3.0 * logs["distill_feature"])
    assert all(term.requires_grad for term in terms.values())


def test_response_uncertainty_off_matches_only_the_values():
    batch = make_batch()
    full = make_module().eval().loss_terms(batch)[1]
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, response_uncertainty=False)
    module = make_module(cfg).eval()
    values = module.loss_terms(batch)[1]
    with torch.no_grad():
        student = module.detector.response_outputs(module.detector(batch["image"]), batch["targets"], batch["meta"])
        teacher = module.teacher.response_outputs(module.teacher(teacher_input(batch)), batch["targets"], batch["meta"])
    real = batch["targets"]["mask_2d"] > 0
    depth_only = (student["depth"][..., 0] - teacher["depth"][..., 0]).abs()[real].mean()
    torch.testing.assert_close(values["distill_response_depth"], depth_only)
    torch.testing.assert_close(values["distill_response_size_3d"], full["distill_response_size_3d"])
    assert not torch.isclose(values["distill_response_depth"], full["distill_response_depth"])


def test_response_depth_metres_reaches_both_models_responses():
    batch = make_batch()
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, response_uncertainty=False, response_depth_metres=True)
    module = make_module(cfg).eval()
    logs = module.loss_terms(batch)[1]
    with torch.no_grad():
        student = module.detector(batch["image"])["depth"]
        teacher = module.teacher(teacher_input(batch))["depth"]
    real = batch["targets"]["mask_2d"] > 0
    s, t = (gather_at_indices(x, batch["targets"]["indices"])[..., 0] for x in (student, teacher))
    torch.testing.assert_close(logs["distill_response_depth"], (s.exp() - t.exp()).abs()[real].mean())


def test_response_depth_weight_scales_only_the_depth_response():
    batch = make_batch()
    plain = make_module().eval().loss_terms(batch)[1]
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, response_depth_weight=7.0)
    logs = make_module(cfg).eval().loss_terms(batch)[1]
    heads = [name for name in logs if name.startswith("distill_response_") and name not in
             ("distill_response_heatmap", "distill_response_regression")]
    assert "distill_response_depth" in heads and len(heads) > 1
    for name in heads:  # the same model (same seed): the unweighted parts are identical
        torch.testing.assert_close(logs[name], plain[name])
    others = sum(logs[name] for name in heads if name != "distill_response_depth")
    torch.testing.assert_close(logs["distill_response_regression"], others + 7.0 * logs["distill_response_depth"])
    with pytest.raises(Add3dError, match="loss weights must be >= 0"):
        DistillConfig(response_depth_weight=-1.0).validate()


def test_auto_balance_gives_each_term_the_target_gradient_share_and_leaves_training_state_alone():
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, response_regression_weight=0.0)
    module = make_module(cfg).train()
    batches = [make_batch(seed=s) for s in range(2)]
    before = copy.deepcopy(module.state_dict())
    rng = torch.get_rng_state()
    weights = balance_weights(module, batches, target=0.2)
    assert weights["distill_response_regression"] == 0.0  # a term switched off stays off
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in module.state_dict().items():
        if key != "loss_weights":
            assert torch.equal(value, before[key]), key
    norms = student_gradient_norms(module, batches)
    for name in ("distill_feature", "distill_object", "distill_response_heatmap"):
        assert norms[name] / norms["detection"] == pytest.approx(0.2, rel=1e-3), name
    assert list(module.loss_weights) == pytest.approx(list(weights.values()))
    with pytest.raises(Add3dError, match="distill.balance"):
        DistillConfig(balance="magic").validate()


# ----- TCA -------------------------------------------------------------------------------------------
def test_cross_attention_one_output_per_object_and_no_teacher_in_keys_values():
    module = make_module().eval()
    batch = make_batch(num_objects=4)
    captured = []
    module.cross_attention.register_forward_hook(lambda mod, args, out: captured.append((args, out)))
    module(batch)
    (queries, tokens, *_), output = captured[0]
    assert output.shape == (B, M, module.detector.feature_channels)
    assert queries.shape == (B, M, module.detector.feature_channels)
    # Keys/values are the student's pooled 3D-SA tokens: recompute them without any teacher.
    features = module.detector(batch["image"])["features"]
    _, student_tokens, _ = module._tokens(features, batch["meta"]["P2_input"])
    assert torch.allclose(tokens, student_tokens, atol=1e-6)
    # Changing the teacher completely leaves the TCA output untouched.
    with torch.no_grad():
        for p in module.teacher.parameters():
            p.add_(torch.randn_like(p))
    module(batch)
    assert torch.allclose(captured[1][1], output, atol=1e-6)
    # Each output depends on its own query: change one object's feature, only that row changes.
    tca = TargetCrossAttention(16, num_heads=4, ffn_channels=32).eval()
    q = torch.randn(1, 5, 16)
    kv = torch.randn(1, 7, 16)
    base = tca(q, kv)
    q2 = q.clone()
    q2[0, 2] += 1.0
    moved = tca(q2, kv)
    changed = (moved - base).abs().sum(-1)[0]
    assert changed[2] > 0 and torch.all(changed[[0, 1, 3, 4]] == 0)


# ----- losses ----------------------------------------------------------------------------------------
def test_losses_are_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    features = torch.randn(B, 16, h, w)
    batch = make_batch()
    mask = losses.foreground_mask(batch["targets"]["heatmap"], 0.1)
    assert losses.feature_loss(features, features.clone(), mask).item() == 0.0
    objects = torch.randn(B, M, 16)
    for kind in ("mse", "cosine"):
        assert losses.object_loss(objects, objects.clone(), batch["targets"]["mask_2d"], kind).abs().item() < 1e-6
    logits = torch.randn(B, C, h, w)
    assert losses.heatmap_response_loss(logits, logits.clone(), batch["targets"]["heatmap"]).item() == 0.0
    responses = {"depth": torch.randn(B, M, 2), "size_3d": torch.randn(B, M, 3)}
    total, parts = losses.regression_response_loss(responses, {k: v.clone() for k, v in responses.items()}, batch["targets"]["mask_2d"])
    assert total.item() == 0.0 and set(parts) == {"depth", "size_3d"}
    # ... and positive, with the right value, when they differ.
    assert losses.feature_loss(features + 1.0, features, mask).item() == pytest.approx(1.0)
    assert losses.object_loss(objects + 2.0, objects, batch["targets"]["mask_2d"]).item() == pytest.approx(4.0)
    shifted = {k: v + 0.5 for k, v in responses.items()}
    total, _ = losses.regression_response_loss(shifted, responses, batch["targets"]["mask_2d"])
    assert total.item() == pytest.approx(1.0)
    # A head weight scales that head's part of the total only; the logged parts stay unweighted.
    shifted["depth"] = responses["depth"] + 2.0
    total, parts = losses.regression_response_loss(shifted, responses, batch["targets"]["mask_2d"], {"depth": 10.0})
    assert total.item() == pytest.approx(10.0 * 2.0 + 0.5)
    assert parts["depth"].item() == pytest.approx(2.0) and parts["size_3d"].item() == pytest.approx(0.5)
    # Background weight: the feature loss only sees foreground when it is 0.
    fg_only = losses.foreground_mask(batch["targets"]["heatmap"], 0.0)
    far = features.clone()
    far[fg_only.expand_as(far) == 0] += 100.0
    assert losses.feature_loss(far, features, fg_only).item() == pytest.approx(0.0, abs=1e-8)


def test_region_loss_counts_every_object_once_whatever_its_area():
    teacher = torch.zeros(1, 4, 20, 40)
    student = teacher.clone()
    student[..., :20] += 1.0  # left half off by 1, right half by 3
    student[..., 20:] += 3.0
    boxes = torch.tensor([[[2.0, 2.0, 6.0, 5.0], [22.0, 1.0, 38.0, 18.0], [0.0, 0.0, 0.0, 0.0]]])  # small left, big right
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # One small and one large box: (1 + 9) / 2, where an area-weighted loss would be near 9.
    assert losses.region_loss(student, teacher, boxes, mask, 7).item() == pytest.approx(5.0)
    assert losses.region_loss(teacher.clone(), teacher, boxes, mask, 7).item() == 0.0
    student.requires_grad_(True)
    empty = losses.region_loss(student, teacher, boxes, torch.zeros(1, 3), 7)
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(student.grad, torch.zeros_like(student))


def test_region_term_is_weighted_logged_and_stands_alone():
    batch = make_batch()
    plain = make_module().eval()
    assert "distill_region" not in plain.loss_terms(batch)[0]
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, region_weight=4.0, region_size=3)
    module = make_module(cfg).eval()
    terms, logs = module.loss_terms(batch)
    torch.testing.assert_close(terms["distill_region"], 4.0 * logs["distill_region"])
    with torch.no_grad():  # the adapted, refined student map against the teacher's, at the objects' boxes
        refined, _, _ = module._tokens(module.detector(batch["image"])["features"], batch["meta"]["P2_input"])
        teacher_map = module.teacher(teacher_input(batch))["features"]
        expected = losses.region_loss(module.feature_adapter(refined), teacher_map, batch["targets"]["box2d"],
                                      batch["targets"]["mask_2d"], 3)
    torch.testing.assert_close(logs["distill_region"], expected)
    # Without L_feat the adapter (and the self-attention that refines its input) stays for L_region.
    alone = make_module(DistillConfig(depth_bins=8, ffn_channels=32, pool=2, region_weight=1.0,
                                      feature_distillation=False, object_distillation=False)).train()
    terms, logs = alone.loss_terms(batch)
    assert "distill_feature" not in terms and logs["distill_region"] > 0
    assert alone.feature_adapter is not None and alone.self_attention is not None
    sum(terms.values()).backward()
    assert alone.feature_adapter.weight.grad.abs().sum() > 0
    # A run saved before L_region (four weights) resumes with the config's fifth.
    state = alone.state_dict()
    state["loss_weights"] = state["loss_weights"][:4].clone()
    alone.load_state_dict(state)
    assert alone.loss_weights.tolist()[4] == 1.0
    with pytest.raises(Add3dError, match="region_size"):
        DistillConfig(region_size=0).validate()
    with pytest.raises(Add3dError, match="loss weights must be >= 0"):
        DistillConfig(region_weight=-1.0).validate()


def test_response_losses_vanish_for_a_teacher_initialised_from_the_student():
    """Zero-initialised extra input channels: the teacher starts as the student, so L_resp = 0."""
    module = make_module()
    init_teacher_from_rgb(module.teacher, module.detector.state_dict())
    first_conv = module.teacher.body[0].weight
    assert torch.equal(first_conv[:, :3], module.detector.body[0].weight) and torch.all(first_conv[:, 3:] == 0)
    module.eval()
    _, logs = module(make_batch())
    assert logs["distill_response_heatmap"].item() < 1e-10
    assert logs["distill_response_regression"].item() < 1e-6


def test_teacher_init_rejects_mismatched_weights():
    teacher = TinyDetector(5)
    with pytest.raises(Add3dError, match="no input conv"):
        init_teacher_from_rgb(teacher, {})
    partial = {k: v for k, v in TinyDetector(3).state_dict().items() if not k.startswith("heatmap")}
    with pytest.raises(Add3dError, match="missing"):
        init_teacher_from_rgb(teacher, partial)
    with pytest.raises(Add3dError, match="shape mismatch"):
        init_teacher_from_rgb(teacher, TinyDetector(3, feature_channels=8).state_dict())


# ----- 0 objects ---------------------------------------------------------------------------------------
def test_batch_without_objects():
    module = make_module().train()
    batch = make_batch(num_objects=0)
    loss, logs = module(batch)
    assert torch.isfinite(loss)
    assert logs["distill_object"].item() == 0.0
    assert logs["distill_response_heatmap"].item() == 0.0
    assert logs["distill_response_regression"].item() == 0.0
    assert logs["distill_feature"].item() > 0  # background weight keeps the feature term alive
    loss.backward()
    for name, p in module.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


# ----- ablation switches ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "switch, absent_log, absent_module",
    [
        ("feature_distillation", "distill_feature", "feature_adapter"),
        ("object_distillation", "distill_object", "cross_attention"),
        ("response_distillation", "distill_response_heatmap", None),
        ("self_attention", None, "self_attention"),
        ("position_encoding", None, "position_encoding"),
    ],
)
def test_each_component_switches_off(switch, absent_log, absent_module):
    cfg = DistillConfig(depth_bins=8, ffn_channels=32, pool=2, **{switch: False})
    module = make_module(cfg).train()
    loss, logs = module(make_batch())
    loss.backward()
    assert torch.isfinite(loss)
    if absent_log:
        assert absent_log not in logs
    if absent_module:
        assert getattr(module, absent_module) is None
    # Always zero inference cost.
    assert list(module.detector.state_dict()) == list(TinyDetector(3).state_dict())


def test_all_components_off_is_the_baseline_loss():
    cfg = DistillConfig(feature_distillation=False, object_distillation=False, response_distillation=False)
    module = make_module(cfg).eval()
    batch = make_batch()
    loss, logs = module(batch)
    expected, _ = module.detector.loss(module.detector(batch["image"]), batch["targets"], batch["meta"])
    assert torch.allclose(loss, expected)
    assert [n for n, _ in module.named_parameters() if not n.startswith(("detector.", "teacher."))] == []


def test_config_validation_and_missing_depth():
    with pytest.raises(Add3dError, match="object_loss"):
        DistillConfig(object_loss="l2").validate()
    with pytest.raises(Add3dError, match="position_range"):
        DistillConfig(position_range=[0, 0, 0, 1, 1]).validate()
    module = make_module()
    batch = make_batch()
    del batch["depth"]
    with pytest.raises(Add3dError, match="depth"):
        module(batch)


def test_same_seed_same_numbers():
    loss_a, _ = make_module(seed=3).train()(make_batch(seed=1))
    loss_b, _ = make_module(seed=3).train()(make_batch(seed=1))
    assert loss_a.item() == loss_b.item()


# ----- the real detectors ------------------------------------------------------------------------------
def _model_cfg(name: str):
    from add3d.models.config import ModelConfig

    return ModelConfig(name=name, backbone="dla34_tiny", head_channels=16)


def _save_checkpoint(path, detector) -> None:
    torch.save({"model": detector.state_dict(), "epoch": 1}, path)


def test_monodle_student_checkpoint_is_the_baseline_detector(tmp_path):
    from add3d.models import build_detector

    cfg = _model_cfg("monodle")
    torch.manual_seed(0)
    teacher_path = tmp_path / "teacher.pth"
    _save_checkpoint(teacher_path, build_detector(teacher_model_config(cfg)))
    module = DistillationModule(build_detector(cfg), load_teacher(cfg, teacher_path), DistillConfig(depth_bins=8))
    assert not module.teacher.training and all(not p.requires_grad for p in module.teacher.parameters())
    assert module.teacher.in_channels == 5 and module.detector.in_channels == 3

    # What the trainer saves is module.detector.state_dict(): it loads strictly into the baseline.
    student_path = tmp_path / "student.pth"
    _save_checkpoint(student_path, module.detector)
    baseline = build_detector(cfg)
    saved = torch.load(student_path, map_location="cpu", weights_only=True)["model"]
    baseline.load_state_dict(saved, strict=True)
    assert list(saved) == list(baseline.state_dict())
    assert sum(p.numel() for p in module.detector.parameters()) == sum(p.numel() for p in baseline.parameters())
    image = torch.randn(1, 3, 64, 128)
    assert flops(module.detector.eval(), image) == flops(baseline.eval(), image) > 0

    # A wrong teacher checkpoint (the RGB student's) is a clear error (a missing teacher.checkpoint
    # is refused when the config loads: test_config).
    with pytest.raises(Add3dError, match="not a teacher checkpoint"):
        load_teacher(cfg, student_path)
    with pytest.raises(Add3dError, match="not found"):
        load_teacher(cfg, tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    with pytest.raises(Add3dError, match="garbage.pth"):
        load_teacher(cfg, tmp_path / "garbage.pth")


@pytest.fixture(scope="module")
def kitti_batch(kitti_mini):
    """Two real KITTI frames through the data pipeline (96 x 320, LiDAR depth for the teacher)."""
    from add3d.data.config import DataConfig
    from add3d.data.mono_dataset import build_mono_dataset, collate_batch

    cfg = DataConfig(root=str(kitti_mini), input_size=[96, 320], depth_source="lidar", skip_unknown_difficulty=False)
    dataset = build_mono_dataset(cfg, "train", augment=True, seed=0, classes=KITTI_CLASSES)
    batch = collate_batch([dataset[i] for i in range(len(dataset))])
    assert batch["targets"]["mask_2d"].sum() > 0
    return batch


@pytest.mark.parametrize("name", ["monodle", "gupnet", "monoflex"])
def test_one_distillation_step_for_each_detector(name, kitti_batch):
    """Detector-agnostic: the same wrapper distils MonoDLE, GUPNet and MonoFlex on real targets."""
    from add3d.models import build_detector

    torch.manual_seed(0)
    cfg = _model_cfg(name)
    student = build_detector(cfg)
    teacher = build_detector(teacher_model_config(cfg))
    init_teacher_from_rgb(teacher, student.state_dict())  # extra depth channels start at zero
    # Stand-in for a trained teacher: BatchNorm statistics of this very batch (an untrained net's
    # unit running variances would make its eval-mode outputs explode).
    for layer in teacher.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None
    with torch.no_grad():
        teacher.train()(make_teacher_input(kitti_batch, InputSpec(kind="rgbd")), kitti_batch["targets"], meta=kitti_batch["meta"])
    module = DistillationModule(student, teacher, DistillConfig(depth_bins=8, ffn_channels=32, region_weight=1.0)).train()
    teacher_before = copy.deepcopy(teacher.state_dict())
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    loss, logs = module(kitti_batch)
    assert torch.isfinite(loss)
    assert logs["distill_object"] > 0 and logs["distill_feature"] > 0 and logs["distill_region"] > 0
    # The teacher starts as the student (zero depth weights, same BatchNorm statistics): no gap in the
    # dense heatmap. (Untrained ROI/keypoint depths amplify the tiny biased/unbiased variance gap.)
    assert logs["distill_response_heatmap"] < 1e-4 and torch.isfinite(logs["distill_response_regression"])
    assert any(k.startswith("distill_response_") and k not in ("distill_response_heatmap", "distill_response_regression") for k in logs)
    loss.backward()
    optimizer.step()
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    empty = {**kitti_batch, "targets": {k: (torch.zeros_like(v) if k in ("mask_2d", "mask_3d", "heatmap") else v) for k, v in kitti_batch["targets"].items()}}
    loss, logs = module(empty)
    assert torch.isfinite(loss) and logs["distill_object"].item() == 0.0 and logs["distill_response_regression"].item() == 0.0
    assert logs["distill_region"].item() == 0.0
