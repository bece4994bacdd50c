"""``add3d import-checkpoint``: released state dicts in the official naming (built here from our own
tiny models) import, strict-load, and predict exactly what the model they came from predicts."""

from __future__ import annotations

import re
import urllib.error

import pytest
import torch

from add3d.cli import main
from add3d.engine.checkpoints import load_checkpoint
from add3d.engine.inference import load_detector, predict_config
from add3d.models import DETECTORS, build_detector
from add3d.models.official_weights import OFFICIAL_CLASSES
from detector_scene import make_image, make_meta, small_config

OURS = ["Car", "Pedestrian", "Cyclist"]
TO_OFFICIAL = [OURS.index(name) for name in OFFICIAL_CLASSES]  # our channel of each official class
TINY = ["model.backbone=dla34_tiny", "model.head_channels=32", "data.input_size=[96,320]"]
GUPNET_MEANS = {"Car": [1.52, 1.63, 3.88], "Pedestrian": [1.76, 0.66, 0.84], "Cyclist": [1.74, 0.60, 1.76]}


def official_neck_key(key: str) -> str:
    stage, part, index, layer, rest = re.match(
        r"neck\.stages\.(\d)\.(projections|nodes|upsamplers)\.(\d)\.(?:(\d)\.)?(.+)", key
    ).groups()
    part = {"projections": "proj", "nodes": "node", "upsamplers": "up"}[part]
    layer = {"0": "conv.", "1": "bn.", None: ""}[layer]
    return f"ida_{stage}.{part}_{int(index) + 1}.{layer}{rest}"


def official_state(detector, name: str) -> dict[str, torch.Tensor]:
    """Our detector's weights as the official code names and orders them (DataParallel prefix too)."""
    feature_channels = detector.feature_channels
    state = {}
    for key, value in detector.state_dict().items():
        if key.startswith("task_weighting."):
            continue
        if key.startswith("neck."):
            key = ("neck." if name == "monodle" else "feat_up.") + official_neck_key(key)
        elif key.startswith(("heads.", "roi_heads.")):
            key = key.split(".", 1)[1]
            if key.startswith("heatmap.2."):
                value = value[TO_OFFICIAL]
            if name == "gupnet" and key.endswith(".0.weight") and value.shape[1] == feature_channels + 2 + 3:
                value = torch.cat([value[:, : feature_channels + 2], value[:, feature_channels + 2 :][:, TO_OFFICIAL]], dim=1)
        state["module." + key] = value
    state["module.backbone.fc.weight"] = torch.randn(1000, 128, 1, 1)
    state["module.backbone.fc.bias"] = torch.randn(1000)
    if name == "gupnet":
        state["module.mean_size"] = torch.tensor([GUPNET_MEANS[c] for c in OFFICIAL_CLASSES])
    return state


def released_model(name: str):
    """A randomly initialised detector (non-trivial BN statistics) in the official geometry."""
    torch.manual_seed(3)
    extra = {"mean_size": GUPNET_MEANS} if name == "gupnet" else {"use_mean_size": False}
    detector = build_detector(small_config(name, compat="official", **extra))
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        if name == "gupnet":  # plausible 2D boxes (6 x 4 cells) and 3D sizes, so detections decode
            detector.heads["size_2d"][-1].bias.copy_(torch.tensor([6.0, 4.0]))
            detector.roi_heads["size_3d"][-1].weight.mul_(0.01)
    return detector.eval()


@pytest.mark.parametrize("name", ["monodle", "gupnet"])
def test_release_imports_strict_loads_and_predicts_identically(name, tmp_path, capsys):
    original = released_model(name)
    source = tmp_path / "checkpoint_epoch_140.pth"
    torch.save({"epoch": 140, "model_state": official_state(original, name)}, source)
    output = tmp_path / "imported.pth"
    assert main(["import-checkpoint", "--detector", name, str(source), str(output), *TINY]) == 0
    assert "model.compat=official" in capsys.readouterr().out

    stored = load_checkpoint(output)
    assert stored["config"]["model"]["compat"] == "official" and stored["input_spec"]["kind"] == "rgb"
    if name == "gupnet":  # the class means come from the release
        assert stored["config"]["model"]["mean_size"]["Car"] == pytest.approx(GUPNET_MEANS["Car"])
    else:  # the MonoDLE release regresses absolute sizes
        assert stored["config"]["model"]["use_mean_size"] is False
    cfg = predict_config(output, None, [])  # what `add3d predict` runs without --config
    imported = load_detector(cfg, output, torch.device("cpu"))  # strict load

    image, meta = make_image(2, seed=5), make_meta(2)
    with torch.no_grad():
        expected, got = original(image, meta=meta), imported(image, meta=meta)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        want = original.decode(expected, meta, score_threshold=0.0)
        have = imported.decode(got, meta, score_threshold=0.0)
    assert [len(d) for d in have] == [len(d) for d in want] and len(have[0]) > 0
    for a, b in zip(have[0], want[0]):
        assert a.cls_type == b.cls_type and a.score == b.score
        torch.testing.assert_close(torch.as_tensor(a.location), torch.as_tensor(b.location))


def test_imported_weights_refuse_the_exact_geometry(tmp_path, capsys):
    original = released_model("gupnet")
    source, output = tmp_path / "release.pth", tmp_path / "imported.pth"
    torch.save({"model_state": official_state(original, "gupnet")}, source)
    assert main(["import-checkpoint", "--detector", "gupnet", str(source), str(output), *TINY]) == 0
    cfg = predict_config(output, None, ["model.compat=exact"])
    from add3d.errors import Add3dError

    with pytest.raises(Add3dError, match="model.compat=official"):
        load_detector(cfg, output, torch.device("cpu"))
    # Nothing is silently overwritten.
    capsys.readouterr()
    assert main(["import-checkpoint", "--detector", "gupnet", str(source), str(output), *TINY]) == 2
    assert "--force" in capsys.readouterr().err


def test_bad_sources_are_one_line_errors(tmp_path, capsys, monkeypatch):
    output = tmp_path / "out.pth"
    assert main(["import-checkpoint", "--detector", "gupnet", str(tmp_path / "missing.pth"), str(output)]) == 2
    err = capsys.readouterr().err
    assert "missing.pth" in err and len(err.strip().splitlines()) == 1

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["import-checkpoint", "--detector", "monodle", "https://example.org/monodle.pth", str(output)]) == 2
    err = capsys.readouterr().err
    assert "cannot download" in err and len(err.strip().splitlines()) == 1
    assert not output.exists()

    # A GUPNet release passed as MonoDLE names the first key it does not know.
    source = tmp_path / "gupnet.pth"
    torch.save({"model_state": official_state(released_model("gupnet"), "gupnet")}, source)
    assert main(["import-checkpoint", "--detector", "monodle", str(source), str(output), *TINY]) == 2
    assert "unexpected key" in capsys.readouterr().err and not output.exists()


def test_url_sources_go_through_the_hub_cache(tmp_path, monkeypatch):
    state = official_state(released_model("monodle"), "monodle")
    calls = []

    def cached(url, **kwargs):
        calls.append((url, kwargs.get("file_name")))
        return {"model_state": state}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cached)
    output = tmp_path / "monodle.pth"
    assert main(["import-checkpoint", "--detector", "monodle", "https://example.org/ckpt/monodle.pth", str(output), *TINY]) == 0
    assert calls == [("https://example.org/ckpt/monodle.pth", "monodle.pth")] and output.is_file()


def test_import_monodle_is_an_alias(tmp_path):
    source, output = tmp_path / "release.pth", tmp_path / "car.pth"
    torch.save({"model_state": official_state(released_model("monodle"), "monodle")}, source)
    assert main(["import-monodle", str(source), str(output), *TINY, "--classes", "Car"]) == 0
    stored = load_checkpoint(output)
    assert stored["config"]["model"]["classes"] == ["Car"] and stored["model"]["heads.heatmap.2.bias"].shape == (1,)


def test_monoflex_release_imports_and_predicts_identically(tmp_path):
    from test_monoflex import _official_state as official_monoflex_state

    torch.manual_seed(11)
    reference = build_detector(small_config("monoflex", deformable_neck=True)).eval()
    with torch.no_grad():
        for key, tensor in reference.state_dict().items():
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
    source, output = tmp_path / "monoflex_release.pth", tmp_path / "monoflex.pth"
    torch.save({"model": official_monoflex_state(reference.state_dict(), OURS)}, source)
    assert main(["import-checkpoint", "--detector", "monoflex", str(source), str(output), *TINY,
                 "model.deformable_neck=true"]) == 0
    # Released MonoFlex weights decode with the official geometry (one model.compat switch for all).
    assert torch.load(output, map_location="cpu", weights_only=True)["config"]["model"]["compat"] == "official"
    imported = load_detector(predict_config(output, None, []), output, torch.device("cpu"))
    image, meta = make_image(1, seed=2), make_meta(1)
    with torch.no_grad():
        expected, got = reference(image, meta=meta), imported(image, meta=meta)
    for key in ("heatmap", "depth", "size_3d", "orientation"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5, msg=key)


def test_detectors_without_a_converter_say_so(tmp_path, capsys, monkeypatch):
    import dataclasses

    monkeypatch.setitem(DETECTORS, "monoflex", dataclasses.replace(DETECTORS["monoflex"], convert_official=None))
    source = tmp_path / "monoflex.pth"
    torch.save({"model_state": {"backbone.x": torch.zeros(1)}}, source)
    assert main(["import-checkpoint", "--detector", "monoflex", str(source), str(tmp_path / "out.pth")]) == 2
    assert "no converter for released monoflex checkpoints" in capsys.readouterr().err
