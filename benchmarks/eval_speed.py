"""Speed of the KITTI evaluator on a generated val-sized set (3769 frames, all classes and metrics).

    .venv/bin/python benchmarks/eval_speed.py [--frames 3769] [--seed 0] [--devkit-cmd "CMD"]

Prints JSON: seconds for ``evaluate_dirs`` (reading files included, all three classes, 2D/BEV/3D/AOS,
R11 + R40), best of ``--repeats`` runs. ``--devkit-cmd`` optionally times an external build of the
official devkit in the same run: the command is formatted with ``{gt}``, ``{pred}`` (the result folder
holding ``data/``), ``{ids}`` and run through the shell; it is never built or shipped by this project
(see docs/EVALUATION.md).

The generator (:func:`write_eval_set`) makes hard cases on purpose: exact copies of GT, noisy boxes,
tied scores, class confusions (Car/Van, Pedestrian/Person_sitting/Cyclist), DontCare regions with
detections inside, truncated/occluded objects, boxes with 2D heights right at the 25/40 px limits,
double detections, missing and empty prediction files.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

GT_CLASSES = ("Car", "Pedestrian", "Cyclist", "Van", "Person_sitting", "Truck", "Misc", "Tram", "DontCare")
GT_CLASS_P = (0.42, 0.14, 0.08, 0.08, 0.03, 0.03, 0.02, 0.01, 0.19)
MEAN_DIMS = {  # (h, w, l) metres
    "Car": (1.53, 1.63, 3.88), "Van": (2.2, 1.9, 5.1), "Truck": (3.2, 2.6, 10.0), "Tram": (3.5, 2.6, 15.0),
    "Pedestrian": (1.76, 0.66, 0.84), "Person_sitting": (1.27, 0.59, 0.8), "Cyclist": (1.74, 0.6, 1.76),
    "Misc": (1.9, 1.5, 3.6),
}
CONFUSION = {"Car": "Van", "Van": "Car", "Pedestrian": "Cyclist", "Cyclist": "Pedestrian",
             "Person_sitting": "Pedestrian", "Truck": "Car", "Misc": "Car", "Tram": "Van"}
FOCAL, CX, CY = 721.5, 609.6, 172.9


def _project(location, dims, ry):
    """Approximate 2D box of a 3D box (centre and height from a pinhole camera), clipped to 1242x375."""
    x, y, z = location
    h, w, l = dims
    half = 0.5 * (abs(l * np.cos(ry)) + abs(w * np.sin(ry)))
    x1, x2 = CX + FOCAL * (x - half) / z, CX + FOCAL * (x + half) / z
    y1, y2 = CY + FOCAL * (y - h) / z, CY + FOCAL * y / z
    return np.clip([x1, y1, x2, y2], [0, 0, 0, 0], [1241, 374, 1241, 374])


def _line(cls, trunc, occ, alpha, box, dims, loc, ry, score=None, decimals=2):
    values = [f"{trunc:.2f}", str(int(occ)), f"{alpha:.2f}", *(f"{v:.2f}" for v in box),
              *(f"{v:.2f}" for v in dims), *(f"{v:.2f}" for v in loc), f"{ry:.2f}"]
    if score is not None:
        values.append(f"{score:.{decimals}f}")
    return " ".join([cls, *values])


def _random_gt(rng, crowded=False):
    cls = GT_CLASSES[rng.choice(len(GT_CLASSES), p=GT_CLASS_P)]
    if cls == "DontCare":
        x1, y1 = rng.uniform(0, 1150), rng.uniform(140, 230)
        box = [x1, y1, x1 + rng.uniform(8, 90), y1 + rng.uniform(5, 45)]
        return dict(cls=cls, trunc=-1, occ=-1, alpha=-10, box=box, dims=[-1, -1, -1],
                    loc=[-1000, -1000, -1000], ry=-10)
    dims = np.array(MEAN_DIMS[cls]) * rng.uniform(0.85, 1.15, 3)
    z = rng.uniform(8, 14) if crowded else rng.uniform(4, 70)
    spread = 0.15 if crowded else 0.6
    loc = np.array([rng.uniform(-spread, spread) * z, rng.uniform(1.4, 2.0), z])
    ry = rng.uniform(-np.pi, np.pi)
    box = _project(loc, dims, ry)
    if rng.random() < 0.1:  # heights right at the difficulty limits (40 / 25 px, and int truncation)
        box[3] = box[1] + rng.choice([24.99, 25.0, 25.01, 25.5, 39.99, 40.0, 40.01, 40.5])
    alpha = float(np.arctan2(np.sin(ry - np.arctan2(loc[0], z)), np.cos(ry - np.arctan2(loc[0], z))))
    return dict(cls=cls, trunc=float(rng.choice([0, 0, 0, 0.1, 0.15, 0.2, 0.3, 0.45, 0.5, 0.7])),
                occ=int(rng.choice(4, p=[0.5, 0.25, 0.2, 0.05])), alpha=alpha, box=box, dims=dims, loc=loc, ry=ry)


def _detections(rng, objects, tied_scores, noise_scale):
    out = []
    score = (lambda: float(rng.choice([0.3, 0.5, 0.7, 0.9]))) if tied_scores else (lambda: float(rng.random()))
    for obj in objects:
        if obj["cls"] == "DontCare":
            if rng.random() < 0.4:  # a detection inside the DontCare region
                x1, y1, x2, y2 = obj["box"]
                shrink = rng.uniform(0, 0.2)
                box = [x1 + shrink * (x2 - x1), y1 + shrink * (y2 - y1), x2, y2 + 30 * rng.random()]
                cls = str(rng.choice(["Car", "Pedestrian", "Cyclist"]))
                out.append(dict(cls=cls, trunc=0, occ=0, alpha=0.3, box=box, dims=MEAN_DIMS[cls],
                                loc=[rng.uniform(-10, 10), 1.6, rng.uniform(10, 60)], ry=0.1, score=score()))
            continue
        if rng.random() > 0.8:
            continue  # missed
        det = dict(obj, score=score())
        kind = rng.random()
        if kind < 0.2:
            pass  # exact copy of the GT
        else:
            noise = min(rng.exponential(noise_scale), 1.0)
            det["loc"] = obj["loc"] + rng.normal(0, noise, 3) * [0.5, 0.1, 1.5]
            det["dims"] = obj["dims"] * rng.uniform(1 - noise / 3, 1 + noise / 3, 3)
            det["ry"] = obj["ry"] + rng.normal(0, noise)
            det["alpha"] = obj["alpha"] + rng.normal(0, noise)
            det["box"] = obj["box"] + rng.normal(0, 8 * noise, 4)
            det["box"][2] = max(det["box"][2], det["box"][0])
            det["box"][3] = max(det["box"][3], det["box"][1])
        if rng.random() < 0.08:
            det["cls"] = CONFUSION[obj["cls"]]
        out.append(det)
        if rng.random() < 0.1:  # double detection (sometimes an identical one with the same score)
            same = rng.random() < 0.3
            out.append(dict(det, score=det["score"] if same else det["score"] * 0.5,
                            loc=det["loc"] if same else det["loc"] + [0.3, 0, 0.5]))
    for _ in range(rng.poisson(1.5)):  # false positives, some tiny
        fp = _random_gt(rng)
        if fp["cls"] == "DontCare":
            continue
        fp["cls"] = str(rng.choice(["Car", "Pedestrian", "Cyclist"]))
        out.append(dict(fp, score=score()))
    return out


def write_eval_set(
    root: str | Path, num_frames: int, seed: int = 0, invalid_alpha: bool = False, crowded: bool = False,
    noise_scale: float = 0.15, two_d_only: float = 0.0,
) -> tuple[Path, Path, Path]:
    """Write ``root/label_2``, ``root/pred/data`` and ``root/ids.txt``; return (gt_dir, pred_dir, ids).

    ``crowded`` packs the objects of a frame into a few metres (many overlapping candidates per GT);
    ``noise_scale`` is the mean relative noise of the non-copied detections; a ``two_d_only`` fraction
    of the detections is written without 3D box (KITTI's ``-1 -1 -1 -1000 -1000 -1000`` placeholders).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    gt_dir, pred_dir = root / "label_2", root / "pred" / "data"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(num_frames)]
    for frame_id in ids:
        kind = rng.random()
        num_objects = 0 if kind < 0.03 else int(rng.integers(1, 16))
        objects = [_random_gt(rng, crowded) for _ in range(num_objects)]
        (gt_dir / f"{frame_id}.txt").write_text(
            "".join(_line(o["cls"], o["trunc"], o["occ"], o["alpha"], o["box"], o["dims"], o["loc"], o["ry"]) + "\n"
                    for o in objects))
        if rng.random() < 0.03:
            continue  # missing prediction file = no detections
        dets = [] if rng.random() < 0.03 else _detections(rng, objects, rng.random() < 0.3, noise_scale)
        if invalid_alpha and dets and rng.random() < 0.01:
            dets[0]["alpha"] = -10
        for det in dets:
            if rng.random() < two_d_only:
                det.update(dims=[-1, -1, -1], loc=[-1000, -1000, -1000], ry=-10, trunc=-1, occ=-1)
        decimals = int(rng.choice([2, 4, 6]))
        (pred_dir / f"{frame_id}.txt").write_text(
            "".join(_line(d["cls"], d["trunc"], d["occ"], d["alpha"], d["box"], d["dims"], d["loc"], d["ry"],
                          d["score"], decimals) + "\n" for d in dets))
    ids_file = root / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    return gt_dir, pred_dir, ids_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3769)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devkit-cmd", default=None, help="optional shell command of an external devkit build")
    args = parser.parse_args()

    from add3d.evaluation.kitti_eval import evaluate_dirs

    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir, ids_file = write_eval_set(tmp, args.frames, args.seed)
        num_gt = sum(1 for path in gt_dir.glob("*.txt") for _ in path.read_text().splitlines())
        num_det = sum(1 for path in pred_dir.glob("*.txt") for _ in path.read_text().splitlines())
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = evaluate_dirs(gt_dir, pred_dir, ids=ids_file)
            times.append(time.perf_counter() - start)
        report = {
            "frames": args.frames,
            "gt_lines": num_gt,
            "detection_lines": num_det,
            "add3d_seconds": round(min(times), 3),
            "add3d_seconds_all": [round(t, 3) for t in times],
            "car_3d_R40_moderate": round(result["Car"]["3d"]["R40"][1], 4),
        }
        if args.devkit_cmd:
            command = args.devkit_cmd.format(gt=shlex.quote(str(gt_dir)), pred=shlex.quote(str(pred_dir.parent)),
                                             ids=shlex.quote(str(ids_file)))
            start = time.perf_counter()
            subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
            report["devkit_seconds"] = round(time.perf_counter() - start, 3)
            report["speedup_vs_devkit"] = round(report["devkit_seconds"] / report["add3d_seconds"], 2)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
