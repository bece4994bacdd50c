"""The ``add3d`` command line.

Every sub-command is a module of :mod:`add3d.commands` with ``add_arguments(parser)`` and
``run(args) -> int``, listed once in :data:`COMMANDS`. User errors (:class:`add3d.errors.Add3dError`)
become a one-line message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from types import ModuleType

from add3d import __version__
from add3d.commands import (
    benchmark_inference,
    config,
    demo,
    eval_kitti,
    evaluate,
    export_onnx,
    export_submission,
    import_checkpoint,
    import_monodle,
    make_depth,
    model_info,
    predict,
    show_frame,
    show_predictions,
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
    ("export-onnx", export_onnx, "export a checkpoint's detector to ONNX (metadata for consumers, checked against PyTorch)"),
    ("benchmark-inference", benchmark_inference, "latency and images/s of PyTorch eager / compiled / onnxruntime as JSON"),
    ("show-predictions", show_predictions, "predictions vs labels of a split, worst frames first: pictures + HTML gallery"),
    ("eval-kitti", eval_kitti, "official KITTI AP (2D/BEV/3D/AOS, R11+R40) of a prediction folder"),
    ("import-checkpoint", import_checkpoint, "convert a released MonoDLE / GUPNet / MonoFlex checkpoint to an add3d checkpoint"),
    ("import-monodle", import_monodle, "alias of import-checkpoint --detector monodle"),
    ("config", config, "show a resolved config (config show CONFIG [overrides]) or list the shipped ones"),
    ("model-info", model_info, "parameters and GFLOPs per module at the config's input size (+ ADD's training-only adapters)"),
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


def _sub_commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((action for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; options and ``key=value`` overrides may come in any order."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # argparse's intermixed parsing (positionals after options) does not work through sub-parsers,
    # so the innermost chosen (sub-)command's own parser does it.
    chosen, chain = {}, [parser]
    while (sub := _sub_commands(chain[-1])) is not None and len(chain) <= len(argv) and argv[len(chain) - 1] in sub.choices:
        chosen[sub.dest] = argv[len(chain) - 1]
        chain.append(sub.choices[argv[len(chain) - 1]])
    leaf, rest = chain[-1], argv[len(chain) - 1:]
    if leaf is parser or _sub_commands(leaf) is not None or {"-h", "--help"} & set(rest):
        return parser.parse_args(argv)  # help, errors and incomplete commands: argparse's own messages
    args = leaf.parse_intermixed_args(rest)
    for dest, name in chosen.items():
        setattr(args, dest, name)
    for outer in chain[1:-1]:  # defaults of the enclosing commands (e.g. their run function)
        for key, value in outer._defaults.items():
            if not hasattr(args, key):
                setattr(args, key, value)
    return args


def _print_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"add3d {command}: warning: {message}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning(args.command)
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
