"""ONNX export of every detector, run by onnxruntime against PyTorch: raw outputs and decoded
KITTI result lines agree (add3d.deploy)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import re

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")  # installed by `make test` (the deploy extra); skip only as a fallback
pytest.importorskip("onnxscript")

from add3d.deploy.onnx_export import export_onnx, graph_output_names
from add3d.deploy.onnx_metadata import DeployMetadata, metadata_from_config
from add3d.deploy.onnx_runtime import OnnxDetector
from add3d.engine.config import Config
from add3d.errors import Add3dError, DataFormatError
from add3d.models import build_detector
from detector_scene import INPUT_SIZE, make_image, make_meta, small_config

# The export contract covers each detector; MonoFlex with its deformable neck (ONNX DeformConv).
DETECTORS = {
    "monodle": {},
    "gupnet": {},
    "monoflex": {"deformable_neck": True},
}


def settle_batchnorm(detector: torch.nn.Module, seed: int = 1) -> None:
    """Give BatchNorm running statistics of real activations (as a trained network has), so that
    outputs have trained-like magnitudes instead of the identity statistics' large ones."""
    for module in detector.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average
    detector.train()
    meta = make_meta(2)
    with torch.no_grad():
        for i in range(2):
            detector(make_image(2, seed=seed + i), None, meta=meta)
    detector.eval()


def build(name: str):
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = small_config(name, score_threshold=0.05, **DETECTORS[name])
    detector = build_detector(cfg.model)
    if name == "gupnet":
        # Untrained GUPNet is unsure of every depth (log-variance ~4.5, score factor exp(-sigma) ~1e-4):
        # give it 8-pixel boxes and confident depth heads so its scores pass the threshold as a
        # trained one's do.
        with torch.no_grad():
            detector.heads["size_2d"][-1].bias.fill_(8.0)
            detector.roi_heads["size_3d"][-1].bias[3] = -8.0  # log-variance of the 3D height
            detector.roi_heads["depth"][-1].bias[1] = -8.0  # log-variance of the depth residual
    settle_batchnorm(detector)
    return cfg, detector


@pytest.fixture(scope="module", params=list(DETECTORS))
def exported(request, tmp_path_factory):
    """A checkpoint of a small detector (settled BatchNorm, untrained heads) and its `add3d export-onnx` file."""
    from add3d.cli import main
    from add3d.engine.checkpoints import save_checkpoint
    from add3d.engine.config import config_to_dict

    name = request.param
    cfg, detector = build(name)
    cfg.data.input_size = list(INPUT_SIZE)
    folder = tmp_path_factory.mktemp(name)
    checkpoint = folder / "checkpoint.pth"
    save_checkpoint(checkpoint, {"model": detector.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 0,
                                 "rng": {}, "config": config_to_dict(cfg)})
    path = folder / f"{name}.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(path)]) == 0
    assert f"wrote {path} ({name}, input 96x320, opset 19" in printed.getvalue()
    assert re.search(r"onnxruntime vs PyTorch: max \|difference\| [0-9.e-]+ \(", printed.getvalue())
    return name, cfg, detector, path, checkpoint


def float64_outputs(detector: torch.nn.Module, image: torch.Tensor, meta: dict) -> dict[str, torch.Tensor]:
    """The detector's outputs computed in float64: the reference both float32 runtimes approximate."""
    wide = copy.deepcopy(detector).double()
    wide_meta = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in meta.items()}
    with torch.no_grad():
        return wide(image.double(), None, meta=wide_meta)


def test_raw_outputs_match_pytorch(exported):
    """Every output within 1e-4 of PyTorch (relative above magnitude 1: float32 resolves GUPNet's
    geometric depths of hundreds of metres only to ~3e-5 m) -- or, where PyTorch's own float32 error
    (against float64) is larger than that, within twice PyTorch's error."""
    name, _, detector, path, _ = exported
    runner = OnnxDetector(path, device="cpu")
    assert runner.providers == ["CPUExecutionProvider"]
    meta = make_meta(1)
    image = make_image(1, seed=7)
    with torch.no_grad():
        reference = detector(image, None, meta=meta)
    exact = float64_outputs(detector, image, meta)
    outputs = runner(image, None, meta=meta)
    assert set(outputs) == set(reference) - {"features", "P2_input"}
    for key, value in outputs.items():
        expected = reference[key]
        assert value.shape == expected.shape and value.dtype == expected.dtype, key
        if not value.is_floating_point():
            assert torch.equal(value, expected), key
            continue
        scale = expected.double().abs().clamp(min=1.0)
        difference = ((value.double() - expected.double()).abs() / scale).max().item()
        float32_error = ((expected.double() - exact[key]).abs() / scale).max().item()
        assert difference <= max(1e-4, 2 * float32_error), (
            f"{name} {key}: |onnxruntime - pytorch| = {difference:.3g}, pytorch's float32 error {float32_error:.3g}")


def test_decoded_result_lines_are_identical(exported):
    name, _, detector, path, _ = exported
    runner = OnnxDetector(path, device="cpu")
    meta = make_meta(1)
    image = make_image(1, seed=7)
    with torch.no_grad():
        expected = detector.decode(detector(image, None, meta=meta), meta)[0]
    decoded = runner.decode(runner(image, None, meta=meta), meta)[0]
    assert len(expected) >= 5, f"{name}: the test needs detections to compare, got {len(expected)}"
    assert_same_result_lines(decoded, expected)


def numbers(obj) -> np.ndarray:
    return np.array([obj.alpha, *obj.box2d, *obj.dims, *obj.location, obj.rotation_y, obj.score])


def assert_same_result_lines(decoded, expected) -> None:
    """The KITTI lines agree: same objects in the same order, every written number equal -- or one unit
    of the last decimal apart where the unrounded values straddle a rounding boundary (float32
    differences of ~1e-5 m cannot be ruled out; a real difference would exceed 1e-3)."""
    assert [o.cls_type for o in decoded] == [o.cls_type for o in expected]
    for got, want in zip(decoded, expected):
        written_got = np.array([float(v) for v in got.to_line().split()[3:]])
        written_want = np.array([float(v) for v in want.to_line().split()[3:]])
        differs = written_got != written_want
        assert np.all(np.abs(written_got - written_want)[differs] <= 0.01 + 1e-9), (got.to_line(), want.to_line())
        assert np.all(np.abs(numbers(got) - numbers(want))[differs] < 1e-3), (got.to_line(), want.to_line())


def test_metadata_says_what_a_consumer_needs(exported):
    name, cfg, detector, path, _ = exported
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    metadata = DeployMetadata.from_props(props, path)
    assert metadata.detector == name and metadata.classes == ["Car", "Pedestrian", "Cyclist"]
    assert metadata.input_size == list(INPUT_SIZE) and metadata.input_kind == "rgb" and metadata.input_spec == {"kind": "rgb"}
    assert metadata.mean == pytest.approx([0.485, 0.456, 0.406]) and metadata.std == pytest.approx([0.229, 0.224, 0.225])
    assert metadata.score_threshold == pytest.approx(0.05) and metadata.top_k == 50 and metadata.stride == 4
    assert metadata.model_config == dataclasses.asdict(cfg.model)
    assert [o.name for o in model.graph.output] == metadata.outputs
    assert [i.name for i in model.graph.input] == ["image", "P2_input"]
    assert not list(path.parent.glob("*.data")), "the file must be self-contained (no external weights)"
    if name == "monoflex":
        assert "DeformConv" in {node.op_type for node in model.graph.node}


def test_deformable_neck_below_opset_19_is_a_clear_error(tmp_path):
    cfg, detector = build("monoflex")
    from add3d.distill.teacher_input import InputSpec

    names = graph_output_names(detector, make_image(1), make_meta(1)["P2_input"])
    metadata = metadata_from_config(cfg, InputSpec(), 4, names, INPUT_SIZE)
    with pytest.raises(Add3dError, match=r"DeformConv.*opset >= 19.*model.deformable_neck: false"):
        export_onnx(detector, tmp_path / "m.onnx", metadata, opset=18)
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_runtime_rejects_foreign_files_and_wrong_shapes(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(DataFormatError, match="no add3d metadata"):
        OnnxDetector(foreign)
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataFormatError, match="broken.onnx: onnxruntime cannot load"):
        OnnxDetector(tmp_path / "broken.onnx")
    runner = OnnxDetector(exported[3], device="cpu")
    with pytest.raises(Add3dError, match="export size"):
        runner(torch.zeros(1, 3, 64, 320), None, meta=make_meta(1))


# ----- the commands: export-onnx, predict --onnx, benchmark-inference ---------------------------------


def result_numbers(folder):
    from add3d.data.kitti import read_label

    rows = {}
    for path in sorted(folder.glob("*.txt")):
        rows[path.stem] = [(o.cls_type, np.array([o.alpha, *o.box2d, *o.dims, *o.location, o.rotation_y, o.score]))
                           for o in read_label(path)]
    return rows


def test_predict_onnx_gives_the_checkpoints_lines_on_real_frames(exported, kitti_mini_copy, tmp_path):
    from add3d.cli import main

    *_, onnx_path, checkpoint = exported
    images, calib = kitti_mini_copy / "training" / "image_2", kitti_mini_copy / "training" / "calib"
    common = ["--images", str(images), "--calib", str(calib), "--score-threshold", "0.05"]
    assert main(["predict", "--checkpoint", str(checkpoint), *common, "--out", str(tmp_path / "torch"), "--device", "cpu"]) == 0
    assert main(["predict", "--onnx", str(onnx_path), *common, "--out", str(tmp_path / "onnx"), "--device", "cpu"]) == 0
    expected, got = result_numbers(tmp_path / "torch"), result_numbers(tmp_path / "onnx")
    assert sorted(got) == ["000000", "000001", "000002"] == sorted(expected)
    assert sum(len(rows) for rows in expected.values()) >= 5, "the comparison needs detections"
    for frame_id, rows in expected.items():
        assert [cls for cls, _ in got[frame_id]] == [cls for cls, _ in rows], frame_id
        for (_, a), (_, b) in zip(got[frame_id], rows):
            np.testing.assert_allclose(a, b, atol=0.01 + 1e-9, err_msg=frame_id)


def test_export_onnx_refuses_to_overwrite_and_checks_sizes(exported, tmp_path, capsys):
    from add3d.cli import main

    checkpoint = exported[4]
    target = tmp_path / "model.onnx"
    target.write_text("keep me")
    assert main(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(target)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and target.read_text() == "keep me"
    assert main(["export-onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b.onnx"), "--input-size", "100", "320"]) == 2
    assert "multiples of 32" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()


def test_benchmark_inference_reports_json(exported, tmp_path, capsys):
    import json

    from add3d.cli import main

    *_, onnx_path, checkpoint = exported
    report_path = tmp_path / "bench.json"
    assert main(["benchmark-inference", "--checkpoint", str(checkpoint), "--onnx", str(onnx_path), "--backends", "eager,onnxruntime",
                 "--warmup", "1", "--repeats", "2", "--device", "cpu", "--out", str(report_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(report_path.read_text())
    assert report["input_size"] == list(INPUT_SIZE) and report["device"] == "cpu" and report["batch_size"] == 1
    results = report["results"]
    assert set(results) == {"pytorch_eager", "onnxruntime", "decode"}
    for name in results:
        assert results[name]["available"] and results[name]["latency_ms"]["median"] > 0
        assert results[name]["images_per_s"] == pytest.approx(1000.0 / results[name]["latency_ms"]["median"], rel=1e-3)
    assert results["onnxruntime"]["providers"] == ["CPUExecutionProvider"]
