"""``add3d export-onnx --checkpoint CKPT --out model.onnx [--input-size H W] [--opset N]``.

Writes the checkpoint's detector (MonoDLE, GUPNet, MonoFlex; an ADD student is a plain detector) as
one ONNX file whose metadata says how to feed it and decode it (docs/DEPLOY.md), then runs the file
with onnxruntime on the same input as PyTorch and prints the largest output difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.deploy.export_checkpoint import export_checkpoint
from add3d.deploy.onnx_metadata import DEFAULT_OPSET


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by add3d train")
    parser.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="network input size, multiples of 32 (default: the config's data.input_size)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--batch-size", type=int, default=1, help="fixed batch size of the graph (default 1)")
    parser.add_argument("--config", type=Path, default=None, help="config (default: the one stored in the checkpoint)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.score_threshold=0.3")


def run(args: argparse.Namespace) -> int:
    report = export_checkpoint(args.checkpoint, args.out, args.config, args.overrides, args.input_size,
                               args.opset, args.batch_size, args.force)
    worst = max(report["max_output_difference"].items(), key=lambda item: item[1])
    print(f"wrote {args.out} ({report['detector']}, input {report['input_size'][0]}x{report['input_size'][1]}, "
          f"opset {args.opset}, {len(report['outputs'])} outputs); onnxruntime vs PyTorch: "
          f"max |difference| {worst[1]:.2g} ({worst[0]})")
    return 0
