"""The training loop on a tiny detector and tiny fake data: logging, checkpoints, validation, guards."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from add3d.engine.checkpoints import load_checkpoint
from add3d.engine.config import load_config
from add3d.engine.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, train
from add3d.errors import Add3dError
from engine_helpers import TinyDetector, make_fake_kitti, tiny_config_overrides


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_fake_kitti(tmp_path_factory.mktemp("fake_kitti"), frames=12, val_frames=4)


def read_log(out_dir):
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def test_training_reduces_loss_and_writes_a_run_folder(fake_root, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_config_overrides(fake_root, out) + ["train.epochs=6", "optim.lr=0.01", "train.eval_every=3"])
    summary = train(cfg, detector=TinyDetector())
    log = read_log(out)
    epochs = [r for r in log if r["kind"] == "epoch"]
    steps = [r for r in log if r["kind"] == "step"]
    assert len(epochs) == 6 and len(steps) == 18  # 12 frames / batch 4 = 3 steps per epoch
    assert epochs[-1]["heatmap"] < 0.5 * epochs[0]["heatmap"]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    # Warm-up: the first epoch runs at warmup_start_lr, then the base lr.
    assert steps[0]["lr"] == pytest.approx(1e-5) and steps[-1]["lr"] == pytest.approx(0.01)
    # Validation ran twice (epochs 3 and 6) with the KITTI evaluator and kept the best checkpoint.
    validations = [r for r in log if r["kind"] == "val"]
    assert [v["epoch"] for v in validations] == [2, 5]
    assert "Car/3d/R40/moderate" in validations[0]["metrics"]
    assert (out / BEST_CHECKPOINT).is_file() and (out / LAST_CHECKPOINT).is_file()
    assert summary["best_metric"] == max(v["value"] for v in validations)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 18
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = load_checkpoint(out / LAST_CHECKPOINT)
    assert checkpoint["epoch"] == 6 and checkpoint["step_in_epoch"] == 0 and checkpoint["global_step"] == 18
    assert set(checkpoint["model"]) == set(TinyDetector().state_dict())
    assert checkpoint["config"]["train"]["epochs"] == 6


class NaNAt(TinyDetector):
    """Loss is NaN at the given calls (1-based), or always."""

    def __init__(self, bad_calls):
        super().__init__()
        self.calls = 0
        self.bad_calls = bad_calls

    def loss(self, outputs, targets, meta):
        self.calls += 1
        total, logs = super().loss(outputs, targets, meta)
        if self.bad_calls == "all" or self.calls in self.bad_calls:
            total = total * float("nan")
        return total, logs


def test_non_finite_loss_skips_the_step(fake_root, tmp_path):
    cfg = load_config(None, tiny_config_overrides(fake_root, tmp_path) + ["train.epochs=1"])
    detector = NaNAt({2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, detector=detector)
    assert any("non-finite loss at step 2" in str(w.message) for w in caught)
    steps = [r["step"] for r in read_log(tmp_path) if r["kind"] == "step"]
    assert steps == [1, 3]  # step 2 skipped, training went on
    for parameter in detector.parameters():
        assert torch.isfinite(parameter).all()


def test_too_many_non_finite_losses_abort(fake_root, tmp_path):
    cfg = load_config(None, tiny_config_overrides(fake_root, tmp_path) + ["train.max_bad_steps=2"])
    with pytest.raises(Add3dError, match="2 consecutive non-finite losses"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(cfg, detector=NaNAt("all"))


def test_gradient_clipping_bounds_the_update(fake_root, tmp_path):
    cfg = load_config(None, tiny_config_overrides(fake_root, tmp_path) + [
        "train.epochs=1", "optim.name=sgd", "optim.momentum=0.0", "optim.weight_decay=0.0",
        "schedule.warmup_epochs=0", "optim.lr=1.0", "train.grad_clip=0.001", "data.random_flip=0", "data.random_crop=0"])
    torch.manual_seed(0)
    detector = TinyDetector()
    before = torch.cat([p.detach().flatten().clone() for p in detector.parameters()])
    train(cfg, detector=detector)
    after = torch.cat([p.detach().flatten() for p in detector.parameters()])
    # 3 SGD steps of lr 1 with gradients clipped to norm 0.001: the weights move by at most 0.003.
    assert 0 < (after - before).norm() <= 0.003 + 1e-6


def test_batch_larger_than_split_is_a_clear_error(fake_root, tmp_path):
    cfg = load_config(None, tiny_config_overrides(fake_root, tmp_path) + ["train.batch_size=64"])
    with pytest.raises(Add3dError, match="fewer than one batch"):
        train(cfg, detector=TinyDetector())


def test_weight_average_follows_the_warmed_up_decay_and_copies_integer_buffers():
    from add3d.engine.weight_ema import build_weight_ema, ema_rate

    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = build_weight_ema(network, decay=0.5)
    history = []
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            network[0].weight.fill_(value)
        network[1].num_batches_tracked.fill_(int(value))
        ema.update_parameters(network)
        history.append(value)
    # First update copies; then average * rate(n) + current * (1 - rate(n)), rate(n) = min(0.5, (1 + n) / (10 + n)).
    expected = 1.0
    for updates, value in enumerate(history[1:], start=1):
        rate = float(ema_rate(0.5, updates))
        expected = expected * rate + value * (1 - rate)
    assert float(ema_rate(0.5, 1)) == pytest.approx(2 / 11) and float(ema_rate(0.5, 100)) == 0.5
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), expected))
    assert int(ema.module[1].num_batches_tracked) == 4 and int(ema.n_averaged) == 3
    assert ema.module[0].weight.data_ptr() != network[0].weight.data_ptr()  # a copy, not a view
    with pytest.raises(ValueError, match="ema_decay"):
        build_weight_ema(network, decay=1.0)


def test_weight_average_is_what_validation_and_the_checkpoint_model_hold(fake_root, tmp_path):
    from add3d.engine.checkpoints import load_detector_weights
    from add3d.engine.inference import evaluate_predictions, flat_metrics, predict_loader
    from add3d.data.mono_dataset import build_mono_dataset
    from add3d.data.loader import build_loader
    from add3d.engine.modules import input_spec_from_config

    out = tmp_path / "run"
    cfg = load_config(None, tiny_config_overrides(fake_root, out) + ["train.epochs=2", "optim.lr=0.01",
                                                                      "train.ema_decay=0.9", "train.eval_every=0"])
    summary = train(cfg, detector=TinyDetector())
    checkpoint = load_checkpoint(out / LAST_CHECKPOINT)
    assert checkpoint["ema_updates"] == 6 and set(checkpoint["training_model"]) == set(checkpoint["model"])
    assert any(not torch.equal(checkpoint["model"][k], checkpoint["training_model"][k]) for k in checkpoint["model"])
    # The validation metrics are those of the saved (averaged) `model`.
    averaged = TinyDetector()
    load_detector_weights(averaged, out / LAST_CHECKPOINT)
    val_set = build_mono_dataset(cfg.data, cfg.data.val_split, augment=False, classes=cfg.model.classes)
    predictions = predict_loader(averaged, build_loader(val_set, 4, 0), torch.device("cpu"), input_spec_from_config(cfg),
                                 cfg.model.score_threshold, description="test")
    ground_truth = {frame_id: val_set.ground_truth(i) for i, frame_id in enumerate(val_set.ids)}
    results = evaluate_predictions(ground_truth, predictions, tuple(cfg.model.classes), cfg.train.eval_overlap,
                                   cfg.train.eval_box2d_scale)
    assert flat_metrics(results) == summary["last_metrics"]
    # Resuming needs the run's own setting: both ways round are one clear error.
    with pytest.raises(Add3dError, match="written with a weight average"):
        train(load_config(None, tiny_config_overrides(fake_root, out) + ["train.epochs=3"]),
              resume=out / LAST_CHECKPOINT, detector=TinyDetector())
    plain = tmp_path / "plain"
    train(load_config(None, tiny_config_overrides(fake_root, plain) + ["train.epochs=1"]), detector=TinyDetector())
    with pytest.raises(Add3dError, match="written without a weight average"):
        train(load_config(None, tiny_config_overrides(fake_root, plain) + ["train.epochs=2", "train.ema_decay=0.9"]),
              resume=plain / LAST_CHECKPOINT, detector=TinyDetector())
