"""``add3d synth``: write synthetic KITTI-format scenes (and optionally the docs' figures)."""

from __future__ import annotations

import argparse

from add3d.data.synthetic import generate_dataset
from add3d.viz.synthetic_figures import save_examples_figure, save_stats_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output KITTI root (must be empty unless --force)")
    parser.add_argument("--frames", type=int, default=1000, help="number of frames (default 1000)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of frames in ImageSets/val.txt")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default 1242)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default 375)")
    parser.add_argument("--scale", type=float, default=None, help="image size as a fraction of KITTI's 1242x375")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed + options = same files")
    parser.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder, overwriting files")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="also save a grid of the first frames with their 3D boxes drawn")
    parser.add_argument("--stats", default=None, metavar="PNG",
                        help="also save the difficulty / depth statistics figure of all labels")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    summary = generate_dataset(
        args.out, frames=args.frames, val_fraction=args.val_fraction, width=args.width, height=args.height,
        scale=args.scale, seed=args.seed, workers=args.workers, force=args.force, progress=not args.quiet,
    )
    objects = ", ".join(f"{name} {count}" for name, count in sorted(summary["objects"].items()))
    print(f"wrote {args.frames} frames ({summary['width']}x{summary['height']}) to {args.out}: "
          f"{len(summary['train'])} train, {len(summary['val'])} val; objects: {objects}")
    if args.preview:
        save_examples_figure(args.out, args.preview)
        print(f"preview: {args.preview}")
    if args.stats:
        table = save_stats_figure(args.out, args.stats)
        print(f"statistics figure: {args.stats}")
        print(table)
    return 0
