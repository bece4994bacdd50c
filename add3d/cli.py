"""The ``add3d`` command line.

Every sub-command is a module of :mod:`add3d.commands` with ``add_arguments(parser)`` and
``run(args) -> int``, listed once in :data:`COMMANDS`. User errors (:class:`add3d.errors.Add3dError`)
become a one-line message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from add3d import __version__
from add3d.commands import (
    demo,
    eval_kitti,
    evaluate,
    export_submission,
    import_monodle,
    make_depth,
    predict,
    show_frame,
    synth,
    train,
)
from add3d.errors import Add3dError

# (command name, module, one-line help). Order is the order shown by --help.
COMMANDS: list[tuple[str, ModuleType, str]] = [
    ("demo", demo, "the whole pipeline on synthetic data: baseline, teacher, ADD student, report"),
    ("make-depth", make_depth, "write teacher depth maps (LiDAR or object-wise) as 16-bit PNG"),
    ("synth", synth, "write synthetic KITTI-format scenes (images, labels, LiDAR, dense depth)"),
    ("show-frame", show_frame, "draw a frame's labelled 3D boxes and depth into a PNG"),
    ("train", train, "train a detector, depth teacher or ADD student from a YAML config"),
    ("eval", evaluate, "predict a split with a checkpoint; write KITTI results and the metric table"),
    ("predict", predict, "3D detection on your own images (KITTI txt, optional drawings)"),
    ("export-submission", export_submission, "zip test-split predictions for the KITTI server"),
    ("eval-kitti", eval_kitti, "official KITTI AP (2D/BEV/3D/AOS, R11+R40) of a prediction folder"),
    ("import-monodle", import_monodle, "convert a released MonoDLE checkpoint (xinzhuma/monodle) to add3d weights"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="add3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"add3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except Add3dError as error:
        print(f"add3d {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"add3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
