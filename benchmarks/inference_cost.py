"""Zero inference cost of ADD: the exported student versus the baseline detector.

For every detector that ``add3d.models.build_detector`` knows, build the baseline, wrap a fresh
student in ADD's DistillationModule (all adapters on), export the student exactly as the trainer
does (``module.detector.state_dict()``) and load it strictly into a new baseline-config detector.
Then measure parameters, forward FLOPs (``add3d.engine.model_info.forward_flops``, the counter of
``add3d model-info``; 1 multiply-add = 2 FLOPs) and CPU latency of both (``*_ms`` = CPU time of this process, robust on a shared machine; ``*_wall_ms`` too). Prints one JSON object: {detector: {baseline_params, student_params,
baseline_gflops, student_gflops, baseline_ms, student_ms, same_state_dict_keys}}.

    .venv/bin/python benchmarks/inference_cost.py --backbone dla34 --input-size 384 1280
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from add3d.distill.config import DistillConfig
from add3d.distill.teacher import teacher_model_config
from add3d.distill.wrapper import DistillationModule
from add3d.engine.model_info import adapter_parameters, camera_meta, count_parameters, forward_flops
from add3d.errors import Add3dError
from add3d.models import DETECTORS, build_detector
from add3d.models.config import ModelConfig


@torch.no_grad()
def forward_ms(model: torch.nn.Module, image: torch.Tensor, meta: dict, repeats: int) -> tuple[float, float]:
    """Median (CPU-time ms, wall-clock ms) of a forward pass.

    CPU time of this process is the robust number on a shared machine (wall clock includes waiting
    for other people's jobs); with --threads 1 both agree on an idle machine.
    """
    model(image, meta=meta)  # warm-up (allocator, lazy init)
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        model(image, meta=meta)
        cpu.append((time.process_time() - start_cpu) * 1000.0)
        wall.append((time.perf_counter() - start_wall) * 1000.0)
    return statistics.median(cpu), statistics.median(wall)


def measure(name: str, backbone: str, height: int, width: int, repeats: int) -> dict | None:
    model_cfg = ModelConfig(name=name, backbone=backbone, pretrained=None)
    try:
        torch.manual_seed(0)
        baseline = build_detector(model_cfg).eval()
    except (Add3dError, NotImplementedError, KeyError) as error:
        return {"skipped": f"{type(error).__name__}: {error}"}
    student = build_detector(model_cfg)
    teacher = build_detector(teacher_model_config(model_cfg))
    module = DistillationModule(student, teacher, DistillConfig())
    exported = build_detector(model_cfg)
    exported.load_state_dict(module.detector.state_dict(), strict=True)  # what the trainer saves
    exported.eval()
    image = torch.randn(1, 3, height, width)
    meta = camera_meta(height, width)
    baseline_cpu, baseline_wall = forward_ms(baseline, image, meta, repeats)
    student_cpu, student_wall = forward_ms(exported, image, meta, repeats)
    return {
        "baseline_params": count_parameters(baseline),
        "student_params": count_parameters(exported),
        "baseline_gflops": round(forward_flops(baseline, image, meta)["total"] / 1e9, 3),
        "student_gflops": round(forward_flops(exported, image, meta)["total"] / 1e9, 3),
        "baseline_ms": round(baseline_cpu, 1),  # CPU time per forward (see forward_ms)
        "student_ms": round(student_cpu, 1),
        "baseline_wall_ms": round(baseline_wall, 1),
        "student_wall_ms": round(student_wall, 1),
        "same_state_dict_keys": list(baseline.state_dict()) == list(exported.state_dict()),
        "training_only_adapter_params": adapter_parameters(module)["params"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--backbone", default="dla34")
    parser.add_argument("--input-size", nargs=2, type=int, default=[384, 1280], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = args.input_size
    report = {
        "backbone": args.backbone,
        "input_size": [height, width],
        "device": "cpu",
        "threads": args.threads,
        "detectors": {name: measure(name, args.backbone, height, width, args.repeats) for name in args.detectors},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
