"""``add3d import-monodle SRC DST [--classes ...]``: the older name of
``add3d import-checkpoint --detector monodle`` (see add3d/commands/import_checkpoint.py)."""

from __future__ import annotations

import argparse

from add3d.commands import import_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import_checkpoint.add_source_arguments(parser)
    parser.add_argument("--classes", nargs="+", help="class order of the add3d config (default: Car Pedestrian Cyclist)")


def run(args: argparse.Namespace) -> int:
    args.detector = "monodle"
    if args.classes:
        names = ",".join(args.classes)
        args.overrides = [*args.overrides, f"model.classes=[{names}]"]
    return import_checkpoint.run(args)
