"""Run an exported detector with onnxruntime, behind the interface the inference code uses.

``OnnxDetector(path)`` is called like a detector -- ``outputs = runner(image, None, meta=meta)``
then ``runner.decode(outputs, meta, score_threshold)`` -- so ``add3d predict`` and
``engine.inference.predict_loader`` treat PyTorch and ONNX models alike.

Decoding: the graph ends at the network outputs, and ``decode`` hands onnxruntime's outputs (as
tensors) to the very ``decode`` method the PyTorch path uses, of the detector the file's metadata
describes. Why not a numpy copy of each decoder: two implementations of one decoding drift apart,
and this one is small (top-K, gathers, a 3x3 back-projection per object) next to the network. The
detector built for decoding has the file's model config but untrained weights, which ``decode`` never
reads (it uses the config's classes, mean sizes, heading bins, thresholds). A consumer without
add3d (C++, TensorRT) re-implements ``decode`` from the metadata (docs/DEPLOY.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from add3d.data.loader import build_loader
from add3d.data.mono_dataset import build_mono_dataset
from add3d.deploy.onnx_metadata import INPUT_NAMES, DeployMetadata
from add3d.distill.teacher_input import InputSpec
from add3d.engine.config import config_from_dict
from add3d.engine.inference import predict_loader
from add3d.errors import Add3dError, DataFormatError
from add3d.models import build_detector

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise Add3dError("running ONNX models needs onnxruntime: pip install 'add3d[deploy]'") from None
    return onnxruntime


def choose_providers(device: str = "auto") -> list[str]:
    """CUDA (falling back to CPU) when asked for or, with ``auto``, when onnxruntime has it; else CPU."""
    available = require_onnxruntime().get_available_providers()
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise Add3dError(f"device '{device}' is not one of auto | cpu | cuda")
    if device.startswith("cuda") and CUDA_PROVIDER not in available:
        raise Add3dError(f"device '{device}' asked for, but onnxruntime has no {CUDA_PROVIDER} "
                         "(install onnxruntime-gpu) -- available: " + ", ".join(available))
    if device != "cpu" and CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


class OnnxDetector:
    """An ``add3d export-onnx`` file run by onnxruntime; ``metadata`` says what it expects."""

    training = False  # inference loops switch detectors to eval mode and back

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None):
        ort = require_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise Add3dError(f"{self.path}: ONNX file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=choose_providers(device))
        except Exception as error:  # onnxruntime raises its own error types for unreadable or unsupported graphs
            raise DataFormatError(self.path, f"onnxruntime cannot load this file ({type(error).__name__}: "
                                             f"{str(error).strip().splitlines()[0][:200]})") from None
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = DeployMetadata.from_props(props, self.path)
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if graph_inputs != list(INPUT_NAMES):
            raise DataFormatError(self.path, f"graph inputs are {graph_inputs}, expected {list(INPUT_NAMES)}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()
        self.input_spec = InputSpec.from_dict(dict(self.metadata.input_spec), str(self.path))
        self._decoder = None

    @property
    def device(self) -> str:
        return "cuda" if self.providers and self.providers[0] == CUDA_PROVIDER else "cpu"

    def require_rgb(self) -> None:
        """Predicting runs RGB detectors; a depth teacher's graph also needs encoded depth."""
        if self.input_spec.kind != "rgb":
            raise Add3dError(f"{self.path.name} is a depth teacher (input {self.input_spec.kind}); predict runs RGB detectors")

    def eval(self) -> "OnnxDetector":
        return self

    def train(self, mode: bool = True) -> "OnnxDetector":
        return self

    def run_numpy(self, image: np.ndarray, P2_input: np.ndarray) -> list[np.ndarray]:
        """The raw graph outputs (in ``output_names`` order) for float32 inputs."""
        return self.session.run(None, {"image": np.ascontiguousarray(image, dtype=np.float32),
                                       "P2_input": np.ascontiguousarray(P2_input, dtype=np.float32)})

    def __call__(self, image: torch.Tensor, targets=None, meta: dict | None = None) -> dict[str, torch.Tensor]:
        """Outputs by name, as CPU tensors, like ``detector(image, None, meta=meta)``."""
        if targets is not None:
            raise Add3dError("an ONNX model only runs inference (no targets)")
        if meta is None or "P2_input" not in meta:
            raise Add3dError("OnnxDetector needs meta['P2_input'] (the network-input camera)")
        expected = (self.metadata.batch_size, image.shape[1], *self.metadata.input_size)
        if tuple(image.shape) != expected:
            raise Add3dError(f"{self.path.name} takes images of shape {expected} (its export size), got {tuple(image.shape)}")
        values = self.run_numpy(image.detach().cpu().numpy(), meta["P2_input"].detach().cpu().numpy())
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, values)}

    @property
    def decoder(self):
        """The detector whose ``decode`` turns this file's outputs into objects (weights unused)."""
        if self._decoder is None:
            self._decoder = build_detector(dict(self.metadata.model_config)).eval()
        return self._decoder

    def config(self):
        """An engine Config with this file's model section and input size, to preprocess images exactly
        as the exported detector was fed (``data.input_size``; classes from the model)."""
        metadata = self.metadata
        content = {"model": dict(metadata.model_config), "data": {"input_size": list(metadata.input_size)}}
        return config_from_dict(content, f"{self.path} (metadata)")

    def decode(self, outputs: dict[str, torch.Tensor], meta: dict, score_threshold: float | None = None, top_k: int | None = None):
        meta = {key: value.cpu() if isinstance(value, torch.Tensor) else value for key, value in meta.items()}
        return self.decoder.decode(outputs, meta, score_threshold=score_threshold, top_k=top_k)


def max_output_differences(detector: torch.nn.Module, runner: OnnxDetector, image: torch.Tensor, meta: dict) -> dict[str, float]:
    """max |onnxruntime - PyTorch| of every graph output on one input: how faithful the export is."""
    was_training = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            expected = detector(image, None, meta=meta)
    finally:
        detector.train(was_training)
    outputs = runner(image.cpu(), None, meta={key: value.cpu() if isinstance(value, torch.Tensor) else value
                                              for key, value in meta.items()})
    differences = {}
    for name, value in outputs.items():
        reference = expected[name].detach().cpu()
        if value.shape != reference.shape:
            raise Add3dError(f"output {name}: onnxruntime shape {tuple(value.shape)}, PyTorch {tuple(reference.shape)}")
        differences[name] = float((value.double() - reference.double()).abs().max()) if value.numel() else 0.0
    return differences


def predict_split_onnx(runner: OnnxDetector, root: str | Path, split: str, workers: int = 0, progress: bool = True):
    """(dataset, detections by frame id) of a split of the KITTI folder ``root``, preprocessed at the
    file's input size exactly as ``add3d eval`` preprocesses for a checkpoint."""
    import dataclasses

    runner.require_rgb()
    cfg = runner.config()
    data = dataclasses.replace(cfg.data, root=str(root))
    dataset = build_mono_dataset(data, split, augment=False, with_depth=False, classes=cfg.model.classes)
    loader = build_loader(dataset, runner.metadata.batch_size, workers)
    if len(dataset) % runner.metadata.batch_size:
        raise Add3dError(f"{runner.path.name} was exported for batches of {runner.metadata.batch_size}; split "
                         f"'{split}' has {len(dataset)} frames (re-export with --batch-size 1)")
    predictions = predict_loader(runner, loader, torch.device("cpu"), progress=progress,
                                 description=f"predict {split} (onnxruntime)")
    return dataset, predictions
