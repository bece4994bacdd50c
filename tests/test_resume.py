"""SIGKILL mid-epoch, resume from the last checkpoint: the weights end bitwise equal to an
uninterrupted run (CPU, fixed seed). Also: what resuming restores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from add3d.engine.checkpoints import load_checkpoint
from add3d.engine.config import load_config
from add3d.engine.trainer import LAST_CHECKPOINT, train
from engine_helpers import TinyDetector, make_fake_kitti, tiny_config_overrides

HELPER = Path(__file__).with_name("engine_helpers.py")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_kitti(tmp_path_factory.mktemp("fake_kitti"), frames=12, val_frames=4)


def run_overrides(root, out):
    # 3 epochs x 3 steps; a checkpoint every 2 steps, so most of them fall inside an epoch.
    return tiny_config_overrides(root, out) + ["train.epochs=3", "train.checkpoint_every_steps=2", "optim.lr=0.01"]


@pytest.mark.parametrize("extra", [[], ["train.ema_decay=0.8"]], ids=["plain", "weight_average"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(fake_root, tmp_path, extra):
    def overrides(root, out):  # the module's, plus this case's
        return run_overrides(root, out) + extra

    reference_out = tmp_path / "reference"
    train(load_config(None, overrides(fake_root, reference_out)), detector=TinyDetector())
    reference = load_checkpoint(reference_out / LAST_CHECKPOINT)

    out = tmp_path / "killed"
    env = {**os.environ, "ADD3D_TEST_KILL_AT_STEP": "6"}  # killed inside step 6: mid-epoch 2, after step 4's checkpoint
    process = subprocess.Popen([sys.executable, str(HELPER), "none", *overrides(fake_root, out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    interrupted = load_checkpoint(out / LAST_CHECKPOINT)
    assert interrupted["global_step"] == 4 and interrupted["step_in_epoch"] == 1  # mid-epoch 2

    summary = train(load_config(None, overrides(fake_root, out)), resume=out / LAST_CHECKPOINT, detector=TinyDetector())
    assert summary["steps"] == 9 and summary["epochs"] == 3
    # The log reads like one run: steps logged after the checkpoint and before the kill are not repeated.
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 10))
    reference_log = [json.loads(line) for line in (reference_out / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records if r["kind"] == "step"] == [r["loss"] for r in reference_log if r["kind"] == "step"]
    resumed = load_checkpoint(out / LAST_CHECKPOINT)
    assert resumed["model"].keys() == reference["model"].keys()
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    reference_adam = reference["optimizer"]["state"]
    for index, state in resumed["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], reference_adam[index]["exp_avg_sq"])
    assert resumed["scheduler"]["last_epoch"] == reference["scheduler"]["last_epoch"] == 9
    for name, value in reference.get("training_model", {}).items():  # the trained weights behind an average
        assert torch.equal(resumed["training_model"][name], value), name
    assert resumed.get("ema_updates") == reference.get("ema_updates") == (9 if extra else None)


def test_resume_restores_counters_schedule_and_rng(fake_root, tmp_path):
    cfg = load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=1"])
    train(cfg, detector=TinyDetector())
    checkpoint = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    torch.manual_seed(123)  # scramble; resuming must bring the saved state back
    cfg2 = load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=1"])
    summary = train(cfg2, resume=tmp_path / LAST_CHECKPOINT, detector=TinyDetector())
    assert summary["steps"] == 3  # nothing left to do: epoch 1 of 1 was complete
    assert torch.equal(torch.get_rng_state(), checkpoint["rng"]["torch"])
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "step" for r in log) == 3
    # A fresh run (--force) in the same folder starts a fresh log; the earlier run is kept aside.
    train(load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=1"]), detector=TinyDetector(), force=True)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "step"] == [1, 2, 3]
    assert (tmp_path / "previous_1" / LAST_CHECKPOINT).is_file()


def test_no_silent_loss_of_an_earlier_run(fake_root, tmp_path):
    from add3d.errors import Add3dError

    train(load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=2"]), detector=TinyDetector())
    before = (tmp_path / LAST_CHECKPOINT).read_bytes()
    with pytest.raises(Add3dError, match=r"holds checkpoints of an earlier run \(checkpoint_last.pth\); pass --resume"):
        train(load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=1"]), detector=TinyDetector())
    assert (tmp_path / LAST_CHECKPOINT).read_bytes() == before and not (tmp_path / "previous_1").exists()
    with pytest.raises(Add3dError, match="contradict"):
        train(load_config(None, run_overrides(fake_root, tmp_path)), resume=tmp_path / LAST_CHECKPOINT,
              detector=TinyDetector(), force=True)
    for number in (1, 2):  # each --force keeps the run it replaces
        train(load_config(None, run_overrides(fake_root, tmp_path) + ["train.epochs=1"]), detector=TinyDetector(), force=True)
        kept = tmp_path / f"previous_{number}"
        assert sorted(p.name for p in kept.iterdir()) == ["checkpoint_last.pth", "config.yaml", "metrics.json",
                                                          "tensorboard", "train_log.jsonl"]
    assert (tmp_path / "previous_1" / LAST_CHECKPOINT).read_bytes() == before
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["epoch"] == 1


def test_a_run_that_fails_to_start_leaves_nothing(fake_root, tmp_path):
    from add3d.errors import Add3dError

    out = tmp_path / "run"
    cfg = load_config(None, run_overrides(fake_root, out) + ["train.batch_size=64"])  # fewer frames than a batch
    with pytest.raises(Add3dError, match="fewer than one batch"):
        train(cfg, detector=TinyDetector())
    assert not out.exists()


def test_resume_from_a_missing_or_foreign_file_is_a_clear_error(fake_root, tmp_path):
    from add3d.errors import Add3dError

    cfg = load_config(None, run_overrides(fake_root, tmp_path))
    with pytest.raises(Add3dError, match="checkpoint not found"):
        train(cfg, resume=tmp_path / "nope.pth", detector=TinyDetector())
    torch.save({"model": {}}, tmp_path / "partial.pth")
    with pytest.raises(Add3dError, match="cannot resume"):
        train(cfg, resume=tmp_path / "partial.pth", detector=TinyDetector())
    (tmp_path / "garbage.pth").write_bytes(b"not a zip")
    with pytest.raises(Add3dError, match="garbage.pth"):
        train(cfg, resume=tmp_path / "garbage.pth", detector=TinyDetector())
