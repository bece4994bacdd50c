"""Throughput of the input pipeline (read frame -> augment -> depth map -> targets -> tensors).

Prints JSON: CPU ms per sample (all threads of the process that made it, so robust against other
jobs on a shared machine) and wall-clock samples per second, for each depth source (none = RGB only, lidar =
Velodyne projected on the fly, object, dense), each number of loader workers (0 = in this process)
and each thread-pool setting: ``default`` (numpy's OpenBLAS and OpenCV with one thread per core,
what the loader did before it capped them) and ``capped`` (``add3d.data.loader``: one BLAS /
OpenCV thread per process that computes samples). ``lidar_over_rgb`` is the cost of a LiDAR sample
over an RGB sample in the same setting (CPU time); the target is <= 1.5.

At KITTI's 1280x384 a GPU step of MonoDLE takes ~0.3 s for 16 samples on one GPU, so with the
default 4 loader workers each worker needs > ~15 samples/s.

    .venv/bin/python benchmarks/data_pipeline.py --root ../shared/data/kitti_mini --split train
    .venv/bin/python benchmarks/data_pipeline.py --root data/synth --split train --input 96 320 --workers 0 2
    .venv/bin/python benchmarks/data_pipeline.py --root runs/demo/data --input 96 320 --depth none lidar \
        --workers 0 --pools capped --repeats 4 --frame-cache-mb 0 512
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import cv2
import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def thread_pools(setting: str):
    """``capped``: the loader's per-process caps, undone afterwards; ``default``: leave the pools alone."""
    if setting == "default":
        yield
        return
    from add3d.data.loader import DATA_THREADS

    before = cv2.getNumThreads()
    with threadpool_limits(limits=DATA_THREADS, user_api="blas"):
        cv2.setNumThreads(DATA_THREADS)
        try:
            yield
        finally:
            cv2.setNumThreads(before)


class TimedSamples(torch.utils.data.Dataset):
    """``dataset``'s samples with the CPU seconds their making took in the process that made them
    (all of its threads: a BLAS pool spinning on a small product counts)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        started = time.process_time()
        sample = self.dataset[item]
        return sample, time.process_time() - started


def collate_timed(items):
    from add3d.data.mono_dataset import collate_batch

    return collate_batch([sample for sample, _ in items]), sum(seconds for _, seconds in items)


def measure(root: str, split: str, input_size: list[int], depth_source: str | None, repeats: int,
            workers: int, pools: str, frame_cache_mb: float = 0.0) -> dict:
    from add3d.data.config import DataConfig
    from add3d.data.loader import init_worker
    from add3d.data.mono_dataset import build_mono_dataset
    from add3d.models.config import ModelConfig

    cfg = DataConfig(root=root, input_size=input_size, depth_source=depth_source,
                     depth_dir="depth_dense" if depth_source == "dense" else None, frame_cache_mb=frame_cache_mb)
    dataset = TimedSamples(build_mono_dataset(cfg, split, augment=True, seed=0, classes=ModelConfig().classes))
    count = min(len(dataset), 64)
    # (epoch, index) pairs: every repeat draws another augmentation, as epochs do.
    order = [(epoch, index) for epoch in range(repeats) for index in range(count)]
    warm = max(workers, 1)  # one sample per process first: imports, caches, thread pools
    with thread_pools(pools):
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=1, sampler=[order[0]] * warm + order, num_workers=workers,
            collate_fn=collate_timed, worker_init_fn=init_worker if pools == "capped" and workers else None,
        )
        batches = iter(loader)
        for _ in range(warm):
            next(batches)
        cpu_seconds = 0.0
        started = time.perf_counter()
        for _, seconds in batches:
            cpu_seconds += seconds
        wall_seconds = time.perf_counter() - started
    samples = len(order)
    return {"depth_source": depth_source or "none", "workers": workers, "pools": pools,
            "frame_cache_mb": frame_cache_mb, "samples": samples,
            "cpu_ms_per_sample": round(1000 * cpu_seconds / samples, 2),
            "samples_per_second": round(samples / wall_seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--input", type=int, nargs=2, default=[384, 1280], metavar=("H", "W"))
    parser.add_argument("--depth", nargs="*", default=["none", "lidar", "object"],
                        help="depth sources to try (none, lidar, object, dense)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers (0 = this process)")
    parser.add_argument("--pools", nargs="+", default=["default", "capped"], choices=("default", "capped"))
    parser.add_argument("--repeats", type=int, default=2, help="passes over (at most 64) frames")
    parser.add_argument("--frame-cache-mb", type=float, nargs="+", default=[0.0],
                        help="data.frame_cache_mb settings (the first pass fills the cache, later passes hit it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for workers in args.workers:
        for pools in args.pools:
            for depth in args.depth:
                for cache_mb in args.frame_cache_mb:
                    results.append(measure(args.root, args.split, args.input, None if depth == "none" else depth,
                                           args.repeats, workers, pools, cache_mb))
    ratios = {}
    for row in results:
        if row["depth_source"] == "lidar":
            rgb = next((r for r in results if r["depth_source"] == "none" and r["workers"] == row["workers"]
                        and r["pools"] == row["pools"] and r["frame_cache_mb"] == row["frame_cache_mb"]), None)
            if rgb is not None:
                ratios[f"workers={row['workers']},pools={row['pools']},frame_cache_mb={row['frame_cache_mb']:g}"] = round(
                    row["cpu_ms_per_sample"] / rgb["cpu_ms_per_sample"], 3)
    print(json.dumps({"benchmark": "data_pipeline", "root": args.root, "input": args.input, "results": results,
                      "lidar_over_rgb": ratios, "target_lidar_over_rgb": 1.5}, indent=2))


if __name__ == "__main__":
    main()
