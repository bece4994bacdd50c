"""Throughput of the input pipeline (read frame -> augment -> targets -> tensors), one process.

Prints JSON: samples per second per configuration. The goal is that data loading never limits
training: at KITTI's 1280x384 a GPU step of MonoDLE takes ~0.3 s for 16 samples on one GPU, so with
the default 4 loader workers each worker needs > ~15 samples/s.

    .venv/bin/python benchmarks/data_pipeline.py --root ../shared/data/kitti_mini --split train
    .venv/bin/python benchmarks/data_pipeline.py --root data/synth --split train --input 96 320
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def measure(root: str, split: str, input_size: list[int], depth_source: str | None, repeats: int) -> dict:
    from add3d.data.config import DataConfig
    from add3d.data.mono_dataset import build_mono_dataset

    cfg = DataConfig(root=root, input_size=input_size, depth_source=depth_source,
                     depth_dir="depth_dense" if depth_source == "dense" else None)
    dataset = build_mono_dataset(cfg, split, augment=True, seed=0)
    count = min(len(dataset), 64)
    dataset[0]  # warm caches and imports
    started = time.perf_counter()
    for epoch in range(repeats):
        dataset.set_epoch(epoch)
        for index in range(count):
            dataset[index]
    seconds = time.perf_counter() - started
    return {"input": input_size, "depth_source": depth_source, "samples": count * repeats,
            "samples_per_second": round(count * repeats / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--input", type=int, nargs=2, default=[384, 1280], metavar=("H", "W"))
    parser.add_argument("--depth", nargs="*", default=[None, "lidar", "object"],
                        help="depth sources to try (none, lidar, object, dense)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [measure(args.root, args.split, args.input, None if d in (None, "none") else d, args.repeats)
               for d in args.depth]
    print(json.dumps({"benchmark": "data_pipeline", "root": args.root, "results": results}, indent=2))


if __name__ == "__main__":
    main()
