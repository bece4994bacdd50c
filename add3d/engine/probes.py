"""Does a model read its depth input? Depth probes on matched detections (any detector).

A detection is matched to a ground-truth object of the same class when their 2D boxes overlap by
IoU >= 0.5 (greedy, highest IoU first, each box used once). On the matched pairs:

- ``depth_mae_m`` / ``depth_median_m`` / ``within_1m``: the error of the predicted object depth
  (``location`` z) against the label's, and the share of objects within 1 m; ``depth_median_rel``:
  the median of |error| / true depth. ``common_depth_errors`` compares two models on the objects
  both matched.
- ``sensitivity`` (RGB+depth models): every depth-map value times 1.2, i.e. every LiDAR point moved
  1.2x farther along its camera ray (a point on the ray keeps its pixel). A model that reads the
  depth input predicts depths 1.2x larger: the median over objects matched in both runs of
  ``(z_scaled / z - 1) / 0.2`` is ~1; a model that ignores it (an RGB network) gives 0.
- ``zeroed_depth_mae_m`` (RGB+depth models): the MAE with the depth input removed (every pixel unknown).
- ``median_by_range``: per-car errors split by true depth (``CAR_DEPTH_RANGES_M``), where a
  depth error sits (benchmarks/add_diagnostics.py, benchmarks/depth_copy_probe.py).

Printed by the trainer's validation for RGB+depth models, by ``benchmarks/add_diagnostics.py`` and in
the demo report.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from add3d.data.kitti import Object3D
from add3d.distill.teacher_input import InputSpec
from add3d.engine.inference import predict_loader
from add3d.evaluation.box_matching import match_by_iou

# True-depth ranges (metres) per-car depth errors are split by.
CAR_DEPTH_RANGES_M = ((0.0, 15.0), (15.0, 25.0), (25.0, 35.0), (35.0, 50.0), (50.0, math.inf))


def median_by_range(errors: torch.Tensor, truth: torch.Tensor, key: str = "median_m", digits: int = 3) -> dict[str, dict]:
    """The median of ``errors`` (one per car) in each range of true depth ``truth`` (CAR_DEPTH_RANGES_M),
    as ``{"0-15": {"cars": n, key: median rounded to digits}, ...}`` (NaN for an empty range)."""
    report = {}
    for low, high in CAR_DEPTH_RANGES_M:
        inside = (truth >= low) & (truth < high)
        name = f"{low:g}-{high:g}" if math.isfinite(high) else f"{low:g}+"
        median = round(float(errors[inside].median()), digits) if inside.any() else float("nan")
        report[name] = {"cars": int(inside.sum()), key: median}
    return report

PROBE_GAIN = 1.2
MIN_IOU = 0.5
Pair = tuple[float, float]  # (true depth, predicted depth)


def match_depths(ground_truth: dict[str, list[Object3D]], predictions: dict[str, list[Object3D]],
                 classes: tuple[str, ...] = ("Car",), min_iou: float = MIN_IOU) -> dict[tuple[str, int], Pair]:
    """(frame id, label index) -> (true depth, predicted depth) for every matched labelled object."""
    matches: dict[tuple[str, int], Pair] = {}
    for frame_id, labels in ground_truth.items():
        detections = predictions.get(frame_id, [])
        for cls in classes:
            truth = [(i, o) for i, o in enumerate(labels) if o.cls_type == cls]
            found = [o for o in detections if o.cls_type == cls]
            if not truth or not found:
                continue
            for a, b in match_by_iou(np.stack([o.box2d for _, o in truth]), np.stack([o.box2d for o in found]), min_iou):
                index, label = truth[a]
                matches[(frame_id, index)] = (float(label.location[2]), float(found[b].location[2]))
    return matches


def depth_errors(matches: dict[tuple[str, int], Pair]) -> dict[str, float | int]:
    """MAE / median / share within 1 m / median relative error of matched depths."""
    if not matches:
        return {"matched": 0, "depth_mae_m": float("nan"), "depth_median_m": float("nan"),
                "within_1m": float("nan"), "depth_median_rel": float("nan")}
    truth, predicted = np.array(list(matches.values())).T
    error = np.abs(predicted - truth)
    return {
        "matched": int(len(error)),
        "depth_mae_m": round(float(error.mean()), 3),
        "depth_median_m": round(float(np.median(error)), 3),
        "within_1m": round(float((error <= 1.0).mean()), 3),
        "depth_median_rel": round(float(np.median(error / np.maximum(truth, 1e-3))), 4),
    }


def common_depth_errors(first: dict[tuple[str, int], Pair], second: dict[tuple[str, int], Pair]
                        ) -> tuple[dict[str, float | int], dict[str, float | int]]:
    """``depth_errors`` of two models on the objects both matched: a model that matches more (harder,
    farther) objects is not compared on a different set."""
    common = first.keys() & second.keys()
    return depth_errors({k: first[k] for k in common}), depth_errors({k: second[k] for k in common})


def sensitivity(base: dict[tuple[str, int], Pair], scaled: dict[tuple[str, int], Pair], gain: float = PROBE_GAIN) -> float:
    """Median of (z_scaled / z - 1) / (gain - 1) over objects matched in both runs (nan if none)."""
    common = [key for key in base if key in scaled and base[key][1] > 0]
    if not common:
        return float("nan")
    ratios = np.array([scaled[key][1] / base[key][1] for key in common])
    return round(float(np.median((ratios - 1.0) / (gain - 1.0))), 3)


def scale_depth_input(gain: float) -> Callable[[dict], dict]:
    """Batch transform: every depth value times ``gain`` (validity unchanged)."""
    def transform(batch: dict) -> dict:
        return {**batch, "depth": batch["depth"] * gain} if "depth" in batch else batch
    return transform


def zero_depth_input(batch: dict) -> dict:
    """Batch transform: no depth anywhere (every pixel unknown)."""
    if "depth" not in batch:
        return batch
    return {**batch, "depth": batch["depth"] * 0, "depth_valid": batch["depth_valid"] * 0}


def depth_probes(detector, loader, ground_truth: dict[str, list[Object3D]], spec: InputSpec, device,
                 score_threshold: float | None = None, classes: tuple[str, ...] = ("Car",),
                 predictions: dict[str, list[Object3D]] | None = None, perturb: bool | None = None,
                 progress: bool = False) -> dict:
    """The probes of this module for one model; ``predictions`` reuses a pass already made (validation).

    ``perturb`` (default: only for RGB+depth inputs) runs the two extra passes (depth x1.2, no depth).
    """
    def run(transform=None, name="probe"):
        return predict_loader(detector, loader, device, spec, score_threshold, progress=progress,
                              description=name, transform=transform)

    base = match_depths(ground_truth, predictions if predictions is not None else run(), classes)
    report: dict = {"classes": list(classes), **depth_errors(base)}
    if perturb if perturb is not None else spec.kind == "rgbd":
        scaled = match_depths(ground_truth, run(scale_depth_input(PROBE_GAIN), "probe depth x1.2"), classes)
        report["sensitivity"] = sensitivity(base, scaled)
        zeroed = depth_errors(match_depths(ground_truth, run(zero_depth_input, "probe no depth"), classes))
        report["zeroed_depth_mae_m"] = zeroed["depth_mae_m"]
        report["zeroed_matched"] = zeroed["matched"]
    return report


def format_probes(report: dict) -> str:
    """One line for logs and reports."""
    text = (f"{'/'.join(report['classes'])} matched {report['matched']}: depth MAE {report['depth_mae_m']:.2f} m, "
            f"median {report['depth_median_m']:.2f} m, within 1 m {report['within_1m']:.0%}, "
            f"median relative {report['depth_median_rel']:.3f}")
    if "sensitivity" in report:
        zeroed = (f"MAE with depth zeroed {report['zeroed_depth_mae_m']:.2f} m" if report.get("zeroed_matched", 1)
                  else "with depth zeroed no car is matched")
        text += f"; sensitivity to depth x1.2 {report['sensitivity']:.2f}; {zeroed}"
    return text
