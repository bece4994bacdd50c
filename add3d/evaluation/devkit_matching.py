"""The official devkit's greedy matching and precision curve, vectorised over frames and thresholds.

``evaluate_object.cpp`` matches ground truth (GT) to detections one GT at a time, in label-file order,
separately for every image and every score threshold. Its rules, reproduced here exactly:

* flags (from ``cleanData``): a GT is valid (0), ignored (1: neighbour class, or too hard for the
  difficulty) or irrelevant (-1: skipped); a detection is valid (0: the class, tall enough), ignored
  (1: *any* class whose integer-truncated box height is below the difficulty's minimum) or
  irrelevant (-1).
* candidates of a GT: not yet assigned detections with flag != -1, score >= threshold, overlap
  strictly greater than the minimum overlap.
* pass 1 (finding the thresholds) takes the candidate with the highest score (first on ties);
  pass 2 (precision at each threshold) takes the valid candidate with the largest overlap (first on
  ties), or else the first ignored candidate.
* the pair (GT, detection) is a true positive only if both are valid; otherwise the detection is
  silently consumed. Unmatched valid detections are false positives unless they lie in a DontCare
  region.

Because a GT's preference among candidates is a fixed order (independent of the threshold and of
other GTs), its choice is "the first still-available candidate in that order". GTs are processed
rank by rank (the k-th GT of every frame at once), each rank as a few numpy operations over
(thresholds x candidate pairs). Frames are independent, so this equals the devkit's loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_SAMPLE_POINTS = 41
NO_DETECTION_SCORE = -10000000.0  # the devkit's NO_DETECTION sentinel: scores at or below never match in pass 1


@dataclass
class MatchProblem:
    """One (class, metric, difficulty) evaluation.

    ``pair_gt``/``pair_det``/``pair_overlap`` list every (GT, detection) pair of the same frame whose
    overlap exceeds the minimum overlap; other pairs can never match. ``det_in_dontcare`` marks
    detections that a DontCare region absorbs when left unmatched.
    """

    gt_frame: np.ndarray
    gt_flag: np.ndarray
    gt_alpha: np.ndarray
    det_flag: np.ndarray
    det_score: np.ndarray
    det_alpha: np.ndarray
    det_in_dontcare: np.ndarray
    pair_gt: np.ndarray
    pair_det: np.ndarray
    pair_overlap: np.ndarray

    @property
    def num_valid_gt(self) -> int:
        return int(np.count_nonzero(self.gt_flag == 0))


def recall_thresholds(scores: np.ndarray, num_gt: int) -> np.ndarray:
    """The devkit's ``getThresholds``: up to 41 scores whose recalls approximate 0, 1/40, ..., 1.

    Walks the true-positive scores in descending order, keeping a score when its recall is at least as
    close to the next recall step as the following score's recall would be. The running recall step
    is accumulated in float64 exactly as in C++ so that ties resolve identically.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    count = len(scores)
    if count == 0:
        return np.zeros(0)
    index = np.arange(count, dtype=np.float64)
    left = (index + 1) / float(num_gt)
    right = np.where(np.arange(count) < count - 1, (index + 2) / float(num_gt), left)
    last = count - 1
    chosen = []
    current = 0.0
    start = 0
    step = 1.0 / (NUM_SAMPLE_POINTS - 1.0)
    while start < count:
        # Skip condition (right - current) < (current - left) is monotone in i, so the first kept
        # index is the first one where it fails (the last score is always kept).
        keep = ~((right[start:] - current) < (current - left[start:]))
        keep[last - start] = True
        first = start + int(np.argmax(keep))
        chosen.append(first)
        current += step
        start = first + 1
    return scores[np.array(chosen)]


def _order_pairs(problem: MatchProblem, keep: np.ndarray, priority: tuple[np.ndarray, ...]):
    """Sort kept pairs by (rank of the GT within its frame, GT, priority keys); return rank blocks."""
    gt = problem.pair_gt[keep]
    det = problem.pair_det[keep]
    keys = tuple(key[keep] for key in priority)
    order = np.lexsort(keys[::-1] + (gt,))
    gt, det = gt[order], det[order]
    unique_gt, gt_start = np.unique(gt, return_index=True)
    frames = problem.gt_frame[unique_gt]
    frame_start = np.r_[0, np.flatnonzero(np.diff(frames)) + 1] if len(frames) else np.zeros(0, dtype=np.int64)
    first_of_frame = np.repeat(frame_start, np.diff(np.r_[frame_start, len(frames)]))
    rank = np.arange(len(unique_gt)) - first_of_frame  # GTs are numbered frame by frame in file order
    pair_rank = np.repeat(rank, np.diff(np.r_[gt_start, len(gt)]))
    by_rank = np.argsort(pair_rank, kind="stable")
    gt, det, pair_rank = gt[by_rank], det[by_rank], pair_rank[by_rank]
    blocks = []
    bounds = np.searchsorted(pair_rank, np.arange(int(rank.max()) + 2)) if len(rank) else [0]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        block_gt, block_det = gt[lo:hi], det[lo:hi]
        seg_gt, seg_start = np.unique(block_gt, return_index=True)
        blocks.append((block_det, seg_gt, seg_start))
    return blocks


def _greedy(blocks, active: np.ndarray, det_columns: np.ndarray, num_gt: int):
    """Assign, rank by rank, each GT the first available candidate in its priority order.

    ``active`` (T, D') says which detections pass each threshold; ``det_columns`` maps detection
    index -> column of ``active``. Returns chosen detection per (threshold, GT) (-1: none) and the
    final (T, D') assigned mask.
    """
    num_thresholds = active.shape[0]
    assigned = np.zeros_like(active)
    chosen = np.full((num_thresholds, num_gt), -1, dtype=np.int64)
    rows = np.arange(num_thresholds)[:, None]
    for block_det, seg_gt, seg_start in blocks:
        columns = det_columns[block_det]
        available = active[:, columns] & ~assigned[:, columns]
        size = len(block_det)
        position = np.where(available, np.arange(size), size)
        first = np.minimum.reduceat(position, seg_start, axis=1)  # (T, GTs of this rank)
        found = first < size
        picked = np.where(found, columns[np.minimum(first, size - 1)], 0)
        assigned[np.broadcast_to(rows, picked.shape)[found], picked[found]] = True
        chosen[:, seg_gt] = np.where(found, block_det[np.minimum(first, size - 1)], -1)
    return chosen, assigned


def _pair_keep(problem: MatchProblem) -> np.ndarray:
    return (problem.gt_flag[problem.pair_gt] != -1) & (problem.det_flag[problem.pair_det] != -1)


def threshold_scores(problem: MatchProblem) -> np.ndarray:
    """Pass 1: scores of the true positives when every GT takes its highest-scoring candidate."""
    keep = _pair_keep(problem) & (problem.det_score[problem.pair_det] > NO_DETECTION_SCORE)
    if not keep.any():
        return np.zeros(0)
    pair_det = problem.pair_det
    blocks = _order_pairs(problem, keep, (-problem.det_score[pair_det], pair_det))
    columns = np.zeros(len(problem.det_flag), dtype=np.int64)
    used = np.unique(pair_det[keep])
    columns[used] = np.arange(len(used))
    chosen, _ = _greedy(blocks, np.ones((1, len(used)), dtype=bool), columns, len(problem.gt_flag))
    gt_index = np.flatnonzero(chosen[0] >= 0)
    det_index = chosen[0, gt_index]
    true_positive = (problem.gt_flag[gt_index] == 0) & (problem.det_flag[det_index] == 0)
    return problem.det_score[det_index[true_positive]]


@dataclass
class CurveCounts:
    """Totals over all frames at each threshold (the devkit's ``tPrData`` summed)."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    similarity: np.ndarray


def count_at_thresholds(problem: MatchProblem, thresholds: np.ndarray) -> CurveCounts:
    """Pass 2: TP / FP / FN and summed orientation similarity at each threshold."""
    num_t = len(thresholds)
    det_valid = problem.det_flag == 0
    keep = _pair_keep(problem)
    pair_det = problem.pair_det
    ignored_pair = problem.det_flag[pair_det] == 1
    # Valid candidates first by overlap (descending), then ignored ones; ties by detection order.
    primary = np.where(ignored_pair, 1, 0)
    overlap_key = np.where(ignored_pair, 0.0, -problem.pair_overlap)
    used = np.unique(pair_det[keep])
    columns = np.zeros(len(problem.det_flag), dtype=np.int64)
    columns[used] = np.arange(len(used))
    active_used = problem.det_score[used][None, :] >= thresholds[:, None]
    if keep.any():
        blocks = _order_pairs(problem, keep, (primary, overlap_key, pair_det))
        chosen, assigned_used = _greedy(blocks, active_used, columns, len(problem.gt_flag))
    else:
        chosen = np.full((num_t, len(problem.gt_flag)), -1, dtype=np.int64)
        assigned_used = np.zeros_like(active_used)

    # Only GTs with candidate pairs can be matched; the other valid GTs are false negatives throughout.
    gt_valid = problem.gt_flag == 0
    paired_gt = np.unique(problem.pair_gt[keep])
    chosen = chosen[:, paired_gt]
    has = chosen >= 0
    safe = np.where(has, chosen, 0)
    true_positive = has & gt_valid[paired_gt][None, :] & (problem.det_flag[safe] == 0)
    tp = true_positive.sum(axis=1)
    unpaired_valid = np.count_nonzero(gt_valid) - np.count_nonzero(gt_valid[paired_gt])
    fn = (~has & gt_valid[paired_gt][None, :]).sum(axis=1) + unpaired_valid
    t_index, g_index = np.nonzero(true_positive)
    delta = problem.gt_alpha[paired_gt[g_index]] - problem.det_alpha[chosen[t_index, g_index]]
    similarity = np.bincount(t_index, weights=(1.0 + np.cos(delta)) / 2.0, minlength=num_t)

    # False positives: valid, above threshold, unassigned, not inside a DontCare region.
    counted = det_valid & ~problem.det_in_dontcare
    in_pairs = np.zeros(len(problem.det_flag), dtype=bool)
    in_pairs[used] = True
    lone_scores = np.sort(problem.det_score[counted & ~in_pairs])
    fp_lone = len(lone_scores) - np.searchsorted(lone_scores, thresholds, side="left")
    paired_counted = counted[used]
    fp_paired = (active_used & ~assigned_used & paired_counted[None, :]).sum(axis=1)
    return CurveCounts(thresholds, tp, fp_lone + fp_paired, fn, similarity)


def _suffix_max(values: np.ndarray) -> np.ndarray:
    """``values[i] = max_element(values + i, end)`` with std::max_element's NaN behaviour."""
    running = np.fmax.accumulate(values[::-1])[::-1]
    return np.where(np.isnan(values), np.nan, running)


def precision_curves(problem: MatchProblem, compute_aos: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """41-point precision (and orientation-similarity) arrays exactly as ``eval_class`` builds them."""
    scores = threshold_scores(problem)
    thresholds = recall_thresholds(scores, problem.num_valid_gt)
    # The devkit sizes its arrays to 41; more thresholds cannot occur (at most one per 1/40 recall).
    thresholds = thresholds[:NUM_SAMPLE_POINTS]
    precision = np.zeros(NUM_SAMPLE_POINTS)
    aos = np.zeros(NUM_SAMPLE_POINTS) if compute_aos else None
    if len(thresholds) == 0:
        return precision, aos
    counts = count_at_thresholds(problem, thresholds)
    n = len(thresholds)
    denominator = (counts.tp + counts.fp).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[:n] = counts.tp / denominator
        if aos is not None:
            aos[:n] = counts.similarity / denominator
    precision[:n] = _suffix_max(precision)[:n]
    if aos is not None:
        aos[:n] = _suffix_max(aos)[:n]
    return precision, aos


def average_precision(curve: np.ndarray) -> tuple[float, float]:
    """(AP|R11, AP|R40) in percent from a 41-point curve: points 0, 4, ..., 40 / 11 and 1..40 / 40."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(curve[0::4].sum() / 11 * 100), float(curve[1:].sum() / 40 * 100)
