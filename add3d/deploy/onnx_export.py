"""Export a detector's network to ONNX (torch.onnx's dynamo-based exporter).

The graph is the detector's inference ``forward``: inputs ``image`` (B x C x H x W, normalised as
in training) and ``P2_input`` (B x 3 x 4, the network-input camera), outputs the head outputs by
name -- for GUPNet including its top-K peak selection and ROI heads, which are part of the network.
Decoding to KITTI boxes stays outside the graph, in the detector's own ``decode`` (see
:mod:`add3d.deploy.onnx_runtime`): one decoder per detector, shared by the PyTorch and ONNX paths.

Why the dynamo exporter (``torch.onnx.export(dynamo=True)``, the default of recent torch): it is
the maintained one, and its operator library (onnxscript) translates torchvision's ``roi_align``
(GUPNet) and ``deform_conv2d`` (MonoFlex's deformable neck, as ONNX ``DeformConv``, opset 19);
the older TorchScript exporter has no translation for the latter.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from add3d.deploy.onnx_metadata import DEFAULT_OPSET, INPUT_NAMES, DeployMetadata
from add3d.errors import Add3dError
from add3d.fileio import atomic_path

MIN_OPSET = 18  # the exporter's operator library is written against opset 18
DEFORM_CONV_OPSET = 19  # RoiAlign (GUPNet) needs >= 16, below MIN_OPSET
# Outputs that stay out of the graph: the neck features (only distillation reads them) and
# MonoFlex's pass-through of the camera input.
NOT_EXPORTED = ("features", "P2_input")


def require_onnx_exporter() -> None:
    """The exporter needs onnx and onnxscript (the ``deploy`` extra)."""
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise Add3dError(f"ONNX export needs {' and '.join(missing)}: pip install 'add3d[deploy]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def example_camera(input_size: tuple[int, int], batch_size: int = 1) -> torch.Tensor:
    """A KITTI-like network-input camera (B x 3 x 4) for tracing; its values do not shape the graph."""
    height, width = input_size
    focal = 0.56 * width  # KITTI: 721 px over 1242 px
    P2 = torch.tensor([[focal, 0.0, width / 2, 0.04 * focal], [0.0, focal, 0.46 * height, 0.0], [0.0, 0.0, 1.0, 0.003]])
    return P2.expand(batch_size, 3, 4).clone()


class NetworkGraph(nn.Module):
    """The detector's inference forward with tensor inputs and a tuple of outputs, as ONNX wants it."""

    def __init__(self, detector: nn.Module, output_names: list[str]):
        super().__init__()
        self.detector = detector
        self.output_names = list(output_names)

    def forward(self, image: torch.Tensor, P2_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.detector(image, None, meta={"P2_input": P2_input})
        return tuple(outputs[name] for name in self.output_names)


def graph_output_names(detector: nn.Module, image: torch.Tensor, P2_input: torch.Tensor) -> list[str]:
    """The names of the detector's inference outputs that go into the graph, in its own order."""
    with torch.no_grad():
        outputs = detector(image, None, meta={"P2_input": P2_input})
    return [name for name, value in outputs.items() if name not in NOT_EXPORTED and isinstance(value, torch.Tensor)]


def check_opset(detector: nn.Module, opset: int) -> None:
    if opset < MIN_OPSET:
        raise Add3dError(f"--opset {opset}: the ONNX exporter needs opset >= {MIN_OPSET} (default {DEFAULT_OPSET})")
    if _deformable(detector) and opset < DEFORM_CONV_OPSET:
        raise Add3dError(
            f"--opset {opset}: the deformable neck (model.deformable_neck: true) exports as ONNX DeformConv, "
            f"which needs opset >= {DEFORM_CONV_OPSET}; raise --opset or export a model trained with "
            "model.deformable_neck: false"
        )


def _deformable(detector: nn.Module) -> bool:
    return bool(getattr(getattr(detector, "cfg", None), "deformable_neck", False))


def export_onnx(
    detector: nn.Module,
    path: str | Path,
    metadata: DeployMetadata,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write the detector's network to ``path`` (one self-contained file, written atomically) with
    ``metadata`` in its ``metadata_props``. ``metadata.input_size`` / ``batch_size`` fix the input shape."""
    require_onnx_exporter()
    check_opset(detector, opset)
    path = Path(path)
    height, width = metadata.input_size
    channels = getattr(detector, "in_channels", 3)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(metadata.batch_size, channels, height, width, generator=generator)
    P2_input = example_camera((height, width), metadata.batch_size)
    was_training = detector.training
    detector.eval()
    try:
        names = graph_output_names(detector, image, P2_input)
        if list(metadata.outputs) != names:
            raise Add3dError(f"metadata lists outputs {metadata.outputs}, the detector gives {names}")
        program = _run_exporter(NetworkGraph(detector, names), (image, P2_input), names, opset, _deformable(detector))
    finally:
        detector.train(was_training)
    program.model.metadata_props.update(metadata.to_props())
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


def _run_exporter(graph: NetworkGraph, inputs: tuple, names: list[str], opset: int, deformable: bool):
    log = io.StringIO()  # the exporter reports its progress on stdout; keep it for error messages
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                graph, inputs, f=None, dynamo=True, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=names, verbose=False,
            )
    except Exception as error:  # the exporter raises many types; say what failed in one line
        reason = _first_line(error)
        if deformable and "deform" in (reason + log.getvalue()).lower():
            raise Add3dError(
                f"the deformable neck could not be exported as ONNX DeformConv ({reason}); export a model "
                "trained with model.deformable_neck: false (e.g. configs/monoflex/*.yaml with "
                "model.deformable_neck=false)"
            ) from error
        raise Add3dError(f"ONNX export failed: {reason}") from error


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("#", "⬆"))]
    return f"{type(error).__name__}: {lines[0] if lines else text}"[:300]
