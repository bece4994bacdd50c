"""Can a detector fit a few frames? Train it on one fixed batch, then decode that batch and score it.

A sanity check of the whole detector (heads, losses, decoding) rather than a benchmark of quality:
the loss must fall by an order of magnitude and the decoded boxes must score well above zero.
Uses a folder made by ``add3d synth --scale 0.25``; its quarter-size frames would fall under
KITTI's minimum box heights, so 2D boxes are scaled back to KITTI size for the evaluation only
(3D boxes are unaffected). Prints one JSON object.

    .venv/bin/python -m add3d synth --out /tmp/synth --frames 40 --scale 0.25 --seed 1
    .venv/bin/python benchmarks/overfit_check.py --root /tmp/synth --detector gupnet
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from add3d.data.config import DataConfig
from add3d.data.mono_dataset import build_mono_dataset, collate_batch
from add3d.evaluation.kitti_eval import evaluate
from add3d.models import ModelConfig, build_detector


def kitti_sized(objects, factor: float):
    scaled = [copy.deepcopy(o) for o in objects]
    for obj in scaled:
        obj.box2d = obj.box2d * factor
    return scaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a synthetic KITTI-format folder (add3d synth)")
    parser.add_argument("--detector", default="gupnet", choices=["monodle", "gupnet", "monoflex"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    monoflex = args.detector == "monoflex"
    data_cfg = DataConfig(
        root=args.root, input_size=[96, 320], skip_unknown_difficulty=False,
        keep_outside_centres=monoflex, min_depth=0.0 if monoflex else 2.0,
    )
    model_cfg = ModelConfig(name=args.detector, backbone="dla34_tiny", head_channels=32)
    dataset = build_mono_dataset(data_cfg, "train", augment=False, classes=model_cfg.classes)
    batch = collate_batch([dataset[i] for i in range(args.frames)])
    detector = build_detector(model_cfg).train()
    optimizer = torch.optim.Adam(detector.parameters(), lr=args.lr)

    start = time.time()
    losses = []
    for _ in range(args.steps):  # HTL is left inactive (no on_epoch_start): every head trains from the start
        outputs = detector(batch["image"], batch["targets"], meta=batch["meta"])
        loss, parts = detector.loss(outputs, batch["targets"], batch["meta"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(detector.parameters(), 10.0)
        optimizer.step()
        losses.append(float(loss.detach()))

    detector.eval()
    with torch.no_grad():
        detections = detector.decode(detector(batch["image"], meta=batch["meta"]), batch["meta"])
    factor = 1242.0 / float(batch["meta"]["original_size"][0, 0])
    ids = batch["meta"]["frame_id"]
    gt = {ids[i]: kitti_sized(dataset.ground_truth(i), factor) for i in range(args.frames)}
    dt = {ids[i]: kitti_sized(detections[i], factor) for i in range(args.frames)}
    metrics = evaluate(gt, dt, classes=("Car",), overlap="loose")["Car"]
    print(json.dumps({
        "detector": args.detector,
        "steps": args.steps,
        "seconds": round(time.time() - start, 1),
        "loss_first": round(losses[0], 3),
        "loss_last": round(losses[-1], 3),
        "last_parts": {k: round(float(v), 3) for k, v in parts.items()},
        "car_R40_loose_2d": [round(v, 1) for v in metrics["2d"]["R40"]],
        "car_R40_loose_bev": [round(v, 1) for v in metrics["bev"]["R40"]],
        "car_R40_loose_3d": [round(v, 1) for v in metrics["3d"]["R40"]],
        "detections": sum(len(d) for d in detections),
    }, indent=2))


if __name__ == "__main__":
    main()
