"""``add3d import-monodle``: turn a released MonoDLE checkpoint (xinzhuma/monodle) into add3d weights.

The result is an add3d checkpoint holding only ``model``; evaluate it with ``add3d eval`` /
``predict`` and a MonoDLE config with ``model.backbone: dla34`` and ``model.use_mean_size: false``
(the release regresses absolute sizes).
"""

from __future__ import annotations

import argparse

from add3d.fileio import atomic_save
from add3d.models import ModelConfig, build_detector, pretrained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", help="MonoDLE checkpoint, e.g. checkpoint_epoch_140.pth (has 'model_state')")
    parser.add_argument("output", help="add3d checkpoint to write")
    parser.add_argument(
        "--classes", nargs="+", default=["Car", "Pedestrian", "Cyclist"], help="class order of the add3d config"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    release = pretrained.read_state_dict(args.release)  # unwraps {'model_state': ...}
    converted = pretrained.convert_monodle_release(release, list(args.classes))
    detector = build_detector(ModelConfig(classes=list(args.classes), use_mean_size=False))
    pretrained.load_strict(detector, converted, f"{args.release}: converted MonoDLE weights")
    atomic_save(args.output, lambda tmp: torch.save({"model": converted}, tmp))
    print(f"wrote {args.output} ({len(converted)} tensors); use it with model.use_mean_size: false")
    return 0
