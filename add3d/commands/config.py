"""``add3d config show CONFIG [key=value ...]`` and ``add3d config list``.

``show`` prints the config as training would use it: every ``_base_`` merged, the overrides
applied, validated, every key with its value (the same YAML a run writes to OUT_DIR/config.yaml).
``list`` prints the shipped configs, one line each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from add3d.engine.config import config_to_yaml, load_config, shipped_configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved, validated config",
                              description="print the resolved, validated config (bases merged, overrides applied)")
    show.add_argument("config", type=Path, help="YAML config, e.g. configs/monodle/kitti.yaml")
    show.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=10")
    show.set_defaults(_action=run_show)
    listing = actions.add_parser("list", help="the shipped configs, one line each", description="the shipped configs, one line each")
    listing.set_defaults(_action=run_list)


def run_show(args: argparse.Namespace) -> int:
    print(config_to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    entries = shipped_configs()
    width = max(len(str(path)) for path, _ in entries)
    for path, summary in entries:
        print(f"{str(path):<{width}}  {summary}")
    return 0


def run(args: argparse.Namespace) -> int:
    return args._action(args)
