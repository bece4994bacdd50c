"""``add3d show-frame --root ROOT [--id ID] [--depth lidar|none|FOLDER] --out PNG``: a frame's labels and depth."""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.data.dataset import KittiDataset
from add3d.data.depth_maps import lidar_depth_map
from add3d.errors import Add3dError
from add3d.viz.frame_figure import render_frame_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="KITTI root")
    parser.add_argument("--split", default="train", help="split name in ImageSets/ or ids file")
    parser.add_argument("--id", dest="frame_id", default=None, help="frame id (default: the split's first)")
    parser.add_argument("--depth", default="lidar",
                        help="'lidar' (project velodyne), 'none', or a depth-map folder name such as depth_object")
    parser.add_argument("--out", required=True, help="output PNG")


def run(args: argparse.Namespace) -> int:
    source = args.depth
    dataset = KittiDataset(args.root, args.split, load_lidar=source == "lidar",
                           depth_dir=None if source in ("lidar", "none") else source)
    frame_id = args.frame_id or dataset.ids[0]
    if frame_id not in dataset.ids:
        raise Add3dError(f"frame {frame_id} is not in split {args.split}")
    frame = dataset[dataset.ids.index(frame_id)]
    depth = frame.depth
    if source == "lidar":
        depth = lidar_depth_map(frame.lidar, frame.calib, frame.image.shape[1::-1])
    render_frame_figure(frame, depth, args.out, title=f"{Path(args.root).name} {frame_id}")
    print(f"wrote {args.out}")
    return 0
