"""The engine drives the whole ADD recipe: a depth teacher (RGB + object-wise depth), then an ADD
student distilled from it, with the real MonoDLE (narrow DLA) on tiny fake data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from add3d.engine.checkpoints import load_checkpoint
from add3d.engine.config import load_config
from add3d.engine.trainer import LAST_CHECKPOINT, train
from add3d.models import build_detector
from engine_helpers import make_fake_kitti

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "monodle" / "synthetic.yaml"


def tiny(root: Path, out: Path) -> list[str]:
    return [f"data.root={root}", "data.input_size=[64,192]", f"train.out_dir={out}", "train.epochs=1",
            "train.batch_size=4", "train.workers=0", "train.device=cpu", "train.checkpoint_every_steps=0",
            "train.eval_every=-1", "data.depth_source=object"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("add")
    root = make_fake_kitti(base / "data", frames=8, val_frames=2)
    teacher_out, student_out = base / "teacher", base / "student"
    train(load_config(CONFIG, tiny(root, teacher_out) + ["model.in_channels=5"]))
    student_cfg = load_config(CONFIG, tiny(root, student_out) + [
        "distill={}", f"teacher.checkpoint={teacher_out / LAST_CHECKPOINT}", "distill.pool=2"])
    train(student_cfg)
    return root, teacher_out, student_out, student_cfg


def test_teacher_takes_depth_and_student_is_the_plain_detector(runs):
    _, teacher_out, student_out, cfg = runs
    teacher_state = load_checkpoint(teacher_out / LAST_CHECKPOINT)["model"]
    student = load_checkpoint(student_out / LAST_CHECKPOINT)
    first_convs = [v for v in teacher_state.values() if v.dim() == 4]
    assert first_convs[0].shape[1] == 5  # RGB + depth + validity
    baseline_keys = build_detector(cfg.model).state_dict().keys()
    assert student["model"].keys() == baseline_keys  # zero inference cost: the deployable student is MonoDLE
    assert any(not key.startswith("teacher.") for key in student["module_extra"])  # ADD adapters saved for resume
    log = [json.loads(line) for line in (student_out / "train_log.jsonl").read_text().splitlines()]
    step = next(r for r in log if r["kind"] == "step")
    assert any("distill" in name or "feat" in name or "resp" in name for name in step), sorted(step)


def test_checkpoints_carry_the_input_spec_and_a_contradicting_config_stops(runs, tmp_path):
    from add3d.engine.inference import load_detector
    from add3d.errors import Add3dError

    root, teacher_out, student_out, cfg = runs
    teacher_spec = load_checkpoint(teacher_out / LAST_CHECKPOINT)["input_spec"]
    assert teacher_spec["kind"] == "rgbd" and teacher_spec["depth_encoding"] == "log"
    assert load_checkpoint(student_out / LAST_CHECKPOINT)["input_spec"] == {"kind": "rgb"}
    teacher_cfg = load_config(CONFIG, tiny(root, tmp_path) + ["model.in_channels=5"], training=False)
    assert load_detector(teacher_cfg, teacher_out / LAST_CHECKPOINT, torch.device("cpu")).input_spec.depth_encoding == "log"
    linear = load_config(CONFIG, tiny(root, tmp_path) + ["model.in_channels=5", "teacher.depth_encoding=linear"], training=False)
    with pytest.raises(Add3dError, match="depth_encoding: linear != log"):
        load_detector(linear, teacher_out / LAST_CHECKPOINT, torch.device("cpu"))
    student = load_config(CONFIG, tiny(root, tmp_path) + [
        "distill={}", f"teacher.checkpoint={teacher_out / LAST_CHECKPOINT}", "data.depth_fill=3"])
    with pytest.raises(Add3dError, match="depth_fill: 3 != 1"):
        train(student)


def test_add_run_resumes_with_its_adapters(runs, tmp_path):
    root, _, student_out, cfg = runs
    checkpoint = load_checkpoint(student_out / LAST_CHECKPOINT)
    cfg.train.epochs = 2
    cfg.train.out_dir = str(tmp_path)
    summary = train(cfg, resume=student_out / LAST_CHECKPOINT)
    assert summary["epochs"] == 2 and summary["steps"] == 4
    after = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    moved = [k for k, v in checkpoint["module_extra"].items()
             if not k.startswith("teacher.") and v.is_floating_point() and not torch.equal(v, after["module_extra"][k])]
    assert moved  # adapters were restored and trained on
    for key, value in checkpoint["module_extra"].items():
        if key.startswith("teacher."):
            assert torch.equal(value, after["module_extra"][key])  # the teacher stays frozen


def test_auto_balance_sets_and_logs_the_weights_before_the_first_step(runs, tmp_path):
    root, teacher_out, _, _ = runs
    cfg = load_config(CONFIG, tiny(root, tmp_path) + [
        "distill={}", f"teacher.checkpoint={teacher_out / LAST_CHECKPOINT}", "distill.pool=2",
        "distill.balance=auto", "distill.balance_batches=1", "distill.response_regression_weight=0"])
    train(cfg)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["kind"] == "balance" and log[1]["kind"] == "step"
    weights = log[0]["weights"]
    assert weights["distill_response_regression"] == 0.0 and weights["distill_feature"] > 0
    saved = load_checkpoint(tmp_path / LAST_CHECKPOINT)["module_extra"]["loss_weights"]
    assert saved.tolist() == pytest.approx(list(weights.values()))
