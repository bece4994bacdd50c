"""``add3d make-depth --root ROOT --source lidar|object``: teacher depth maps as 16-bit PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.data.dataset import KittiDataset
from add3d.data.depth_maps import lidar_depth_map, object_depth_map, write_depth_png
from add3d.data.kitti import read_calib, read_image, read_label, read_velodyne
from add3d.progress import progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="KITTI root (holding training/ and ImageSets/)")
    parser.add_argument("--split", default="train", help="split name in ImageSets/ or path to an ids file")
    parser.add_argument("--source", choices=("lidar", "object"), required=True,
                        help="lidar: projected velodyne points; object: 3D boxes from label_2")
    parser.add_argument("--out", default=None, help="output folder (default ROOT/training/depth_<source>)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite maps that already exist")


def run(args: argparse.Namespace) -> int:
    dataset = KittiDataset(args.root, args.split, load_labels=args.source == "object")
    out_dir = Path(args.out) if args.out else dataset.subset_dir / f"depth_{args.source}"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for frame_id in progress(dataset.ids, total=len(dataset.ids), desc=f"depth_{args.source}", unit="frame"):
        target = out_dir / f"{frame_id}.png"
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        height, width = read_image(dataset.path("image_2", frame_id)).shape[:2]
        calib = read_calib(dataset.path("calib", frame_id))
        if args.source == "lidar":
            points = read_velodyne(dataset.path("velodyne", frame_id))
            depth = lidar_depth_map(points, calib, (width, height))
        else:
            objects = read_label(dataset.path("label_2", frame_id), allow_score=False)
            depth = object_depth_map(objects, calib, (width, height))
        write_depth_png(target, depth)
        written += 1
    print(f"wrote {written} depth maps to {out_dir} ({skipped} already present)")
    return 0
