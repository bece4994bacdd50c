"""``add3d demo [--out runs/demo] [--quick]``: the whole ADD pipeline on synthetic data (add3d.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.demo import run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (data, runs, report)")
    parser.add_argument("--quick", action="store_true", help="tiny budget smoke check (~3 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for data generation; with 2 or more the baseline and the teacher train side by side")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain every model (default: a rerun reuses finished trainings in --out)")


def run(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), quick=args.quick, seed=args.seed, workers=args.workers, fresh=args.fresh)
    return 0
