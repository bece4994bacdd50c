"""KITTI 3D object evaluation, numerically identical to the official devkit, on the CPU.

Reproduces ``cpp/evaluate_object.cpp`` (2D, bird's-eye-view and 3D AP, and AOS) with the commonly
reported summaries: AP|R40 (mean precision at recall 1/40 ... 1, the test server's metric since 2019)
and AP|R11 (points 0, 0.1, ..., 1). See docs/EVALUATION.md for the semantics and the comparison
against the compiled devkit. The command is ``add3d eval-kitti`` (add3d.commands.eval_kitti). Usage::

    from add3d.evaluation.kitti_eval import evaluate, evaluate_dirs, format_table
    result = evaluate_dirs("kitti/training/label_2", "runs/x/pred", ids=val_ids)
    result["Car"]["3d"]["R40"]  # [easy, moderate, hard] in percent
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.evaluation.devkit_matching import MatchProblem, average_precision, precision_curves
from add3d.evaluation.label_arrays import INVALID_COORDINATE, LabelArrays, list_frame_ids, read_label_dir
from add3d.geometry.iou import bev_intersection_pairs, height_overlap_pairs

CLASSES = ("Car", "Pedestrian", "Cyclist")
METRICS = ("2d", "bev", "3d", "aos")
DIFFICULTIES = ("easy", "moderate", "hard")

# Difficulty definitions (GT): minimum 2D height (px), maximum occlusion level, maximum truncation.
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)

# Minimum overlap per (metric, class); a match needs overlap strictly greater.
MIN_OVERLAP = {
    "default": {"2d": (0.7, 0.5, 0.5), "bev": (0.7, 0.5, 0.5), "3d": (0.7, 0.5, 0.5)},
    # "Loose" setting of many papers (and OpenPCDet/mmdet3d's second table): BEV/3D at 0.5/0.25/0.25,
    # 2D boxes unchanged.
    "loose": {"2d": (0.7, 0.5, 0.5), "bev": (0.5, 0.25, 0.25), "3d": (0.5, 0.25, 0.25)},
}
NEIGHBOUR_CLASS = {"car": "van", "pedestrian": "person_sitting"}  # ignored, never false negatives
INVALID_ALPHA = -10.0  # a single detection with this alpha switches AOS off (as in the devkit)


def _lower(names: np.ndarray) -> np.ndarray:
    """Lower-cased class names (the devkit compares names case-insensitively)."""
    if len(names) == 0:
        return np.zeros(0, dtype=object)
    unique, inverse = np.unique(names.astype(str), return_inverse=True)
    return np.array([name.lower() for name in unique], dtype=object)[inverse]


def _frame_pairs(frame_a: np.ndarray, frame_b: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with frame_a[i] == frame_b[j]; both inputs are sorted by frame."""
    count_b = np.bincount(frame_b, minlength=num_frames)
    start_b = np.r_[0, np.cumsum(count_b)[:-1]]
    per_a = count_b[frame_a]
    index_a = np.repeat(np.arange(len(frame_a)), per_a)
    offset = np.arange(per_a.sum()) - np.repeat(np.cumsum(per_a) - per_a, per_a)
    index_b = start_b[frame_a][index_a] + offset
    return index_a, index_b


def _box2d_overlap(det: np.ndarray, other: np.ndarray, criterion: str) -> np.ndarray:
    """The devkit's imageBoxOverlap on paired (P, 4) boxes; criterion "union" or "a" (detection area)."""
    width = np.minimum(det[:, 2], other[:, 2]) - np.maximum(det[:, 0], other[:, 0])
    height = np.minimum(det[:, 3], other[:, 3]) - np.maximum(det[:, 1], other[:, 1])
    inter = width * height
    area_det = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_other = (other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1])
    denominator = area_det if criterion == "a" else area_det + area_other - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = inter / denominator
    return np.where((width > 0) & (height > 0), overlap, 0.0)


def _box_overlaps(det: LabelArrays, other: LabelArrays, index_det, index_other, criterion: str) -> dict:
    """2D, BEV and 3D overlap of paired detections and GT / DontCare boxes, as the devkit computes them."""
    det_boxes, other_boxes = det.boxes_3d[index_det], other.boxes_3d[index_other]
    overlaps = {"2d": _box2d_overlap(det.box2d[index_det], other.box2d[index_other], criterion)}
    inter_area = bev_intersection_pairs(det_boxes, other_boxes)
    inter_volume = inter_area * height_overlap_pairs(det_boxes, other_boxes)
    area_det = det_boxes[:, 4] * det_boxes[:, 5]
    volume_det = area_det * det_boxes[:, 3]
    if criterion == "a":
        bev_den, box_den = area_det, volume_det
    else:
        area_other = other_boxes[:, 4] * other_boxes[:, 5]
        bev_den = area_det + area_other - inter_area
        box_den = volume_det + area_other * other_boxes[:, 3] - inter_volume
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps["bev"] = inter_area / bev_den
        overlaps["3d"] = inter_volume / box_den
    return overlaps


def _gt_flags(gt: LabelArrays, names: np.ndarray, cls: str, difficulty: int) -> np.ndarray:
    """cleanData for GT: 0 valid, 1 ignored (neighbour class or too hard), -1 other class."""
    valid_class = np.where(names == cls, 1, np.where(names == NEIGHBOUR_CLASS.get(cls, ""), 0, -1))
    height = gt.box2d[:, 3] - gt.box2d[:, 1]
    too_hard = (
        (gt.occlusion > MAX_OCCLUSION[difficulty])
        | (gt.truncation > MAX_TRUNCATION[difficulty])
        | (height <= MIN_HEIGHT[difficulty])
    )
    return np.where((valid_class == 1) & ~too_hard, 0, np.where((valid_class == 0) | (valid_class == 1), 1, -1))


def _det_heights(det: LabelArrays) -> np.ndarray:
    """Detection heights truncated to integers, as the devkit's ``int32_t height = fabs(y1 - y2)``."""
    return np.trunc(np.abs(det.box2d[:, 1] - det.box2d[:, 3]))


def _det_flags(heights: np.ndarray, names: np.ndarray, cls: str, difficulty: int) -> np.ndarray:
    """cleanData for detections: 1 too small (any class!), 0 the class, -1 other classes."""
    return np.where(heights < MIN_HEIGHT[difficulty], 1, np.where(names == cls, 0, -1))


def _evaluated_metrics(det: LabelArrays, det_names: np.ndarray, cls: str) -> dict[str, bool]:
    """The devkit evaluates a class/metric only if some detection of the class provides it."""
    mine = det_names == cls
    x, y, z = det.location.T
    h, w, l = det.dims.T
    has_ground = (x != INVALID_COORDINATE) & (z != INVALID_COORDINATE) & (w > 0) & (l > 0)
    has_3d = has_ground & (y != INVALID_COORDINATE) & (h > 0)
    evaluated_2d = bool(np.any(mine & (det.box2d[:, 0] >= 0)))
    return {"2d": evaluated_2d, "aos": evaluated_2d, "bev": bool(np.any(mine & has_ground)), "3d": bool(np.any(mine & has_3d))}


def _class_curves(gt: LabelArrays, det: LabelArrays, cls: str, overlap: str, compute_aos: bool) -> dict:
    """Precision curves {metric: [easy, moderate, hard] 41-point arrays, or None} for one class."""
    key = cls.lower()
    gt_names, det_names = _lower(gt.cls_type), _lower(det.cls_type)
    thresholds = {metric: MIN_OVERLAP[overlap][metric][CLASSES.index(cls)] for metric in ("2d", "bev", "3d")}
    evaluated = _evaluated_metrics(det, det_names, key)

    # Only boxes that can ever take part in a match: GT of the class or its neighbour, detections of
    # the class or too small for the easiest difficulty (those of any class can absorb a GT).
    gt_rows = np.flatnonzero((gt_names == key) | (gt_names == NEIGHBOUR_CLASS.get(key, "")))
    dc_rows = np.flatnonzero(gt_names == "dontcare")
    heights = _det_heights(det)
    det_rows = np.flatnonzero((det_names == key) | (heights < max(MIN_HEIGHT)))
    gts, dcs, dets = gt.select(gt_rows), gt.select(dc_rows), det.select(det_rows)
    gt_names, det_names, heights = gt_names[gt_rows], det_names[det_rows], heights[det_rows]

    pair_gt, pair_det = _frame_pairs(gts.frame, dets.frame, gt.num_frames)
    overlaps = _box_overlaps(dets, gts, pair_det, pair_gt, "union")
    mine = np.flatnonzero(det_names == key)
    dc_det, dc_box = _frame_pairs(dets.frame[mine], dcs.frame, gt.num_frames)
    dc_overlaps = _box_overlaps(dets, dcs, mine[dc_det], dc_box, "a")

    curves: dict = {}
    for metric in ("2d", "bev", "3d"):
        if not evaluated[metric]:
            curves[metric] = [np.zeros(41) for _ in DIFFICULTIES]
            if metric == "2d":
                curves["aos"] = [np.zeros(41) if compute_aos else None for _ in DIFFICULTIES]
            continue
        match = overlaps[metric] > thresholds[metric]
        in_dontcare = np.zeros(len(dets), dtype=bool)
        in_dontcare[mine[dc_det[dc_overlaps[metric] > thresholds[metric]]]] = True
        per_difficulty, per_difficulty_aos = [], []
        for difficulty in range(len(DIFFICULTIES)):
            problem = MatchProblem(
                gt_frame=gts.frame,
                gt_flag=_gt_flags(gts, gt_names, key, difficulty),
                gt_alpha=gts.alpha,
                det_flag=_det_flags(heights, det_names, key, difficulty),
                det_score=dets.score,
                det_alpha=dets.alpha,
                det_in_dontcare=in_dontcare,
                pair_gt=pair_gt[match],
                pair_det=pair_det[match],
                pair_overlap=overlaps[metric][match],
            )
            precision, aos = precision_curves(problem, compute_aos and metric == "2d")
            per_difficulty.append(precision)
            per_difficulty_aos.append(aos)
        curves[metric] = per_difficulty
        if metric == "2d":
            curves["aos"] = per_difficulty_aos
    return curves


def _scale_box2d(arrays: LabelArrays, factor: float) -> LabelArrays:
    """The same labels with every 2D box multiplied by ``factor`` (IoUs unchanged, heights scaled)."""
    return dataclasses.replace(arrays, box2d=arrays.box2d * factor)


def _check_options(classes, overlap: str) -> tuple[str, ...]:
    classes = tuple(classes)
    unknown = [cls for cls in classes if cls not in CLASSES]
    if unknown or not classes:
        raise Add3dError(f"classes must be among {', '.join(CLASSES)}; got {', '.join(classes) or 'none'}")
    if overlap not in MIN_OVERLAP:
        raise Add3dError(f"overlap must be one of {', '.join(MIN_OVERLAP)}; got {overlap!r}")
    return classes


def evaluate_arrays(
    gt: LabelArrays,
    det: LabelArrays,
    classes=CLASSES,
    overlap: str = "default",
    return_curves: bool = False,
    box2d_scale: float = 1.0,
) -> dict:
    """Evaluate flat label arrays (see :func:`evaluate` for the result layout)."""
    classes = _check_options(classes, overlap)
    if gt.num_frames != det.num_frames:
        raise Add3dError(f"ground truth has {gt.num_frames} frames but detections {det.num_frames}")
    if not (np.isfinite(box2d_scale) and box2d_scale > 0):
        raise Add3dError(f"box2d_scale must be a positive number, got {box2d_scale}")
    if box2d_scale != 1.0:
        gt, det = _scale_box2d(gt, box2d_scale), _scale_box2d(det, box2d_scale)
    compute_aos = not bool(np.any(det.alpha == INVALID_ALPHA))
    result: dict = {}
    all_curves: dict = {}
    for cls in classes:
        curves = _class_curves(gt, det, cls, overlap, compute_aos)
        result[cls] = {}
        for metric in METRICS:
            per_difficulty = [average_precision(curve) if curve is not None else (None, None) for curve in curves[metric]]
            result[cls][metric] = {"R11": [ap[0] for ap in per_difficulty], "R40": [ap[1] for ap in per_difficulty]}
        all_curves[cls] = {
            metric: [None if curve is None else curve.tolist() for curve in curves[metric]] for metric in METRICS
        }
    if return_curves:
        result["curves"] = all_curves
    return result


def evaluate(
    gt: dict[str, list[Object3D]],
    dt: dict[str, list[Object3D]],
    classes=CLASSES,
    overlap: str = "default",
    return_curves: bool = False,
    box2d_scale: float = 1.0,
) -> dict:
    """Official KITTI AP of detections ``dt`` against ground truth ``gt`` (both keyed by frame id).

    Frames are the keys of ``gt``; a frame missing from ``dt`` has no detections; detections need a
    ``score``. Returns ``{cls: {"2d"|"bev"|"3d"|"aos": {"R11": [e, m, h], "R40": [e, m, h]}}}`` in
    percent. AOS values are None when some detection has alpha == -10 (the devkit then skips AOS).
    ``overlap="loose"`` uses 0.5/0.25/0.25 for BEV/3D. ``return_curves=True`` adds
    ``result["curves"][cls][metric]``: three 41-point precision (AOS: orientation-similarity) lists,
    point i at recall i/40.

    ``box2d_scale`` multiplies every 2D box (ground truth and detections) before evaluating, so the
    devkit's pixel-height difficulty limits (40/25/25 px) act on down-scaled frames as they would on
    full-size KITTI frames (4.0 for ``add3d synth --scale 0.25``); 2D IoUs do not change. The
    official protocol is 1.0; anything else must be reported with the numbers.
    """
    frame_ids = list(gt)
    for frame_id in frame_ids:
        for obj in dt.get(frame_id, []):
            if obj.score is None or not np.isfinite(obj.score):
                raise Add3dError(f"frame {frame_id}: detection of class {obj.cls_type} has no finite score ({obj.score})")
    gt_arrays = LabelArrays.from_objects([gt[frame_id] for frame_id in frame_ids])
    dt_arrays = LabelArrays.from_objects([dt.get(frame_id, []) for frame_id in frame_ids])
    return evaluate_arrays(gt_arrays, dt_arrays, classes, overlap, return_curves, box2d_scale)


def evaluate_dirs(
    gt_dir: str | Path,
    pred_dir: str | Path,
    ids: list[str] | str | Path | None = None,
    classes=CLASSES,
    overlap: str = "default",
    return_curves: bool = False,
    box2d_scale: float = 1.0,
    strict: bool = False,
    missing_as_empty: bool = False,
) -> dict:
    """:func:`evaluate` on KITTI folders: ``gt_dir/<id>.txt`` (label_2) and ``pred_dir/<id>.txt`` (results).

    ``ids``: a list of frame ids, or the path of an ids file; default every ``*.txt`` in ``gt_dir``.
    A missing prediction file is an error unless ``missing_as_empty`` (then it means no detections
    for that frame); a folder without any of them is always one. Lines the devkit reads but that
    are odd (inverted 2D boxes) are scored as it does, with one warning; ``strict`` refuses them.
    See docs/EVALUATION.md.
    """
    _check_options(classes, overlap)
    frame_ids = list(ids) if isinstance(ids, (list, tuple)) else list_frame_ids(gt_dir, ids)
    gt = read_label_dir(gt_dir, frame_ids, prediction=False)
    det = read_label_dir(pred_dir, frame_ids, prediction=True, strict=strict, missing_as_empty=missing_as_empty)
    return evaluate_arrays(gt, det, classes, overlap, return_curves, box2d_scale)


def _format_values(values) -> str:
    return "".join(f"{'-':>9}" if value is None else f"{value:9.2f}" for value in values)


def format_table(result: dict, box2d_scale: float = 1.0) -> str:
    """A readable table: one row per class and metric, easy/moderate/hard for R40 then R11 (percent).

    ``box2d_scale``: the value the result was computed with; anything but 1 is said in the title.
    """
    names = {"2d": "2D bbox", "bev": "BEV", "3d": "3D", "aos": "AOS"}
    columns = ("easy", "mod", "hard")
    header = (
        f"{'class':<11}{'metric':<8}"
        + "".join(f"{'R40 ' + c if c == 'easy' else c:>9}" for c in columns)
        + "  |"
        + "".join(f"{'R11 ' + c if c == 'easy' else c:>9}" for c in columns)
    )
    title = "KITTI AP (%), official devkit semantics"
    if box2d_scale != 1.0:
        title += f"; 2D boxes scaled x{box2d_scale:g} before the difficulty limits (not the official protocol)"
    lines = [title, header, "-" * len(header)]
    for cls, metrics in result.items():
        if cls == "curves":
            continue
        for metric in METRICS:
            values = metrics[metric]
            lines.append(f"{cls:<11}{names[metric]:<8}{_format_values(values['R40'])}  |{_format_values(values['R11'])}")
    return "\n".join(lines)
