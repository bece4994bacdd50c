"""The ``add3d`` command line.

Each sub-command lives next to the code it drives and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch) stay inside ``run`` so
that ``add3d --help`` is instant. User errors (:class:`add3d.errors.Add3dError`) become a one-line
message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command name, module path, one-line help). Order is the order shown by --help.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "add3d.demo", "the whole pipeline on synthetic data: baseline, teacher, ADD student, report"),
    ("make-depth", "add3d.data.depth_maps", "write teacher depth maps (LiDAR or object-wise) as 16-bit PNG"),
    ("synth", "add3d.data.synthetic", "write synthetic KITTI-format scenes (images, labels, LiDAR, dense depth)"),
    ("show-frame", "add3d.viz.show_frame", "draw a frame's labelled 3D boxes and depth into a PNG"),
    ("train", "add3d.engine.commands.train", "train a detector, depth teacher or ADD student from a YAML config"),
    ("eval", "add3d.engine.commands.evaluate", "predict a split with a checkpoint; write KITTI results and the metric table"),
    ("predict", "add3d.engine.commands.predict", "3D detection on your own images (KITTI txt, optional drawings)"),
    ("export-submission", "add3d.engine.commands.export_submission", "zip test-split predictions for the KITTI server"),
    ("eval-kitti", "add3d.evaluation.kitti_eval", "official KITTI AP (2D/BEV/3D/AOS, R11+R40) of a prediction folder"),
    ("import-monodle", "add3d.models.import_monodle", "convert a released MonoDLE checkpoint (xinzhuma/monodle) to add3d weights"),
]


def build_parser() -> argparse.ArgumentParser:
    from add3d import __version__

    parser = argparse.ArgumentParser(prog="add3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"add3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path, help_text in COMMANDS:
        module = importlib.import_module(module_path)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from add3d.errors import Add3dError

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
