"""CPU cost of one detector training step (forward, loss, backward, Adam) per variant and backbone.

Goal for the small CPU options (configs/*/synthetic.yaml: dla34_tiny, 32-channel heads): < 0.5 s per
step at batch 8, 96x320, one thread. MonoFlex's deformable neck (``monoflex_dcn``) is a separate
variant because torchvision's DeformConv2d is much slower on CPU. Targets come from the real target
builder (add3d.data.targets) for a few cars in a KITTI camera. Prints one JSON object:
{variant: {backbone: {params, step_s_median, step_s_min, step_cpu_s_median}}, "_setup": {...}}; the
CPU time (process time) is the robust figure on a machine shared with other jobs.

    .venv/bin/python benchmarks/detector_train_step.py --variants monodle gupnet monoflex monoflex_dcn
    .venv/bin/python benchmarks/detector_train_step.py --variants monodle \
        --backbones dla34_tiny dla34_small resnet18 --head-channels 64
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import numpy as np
import torch

from add3d.data.kitti import Object3D
from add3d.data.targets import TargetOptions, build_targets
from add3d.geometry.boxes import box3d_corners, project_boxes_to_2d
from add3d.models import ModelConfig, build_detector
from add3d.models.backbones import BACKBONES

P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]])
VARIANTS: dict[str, dict[str, Any]] = {
    "monodle": {"name": "monodle"},
    "gupnet": {"name": "gupnet"},
    "monoflex": {"name": "monoflex"},
    "monoflex_dcn": {"name": "monoflex", "deformable_neck": True},
}


def scene_batch(batch: int, height: int, width: int, objects: int = 4) -> dict[str, Any]:
    """Image, targets and meta for ``objects`` random cars per image (input = KITTI frame resized)."""
    rng = np.random.default_rng(0)
    scale = width / 1242.0
    P2_input = np.diag([scale, scale, 1.0]) @ P2
    per_image = []
    for _ in range(batch):
        cars = []
        for _ in range(objects):
            location = np.array([rng.uniform(-8, 8), 1.6, rng.uniform(8, 40)])
            dims, ry = np.array([1.5, 1.6, 3.9]), rng.uniform(-math.pi, math.pi)
            box = project_boxes_to_2d(box3d_corners(dims, location, np.array([ry])), P2, (1242, 375))[0] * scale
            alpha = ry - math.atan2(location[0], location[2])
            cars.append(Object3D("Car", box2d=box, dims=dims, location=location, rotation_y=ry, alpha=alpha))
        per_image.append(build_targets(cars, P2_input, (height, width), TargetOptions(keep_outside_centres=True)))
    targets = {key: torch.stack([torch.as_tensor(t[key]) for t in per_image]) for key in per_image[0]}
    to_original = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]])
    meta = {
        "P2": torch.tensor(P2, dtype=torch.float32).expand(batch, 3, 4),
        "P2_input": torch.tensor(P2_input, dtype=torch.float32).expand(batch, 3, 4),
        "input_to_original": torch.tensor(to_original, dtype=torch.float32).expand(batch, 2, 3),
        "original_size": torch.tensor([1242.0, 375.0]).expand(batch, 2),
    }
    return {"image": torch.randn(batch, 3, height, width), "targets": targets, "meta": meta}


def time_steps(variant: dict[str, Any], backbone: str, head_channels: int, batch: dict[str, Any], steps: int) -> dict:
    """Median/min wall time and median CPU time of ``steps`` training steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = build_detector(ModelConfig(backbone=backbone, head_channels=head_channels, **variant)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    durations, cpu_times = [], []
    for _ in range(steps + 1):  # the first step warms up allocators
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs = model(batch["image"], batch["targets"], meta=batch["meta"])
        total, _ = model.loss(outputs, batch["targets"], batch["meta"])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        durations.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    durations, cpu_times = durations[1:], cpu_times[1:]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "step_s_median": round(statistics.median(durations), 4),
        "step_s_min": round(min(durations), 4),
        "step_cpu_s_median": round(statistics.median(cpu_times), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--backbones", nargs="+", default=["dla34_tiny"], choices=list(BACKBONES))
    parser.add_argument("--head-channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, nargs=2, default=[96, 320], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = scene_batch(args.batch, *args.input_size)
    results: dict[str, Any] = {
        variant: {
            backbone: time_steps(VARIANTS[variant], backbone, args.head_channels, batch, args.steps)
            for backbone in args.backbones
        }
        for variant in args.variants
    }
    results["_setup"] = {
        "head_channels": args.head_channels,
        "batch": args.batch,
        "input_size": args.input_size,
        "steps": args.steps,
        "threads": args.threads,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
