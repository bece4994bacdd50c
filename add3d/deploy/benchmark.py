"""Inference latency of one detector on this machine: PyTorch eager, ``torch.compile`` and onnxruntime.

Each backend runs the network (image -> head outputs, what the ONNX graph holds) on the same input;
the shared ``decode`` is timed once on its own. Times are wall-clock medians over ``repeats`` calls
after ``warmup`` calls, synchronising CUDA when the backend runs there. A backend that cannot run
(no compiler for ``torch.compile``, no ONNX file, ...) is reported with ``available: false`` and the
reason instead of a number.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from add3d.data.config import DataConfig
from add3d.data.mono_dataset import batch_to_device, collate_batch, encode_sample
from add3d.errors import Add3dError
from add3d.geometry.calib import Calibration


def time_calls(call: Callable[[], object], batch_size: int, warmup: int = 3, repeats: int = 10,
               synchronize: Callable[[], None] | None = None) -> dict:
    """Latency statistics (milliseconds) of ``call`` and the images per second of its median."""
    if repeats < 1 or warmup < 0:
        raise Add3dError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    median = statistics.median(times)
    return {
        "available": True,
        "latency_ms": {
            "median": round(median, 3),
            "mean": round(statistics.fmean(times), 3),
            "min": round(times[0], 3),
            "max": round(times[-1], 3),
        },
        "images_per_s": round(batch_size * 1000.0 / median, 3),
        "repeats": repeats,
        "warmup": warmup,
    }


def unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def cuda_synchronizer(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def benchmark_eager(detector: torch.nn.Module, image: torch.Tensor, meta: dict, warmup: int, repeats: int) -> dict:
    device = image.device

    def call():
        with torch.inference_mode():
            detector(image, None, meta=meta)

    return time_calls(call, image.shape[0], warmup, repeats, cuda_synchronizer(device))


def benchmark_compiled(detector: torch.nn.Module, image: torch.Tensor, meta: dict, warmup: int, repeats: int) -> dict:
    """``torch.compile`` (default inductor backend); the first call's compile time is reported apart."""
    if not hasattr(torch, "compile"):
        return unavailable(f"torch {torch.__version__} has no torch.compile")
    compiled = torch.compile(detector)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            compiled(image, None, meta=meta)
    except Exception as error:  # inductor fails in many ways without a compiler / on exotic set-ups
        text = str(error).strip().splitlines()
        return unavailable(f"torch.compile failed: {type(error).__name__}: {text[0][:200] if text else ''}")
    compile_s = time.perf_counter() - start

    def call():
        with torch.inference_mode():
            compiled(image, None, meta=meta)

    result = time_calls(call, image.shape[0], warmup, repeats, cuda_synchronizer(image.device))
    result["compile_s"] = round(compile_s, 1)
    return result


def benchmark_onnxruntime(runner, image: torch.Tensor, meta: dict, warmup: int, repeats: int) -> dict:
    """``runner`` is an :class:`add3d.deploy.onnx_runtime.OnnxDetector`; numpy in, numpy out."""
    image_np = image.detach().cpu().numpy()
    camera_np = meta["P2_input"].detach().cpu().numpy()
    result = time_calls(lambda: runner.run_numpy(image_np, camera_np), image.shape[0], warmup, repeats)
    result["providers"] = list(runner.providers)
    return result


def benchmark_decode(detector, outputs: dict, meta: dict, warmup: int, repeats: int) -> dict:
    """The shared post-process (peaks, gathers, back-projection -> KITTI objects) on given outputs."""
    device = next(iter(outputs.values())).device
    batch_size = int(meta["P2"].shape[0])
    return time_calls(lambda: detector.decode(outputs, meta), batch_size, warmup, repeats, cuda_synchronizer(device))


# KITTI's frame size and camera (frame 000000), for a benchmark input of the real proportions.
KITTI_IMAGE_SIZE = (375, 1242)  # (height, width)
KITTI_P2 = [[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]]
BACKENDS = ("eager", "compiled", "onnxruntime")


def benchmark_batch(input_size: tuple[int, int], batch_size: int = 1, seed: int = 0) -> dict:
    """A random KITTI-size frame preprocessed exactly like real ones (``encode_sample``), ``batch_size`` times."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*KITTI_IMAGE_SIZE, 3), dtype=np.uint8)
    calib = Calibration.from_P2(np.array(KITTI_P2))
    data = DataConfig(input_size=list(input_size))
    return collate_batch([encode_sample(f"{i:06d}", image, calib, data) for i in range(batch_size)])


def benchmark_inference(detector: torch.nn.Module | None, runner, input_size: tuple[int, int], device: torch.device,
                        backends: tuple[str, ...] = BACKENDS, batch_size: int = 1, warmup: int = 3,
                        repeats: int = 10) -> dict:
    """Latency per backend (see the module doc). ``detector`` (PyTorch, on ``device``) and ``runner``
    (an OnnxDetector) may each be None; their backends are then reported as unavailable."""
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise Add3dError(f"unknown backend(s) {', '.join(unknown)} (choose from {', '.join(BACKENDS)})")
    batch = benchmark_batch(input_size, batch_size)
    on_device = batch_to_device(batch, device)
    image, meta = on_device["image"], on_device["meta"]
    results: dict[str, dict] = {}
    no_weights = unavailable("no PyTorch weights: pass --checkpoint")
    if "eager" in backends:
        results["pytorch_eager"] = benchmark_eager(detector, image, meta, warmup, repeats) if detector is not None else no_weights
    if "compiled" in backends:
        results["pytorch_compiled"] = (benchmark_compiled(detector, image, meta, warmup, repeats)
                                       if detector is not None else no_weights)
    if "onnxruntime" in backends:
        results["onnxruntime"] = (benchmark_onnxruntime(runner, batch["image"], batch["meta"], warmup, repeats)
                                  if runner is not None else unavailable("no ONNX file: pass --onnx or --checkpoint"))
    if detector is not None:
        with torch.inference_mode():
            outputs = detector(image, None, meta=meta)
        results["decode"] = benchmark_decode(detector, outputs, meta, warmup, repeats)
    elif runner is not None:
        results["decode"] = benchmark_decode(runner, runner(batch["image"], None, meta=batch["meta"]), batch["meta"], warmup, repeats)
    return results
