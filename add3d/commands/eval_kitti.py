"""``add3d eval-kitti --gt LABEL_DIR --pred PRED_DIR [--ids IDS_FILE] [--json OUT.json]``: official KITTI AP of a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from add3d.evaluation.kitti_eval import CLASSES, MIN_OVERLAP, evaluate_dirs, format_table
from add3d.fileio import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, type=Path, metavar="LABEL_DIR", help="ground-truth label folder (label_2)")
    parser.add_argument("--pred", required=True, type=Path, metavar="PRED_DIR", help="prediction folder (one <id>.txt per frame)")
    parser.add_argument("--ids", type=Path, default=None, metavar="IDS_FILE", help="ids file (e.g. ImageSets/val.txt); default all GT files")
    parser.add_argument("--classes", nargs="+", default=list(CLASSES), choices=list(CLASSES), metavar="CLASS",
                        help="classes to evaluate (Car Pedestrian Cyclist)")
    parser.add_argument("--overlap", choices=sorted(MIN_OVERLAP), default="default",
                        help="default: 0.7/0.5/0.5; loose: BEV/3D at 0.5/0.25/0.25")
    parser.add_argument("--box2d-scale", type=float, default=1.0, metavar="S",
                        help="multiply all 2D boxes by S first, so the 40/25 px difficulty heights act on "
                             "down-scaled frames as on KITTI-sized ones (4 for `add3d synth --scale 0.25`); "
                             "not the official protocol unless 1")
    parser.add_argument("--strict", action="store_true",
                        help="refuse lines the devkit reads but that are odd (inverted 2D boxes) instead of "
                             "scoring them as it does")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a missing prediction file as a frame without detections (default: error)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the AP values (percent) to this JSON file")


def run(args: argparse.Namespace) -> int:
    result = evaluate_dirs(args.gt, args.pred, ids=args.ids, classes=args.classes, overlap=args.overlap,
                           box2d_scale=args.box2d_scale, strict=args.strict, missing_as_empty=args.missing_as_empty)
    print(format_table(result, args.box2d_scale))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
