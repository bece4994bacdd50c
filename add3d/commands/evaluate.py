"""``add3d eval CONFIG --checkpoint X [--split val] [--out DIR] [--submission ZIP]``.

Writes one KITTI result file per frame to OUT/predictions/, and -- when the split has labels --
the metric table (OUT/metrics.txt) and the values (OUT/metrics.json). ``--submission`` also packs
the predictions as a test-server zip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from add3d.engine import config, inference
from add3d.evaluation.kitti_eval import format_table
from add3d.fileio import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the config the checkpoint was trained with")
    parser.add_argument("overrides", nargs="*", help="config overrides such as data.root=/data/kitti")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by add3d train")
    parser.add_argument("--split", default=None, help="split name or ids file (default: data.val_split)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: OUT_DIR/eval_<split>)")
    parser.add_argument("--submission", type=Path, default=None, help="also write a test-server zip here")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--device", default=None, help="default: train.device")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    cfg = config.load_config(args.config, args.overrides, training=False)
    split = args.split or cfg.data.val_split
    out = args.out or Path(cfg.train.out_dir) / f"eval_{Path(split).stem}"
    dataset, predictions = inference.predict_split(cfg, args.checkpoint, split, args.batch_size, args.device,
                                                   progress=not args.quiet)
    inference.write_predictions(predictions, out / "predictions")
    print(f"wrote {len(predictions)} prediction files to {out / 'predictions'}")
    if dataset.frames.load_labels:
        ground_truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
        results = inference.evaluate_predictions(ground_truth, predictions, tuple(cfg.model.classes),
                                                 cfg.train.eval_overlap, cfg.train.eval_box2d_scale)
        table = format_table(results, cfg.train.eval_box2d_scale)
        print(table)
        atomic_write_text(out / "metrics.txt", table + "\n")
        atomic_write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        print(f"wrote {out / 'metrics.json'}")
    if args.submission is not None:
        inference.write_submission_zip(predictions, dataset.ids, args.submission)
        print(f"wrote {args.submission}")
    return 0
