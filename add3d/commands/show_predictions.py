"""``add3d show-predictions (--checkpoint CKPT | --onnx FILE | --predictions DIR) --out DIR [--split val]``.

Predictions of a labelled split against its labels, worst frames first: OUT/index.html (a table of
every frame: labelled, found, missed, false positives, depth errors) and OUT/frames/<id>.png for the
``--limit`` worst ones (3D boxes on the image, bird's-eye view coloured by depth error).
``--predictions`` reviews an existing folder of KITTI result files instead of running a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.data.dataset import KittiDataset
from add3d.data.kitti import read_label
from add3d.deploy.onnx_runtime import OnnxDetector, predict_split_onnx
from add3d.engine.inference import predict_config, predict_split
from add3d.errors import Add3dError
from add3d.evaluation.frame_review import ORDERS
from add3d.viz.gallery import write_review


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by add3d train")
    source.add_argument("--onnx", type=Path, help="a file written by add3d export-onnx")
    source.add_argument("--predictions", type=Path, help="a folder of KITTI result files <id>.txt")
    parser.add_argument("--out", type=Path, required=True, help="output folder (index.html, frames/)")
    parser.add_argument("--root", default=None, help="KITTI folder (default: the checkpoint config's data.root)")
    parser.add_argument("--split", default=None, help="split name or ids file (default: data.val_split / val)")
    parser.add_argument("--order", choices=ORDERS, default="missed", help="worst first by missed objects or by depth error")
    parser.add_argument("--limit", type=int, default=50, help="pictures for the N worst frames (default 50)")
    parser.add_argument("--min-score", type=float, default=0.0, help="ignore predictions scored below this")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="classes to review (default: the model's; Car Pedestrian Cyclist for --predictions)")
    parser.add_argument("--device", default=None, help="default: the config's train.device (onnx: auto)")
    parser.add_argument("--config", type=Path, default=None, help="config (default: the one stored in the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="config overrides for --checkpoint")


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise Add3dError(f"--limit must be >= 0, got {args.limit}")
    split = args.split
    if args.checkpoint is not None:
        overrides = list(args.overrides) + ([f"data.root={args.root}"] if args.root else [])
        cfg = predict_config(args.checkpoint, args.config, overrides)
        split = split or cfg.data.val_split
        dataset, predictions = predict_split(cfg, args.checkpoint, split, device_name=args.device)
        frames, classes = dataset.frames, tuple(cfg.model.classes)
    elif args.onnx is not None:
        if args.root is None:
            raise Add3dError("--onnx needs --root (the KITTI folder)")
        runner = OnnxDetector(args.onnx, device=args.device or "auto")
        split = split or "val"
        dataset, predictions = predict_split_onnx(runner, args.root, split)
        frames, classes = dataset.frames, tuple(runner.metadata.classes)
    else:
        if args.root is None:
            raise Add3dError("--predictions needs --root (the KITTI folder with the labels)")
        split = split or "val"
        frames = KittiDataset(args.root, split)
        predictions = {}
        for frame_id in frames.ids:
            path = args.predictions / f"{frame_id}.txt"
            if not path.is_file():
                raise Add3dError(f"{path}: no result file for frame {frame_id} of split '{split}'")
            predictions[frame_id] = read_label(path)
        classes = ("Car", "Pedestrian", "Cyclist")
    if not frames.load_labels:
        raise Add3dError(f"split '{split}' has no labels to compare with")
    classes = tuple(args.classes) if args.classes else classes
    source = args.checkpoint or args.onnx or args.predictions
    reviews = write_review(args.out, frames, predictions, classes, args.order, args.limit, args.min_score,
                           title=f"{Path(source).name} on {Path(str(frames.root)).name} / {split}")
    worst = reviews[0] if reviews else None
    print(f"reviewed {len(reviews)} frames; worst: {worst.frame_id if worst else '-'}; wrote {args.out / 'index.html'}")
    return 0
