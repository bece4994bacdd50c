"""Cost of one training step: baseline vs depth teacher vs ADD student, same batch and input size.

A step = forward, loss, backward and an Adam update of everything trainable, exactly what the
trainer does (minus data loading). The ADD step additionally runs the frozen teacher forward (no
grad) and the training-only adapters (3D-PE, 3D-SA, TCA). Target: ADD step <= 1.6 x baseline step.
The batch comes from the real data pipeline: kitti_mini frames with augmentation and LiDAR depth,
repeated to the batch size. Prints one JSON object per detector with median step times in ms of
CPU time of this process (wall clock on a shared machine mostly measures the other jobs).

    .venv/bin/python benchmarks/train_step.py --detectors monodle --backbone dla34_tiny --batch 8 --input-size 96 320
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from add3d.data.config import DataConfig
from add3d.data.mono_dataset import build_mono_dataset, collate_batch
from add3d.distill.config import DistillConfig
from add3d.distill.teacher import init_teacher_from_rgb, teacher_model_config
from add3d.distill.teacher_input import InputSpec
from add3d.distill.wrapper import DistillationModule
from add3d.engine.modules import DetectorModule
from add3d.models import build_detector
from add3d.models.config import ModelConfig

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kitti_mini"


def make_batch(root: Path, batch_size: int, height: int, width: int) -> dict:
    cfg = DataConfig(root=str(root), input_size=[height, width], depth_source="lidar", skip_unknown_difficulty=False)
    dataset = build_mono_dataset(cfg, "train", augment=True, seed=0, classes=ModelConfig().classes)
    return collate_batch([dataset[i % len(dataset)] for i in range(batch_size)])


def time_steps(module: torch.nn.Module, batch: dict, steps: int, warmup: int = 2) -> float:
    module.train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for index in range(warmup + steps):
        start = time.process_time()  # CPU time: robust against other jobs on a shared machine
        loss, _ = module(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index >= warmup:
            times.append((time.process_time() - start) * 1000.0)
    return statistics.median(times)


def measure(name: str, backbone: str, head_channels: int, batch: dict, steps: int, distill: DistillConfig) -> dict:
    cfg = ModelConfig(name=name, backbone=backbone, head_channels=head_channels, pretrained=None)
    torch.manual_seed(0)
    baseline = DetectorModule(build_detector(cfg))
    teacher = DetectorModule(build_detector(teacher_model_config(cfg)), InputSpec(kind="rgbd"))
    init_teacher_from_rgb(teacher.detector, baseline.detector.state_dict())
    student = build_detector(cfg)
    add = DistillationModule(student, build_detector(teacher_model_config(cfg)), distill)
    results = {
        "baseline_step_ms": time_steps(baseline, batch, steps),
        "teacher_step_ms": time_steps(teacher, batch, steps),
        "add_step_ms": time_steps(add, batch, steps),
    }
    results = {k: round(v, 1) for k, v in results.items()}
    results["add_over_baseline"] = round(results["add_step_ms"] / results["baseline_step_ms"], 3)
    results["target_add_over_baseline"] = 1.6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=["monodle"])
    parser.add_argument("--backbone", default="dla34_tiny")
    parser.add_argument("--head-channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", nargs=2, type=int, default=[96, 320], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a KITTI-layout folder with ImageSets/train.txt and velodyne")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.data, args.batch, *args.input_size)
    report = {
        "backbone": args.backbone,
        "batch": args.batch,
        "input_size": list(args.input_size),
        "threads": args.threads,
        "objects_in_batch": int(batch["targets"]["mask_2d"].sum()),
        "detectors": {name: measure(name, args.backbone, args.head_channels, batch, args.steps, DistillConfig()) for name in args.detectors},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
