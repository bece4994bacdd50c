"""One-to-one matching of detections to labels by 2D box overlap (depth probes, prediction reviews).

Greedy, highest IoU first, each box used at most once, pairs below ``min_iou`` never matched. Not the
KITTI metric's assignment (add3d.evaluation.kitti_eval ranks detections by score per difficulty).
"""

from __future__ import annotations

import numpy as np

from add3d.geometry.boxes import box2d_iou


def match_by_iou(truth_boxes: np.ndarray, found_boxes: np.ndarray, min_iou: float = 0.5) -> list[tuple[int, int]]:
    """(truth index, found index) pairs for boxes ``(N, 4)`` and ``(M, 4)`` (x1, y1, x2, y2)."""
    truth_boxes = np.asarray(truth_boxes, dtype=np.float64).reshape(-1, 4)
    found_boxes = np.asarray(found_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(truth_boxes) or not len(found_boxes):
        return []
    iou = box2d_iou(truth_boxes, found_boxes)
    pairs = sorted(((iou[a, b], a, b) for a, b in zip(*np.nonzero(iou >= min_iou))), reverse=True)
    used_truth, used_found, matches = set(), set(), []
    for _, a, b in pairs:
        if a in used_truth or b in used_found:
            continue
        used_truth.add(a)
        used_found.add(b)
        matches.append((int(a), int(b)))
    return matches
