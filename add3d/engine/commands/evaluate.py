"""``add3d eval CONFIG --checkpoint X [--split val] [--out DIR] [--submission ZIP]``.

Writes one KITTI result file per frame to OUT/predictions/, and -- when the split has labels --
the metric table (OUT/metrics.txt) and the values (OUT/metrics.json). ``--submission`` also packs
the predictions as a test-server zip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the config the checkpoint was trained with")
    parser.add_argument("overrides", nargs="*", help="config overrides such as data.root=/data/kitti")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by add3d train")
    parser.add_argument("--split", default=None, help="split name or ids file (default: data.val_split)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: OUT_DIR/eval_<split>)")
    parser.add_argument("--submission", type=Path, default=None, help="also write a test-server zip here")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--device", default=None, help="default: train.device")


def load_detector(cfg, checkpoint: Path, device):
    """The configured detector with the checkpoint's weights, on ``device``, in eval mode."""
    from add3d.engine.checkpoints import load_detector_weights
    from add3d.models import build_detector

    model_cfg = cfg.model
    if getattr(model_cfg, "pretrained", None):
        import dataclasses

        model_cfg = dataclasses.replace(model_cfg, pretrained=None)  # the checkpoint has all the weights
    detector = build_detector(model_cfg)
    load_detector_weights(detector, checkpoint)
    return detector.to(device).eval()


def predict_split(cfg, checkpoint: Path, split: str, batch_size: int | None = None, device_name: str | None = None):
    """(dataset, detections by frame id) of a split."""
    from add3d.data.mono_dataset import build_mono_dataset
    from add3d.engine.inference import predict_loader, resolve_device, set_threads
    from add3d.engine.modules import input_kind
    from add3d.engine.trainer import build_loader

    set_threads(cfg.train.threads)
    device = resolve_device(device_name or cfg.train.device)
    dataset = build_mono_dataset(cfg.data, split, augment=False, with_depth=input_kind(cfg.model) == "rgbd")
    loader = build_loader(dataset, batch_size or cfg.train.batch_size, cfg.train.workers)
    detector = load_detector(cfg, checkpoint, device)
    predictions = predict_loader(detector, loader, device, input_kind(cfg.model), cfg.teacher.depth_scale,
                                 cfg.model.score_threshold, description=f"predict {split}")
    return dataset, predictions


def run(args: argparse.Namespace) -> int:
    from add3d.engine.commands.export_submission import write_submission_zip
    from add3d.engine.config import load_config
    from add3d.engine.inference import evaluate_predictions, write_predictions
    from add3d.fileio import atomic_write_text

    cfg = load_config(args.config, args.overrides, training=False)
    split = args.split or cfg.data.val_split
    out = args.out or Path(cfg.train.out_dir) / f"eval_{Path(split).stem}"
    dataset, predictions = predict_split(cfg, args.checkpoint, split, args.batch_size, args.device)
    write_predictions(predictions, out / "predictions")
    print(f"wrote {len(predictions)} prediction files to {out / 'predictions'}")
    if dataset.frames.load_labels:
        from add3d.evaluation.kitti_eval import format_table

        ground_truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
        results = evaluate_predictions(ground_truth, predictions, tuple(cfg.data.classes), cfg.train.eval_overlap,
                                cfg.train.eval_box2d_scale)
        table = format_table(results, cfg.train.eval_box2d_scale)
        print(table)
        atomic_write_text(out / "metrics.txt", table + "\n")
        atomic_write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        print(f"wrote {out / 'metrics.json'}")
    if args.submission is not None:
        write_submission_zip(predictions, dataset.ids, args.submission)
        print(f"wrote {args.submission}")
    return 0
