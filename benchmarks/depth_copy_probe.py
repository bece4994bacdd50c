"""How precisely can a detector's trunk COPY its depth input? The ceiling of a depth teacher.

A depth teacher must carry the depth it is given through its backbone, neck and depth head to the
object's centre cell. This script measures how well the teacher's own network (a config with
``model.in_channels: 5`` and a detector with a dense depth head: MonoDLE) learns the simplest
version of that: every detection loss replaced by one dense term, the depth head's log depth at
every stride cell against the log of the cell's nearest LiDAR return (the smallest valid input depth
in the cell), trained with the config's data pipeline, augmentation, optimiser and schedule. It then
reports, on the validation split, the median relative error of that copy over all cells with LiDAR
and at the labelled cars' centre cells, split by true depth (``add3d.engine.probes.median_by_range``).

A teacher's centre-depth error cannot be expected below this copy error at the same budget: reading
the depth at a car's centre is this copy plus a learnt surface-to-centre offset. Measured: the
benchmark's teachers are within 10 % of it, the demo's no worse (docs/RESULTS.md, "Why the teacher
stops near 0.6x"; records in benchmarks/records/copy_probe/).

    .venv/bin/python benchmarks/depth_copy_probe.py configs/monodle/synthetic_teacher.yaml \
        data.root=D train.epochs=12 'schedule.milestones=[7]' train.seed=0

Prints one JSON object. CPU-sized runs: the 640-frame demo data take ~3.5 min on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler
from tqdm import tqdm

from add3d.data.loader import build_loader
from add3d.data.mono_dataset import build_mono_dataset
from add3d.distill.teacher_input import make_teacher_input
from add3d.engine.config import load_config
from add3d.engine.modules import input_spec_from_config
from add3d.engine.probes import median_by_range
from add3d.engine.optim import build_optimizer, build_scheduler
from add3d.engine.seed import seed_everything
from add3d.errors import Add3dError
from add3d.models import build_detector, detector_entry


def nearest_return_per_cell(depth: torch.Tensor, stride: int) -> torch.Tensor:
    """B x 1 x H x W metric depth (0 = no return) -> B x h x w: each stride cell's smallest valid depth, 0 if none."""
    unknown = torch.finfo(depth.dtype).max
    nearest = -F.max_pool2d(-torch.where(depth > 0, depth, torch.full_like(depth, unknown)), stride)
    return torch.where(nearest < unknown, nearest, torch.zeros_like(nearest))[:, 0]


def copy_loss(predicted_depth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |ln predicted - ln target| over the cells with a target (0 = none)."""
    known = target > 0
    if not known.any():
        return predicted_depth.sum() * 0.0
    return (torch.log(predicted_depth[known].clamp(min=1e-3)) - torch.log(target[known])).abs().mean()


def cell_depth(detector: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The depth the detector's depth head decodes at every cell: B x h x w (metres)."""
    outputs = detector(inputs)
    rows, cols = outputs["heatmap"].shape[-2:]
    indices = torch.arange(rows * cols, device=inputs.device).expand(inputs.shape[0], -1)
    return detector.object_depth(outputs, {"indices": indices}, {}).reshape(-1, rows, cols)


def train_copy(cfg, detector: torch.nn.Module) -> list[float]:
    """Train ``detector`` on the copy task with ``cfg``'s data, optimiser and schedule; the epoch losses."""
    spec = input_spec_from_config(cfg)
    dataset = build_mono_dataset(cfg.data, cfg.data.train_split, augment=True, seed=cfg.train.seed,
                                 classes=cfg.model.classes)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.train.seed))
    loader = build_loader(dataset, cfg.train.batch_size, cfg.train.workers, sampler, cfg.train.seed)
    optimizer = build_optimizer(detector, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, len(loader))
    losses = []
    for epoch in range(cfg.train.epochs):
        dataset.set_epoch(epoch)  # augmentation draws are a function of (seed, epoch, sample)
        detector.train()
        total, batches = 0.0, 0
        for batch in tqdm(loader, desc=f"copy epoch {epoch + 1}/{cfg.train.epochs}", leave=False, file=sys.stderr):
            loss = copy_loss(cell_depth(detector, make_teacher_input(batch, spec)),
                             nearest_return_per_cell(batch["depth"], detector.stride))
            optimizer.zero_grad()
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(detector.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            total, batches = total + float(loss), batches + 1
        losses.append(total / max(batches, 1))
    return losses


@torch.no_grad()
def copy_errors(cfg, detector: torch.nn.Module, max_frames: int) -> dict:
    """Median relative copy error over every cell with LiDAR and at the labelled cars' centre cells."""
    spec = input_spec_from_config(cfg)
    dataset = build_mono_dataset(cfg.data, cfg.data.val_split, classes=cfg.model.classes)
    car = list(cfg.model.classes).index("Car")
    detector.eval()
    cell_errors, car_errors, car_depths = [], [], []
    for index in tqdm(range(min(max_frames, len(dataset))), desc="copy errors", leave=False, file=sys.stderr):
        sample = dataset[index]
        batch = {key: sample[key][None] for key in ("image", "depth", "depth_valid")}
        predicted = cell_depth(detector, make_teacher_input(batch, spec))[0]
        target = nearest_return_per_cell(batch["depth"], detector.stride)[0]
        known = target > 0
        cell_errors.append(((predicted[known] - target[known]).abs() / target[known]).numpy())
        targets = sample["targets"]
        for slot in torch.nonzero((targets["mask_2d"] > 0) & (targets["cls_ids"] == car)).flatten().tolist():
            row, col = divmod(int(targets["indices"][slot]), target.shape[1])
            if target[row, col] > 0:
                car_errors.append(float((predicted[row, col] - target[row, col]).abs() / target[row, col]))
                car_depths.append(float(targets["depth"][slot, 0]))
    cells = np.concatenate(cell_errors) if cell_errors else np.zeros(0)
    errors = np.array(car_errors)
    return {
        "cells": int(cells.size),
        "cell_copy_median_rel": round(float(np.median(cells)), 4) if cells.size else None,
        "cars": int(errors.size),
        "car_centre_copy_median_rel": round(float(np.median(errors)), 4) if errors.size else None,
        "car_centre_copy_by_range": median_by_range(torch.tensor(car_errors), torch.tensor(car_depths), "median_rel", 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a depth teacher's config, e.g. configs/monodle/synthetic_teacher.yaml")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=D train.epochs=12")
    parser.add_argument("--max-frames", type=int, default=160, help="validation frames scored (default 160)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if input_spec_from_config(cfg).kind != "rgbd":
            raise Add3dError(f"{args.config}: not a depth teacher (model.in_channels must be 5)")
        if not detector_entry(cfg.model.name).dense_depth_head:
            raise Add3dError(f"{args.config}: {cfg.model.name} has no dense depth head to copy into (MonoDLE's has)")
        torch.set_num_threads(max(1, int(cfg.train.threads or 1)))
        seed_everything(cfg.train.seed)
        detector = build_detector(cfg.model)
        start = time.time()
        losses = train_copy(cfg, detector)
        result = {"config": args.config, "overrides": args.overrides, "epochs": cfg.train.epochs,
                  "train_loss_by_epoch": [round(v, 4) for v in losses], **copy_errors(cfg, detector, args.max_frames),
                  "seconds": round(time.time() - start, 1)}
    except Add3dError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
