"""Backbones, neck and pretrained-weight loading (models/backbones.py, necks.py, pretrained.py)."""

from __future__ import annotations

import pytest
import torch

from add3d.errors import Add3dError
from add3d.models.backbones import build_backbone, dla34, resnet18
from add3d.models.necks import DLAUp, bilinear_upsampling
from add3d.models.pretrained import (
    IMAGENET_URLS,
    load_backbone_weights,
    load_widened_state_dict,
    read_state_dict,
    widen_input_conv,
)

# Representative parameters of the public ImageNet checkpoint dla34-ba72cf86.pth, written down from
# the public DLA code (ucbdrive/dla, dla.py: DLA([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512])).
# Every tree level, nesting depth, root, projection and BN buffer kind appears at least once.
PUBLIC_DLA34_KEYS = {
    "base_layer.0.weight": (16, 3, 7, 7),
    "base_layer.1.weight": (16,),
    "base_layer.1.bias": (16,),
    "base_layer.1.running_mean": (16,),
    "base_layer.1.running_var": (16,),
    "level0.0.weight": (16, 16, 3, 3),
    "level0.1.running_var": (16,),
    "level1.0.weight": (32, 16, 3, 3),
    "level1.1.bias": (32,),
    "level2.project.0.weight": (64, 32, 1, 1),
    "level2.project.1.running_mean": (64,),
    "level2.tree1.conv1.weight": (64, 32, 3, 3),
    "level2.tree1.bn1.weight": (64,),
    "level2.tree1.conv2.weight": (64, 64, 3, 3),
    "level2.tree2.conv1.weight": (64, 64, 3, 3),
    "level2.tree2.bn2.running_var": (64,),
    "level2.root.conv.weight": (64, 128, 1, 1),
    "level2.root.bn.bias": (64,),
    "level3.project.0.weight": (128, 64, 1, 1),
    "level3.tree1.project.0.weight": (128, 64, 1, 1),
    "level3.tree1.tree1.conv1.weight": (128, 64, 3, 3),
    "level3.tree1.tree2.conv2.weight": (128, 128, 3, 3),
    "level3.tree1.root.conv.weight": (128, 256, 1, 1),
    "level3.tree2.tree1.conv1.weight": (128, 128, 3, 3),
    "level3.tree2.root.conv.weight": (128, 448, 1, 1),
    "level3.tree2.root.bn.running_mean": (128,),
    "level4.project.1.weight": (256,),
    "level4.tree1.project.0.weight": (256, 128, 1, 1),
    "level4.tree1.tree1.conv1.weight": (256, 128, 3, 3),
    "level4.tree1.root.conv.weight": (256, 512, 1, 1),
    "level4.tree2.tree2.bn1.running_var": (256,),
    "level4.tree2.root.conv.weight": (256, 896, 1, 1),
    "level5.project.0.weight": (512, 256, 1, 1),
    "level5.tree1.conv1.weight": (512, 256, 3, 3),
    "level5.tree2.conv2.weight": (512, 512, 3, 3),
    "level5.root.conv.weight": (512, 1280, 1, 1),
    "level5.root.bn.weight": (512,),
}
PUBLIC_DLA34_NUM_ENTRIES = 197  # tensors in the checkpoint, including fc.weight and fc.bias
PUBLIC_DLA34_NUM_PARAMETERS = 15_783_832  # including the 513,000 of the ImageNet classifier fc


def public_style_dla34_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the public checkpoint's exact key set (no num_batches_tracked, with fc)."""
    generator = torch.Generator().manual_seed(seed)
    reference = dla34().state_dict()
    state = {
        key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in reference.items()
        if not key.endswith("num_batches_tracked")
    }
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    state["fc.weight"] = torch.randn(1000, 512, 1, 1, generator=generator)
    state["fc.bias"] = torch.randn(1000, generator=generator)
    return state


def test_dla34_names_and_shapes_follow_the_public_checkpoint():
    state = public_style_dla34_state_dict()
    assert len(state) == PUBLIC_DLA34_NUM_ENTRIES
    assert sum(v.numel() for k, v in state.items() if "running" not in k) == PUBLIC_DLA34_NUM_PARAMETERS
    for key, shape in PUBLIC_DLA34_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    backbone = dla34()
    assert backbone.out_channels == [64, 128, 256, 512]
    assert sum(p.numel() for p in backbone.parameters()) == PUBLIC_DLA34_NUM_PARAMETERS - 513_000


def test_public_style_dla34_checkpoint_loads_strictly(tmp_path):
    state = public_style_dla34_state_dict(seed=1)
    path = tmp_path / "dla34-ba72cf86.pth"
    torch.save(state, path)
    backbone = dla34()
    load_backbone_weights(backbone, str(path), "dla34")
    loaded = backbone.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            assert key not in loaded
        else:
            assert torch.equal(loaded[key], value), key

    # A teacher backbone (RGB + depth + validity) gets the RGB weights and zeros for the extra inputs.
    teacher = dla34(in_channels=5)
    load_backbone_weights(teacher, str(path), "dla34")
    first = teacher.state_dict()["base_layer.0.weight"]
    assert first.shape == (16, 5, 7, 7)
    assert torch.equal(first[:, :3], state["base_layer.0.weight"])
    assert torch.count_nonzero(first[:, 3:]) == 0

    # The backbone part of a whole detector's checkpoint (add3d layout: {"model": {"backbone.*", ...}}).
    detector_checkpoint = {"model": {"backbone." + k: v for k, v in state.items()} | {"heads.x.weight": torch.ones(1)}}
    torch.save(detector_checkpoint, tmp_path / "detector.pth")
    from_detector = dla34()
    load_backbone_weights(from_detector, str(tmp_path / "detector.pth"), "dla34")
    assert torch.equal(from_detector.state_dict()["level4.tree2.root.conv.weight"], state["level4.tree2.root.conv.weight"])


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    state = public_style_dla34_state_dict()
    del state["level5.root.conv.weight"]
    state["level9.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(Add3dError, match=r"missing \(1\): level5\.root\.conv\.weight.*unexpected \(1\): level9"):
        load_backbone_weights(dla34(), str(path), "dla34")
    with pytest.raises(Add3dError, match="not found"):
        load_backbone_weights(dla34(), str(tmp_path / "absent.pth"), "dla34")
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    with pytest.raises(Add3dError, match="garbage.pth: not a readable torch checkpoint"):
        read_state_dict(str(tmp_path / "garbage.pth"))


def test_offline_download_names_the_cache_file_and_the_cache_is_used(tmp_path, monkeypatch):
    hub_dir = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub_dir))
    unreachable = "http://127.0.0.1:9/dla/models/imagenet/dla34-ba72cf86.pth"
    with pytest.raises(Add3dError) as error:
        read_state_dict(unreachable)
    message = str(error.value)
    assert "cannot download" in message and str(hub_dir / "checkpoints" / "dla34-ba72cf86.pth") in message

    # Put the file where the message says: "imagenet" then loads without any network access.
    (hub_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    assert not (hub_dir / "checkpoints" / "dla34-ba72cf86.pth").exists()  # no partial file left behind
    state = public_style_dla34_state_dict(seed=2)
    torch.save(state, hub_dir / "checkpoints" / "dla34-ba72cf86.pth")
    assert IMAGENET_URLS["dla34"].endswith("/dla34-ba72cf86.pth")
    loaded = read_state_dict("imagenet", "dla34")
    assert torch.equal(loaded["level3.tree2.root.conv.weight"], state["level3.tree2.root.conv.weight"])
    with pytest.raises(Add3dError, match="no ImageNet checkpoint is known for backbone 'dla34_tiny'"):
        read_state_dict("imagenet", "dla34_tiny")

    # Through the config: a 5-channel teacher built with `pretrained: imagenet` from the cache.
    from add3d.models import ModelConfig, build_detector

    teacher = build_detector(ModelConfig(pretrained="imagenet", in_channels=5, head_channels=8))
    weights = teacher.state_dict()
    assert torch.equal(weights["backbone.level5.tree2.conv2.weight"], state["level5.tree2.conv2.weight"])
    assert torch.equal(weights["backbone.base_layer.0.weight"][:, :3], state["base_layer.0.weight"])
    assert torch.count_nonzero(weights["backbone.base_layer.0.weight"][:, 3:]) == 0


def test_widen_input_conv_pads_with_zeros_and_refuses_to_narrow():
    weight = torch.randn(4, 3, 3, 3)
    state = {"conv.weight": weight, "other": torch.ones(2)}
    wide = widen_input_conv(state, "conv.weight", 5)
    assert wide["conv.weight"].shape == (4, 5, 3, 3)
    assert torch.equal(wide["conv.weight"][:, :3], weight)
    assert torch.count_nonzero(wide["conv.weight"][:, 3:]) == 0
    assert state["conv.weight"] is weight  # input untouched
    assert widen_input_conv(state, "conv.weight", 3)["conv.weight"] is weight
    with pytest.raises(Add3dError, match="cannot narrow"):
        widen_input_conv(state, "conv.weight", 2)
    with pytest.raises(Add3dError, match="no input conv"):
        widen_input_conv(state, "missing.weight", 5)


@pytest.mark.parametrize("name", ["dla34_tiny", "dla34_small", "resnet18"])
def test_backbones_return_strides_4_to_32(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, in_channels=5).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 5, 64, 96))
    assert [tuple(f.shape[2:]) for f in features] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in features] == backbone.out_channels
    assert backbone.state_dict()[backbone.first_conv_key].shape[1] == 5


def test_resnet18_keys_are_torchvision_keys_without_fc():
    import torchvision

    ours = resnet18().state_dict()
    theirs = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(Add3dError, match="unknown backbone 'dla35'.*dla34"):
        build_backbone("dla35")


def test_bilinear_upsampling_reproduces_linear_ramps():
    # A bilinear upsampler maps a linear ramp to a linear ramp (away from the zero-padded border).
    for factor in (2, 4):
        up = bilinear_upsampling(1, factor)
        ramp = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(1, 1, 8, 8)
        with torch.no_grad():
            out = up(ramp)[0, 0]
        assert out.shape == (8 * factor, 8 * factor)
        inner = out[2 * factor : -2 * factor, 2 * factor : -2 * factor]
        steps = inner[:, 1:] - inner[:, :-1]
        assert torch.allclose(steps, torch.full_like(steps, 1.0 / factor), atol=1e-5)
        assert torch.allclose(inner[:, 0], inner[0, 0].expand(inner.shape[0]))


@pytest.mark.parametrize("deformable", [False, True])
def test_dlaup_fuses_to_stride_4(deformable):
    torch.manual_seed(0)
    channels = [8, 16, 32, 64]
    neck = DLAUp(channels, deformable=deformable)
    features = [torch.randn(2, c, 16 // 2**i, 24 // 2**i, requires_grad=True) for i, c in enumerate(channels)]
    out = neck(features)
    assert out.shape == (2, 8, 16, 24) and neck.out_channels == 8
    out.square().mean().backward()
    # Every input scale, including the deepest, influences the fused map.
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    if deformable:
        offset_grads = [m.offset_mask.weight.grad for m in neck.modules() if hasattr(m, "offset_mask")]
        assert len(offset_grads) == 2 * (3 + 2 + 1)  # projection + node per fused map, 3 stages
        assert all(g is not None and g.abs().sum() > 0 for g in offset_grads)


def test_load_widened_state_dict_makes_extra_channels_inert():
    torch.manual_seed(0)
    rgb = build_backbone("dla34_tiny").eval()
    wide = build_backbone("dla34_tiny", in_channels=5).eval()
    load_widened_state_dict(wide, rgb.state_dict(), wide.first_conv_key)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = rgb(image)
        got = wide(torch.cat([image, torch.randn(1, 2, 64, 64)], dim=1))
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=1e-6)
