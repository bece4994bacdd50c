"""Per-frame errors of a detector, to look at its worst frames first (``add3d show-predictions``).

Each labelled object of an evaluated class is matched to at most one prediction of the same class
with 2D IoU >= ``min_iou`` (0.5), greedily highest IoU first (evaluation.box_matching, as the depth
probes match). A matched object has a depth error
(predicted minus labelled rect z of the bottom centre, metres); unmatched labels are *missed*,
unmatched predictions *false positives*. This is a reviewing aid, not the KITTI metric
(add3d.evaluation.kitti_eval): no difficulty levels, DontCare regions only excuse predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from add3d.data.kitti import Object3D
from add3d.errors import Add3dError
from add3d.evaluation.box_matching import match_by_iou

ORDERS = ("missed", "depth")


@dataclass
class FrameReview:
    frame_id: str
    ground_truth: list[Object3D]  # labels of the evaluated classes
    predictions: list[Object3D]
    matches: list[tuple[int, int]] = field(default_factory=list)  # (label index, prediction index)
    missed: list[int] = field(default_factory=list)  # label indices
    false_positives: list[int] = field(default_factory=list)  # prediction indices

    def depth_errors(self) -> np.ndarray:
        """Signed depth error (prediction - label, metres) of each match, in ``matches`` order."""
        return np.array([self.predictions[p].location[2] - self.ground_truth[g].location[2] for g, p in self.matches])

    @property
    def max_depth_error(self) -> float:
        errors = self.depth_errors()
        return float(np.abs(errors).max()) if len(errors) else 0.0

    @property
    def mean_depth_error(self) -> float:
        errors = self.depth_errors()
        return float(np.abs(errors).mean()) if len(errors) else 0.0


def review_frame(frame_id: str, labels: list[Object3D], predictions: list[Object3D], classes: tuple[str, ...],
                 min_iou: float = 0.5, min_score: float = 0.0) -> FrameReview:
    """Match one frame's predictions (score >= ``min_score``) to its labels of ``classes``."""
    ground_truth = [o for o in labels if o.cls_type in classes]
    dont_care = [o for o in labels if o.cls_type == "DontCare"]
    kept = [o for o in predictions if o.cls_type in classes and (o.score is None or o.score >= min_score)]
    review = FrameReview(frame_id, ground_truth, kept)
    for cls in classes:
        truth = [i for i, o in enumerate(ground_truth) if o.cls_type == cls]
        found = [i for i, o in enumerate(kept) if o.cls_type == cls]
        pairs = match_by_iou(np.array([ground_truth[i].box2d for i in truth]), np.array([kept[i].box2d for i in found]), min_iou)
        review.matches += [(truth[a], found[b]) for a, b in pairs]
    review.matches.sort()
    matched_labels = {g for g, _ in review.matches}
    matched_predictions = {p for _, p in review.matches}
    review.missed = [g for g in range(len(ground_truth)) if g not in matched_labels]
    review.false_positives = [p for p in range(len(kept))
                              if p not in matched_predictions and not _inside_dont_care(kept[p], dont_care)]
    return review


def _inside_dont_care(prediction: Object3D, dont_care: list[Object3D]) -> bool:
    """KITTI's rule: a prediction mostly (> 50 % of its area) inside a DontCare box is not counted."""
    if not dont_care:
        return False
    x1, y1, x2, y2 = prediction.box2d
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    for region in dont_care:
        a1, b1, a2, b2 = region.box2d
        overlap = max(min(x2, a2) - max(x1, a1), 0.0) * max(min(y2, b2) - max(y1, b1), 0.0)
        if area > 0 and overlap / area > 0.5:
            return True
    return False


def worst_first(reviews: list[FrameReview], order: str = "missed") -> list[FrameReview]:
    """Frames sorted worst first: ``missed`` = most missed objects, then largest depth error;
    ``depth`` = largest depth error, then most missed. Ties keep frame-id order."""
    if order not in ORDERS:
        raise Add3dError(f"order must be one of {', '.join(ORDERS)}, got '{order}'")
    if order == "missed":
        key = lambda r: (-len(r.missed), -r.max_depth_error, r.frame_id)  # noqa: E731
    else:
        key = lambda r: (-r.max_depth_error, -len(r.missed), r.frame_id)  # noqa: E731
    return sorted(reviews, key=key)
