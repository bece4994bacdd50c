"""``add3d benchmark-inference (--checkpoint CKPT | --onnx FILE) [--device D] [--out FILE.json]``.

Latency and images/s of the network at KITTI size (the model's input size, 384x1280 by default) on
this machine, for PyTorch eager, ``torch.compile`` and onnxruntime, plus the shared decoding, as
JSON (stdout, and ``--out``). With only ``--checkpoint`` the model is exported to a temporary ONNX
file first; with only ``--onnx`` the PyTorch backends are reported as unavailable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from add3d.deploy.benchmark import BACKENDS, benchmark_inference
from add3d.deploy.export_checkpoint import export_checkpoint
from add3d.deploy.onnx_runtime import OnnxDetector
from add3d.engine.inference import load_detector, predict_config, resolve_device
from add3d.errors import Add3dError
from add3d.fileio import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint written by add3d train")
    parser.add_argument("--onnx", type=Path, default=None, help="a file written by add3d export-onnx")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="default: the ONNX file's, else the config's data.input_size")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (PyTorch and onnxruntime)")
    parser.add_argument("--backends", default=None, help="comma-separated subset of eager,compiled,onnxruntime (default: all)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both runtimes (default: PyTorch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--config", type=Path, default=None, help="config (default: the one stored in the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="config overrides")


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    if args.checkpoint is None and args.onnx is None:
        raise Add3dError("pass --checkpoint CKPT and/or --onnx FILE")
    if args.batch_size < 1:
        raise Add3dError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = tuple(name.strip() for name in args.backends.split(",") if name.strip()) if args.backends else BACKENDS
    device = resolve_device(args.device, "--device")
    with tempfile.TemporaryDirectory(prefix="add3d_benchmark_") as scratch:
        runner = None
        onnx_path = args.onnx
        if onnx_path is None and "onnxruntime" in backends:
            onnx_path = Path(scratch) / "model.onnx"
            export_checkpoint(args.checkpoint, onnx_path, args.config, args.overrides, args.input_size,
                              batch_size=args.batch_size)
        if onnx_path is not None:
            runner = OnnxDetector(onnx_path, device=device.type)
        detector, cfg = None, None
        if args.checkpoint is not None:
            cfg = predict_config(args.checkpoint, args.config, args.overrides)
            detector = load_detector(cfg, args.checkpoint, device)
        if args.input_size is not None:
            size = tuple(args.input_size)
        elif runner is not None:
            size = tuple(runner.metadata.input_size)
        else:
            size = cfg.data.input_hw
        if runner is not None and (list(size) != list(runner.metadata.input_size) or args.batch_size != runner.metadata.batch_size):
            raise Add3dError(f"{onnx_path} was exported for batch {runner.metadata.batch_size} x "
                             f"{runner.metadata.input_size}; benchmark it at that size or re-export")
        model = cfg.model if cfg is not None else runner.config().model
        results = benchmark_inference(detector, runner, size, device, backends, args.batch_size, args.warmup, args.repeats)
    report = {
        "detector": model.name,
        "backbone": model.backbone,
        "input_size": list(size),
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    return 0


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
