"""CPU cost of one MonoDLE training step (forward, loss, backward, Adam) per backbone.

Goal for the small CPU options: < 0.5 s per step at batch 8, 96x320, one thread. Prints one JSON
object: {backbone: {params, head_channels, step_s_median, step_s_min, step_cpu_s_median}}; the CPU
time (process time) is the robust figure on a machine shared with other jobs.

    .venv/bin/python benchmarks/monodle_train_step.py --backbones dla34_tiny dla34_small resnet18
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from add3d.models import ModelConfig, build_detector


def synthetic_targets(batch: int, height: int, width: int, num_classes: int = 3, objects: int = 4) -> dict:
    """Random but well-formed targets in the DESIGN.md layout (``objects`` per image)."""
    generator = torch.Generator().manual_seed(0)
    h, w, m = height // 4, width // 4, 50
    xs = torch.randint(0, w, (batch, objects), generator=generator)
    ys = torch.randint(0, h, (batch, objects), generator=generator)
    cls_ids = torch.randint(0, num_classes, (batch, objects), generator=generator)
    heatmap = torch.zeros(batch, num_classes, h, w)
    heatmap[torch.arange(batch)[:, None], cls_ids, ys, xs] = 1.0
    mask = torch.zeros(batch, m)
    mask[:, :objects] = 1.0

    def pad(values: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        out = torch.zeros(batch, m, *values.shape[2:], dtype=dtype)
        out[:, :objects] = values.to(dtype)
        return out

    return {
        "heatmap": heatmap,
        "indices": pad(ys * w + xs, torch.long),
        "mask_2d": mask,
        "mask_3d": mask.clone(),
        "cls_ids": pad(cls_ids, torch.long),
        "offset_2d": pad(torch.rand(batch, objects, 2, generator=generator)),
        "size_2d": pad(4 + 8 * torch.rand(batch, objects, 2, generator=generator)),
        "offset_3d": pad(torch.rand(batch, objects, 2, generator=generator)),
        "depth": pad(5 + 40 * torch.rand(batch, objects, 1, generator=generator)),
        "size_3d": pad(torch.tensor([1.5, 1.6, 3.9]).expand(batch, objects, 3)),
        "heading_bin": pad(torch.randint(0, 12, (batch, objects), generator=generator), torch.long),
        "heading_res": pad(0.2 * torch.rand(batch, objects, generator=generator) - 0.1),
    }


def time_steps(backbone: str, head_channels: int, batch: int, height: int, width: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_detector(ModelConfig(backbone=backbone, head_channels=head_channels)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.randn(batch, 3, height, width)
    targets = synthetic_targets(batch, height, width)
    durations, cpu_times = [], []
    for _ in range(steps + 1):  # the first step warms up allocators
        start, start_cpu = time.perf_counter(), time.process_time()
        total, _ = model.loss(model(image), targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        durations.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    durations, cpu_times = durations[1:], cpu_times[1:]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "head_channels": head_channels,
        "step_s_median": round(statistics.median(durations), 4),
        "step_s_min": round(min(durations), 4),
        "step_cpu_s_median": round(statistics.median(cpu_times), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["dla34_tiny", "dla34_small", "resnet18"])
    parser.add_argument("--head-channels", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, nargs=2, default=[96, 320], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        name: time_steps(name, args.head_channels, args.batch, *args.input_size, args.steps) for name in args.backbones
    }
    results["_setup"] = {"batch": args.batch, "input_size": args.input_size, "threads": args.threads}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
