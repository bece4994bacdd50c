"""Why does (or doesn't) ADD help? Smooth per-object diagnostics of trained runs.

AP3D at a CPU budget is a noisy, thresholded metric (a box counts only above 0.5 3D IoU). This
script measures what depth distillation should improve directly, on the validation split (``--split
train``: the training frames a teacher is distilled on) without augmentation, at the ground-truth
object centres (`targets["indices"]`, `mask_3d`):
- depth: mean absolute error and mean relative error of the predicted depth (metres);
- heatmap: mean sigmoid score at the GT centres (how confidently objects are found);
- cars: the median depth error (metres and relative) and the share within 1 m over all labelled cars,
  the same set for every run (the probes below each use their own matched detections).
(Each detector's depth is the one its decoding would give an object peaking there: MonoDetector.object_depth.)
The cars' median error is also split by true depth (``car_depth_median_by_range_m``): where a
model's depth error sits (on the synthetic benchmark, far cars dominate it).
GUPNet runs add ``gupnet_depth_parts``: the error of its geometric depth f*H/h alone, and with the
labelled 2D box height, the box height's relative error and the ROI residual (what carries the depth).
``--error-reference RUN`` (e.g. the teacher): each run's Pearson correlation of per-car log(predicted /
true depth) with that run's, over the same cars — does a student share its teacher's error pattern?
``--lidar-readout``: a hand-written read-out of the same LiDAR map a depth teacher is given (the
window around each car's projected 3D centre, plus one offset fitted on training cars), scored on
the same cars: how much of the depth error a model that reads its input could remove.
For every run, any detector: the depth probes of add3d/engine/probes.py on matched Car detections
(depth MAE / median / share within 1 m; for RGB+depth models also the sensitivity to depth x1.2 and
the error with depth zeroed), ``probes`` in the output.
For ADD runs of any detector it can also report each loss term's gradient on the student
(``--grads``): ||grad of weight * term|| over the student's parameters, averaged over a few training
batches. Use it to choose the distillation weights for a new backbone or detector: on our CPU
benchmark, terms with ~10-20 % of the detection loss's gradient norm helped, ~0.2 % did nothing.
Prints one JSON object {run: {...}}. Runs are folders with config.yaml and checkpoint_last.pth.

    .venv/bin/python benchmarks/add_diagnostics.py /tmp/b2/runs/{baseline,add}_s* --grads
    .venv/bin/python benchmarks/add_diagnostics.py /tmp/b2/gupnet/add_s0 --grads-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from add3d.data.loader import build_loader
from add3d.data.mono_dataset import MonoDataset, build_mono_dataset
from add3d.distill.wrapper import student_gradient_norms
from add3d.engine.checkpoints import load_checkpoint, load_module_state
from add3d.engine.config import load_config
from add3d.engine.inference import load_detector
from add3d.engine.modules import detector_input
from add3d.engine.probes import depth_probes, median_by_range
from add3d.engine.trainer import build_training_module
from add3d.models.gupnet import GUPNet


# LiDAR read-outs: name -> (window side in input pixels, how the window's valid depths are reduced).
LIDAR_READOUTS = {"lidar_median_5px": (5, "median"), "lidar_mean_13px": (13, "mean")}


def first_frames(data_cfg, split: str, max_frames: int, scratch: Path, with_depth: bool, classes) -> MonoDataset:
    """The dataset of the first ``max_frames`` frames of ``split``, without augmentation."""
    ids = build_mono_dataset(data_cfg, split, augment=False, with_depth=with_depth, classes=classes).ids[:max_frames]
    subset = scratch / f"{Path(split).stem}_{len(ids)}.txt"  # the loader wants a whole dataset: a split of those frames
    subset.write_text("".join(f"{frame_id}\n" for frame_id in ids))
    return build_mono_dataset(data_cfg, str(subset), augment=False, with_depth=with_depth, classes=classes)


def load_run(run: Path, max_frames: int, scratch: Path, split: str = "val"):
    """(config, detector with its checkpoint's input spec, the first max_frames frames of the run's
    ``split`` ("val" or "train", without augmentation), their labels)."""
    cfg = load_config(run / "config.yaml", training=False)
    detector = load_detector(cfg, run / "checkpoint_last.pth", torch.device("cpu"))
    with_depth = detector.input_spec.kind == "rgbd"
    split_file = cfg.data.val_split if split == "val" else cfg.data.train_split
    dataset = first_frames(cfg.data, split_file, max_frames, scratch, with_depth, cfg.model.classes)
    truth = {frame_id: dataset.ground_truth(i) for i, frame_id in enumerate(dataset.ids)}
    return cfg, detector, dataset, truth


@torch.no_grad()
def object_errors(run: Path, max_frames: int, scratch: Path, split: str = "val") -> tuple[dict, torch.Tensor]:
    """(the figures, every labelled car's log(predicted / true depth) in a fixed order: the same cars
    in the same order for every run on the same data, so runs' errors can be correlated)."""
    _, detector, dataset, _ = load_run(run, max_frames, scratch, split)
    loader = build_loader(dataset, 8, 0)
    abs_error, rel_error, scores, count = 0.0, 0.0, 0.0, 0
    car_depths, car_truth = [], []  # per Car object, for the medians
    car_sigmas = []  # GUPNet: the depth sigma (m) its loss and its score use, exp(log-variance / 2)
    car_parts = []  # GUPNet: (geometric depth f*H/h, predicted 2D box height, labelled 2D box height) per car
    car_id = list(dataset.classes).index("Car") if "Car" in dataset.classes else -1
    for batch in tqdm(loader, desc=run.name, leave=False):
        targets = batch["targets"]
        # With targets: detectors with per-object heads (GUPNet's ROIs) run them at the labelled objects.
        outputs = detector(detector_input(batch, detector.input_spec), targets, meta=batch["meta"])
        mask = targets["mask_3d"] > 0
        depth = detector.object_depth(outputs, targets, batch["meta"])
        truth = targets["depth"][..., 0]
        abs_error += (depth - truth).abs()[mask].sum().item()
        cars = mask & (targets["cls_ids"] == car_id)
        car_depths.append(depth[cars])
        car_truth.append(truth[cars])
        if isinstance(detector, GUPNet):
            car_sigmas.append(GUPNet.depth_sigma(outputs)[cars])
            box_heights = [boxes[..., 3] - boxes[..., 1] for boxes in (outputs["roi_boxes"], targets["box2d"])]
            car_parts.append(torch.stack([outputs["depth_geometric"][..., 0], *box_heights], dim=-1)[cars])
        rel_error += ((depth - truth).abs() / truth.clamp(min=1e-3))[mask].sum().item()
        heat = torch.sigmoid(outputs["heatmap"]).flatten(2)  # B x C x hw
        index = targets["indices"].unsqueeze(1).expand(-1, heat.shape[1], -1)
        at_centre = heat.gather(2, index)  # B x C x M
        own_class = at_centre.gather(1, targets["cls_ids"].unsqueeze(1)).squeeze(1)
        scores += own_class[targets["mask_2d"] > 0].sum().item()
        count += int(mask.sum())
    objects_2d = max(count, 1)
    car_depths, car_truth = torch.cat(car_depths), torch.cat(car_truth)
    car_errors = (car_depths - car_truth).abs()
    car_relative = car_errors / car_truth.clamp(min=1e-3)
    gupnet = {"car_depth_sigma_median_m": round(float(torch.cat(car_sigmas).median()), 3)} if car_sigmas and len(car_errors) else {}
    if car_parts and len(car_errors):
        gupnet["gupnet_depth_parts"] = gupnet_depth_parts(car_depths, torch.cat(car_parts), car_truth)
    car_log_ratio = torch.log(car_depths.clamp(min=1e-3) / car_truth.clamp(min=1e-3))
    return {
        "objects": count,
        "depth_mae_m": round(abs_error / objects_2d, 3),
        "depth_rel_error": round(rel_error / objects_2d, 4),
        "centre_score": round(scores / objects_2d, 4),
        # The same cars for every run (all labelled cars at their centres), unlike the probes' matched cars.
        "cars": len(car_errors),
        "car_depth_median_m": round(float(car_errors.median()), 3) if len(car_errors) else float("nan"),
        "car_depth_median_rel": round(float(car_relative.median()), 4) if len(car_relative) else float("nan"),
        "car_within_1m": round(float((car_errors < 1.0).float().mean()), 3) if len(car_errors) else float("nan"),
        "car_depth_median_by_range_m": median_by_range(car_errors, car_truth),
        **gupnet,
    }, car_log_ratio


DEPTH_SCALES = (0.82, 0.9, 1.0)  # the depth-only jitter's lowest k (exp(-0.2)), a mid one, none


def gupnet_depth_parts(depth: torch.Tensor, parts: torch.Tensor, truth: torch.Tensor) -> dict:
    """Where GUPNet's depth error sits, per car: its geometric depth f*H/h alone, f*H/h with the
    labelled 2D box height in place of the predicted one, the predicted box height's relative error, and
    the ROI residual added to f*H/h (median, metres). Each figure for all cars and for those 25 m and farther."""
    geometric, predicted_height, true_height = parts.unbind(-1)
    height_ratio = predicted_height / true_height.clamp(min=1e-3)
    figures = {
        "geometric_depth_error_m": (geometric - truth).abs(),
        "geometric_depth_true_box_error_m": (geometric * height_ratio - truth).abs(),
        "box_height_rel_error": (height_ratio - 1).abs(),
        "residual_m": depth - geometric,
    }
    far = truth >= 25.0
    medians = {name: {"all": round(float(value.median()), 3),
                      "25m+": round(float(value[far].median()), 3) if bool(far.any()) else float("nan")}
               for name, value in figures.items()}
    # The residual 1/sigmoid - 1 is positive: a depth target k * z below f*H/h cannot be reached. The
    # depth-only jitter scales z by k in [0.82, 1.22] and leaves f*H/h at the image's scale.
    medians["share_of_cars_below_geometric_at_depth_scale"] = {
        str(k): round(float((k * truth < geometric).float().mean()), 3) for k in DEPTH_SCALES}
    return medians


def error_correlation(ratios: torch.Tensor, reference: torch.Tensor) -> float:
    """Pearson correlation of two runs' per-car log(predicted / true depth) over the same cars: how much
    of one run's error pattern the other shares (a student's with its teacher's)."""
    if ratios.shape != reference.shape:
        raise ValueError(f"the runs scored different cars ({len(ratios)} against {len(reference)}): not the same data")
    a, b = ratios - ratios.mean(), reference - reference.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp(min=1e-12))


def window_readout(depth: torch.Tensor, centres: torch.Tensor, side: int, reduce: str) -> torch.Tensor:
    """Read a depth map around points: ``depth`` B x 1 x H x W (0 = no LiDAR), ``centres`` B x M x 2
    pixel (x, y); returns B x M, the median or mean of the valid depths in the side x side window
    centred on each point's pixel (NaN where the window holds none)."""
    radius = side // 2
    padded = torch.nn.functional.pad(depth[:, 0].masked_fill(depth[:, 0] <= 0, float("nan")),
                                     (radius, radius, radius, radius), value=float("nan"))
    steps = torch.arange(side)
    x = centres[..., 0].round().long().clamp(0, depth.shape[-1] - 1)  # padded index of the window's left edge
    y = centres[..., 1].round().long().clamp(0, depth.shape[-2] - 1)
    rows = (y[..., None, None] + steps[:, None]).expand(*y.shape, side, side)
    cols = (x[..., None, None] + steps[None, :]).expand(*x.shape, side, side)
    images = torch.arange(depth.shape[0])[:, None, None, None].expand_as(rows)
    windows = padded[images, rows, cols].flatten(-2)  # B x M x side^2
    return windows.nanmedian(-1).values if reduce == "median" else windows.nanmean(-1)


def readout_car_errors(dataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{read-out: (read-out minus true depth, true depth)} at every labelled car of ``dataset`` (with
    depth), for every LIDAR_READOUTS read-out in one pass over the frames."""
    car_id = list(dataset.classes).index("Car")
    signed = {name: [] for name in LIDAR_READOUTS}
    truths = {name: [] for name in LIDAR_READOUTS}
    for batch in build_loader(dataset, 8, 0):
        targets = batch["targets"]
        # The projected 3D centre, in input pixels: its stride-4 cell plus the 3D offset target.
        width = batch["image"].shape[-1] // dataset.stride
        cell = torch.stack([targets["indices"] % width, targets["indices"] // width], -1).float()
        centres = (cell + targets["offset_3d"]) * dataset.stride
        truth = targets["depth"][..., 0]
        for name, (side, reduce) in LIDAR_READOUTS.items():
            read = window_readout(batch["depth"], centres, side, reduce)
            cars = (targets["mask_3d"] > 0) & (targets["cls_ids"] == car_id) & read.isfinite()
            signed[name].append((read - truth)[cars])
            truths[name].append(truth[cars])
    return {name: (torch.cat(signed[name]), torch.cat(truths[name])) for name in LIDAR_READOUTS}


def lidar_readout(run: Path, max_frames: int, scratch: Path) -> dict:
    """Each LIDAR_READOUTS read-out of the run's LiDAR input (LiDAR with the run's depth_fill for an
    RGB run): one offset (the median of true minus read depth on the first ``max_frames`` training
    cars: LiDAR hits the surface, the label is the centre) applied to the validation cars."""
    cfg = load_config(run / "config.yaml", training=False)
    data_cfg = cfg.data if cfg.data.depth_source is not None else dataclasses.replace(cfg.data, depth_source="lidar")
    classes = cfg.model.classes
    train = readout_car_errors(first_frames(data_cfg, data_cfg.train_split, max_frames, scratch, True, classes))
    val = readout_car_errors(first_frames(data_cfg, data_cfg.val_split, max_frames, scratch, True, classes))
    report = {}
    for name in LIDAR_READOUTS:
        offset = -float(train[name][0].median())
        signed, truth = val[name]
        errors = (signed + offset).abs()
        report[name] = {
            "offset_m": round(offset, 3),
            "cars": len(errors),  # cars whose window holds LiDAR
            "car_depth_median_m": round(float(errors.median()), 3),
            "car_within_1m": round(float((errors < 1.0).float().mean()), 3),
            "car_depth_median_by_range_m": median_by_range(errors, truth),
        }
    return report


def probes(run: Path, max_frames: int, scratch: Path, score_threshold: float | None = None, split: str = "val") -> dict:
    """The library's depth probes (add3d.engine.probes) on the run's ``split`` frames, on the
    detections above ``score_threshold`` (None: the run's model.score_threshold, as decode does)."""
    _, detector, dataset, truth = load_run(run, max_frames, scratch, split)
    return depth_probes(detector, build_loader(dataset, 8, 0), truth, detector.input_spec, torch.device("cpu"),
                        score_threshold)


def gradient_shares(run: Path, batches: int) -> dict:
    """Gradient norm on the student of each weighted loss term (detection vs distillation terms)."""
    cfg = load_config(run / "config.yaml")
    if cfg.distill is None:
        return {}
    torch.manual_seed(0)
    module = build_training_module(cfg)
    path = run / "checkpoint_last.pth"
    load_module_state(module, load_checkpoint(path), path)
    module.train()
    dataset = build_mono_dataset(cfg.data, cfg.data.train_split, augment=True, seed=0, classes=cfg.model.classes)
    loader = iter(build_loader(dataset, cfg.train.batch_size, 0))
    norms = student_gradient_norms(module, (next(loader) for _ in range(batches)))  # terms carry their weights
    return {name: round(value, 4) for name, value in norms.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument("--grads", action="store_true", help="also gradient norms per loss term (ADD runs)")
    parser.add_argument("--grads-only", action="store_true", help="only the gradient norms (any detector)")
    parser.add_argument("--grad-batches", type=int, default=3)
    parser.add_argument("--no-probes", action="store_true", help="skip the depth probes (add3d.engine.probes)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="probe the detections above this score (default: each run's model.score_threshold)")
    parser.add_argument("--lidar-readout", action="store_true",
                        help="also the LiDAR read-outs of the same cars (a property of the data, not of the model)")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="the frames of the object errors and probes: the validation split, or the training "
                             "split without augmentation (what a teacher's outputs are distilled on)")
    parser.add_argument("--error-reference", type=Path, default=None,
                        help="a run (e.g. the teacher): also each run's correlation of per-car depth errors with this one's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference_runs = [args.error_reference] if args.error_reference else []
    missing = [run for run in [*args.runs, *reference_runs] if not (run / "checkpoint_last.pth").is_file()]
    if missing:  # before any work: a mistyped run folder must not shorten the report unnoticed
        print(f"error: {missing[0] / 'checkpoint_last.pth'}: no such file (not a finished run folder)", file=sys.stderr)
        return 2
    report = {}
    reference_errors, reference = None, None
    if args.error_reference and not args.grads_only:
        with tempfile.TemporaryDirectory() as scratch:
            reference_errors, reference = object_errors(args.error_reference, args.max_frames, Path(scratch), args.split)
    for run in args.runs:
        with tempfile.TemporaryDirectory() as scratch:
            if args.grads_only:
                report[run.name] = {}
            elif reference is not None and run.resolve() == args.error_reference.resolve():
                report[run.name], ratios = dict(reference_errors), reference  # the reference is also a run: once
            else:
                report[run.name], ratios = object_errors(run, args.max_frames, Path(scratch), args.split)
            if reference is not None:
                try:
                    pearson = error_correlation(ratios, reference)
                except ValueError as error:
                    print(f"error: {run} against {args.error_reference}: {error}", file=sys.stderr)
                    return 2
                report[run.name]["car_error_correlation"] = {"reference": str(args.error_reference),
                                                             "pearson": round(pearson, 4)}
            if not args.grads_only and not args.no_probes:
                report[run.name]["probes"] = probes(run, args.max_frames, Path(scratch), args.score_threshold, args.split)
            if args.lidar_readout:
                report[run.name]["lidar_readout"] = lidar_readout(run, args.max_frames, Path(scratch))
        if args.grads or args.grads_only:
            report[run.name]["gradient_norms"] = gradient_shares(run, args.grad_batches)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
