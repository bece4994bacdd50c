"""``add3d export-submission CONFIG --checkpoint X --out results.zip [--split test]``.

The KITTI object test server takes a zip of one ``NNNNNN.txt`` result file per test image (label_2
format with the score as the 16th value), every image listed, empty files allowed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.engine import config, inference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the config the checkpoint was trained with")
    parser.add_argument("overrides", nargs="*", help="config overrides such as data.root=/data/kitti")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="zip file to write")
    parser.add_argument("--split", default=None, help="default: data.test_split (ROOT/testing/)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    cfg = config.load_config(args.config, args.overrides, training=False)
    split = args.split or cfg.data.test_split
    dataset, predictions = inference.predict_split(cfg, args.checkpoint, split, args.batch_size, args.device)
    inference.write_submission_zip(predictions, dataset.ids, args.out)
    count = sum(len(v) for v in predictions.values())
    print(f"wrote {args.out}: {len(dataset.ids)} result files, {count} detections")
    return 0
