"""``add3d model-info``: parameters and GFLOPs per module, ADD's training-only adapters, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from add3d.cli import main
from add3d.engine.config import load_config
from add3d.engine.model_info import model_info

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL_INPUT = "data.input_size=[96,320]"  # parameter counts do not depend on the input size


def run_json(capsys, *args: str) -> dict:
    assert main(["model-info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, params", [("monodle", 20_309_974), ("gupnet", 20_358_359), ("monoflex", 20_952_538)])
def test_published_parameter_counts(capsys, name, params):
    """The official counts without the unused ImageNet classifier (docs/MODELS.md)."""
    info = run_json(capsys, str(CONFIGS / name / "kitti.yaml"), "model.pretrained=null", SMALL_INPUT)
    assert info["detector"] == name and info["params"] == params and info["input_size"] == [96, 320]
    assert sum(row["params"] for row in info["modules"].values()) == params
    assert info["modules"]["backbone"]["params"] == 15_270_832  # DLA-34 without its classifier
    assert info["training_only"] is None
    assert sum(row["gflops"] for row in info["modules"].values()) == pytest.approx(info["gflops"], abs=0.01)


def test_flops_match_the_closed_form_of_monodles_heads():
    """Seven heads conv3x3 (64 -> 256) + conv1x1 (256 -> k), k summing to 38, on a 24 x 80 map:
    2 FLOPs per multiply-add, biases not counted."""
    cfg = load_config(CONFIGS / "monodle" / "kitti.yaml", [SMALL_INPUT])
    info = model_info(cfg)
    heads = 2 * 24 * 80 * (7 * 64 * 9 * 256 + 256 * 38)
    assert info["modules"]["heads"]["gflops"] == round(heads / 1e9, 3) == 4.001
    # Convolutions scale with the pixel count: 4x the pixels, ~4x the FLOPs.
    bigger = model_info(load_config(CONFIGS / "monodle" / "kitti.yaml", ["data.input_size=[192,640]"]))
    assert bigger["params"] == info["params"]
    assert bigger["modules"]["heads"]["gflops"] == pytest.approx(4 * info["modules"]["heads"]["gflops"], rel=1e-3)


def test_add_config_counts_the_training_only_adapters_without_a_teacher(capsys):
    """No teacher checkpoint needed; the exported student is exactly the baseline."""
    args = [str(CONFIGS / "monodle" / "synthetic_add.yaml")]
    info = run_json(capsys, *args)
    baseline = run_json(capsys, str(CONFIGS / "monodle" / "synthetic.yaml"))
    adapters = info["training_only"]
    assert info["params"] == baseline["params"] == adapters["student_params"]
    assert info["gflops"] == baseline["gflops"]
    assert set(adapters["modules"]) == {"position_encoding", "self_attention", "feature_adapter", "cross_attention", "object_adapter"}
    assert adapters["params"] == sum(adapters["modules"].values()) > 0
    # Switching a component off removes its adapter.
    info = run_json(capsys, *args, "distill.object_distillation=false")
    assert "cross_attention" not in info["training_only"]["modules"]
    # The table names the same numbers.
    assert main(["model-info", *args]) == 0
    table = capsys.readouterr().out
    assert f"{adapters['params']:,} params" in table and f"{baseline['params']:,}" in table


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "missing.yaml: config file not found"),
    ([str(CONFIGS / "monodle" / "kitti.yaml"), "model.name=centernet"], "unknown detector 'centernet'"),
    ([str(CONFIGS / "monodle" / "kitti.yaml"), "model.bakbone=dla34"], "model.bakbone"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["model-info", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_deformable_convolutions_count_like_the_convolution_they_generalise():
    """torchvision's deform_conv2d is unknown to FlopCounterMode; its convolution part is counted."""
    import torch
    from torch import nn
    from torchvision.ops import DeformConv2d

    from add3d.engine.model_info import forward_flops

    class Wrapped(nn.Module):  # the detector call signature forward_flops uses
        def __init__(self, conv, deformable):
            super().__init__()
            self.conv, self.deformable = conv, deformable

        def forward(self, image, meta=None):
            if self.deformable:
                return self.conv(image, torch.zeros(1, 18, *image.shape[2:]))
            return self.conv(image)

    image = torch.zeros(1, 8, 12, 20)
    plain = forward_flops(Wrapped(nn.Conv2d(8, 16, 3, padding=1), False), image, {})
    deformable = forward_flops(Wrapped(DeformConv2d(8, 16, 3, padding=1), True), image, {})
    assert deformable["total"] == plain["total"] == 2 * 16 * 12 * 20 * 8 * 9 == deformable["conv"]
