"""GPU-oriented training switches, exercised on CPU: mixed precision (and its float32 islands),
gradient accumulation, channels_last and torch.compile."""

from __future__ import annotations

import json

import pytest
import torch
from detector_scene import INPUT_SIZE, scene_batch, small_config
from engine_helpers import TinyDetector, make_fake_kitti, tiny_config_overrides

from add3d.distill.config import DistillConfig
from add3d.distill.wrapper import DistillationModule
from add3d.engine.config import load_config
from add3d.engine.distributed import DistributedContext
from add3d.engine.modules import DetectorModule
from add3d.engine.precision import amp_dtype, build_grad_scaler
from add3d.engine.trainer import train, train_step
from add3d.errors import Add3dError
from add3d.models import build_detector
from add3d.models.decode import depth_from_logit
from add3d.models.precision import detector_loss

CPU = torch.device("cpu")


def test_depth_transform_is_float32_where_fp16_overflows():
    logits = torch.tensor([-12.0, -20.0, 0.0], dtype=torch.float16)
    naive = 1.0 / (torch.sigmoid(logits) + 1e-6) - 1.0  # the transform evaluated in fp16
    assert torch.isinf(naive[:2]).all()
    depth = depth_from_logit(logits)
    assert depth.dtype == torch.float32 and torch.isfinite(depth).all()
    expected = 1.0 / (torch.sigmoid(logits.float()) + 1e-6) - 1.0
    torch.testing.assert_close(depth, expected)
    assert depth[0] > 65504  # beyond fp16's largest number: only float32 can hold it


def test_monodle_loss_is_finite_for_fp16_outputs_whose_depth_overflows():
    """The outputs of an fp16 forward (cast here: CPU fp16 convolutions take half a minute) with
    every depth logit at -12, i.e. ~1.6e5 m: the loss, computed in float32, stays finite."""
    torch.manual_seed(0)
    detector = build_detector(small_config("monodle"))
    with torch.no_grad():
        detector.heads["depth"][-1].weight.zero_()
        detector.heads["depth"][-1].bias.fill_(-12.0)
        batch = scene_batch()
        outputs = {name: value.half() for name, value in detector(batch["image"], batch["targets"], batch["meta"]).items()}
        assert torch.isinf(1.0 / (torch.sigmoid(outputs["depth"][:, :1]) + 1e-6) - 1.0).all()  # fp16 arithmetic
        with torch.autocast("cpu", dtype=torch.float16):
            loss, logs = detector_loss(detector, outputs, batch["targets"], batch["meta"])
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(logs["depth"])
    assert logs["depth"] > 100  # the far-off depth is in the loss, not clipped away


def test_amp_modes_and_the_old_boolean_values(tmp_path):
    assert amp_dtype("auto", CPU) is None and amp_dtype("off", CPU) is None
    assert amp_dtype("bf16", CPU) == torch.bfloat16 and amp_dtype("fp16", CPU) == torch.float16
    assert build_grad_scaler(torch.float16, CPU).is_enabled()
    assert not build_grad_scaler(torch.bfloat16, CPU).is_enabled() and not build_grad_scaler(None, CPU).is_enabled()
    assert load_config(None).train.amp == "auto"
    for value, mode in (("true", "auto"), ("false", "off"), ("off", "off"), ("bf16", "bf16")):
        assert load_config(None, [f"train.amp={value}"]).train.amp == mode
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  amp: true\n")
    assert load_config(old).train.amp == "auto"
    with pytest.raises(Add3dError, match=r"train.amp must be one of auto, off, fp16, bf16"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(Add3dError, match=r"divisible by train.accumulate_steps 3"):
        load_config(None, ["train.batch_size=16", "train.accumulate_steps=3"])


def split_batch(batch, parts: int) -> list:
    """A collated batch cut into ``parts`` equal micro-batches along the batch dimension."""
    def take(value, index):
        if isinstance(value, dict):
            return {key: take(item, index) for key, item in value.items()}
        size = len(value) // parts
        return value[index * size:(index + 1) * size]
    return [take(batch, index) for index in range(parts)]


def training_module(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "add":
        teacher = build_detector(small_config("monodle", in_channels=5))
        return DistillationModule(build_detector(small_config("monodle")), teacher,
                                  DistillConfig(depth_bins=8, ffn_channels=32, pool=2))
    return DetectorModule(build_detector(small_config(kind)))


SWITCHES = {
    "bf16": ["train.amp=bf16"],
    "accumulate": ["train.accumulate_steps=2", "train.batch_size=2"],
    "channels_last": ["train.channels_last=true"],
}


@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("kind", ["monodle", "gupnet", "monoflex", "add"])
def test_every_detector_and_add_train_with_each_switch(kind, switch):
    cfg = load_config(None, SWITCHES[switch] + ["train.grad_clip=10"])
    module = training_module(kind).train()
    if cfg.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    trainable = [p for p in module.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    dtype = amp_dtype(cfg.train.amp, CPU)
    batch = scene_batch()
    depth = torch.zeros(2, 1, *INPUT_SIZE)
    depth[:, :, 40:70, 100:200] = 15.0
    batch.update(depth=depth, depth_valid=(depth > 0).float())
    micro_batches = split_batch(batch, cfg.train.accumulate_steps)
    finite, values, names = train_step(module, micro_batches, optimizer, build_grad_scaler(dtype, CPU), cfg,
                                       DistributedContext(), CPU, dtype)
    assert finite.item() == 1 and torch.isfinite(values).all() and len(values) == len(names) + 1
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before))  # the step updated the weights
    assert all(torch.isfinite(p).all() for p in trainable)


def run_tiny(tmp_path, name: str, root, overrides: list[str]):
    out = tmp_path / name
    cfg = load_config(None, tiny_config_overrides(root, out) + overrides)
    train(cfg, detector=TinyDetector(len(cfg.model.classes)))
    state = torch.load(out / "checkpoint_last.pth", weights_only=True)["model"]
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return state, [r for r in steps if r["kind"] == "step"]


def test_accumulating_two_micro_batches_of_4_equals_one_batch_of_8(tmp_path):
    """TinyDetector has no BatchNorm and a per-sample-mean loss, so the gradients are the same."""
    root = make_fake_kitti(tmp_path / "kitti", frames=16)
    common = ["train.batch_size=8", "train.epochs=2"]
    whole, whole_log = run_tiny(tmp_path, "whole", root, common)
    split, split_log = run_tiny(tmp_path, "split", root, common + ["train.accumulate_steps=2"])
    assert [r["step"] for r in whole_log] == [r["step"] for r in split_log] == [1, 2, 3, 4]
    for a, b in zip(whole_log, split_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert list(whole) == list(split)
    for key in whole:
        torch.testing.assert_close(whole[key], split[key], rtol=1e-5, atol=1e-6)
    different = run_tiny(tmp_path, "other", root, common + ["train.seed=1"])[0]
    assert any(not torch.allclose(whole[k], different[k], atol=1e-6) for k in whole)  # the check can fail


def test_the_trainer_runs_with_bf16_accumulation_and_channels_last_together(tmp_path):
    root = make_fake_kitti(tmp_path / "kitti", frames=8)
    state, log = run_tiny(tmp_path, "run", root, ["train.amp=bf16", "train.accumulate_steps=2",
                                                  "train.channels_last=true", "train.log_every=3"])
    assert [r["step"] for r in log] == [2, 3, 4]  # every 3 steps and at each epoch's end (2 steps per epoch)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert all(torch.isfinite(value).all() for value in state.values())


def test_compile_trains_or_is_one_clear_error(tmp_path):
    """torch.compile's graph capture (dynamo + AOT autograd, backend aot_eager: no C++ code generation,
    which would cost minutes on a CI CPU). A backend that cannot run here must be one clear error."""
    root = make_fake_kitti(tmp_path / "kitti", frames=8)
    try:
        state, log = run_tiny(tmp_path, "compiled", root, ["train.compile=true", "train.compile_backend=aot_eager",
                                                           "train.epochs=1"])
    except Add3dError as error:
        assert "train.compile" in str(error) and "set train.compile=false" in str(error)
        pytest.skip(f"torch.compile unavailable here: {error}")
    assert list(state) == list(TinyDetector().state_dict())  # compiling in place keeps the checkpoint keys
    assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    with pytest.raises(Add3dError, match=r"train.compile: torch.compile \(backend no_such_backend\) does not work"):
        run_tiny(tmp_path, "bad", root, ["train.compile=true", "train.compile_backend=no_such_backend"])


def test_gpu_throughput_benchmark_runs_on_cpu_at_the_tiny_size():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
    done = subprocess.run([sys.executable, str(script), "--tiny", "--threads", "1", "--amp", "off", "bf16",
                           "--memory-formats", "channels_last", "--modules", "baseline", "add"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["device"] == "cpu" and report["input_size"] == [64, 192]
    assert [(row["amp"], row["memory_format"]) for row in report["results"]] == [("off", "channels_last"),
                                                                                  ("bf16", "channels_last")]
    for row in report["results"]:
        for kind in ("baseline", "add"):
            assert row[kind]["finite"] and row[kind]["images_per_second"] > 0 and row[kind]["peak_memory_mb"] is None
        assert row["student_inference_ms"] > 0
