"""``add3d export-submission CONFIG --checkpoint X --out results.zip [--split test]``.

The KITTI object test server takes a zip of one ``NNNNNN.txt`` result file per test image (label_2
format with the score as the 16th value), every image listed, empty files allowed.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the config the checkpoint was trained with")
    parser.add_argument("overrides", nargs="*", help="config overrides such as data.root=/data/kitti")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="zip file to write")
    parser.add_argument("--split", default=None, help="default: data.test_split (ROOT/testing/)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default=None)


def write_submission_zip(predictions: dict, ids: list[str], path: Path) -> None:
    """Zip one result file per id (empty when there is no detection), written atomically."""
    from add3d.fileio import atomic_path

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for frame_id in ids:
                text = "".join(obj.to_line() + "\n" for obj in predictions.get(frame_id, []))
                archive.writestr(f"{frame_id}.txt", text)


def run(args: argparse.Namespace) -> int:
    from add3d.engine.commands.evaluate import predict_split
    from add3d.engine.config import load_config

    cfg = load_config(args.config, args.overrides, training=False)
    split = args.split or cfg.data.test_split
    dataset, predictions = predict_split(cfg, args.checkpoint, split, args.batch_size, args.device)
    write_submission_zip(predictions, dataset.ids, args.out)
    count = sum(len(v) for v in predictions.values())
    print(f"wrote {args.out}: {len(dataset.ids)} result files, {count} detections")
    return 0
