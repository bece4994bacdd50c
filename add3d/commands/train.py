"""``add3d train CONFIG [key=value ...] [--resume [CHECKPOINT] | --force] [--quiet]``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m add3d train CONFIG`` (train.batch_size is
the global batch). ``--resume`` alone continues from OUT_DIR/checkpoint_last.pth. A run folder that
holds checkpoints is refused unless ``--resume`` or ``--force`` (the earlier run moves to
OUT_DIR/previous_<n>/).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from add3d.engine import config, distributed, trainer
from add3d.errors import Add3dError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config, e.g. configs/monodle/kitti.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=10 optim.lr=1e-3")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                        help="continue a run: a checkpoint path, or nothing for the run's checkpoint_last.pth")
    parser.add_argument("--force", action="store_true",
                        help="start afresh in a folder holding an earlier run (its files move to previous_<n>/)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no per-epoch lines")


def summary_line(summary: dict) -> str:
    """What a finished run prints; no best value when nothing was validated."""
    line = f"done: {summary['epochs']} epochs, {summary['steps']} steps"
    if not summary["last_metrics"]:
        line += "; not validated (train.eval_every: -1)"
    elif math.isfinite(summary["best_metric"]):
        line += f"; best {summary['best_metric_name']} = {summary['best_metric']:.2f}"
    return line + f"; outputs in {summary['out_dir']}"


def run(args: argparse.Namespace) -> int:
    if args.resume not in (None, "last") and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: the option takes an optional value, so an override written right
        # after it lands here; overrides may come anywhere, so it is one.
        args.overrides, args.resume = [*args.overrides, args.resume], "last"
    cfg = config.load_config(args.config, args.overrides)
    resume = args.resume
    if resume == "last":
        resume = Path(cfg.train.out_dir) / trainer.LAST_CHECKPOINT
        if not resume.is_file():
            raise Add3dError(f"--resume: no {trainer.LAST_CHECKPOINT} in {cfg.train.out_dir} to continue from")
    finished = False
    try:
        summary = trainer.train(cfg, resume=resume, force=args.force, quiet=args.quiet)
        finished = True
    finally:
        distributed.shutdown_distributed(wait_for_peers=finished)
    if summary["rank"] == 0:
        print(summary_line(summary))
    return 0
