"""``add3d predict (--checkpoint X | --onnx FILE) --images DIR|FILE --calib FILE|DIR --out DIR [--vis]``.

3D detection on your own images. The camera is given by a KITTI calib file (P2 is used), a file
with a ``P2:`` line, or a plain 3x4 projection / 3x3 intrinsic matrix (12 or 9 numbers). One calib
FILE applies to every image; a calib DIR holds ``<image stem>.txt`` per image. Results: OUT/<stem>.txt
in KITTI format (with scores) and, with ``--vis``, OUT/vis/<stem>.png (3D boxes + bird's-eye view).
The model comes from the checkpoint's stored config unless ``--config`` is given; ``--onnx`` runs a
file written by ``add3d export-onnx`` through onnxruntime instead (CUDA provider when present), with
the same preprocessing and the same decoding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.data.kitti import read_image, write_label
from add3d.data.own_images import calib_for, list_images, read_camera
from add3d.deploy.onnx_runtime import OnnxDetector
from add3d.engine.inference import load_detector, predict_config, predict_image, resolve_device, set_threads
from add3d.errors import Add3dError
from add3d.progress import progress
from add3d.viz.prediction_figure import save_prediction_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="a checkpoint written by add3d train")
    model.add_argument("--onnx", type=Path, help="a file written by add3d export-onnx (run by onnxruntime)")
    parser.add_argument("--images", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--calib", type=Path, required=True, help="calibration file (all images) or folder (<stem>.txt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--vis", action="store_true", help="also draw 3D boxes and a bird's-eye view per image")
    parser.add_argument("--config", type=Path, default=None, help="config (default: the one stored in the checkpoint)")
    parser.add_argument("--score-threshold", type=float, default=None, help="default: the config's model.score_threshold")
    parser.add_argument("--device", default=None, help="default: the config's train.device (--onnx: auto)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.input_size=[384,1280]")


def run(args: argparse.Namespace) -> int:
    if args.onnx is not None:
        import torch

        if args.config is not None or args.overrides:
            raise Add3dError("--onnx takes its settings from the file's metadata; --config and overrides apply to --checkpoint")
        detector = OnnxDetector(args.onnx, device=args.device or "auto")
        detector.require_rgb()
        cfg, device = detector.config(), torch.device("cpu")  # onnxruntime takes host arrays
    else:
        cfg = predict_config(args.checkpoint, args.config, args.overrides)
        set_threads(cfg.train.threads)
        device = resolve_device(args.device, "--device") if args.device else resolve_device(cfg.train.device)
        detector = load_detector(cfg, args.checkpoint, device)
    threshold = cfg.model.score_threshold if args.score_threshold is None else args.score_threshold
    images = list_images(args.images)
    cameras = [read_camera(calib_for(path, args.calib)) for path in images]  # all checked before any output
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path, calib in progress(zip(images, cameras), total=len(images), desc="predict", unit="image"):
        image = read_image(path)
        objects = predict_image(detector, path.stem, image, calib, cfg, device, threshold)
        total += len(objects)
        write_label(args.out / f"{path.stem}.txt", objects)
        if args.vis:
            save_prediction_figure(args.out / "vis" / f"{path.stem}.png", image, objects, calib.P2)
    print(f"{len(images)} images, {total} detections; results in {args.out}")
    return 0
