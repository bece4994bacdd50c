"""Training throughput and peak memory of baseline, depth teacher and ADD student, and the student's
inference latency, for each mixed-precision mode and memory format.

Each training step is the trainer's own (``add3d.engine.trainer.train_step``: autocast, float32
losses, gradient scaler, Adam), on a synthetic batch of a few cars per image (the targets of
``benchmarks/detector_train_step.py``, random pixels, random depth maps with a validity mask), so
it needs no dataset. Default: KITTI size (1280x384, the published DLA-34, batch 8). On a GPU:

    python benchmarks/gpu_throughput.py                      # amp off / fp16 / bf16 x contiguous / channels_last

On CPU (fp16 autocast has no fast CPU kernels and is skipped unless asked with --amp):

    python benchmarks/gpu_throughput.py --tiny               # dla34_tiny, 64x192, batch 2: a smoke run

Prints JSON: per (amp, memory format) and per module ``images_per_second`` (training),
``peak_memory_mb`` (CUDA: torch.cuda.max_memory_allocated during those steps; CPU: null, and the
process's peak RSS so far as ``process_peak_rss_mb``), and ``inference_ms`` (student, batch 1,
median). Wall-clock times (CUDA synchronised): run it on an otherwise idle GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from detector_train_step import scene_batch  # the sibling benchmark (a script's folder is on sys.path)

from add3d.distill.config import DistillConfig
from add3d.distill.teacher import teacher_model_config
from add3d.distill.teacher_input import InputSpec
from add3d.distill.wrapper import DistillationModule
from add3d.engine.config import load_config
from add3d.engine.distributed import DistributedContext
from add3d.engine.inference import resolve_device
from add3d.engine.modules import DetectorModule
from add3d.engine.optim import build_optimizer
from add3d.engine.precision import amp_dtype, autocast, build_grad_scaler
from add3d.engine.trainer import train_step
from add3d.models import ModelConfig, build_detector

TEACHER_SPEC = InputSpec(kind="rgbd")


def make_batch(batch: int, height: int, width: int) -> dict:
    data = scene_batch(batch, height, width)
    generator = torch.Generator().manual_seed(1)
    valid = (torch.rand(batch, 1, height, width, generator=generator) < 0.3).float()  # sparse, like LiDAR
    data["depth"] = (2.0 + 60.0 * torch.rand(batch, 1, height, width, generator=generator)) * valid
    data["depth_valid"] = valid
    return data


def build_module(kind: str, model_cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "baseline":
        return DetectorModule(build_detector(model_cfg))
    teacher = build_detector(teacher_model_config(model_cfg))
    if kind == "teacher":
        return DetectorModule(teacher, TEACHER_SPEC)
    return DistillationModule(build_detector(model_cfg), teacher, DistillConfig())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(value, device: torch.device):
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value


def measure_training(kind: str, model_cfg: ModelConfig, batch: dict, amp: str, channels_last: bool,
                     device: torch.device, steps: int, warmup: int) -> dict:
    cfg = load_config(None, [f"train.amp={amp}", f"train.channels_last={str(channels_last).lower()}"])
    module = build_module(kind, model_cfg).to(device).train()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(module, cfg.optim)
    dtype = amp_dtype(amp, device)
    scaler = build_grad_scaler(dtype, device)
    batch = to_device(batch, device)
    context = DistributedContext()
    for _ in range(warmup):
        train_step(module, [batch], optimizer, scaler, cfg, context, device, dtype)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        finite, _, _ = train_step(module, [batch], optimizer, scaler, cfg, context, device, dtype)
    synchronize(device)
    seconds = time.perf_counter() - started
    images = batch["image"].shape[0] * steps
    return {
        "images_per_second": round(images / seconds, 2),
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "finite": bool(finite.item() == 1),
    }


@torch.no_grad()
def measure_inference(model_cfg: ModelConfig, image: torch.Tensor, amp: str, channels_last: bool,
                      device: torch.device, runs: int, warmup: int) -> float:
    torch.manual_seed(0)
    detector = build_detector(model_cfg).to(device).eval()
    image = image[:1].to(device)
    if channels_last:
        detector = detector.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    dtype = amp_dtype(amp, device)
    times = []
    for index in range(warmup + runs):
        synchronize(device)
        started = time.perf_counter()
        with autocast(device, dtype):
            detector(image)
        synchronize(device)
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="monodle", choices=("monodle", "gupnet", "monoflex"))
    parser.add_argument("--backbone", default="dla34")
    parser.add_argument("--head-channels", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, nargs=2, default=[384, 1280], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--amp", nargs="+", default=None, choices=("off", "fp16", "bf16"),
                        help="default: off fp16 bf16 on CUDA (bf16 where supported), off bf16 on CPU")
    parser.add_argument("--memory-formats", nargs="+", default=["contiguous", "channels_last"],
                        choices=("contiguous", "channels_last"))
    parser.add_argument("--modules", nargs="+", default=["baseline", "teacher", "add"], choices=("baseline", "teacher", "add"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: PyTorch's)")
    parser.add_argument("--tiny", action="store_true", help="dla34_tiny, 32-channel heads, 64x192, batch 2, 2 steps")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbone, args.head_channels, args.batch, args.input_size = "dla34_tiny", 32, 2, [64, 192]
        args.steps, args.warmup = 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer does
    skipped = {}
    amp_modes = args.amp
    if amp_modes is None:
        amp_modes = ["off", "fp16", "bf16"] if device.type == "cuda" else ["off", "bf16"]
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            amp_modes.remove("bf16")
            skipped["bf16"] = "this GPU has no bfloat16"
        if device.type != "cuda":
            skipped["fp16"] = "CPU fp16 autocast has no fast kernels (pass --amp fp16 to measure it anyway)"
    model_cfg = ModelConfig(name=args.detector, backbone=args.backbone, head_channels=args.head_channels, pretrained=None)
    batch = make_batch(args.batch, *args.input_size)
    results = []
    for amp in amp_modes:
        for memory_format in args.memory_formats:
            channels_last = memory_format == "channels_last"
            row = {"amp": amp, "memory_format": memory_format}
            for kind in args.modules:
                row[kind] = measure_training(kind, model_cfg, batch, amp, channels_last, device, args.steps, args.warmup)
            row["student_inference_ms"] = measure_inference(model_cfg, batch["image"], amp, channels_last, device,
                                                            max(args.steps, 3), args.warmup)
            row["process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            results.append(row)
    report = {
        "benchmark": "gpu_throughput",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "detector": args.detector, "backbone": args.backbone, "head_channels": args.head_channels,
        "batch": args.batch, "input_size": args.input_size, "steps": args.steps, "warmup": args.warmup,
        "skipped": skipped, "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
