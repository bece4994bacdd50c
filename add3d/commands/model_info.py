"""``add3d model-info CONFIG [overrides] [--json]``: parameters and GFLOPs of the configured detector
at the config's input size, per top-level module; for ADD configs also the training-only adapters.

Random weights, nothing downloaded (``model.pretrained`` is ignored) and no teacher checkpoint
needed: the counts depend on the architecture only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from add3d.engine.config import load_config
from add3d.engine.model_info import format_model_info, model_info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="a config file, e.g. configs/monodle/kitti.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides such as data.input_size=[384,1280]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, teacher_required=False)
    info = {"config": str(args.config), **model_info(cfg)}
    print(json.dumps(info, indent=2) if args.json else format_model_info(info))
    return 0
