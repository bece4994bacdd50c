"""A training checkpoint -> a verified ONNX file (what ``add3d export-onnx`` does)."""

from __future__ import annotations

from pathlib import Path

import torch

from add3d.deploy.onnx_export import example_camera, export_onnx, graph_output_names
from add3d.deploy.onnx_metadata import DEFAULT_OPSET, metadata_from_config
from add3d.deploy.onnx_runtime import OnnxDetector, max_output_differences
from add3d.engine.inference import load_detector, predict_config
from add3d.errors import Add3dError


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    overrides: list[str] = (),
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    batch_size: int = 1,
    force: bool = False,
) -> dict:
    """Export the checkpoint's detector (config: ``config`` or the stored one, plus ``overrides``),
    then run the file with onnxruntime on a random input and compare with PyTorch.

    Returns ``detector``, ``input_size``, ``outputs`` and ``max_output_difference`` (per output).
    """
    out = Path(out)
    if out.exists() and not force:
        raise Add3dError(f"{out} exists; pass --force to replace it")
    if batch_size < 1:
        raise Add3dError(f"--batch-size must be >= 1, got {batch_size}")
    cfg = predict_config(checkpoint, config, list(overrides))
    size = tuple(int(v) for v in (input_size or cfg.data.input_hw))
    if any(v <= 0 or v % 32 for v in size):
        raise Add3dError(f"--input-size must be two positive multiples of 32 (height width), got {list(size)}")
    detector = load_detector(cfg, checkpoint, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch_size, detector.in_channels, *size, generator=generator)
    camera = example_camera(size, batch_size)
    names = graph_output_names(detector, image, camera)
    export_onnx(detector, out, metadata_from_config(cfg, detector.input_spec, detector.stride, names, size, batch_size), opset)
    runner = OnnxDetector(out, device="cpu")
    differences = max_output_differences(detector, runner, image, {"P2_input": camera})
    return {"detector": cfg.model.name, "input_size": list(size), "outputs": names,
            "max_output_difference": differences}
