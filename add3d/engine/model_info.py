"""Parameters and forward FLOPs of a configured detector, per top-level module, and the size of
ADD's training-only adapters (``add3d model-info``, ``benchmarks/inference_cost.py``).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of a
batch of one image at the config's input size (eval mode, as deployed), with torch's convention of
2 FLOPs per multiply-add; torchvision's deformable convolution is counted like the convolution it
generalises (its bilinear sampling is not counted). Ops FlopCounterMode does not know (ROI-align,
element-wise ops, ...) count 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from add3d.distill.teacher import teacher_model_config
from add3d.distill.wrapper import DistillationModule
from add3d.engine.config import Config
from add3d.models import build_detector

# KITTI's P2 (frame 000000 family): the camera of the meta a counting forward pass gets.
KITTI_P2 = [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
KITTI_IMAGE_SIZE = (1242.0, 375.0)  # (width, height)


def camera_meta(height: int, width: int, batch: int = 1) -> dict:
    """The batch meta of an un-augmented KITTI frame resized to a ``height x width`` network input."""
    scale_x, scale_y = width / KITTI_IMAGE_SIZE[0], height / KITTI_IMAGE_SIZE[1]
    affine = torch.tensor([[scale_x, 0.0, 0.0], [0.0, scale_y, 0.0], [0.0, 0.0, 1.0]])
    P2 = torch.tensor(KITTI_P2)
    return {
        "frame_id": [f"{i:06d}" for i in range(batch)],
        "P2": P2.expand(batch, 3, 4).clone(),
        "P2_input": (affine @ P2).expand(batch, 3, 4).clone(),
        "input_to_original": torch.linalg.inv(affine)[:2].expand(batch, 2, 3).clone(),
        "original_size": torch.tensor([KITTI_IMAGE_SIZE]).expand(batch, 2).clone(),
        "flipped": torch.zeros(batch, dtype=torch.long),
        "cropped": torch.zeros(batch, dtype=torch.long),
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _deform_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """2 x multiply-adds of the convolution part of ``torchvision::deform_conv2d``."""
    _, in_per_group, kernel_h, kernel_w = weight_shape
    batch, out_channels, out_h, out_w = out_shape
    return 2 * batch * out_channels * out_h * out_w * in_per_group * kernel_h * kernel_w


def _custom_flop_formulas() -> dict:
    import torchvision  # noqa: F401  (slow; registers torch.ops.torchvision.deform_conv2d)

    return {torch.ops.torchvision.deform_conv2d: _deform_conv_flops}  # keyed by op packet, like torch's table


@torch.no_grad()
def forward_flops(model: nn.Module, image: torch.Tensor, meta: dict) -> dict[str, int]:
    """FLOPs of ``model(image, meta=meta)``: ``{"total": n, child name: n, ..., "other": n}`` for the
    top-level children of ``model`` (``other`` = FLOPs outside every child)."""
    with FlopCounterMode(display=False, depth=None, custom_mapping=_custom_flop_formulas()) as counter:
        model(image, meta=meta)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = counts.get("Global", 0)
    root = type(model).__name__
    result = {"total": total}
    for child, _ in model.named_children():
        prefix = f"{root}.{child}"
        # FlopCounterMode lists every module that ran; containers that are never called themselves
        # (ModuleDict) are absent, so sum the outermost modules at or below the child.
        names = [n for n in counts if n == prefix or n.startswith(prefix + ".")]
        outermost = [n for n in names if not any(n.startswith(m + ".") for m in names if m != n)]
        result[child] = sum(counts[n] for n in outermost)
    result["other"] = total - sum(v for k, v in result.items() if k != "total")
    return result


def _gflops(flops: int) -> float:
    return round(flops / 1e9, 3)


def model_info(cfg: Config) -> dict:
    """Parameters and GFLOPs of ``cfg.model`` at ``cfg.data.input_size``, per top-level module, and
    (when ``cfg.distill`` is set) the parameters of ADD's training-only adapters, which the exported
    student does not contain. Builds random-weight networks: nothing is downloaded or loaded."""
    model_cfg = dataclasses.replace(cfg.model, pretrained=None)  # counts do not depend on weights
    torch.manual_seed(0)
    detector = build_detector(model_cfg).eval()
    height, width = cfg.data.input_hw
    image = torch.zeros(1, model_cfg.in_channels, height, width)
    flops = forward_flops(detector, image, camera_meta(height, width))
    modules = {
        name: {"params": count_parameters(child), "gflops": _gflops(flops[name])}
        for name, child in detector.named_children()
        if count_parameters(child) or flops[name]
    }
    if _gflops(flops["other"]):
        modules["other"] = {"params": 0, "gflops": _gflops(flops["other"])}
    info = {
        "detector": model_cfg.name,
        "backbone": model_cfg.backbone,
        "input_size": [height, width],
        "in_channels": model_cfg.in_channels,
        "params": count_parameters(detector),
        "gflops": _gflops(flops["total"]),
        "modules": modules,
        "training_only": None,
    }
    if cfg.distill is not None:
        # A random-weight teacher of the right architecture stands in for the checkpoint: the
        # adapters only depend on its feature width.
        teacher = build_detector(teacher_model_config(model_cfg))
        info["training_only"] = adapter_parameters(DistillationModule(detector, teacher, cfg.distill))
    return info


def adapter_parameters(module: DistillationModule) -> dict:
    """Parameters of ADD's training-only adapters (3D-PE, 3D-SA, TCA, projections), per adapter."""
    adapters = {
        name: count_parameters(child)
        for name, child in module.named_children()
        if name not in ("detector", "teacher") and count_parameters(child)
    }
    return {
        "params": sum(adapters.values()),
        "modules": adapters,
        # Zero inference cost: what the trainer saves (module.detector) is the student alone.
        "student_params": count_parameters(module.detector),
    }


def format_model_info(info: Mapping) -> str:
    """The human-readable table of :func:`model_info`."""
    height, width = info["input_size"]
    lines = [
        f"{info['detector']} ({info['backbone']}), input {info['in_channels']} x {height} x {width}, batch 1",
        f"{'module':<20}{'params':>14}{'GFLOPs':>10}",
    ]
    for name, row in info["modules"].items():
        lines.append(f"{name:<20}{row['params']:>14,}{row['gflops']:>10.3f}")
    lines.append(f"{'total':<20}{info['params']:>14,}{info['gflops']:>10.3f}")
    lines.append("GFLOPs: forward pass, 2 FLOPs per multiply-add (torch.utils.flop_counter)")
    adapters = info.get("training_only")
    if adapters:
        lines.append(f"ADD training-only adapters (not in the exported student): {adapters['params']:,} params")
        for name, params in adapters["modules"].items():
            lines.append(f"  {name:<18}{params:>14,}")
        lines.append(f"exported student: {adapters['student_params']:,} params (= the baseline detector)")
    return "\n".join(lines)
