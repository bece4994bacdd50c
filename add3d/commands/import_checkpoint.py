"""``add3d import-checkpoint --detector monodle|gupnet|monoflex SRC DST [--config C] [overrides]``.

Turns a checkpoint released with the official code (xinzhuma/monodle, SuperMHP/GUPNet,
zhangyp15/MonoFlex) into an add3d checkpoint: the detector's ``official_config`` and
``convert_official`` (``add3d.models.DETECTORS``) rename the weights, reorder the classes and set
the model options the weights need (class means, size encoding, ``model.compat: official`` for
MonoDLE and GUPNet; MonoFlex's converter checks the options it needs), the
result is strict-loaded into the detector, and DST holds ``model``, the full ``config`` and the
``input_spec`` -- what ``add3d eval`` / ``predict`` / ``export-onnx`` and ``train.init_checkpoint``
read. SRC is a local file or an http(s) URL (downloaded once into the torch hub cache).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from add3d.distill.teacher_input import InputSpec
from add3d.engine import config
from add3d.errors import Add3dError
from add3d.fileio import atomic_save
from add3d.models import build_detector, detector_entry
from add3d.models.pretrained import load_strict, read_state_dict

DETECTOR_NAMES = ("monodle", "gupnet", "monoflex")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """SRC, DST, --config, overrides, --force (shared with the ``import-monodle`` alias)."""
    parser.add_argument("source", help="released checkpoint: a local .pth file or an http(s) URL")
    parser.add_argument("output", type=Path, help="add3d checkpoint to write")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.classes=[Car]")
    parser.add_argument("--config", type=Path, help="config to start from (default: the built-in defaults)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", required=True, choices=DETECTOR_NAMES, help="whose release SRC is")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.force:
        raise Add3dError(f"{args.output} exists; pass --force to overwrite it")
    entry = detector_entry(args.detector)
    if entry.convert_official is None:
        raise Add3dError(f"no converter for released {args.detector} checkpoints yet")
    cfg = config.load_config(args.config, [f"model.name={args.detector}", *args.overrides], training=False)
    if cfg.model.name != args.detector:
        raise Add3dError(f"--detector {args.detector} but the config's model.name is {cfg.model.name}")
    release = read_state_dict(args.source)  # unwraps {'model_state': ...}; URLs go through the hub cache
    if entry.official_config is not None:
        cfg.model = entry.official_config(release, cfg.model)
    cfg.model = dataclasses.replace(cfg.model, pretrained=None)  # the checkpoint has all the weights
    try:
        config.validate_config(cfg, training=False)
    except Add3dError as error:
        raise Add3dError(f"{args.source}: the imported config is invalid ({error})") from None
    converted = entry.convert_official(release, cfg.model)
    load_strict(build_detector(cfg.model), converted, f"{args.source}: converted {args.detector} weights")
    checkpoint = {
        "model": converted,
        "config": config.config_to_dict(cfg),
        "input_spec": InputSpec(kind="rgb").to_dict(),
        "imported_from": str(args.source),
    }
    atomic_save(args.output, lambda tmp: torch.save(checkpoint, tmp))
    print(f"wrote {args.output}: {args.detector} ({len(converted)} tensors, classes {', '.join(cfg.model.classes)}, "
          f"model.compat={cfg.model.compat})")
    return 0
