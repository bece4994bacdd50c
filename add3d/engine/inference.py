"""Running a detector over a dataset: detections, KITTI result files, metrics.

Shared by periodic validation in training, ``add3d eval``, ``add3d export-submission`` and
``add3d predict`` so that all of them decode and write results in exactly the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from add3d.data.kitti import Object3D, write_label
from add3d.data.mono_dataset import batch_to_device
from add3d.engine.config import parse_metric_name
from add3d.engine.modules import detector_input
from add3d.errors import Add3dError


def set_threads(threads: int | None) -> None:
    """Apply ``train.threads`` (None keeps PyTorch's default)."""
    if threads:
        torch.set_num_threads(int(threads))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise Add3dError(f"train.device '{name}' is not a device (auto | cpu | cuda | cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Add3dError(f"train.device is '{name}' but CUDA is not available; use device=cpu")
    return device


@torch.no_grad()
def predict_loader(
    detector: torch.nn.Module,
    loader,
    device: torch.device,
    input_kind: str = "rgb",
    depth_scale: float = 80.0,
    score_threshold: float | None = None,
    progress: bool = True,
    description: str = "predict",
) -> dict[str, list[Object3D]]:
    """Detections (original-image coordinates) for every frame of ``loader``, by frame id."""
    was_training = detector.training
    detector.eval()
    predictions: dict[str, list[Object3D]] = {}
    try:
        for batch in tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True):
            batch = batch_to_device(batch, device)
            outputs = detector(detector_input(batch, input_kind, depth_scale), None, meta=batch["meta"])
            detections = detector.decode(outputs, batch["meta"], score_threshold=score_threshold)
            for frame_id, objects in zip(batch["meta"]["frame_id"], detections):
                predictions[frame_id] = list(objects)
    finally:
        detector.train(was_training)
    return predictions


def write_predictions(predictions: dict[str, list[Object3D]], out_dir: str | Path) -> Path:
    """One KITTI result file per frame (empty files for frames without detections)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for frame_id, objects in predictions.items():
        write_label(out_dir / f"{frame_id}.txt", objects)
    return out_dir


def evaluate_predictions(
    ground_truth: dict[str, list[Object3D]],
    predictions: dict[str, list[Object3D]],
    classes: tuple[str, ...],
    overlap: str = "default",
    box2d_scale: float = 1.0,
) -> dict:
    """KITTI metrics (percent) through the project's devkit-identical evaluator (see its ``box2d_scale``)."""
    from add3d.evaluation.kitti_eval import evaluate

    evaluated = [c for c in classes if c in ("Car", "Pedestrian", "Cyclist")]
    dt = {frame_id: predictions.get(frame_id, []) for frame_id in ground_truth}
    return evaluate(ground_truth, dt, classes=tuple(evaluated), overlap=overlap, box2d_scale=box2d_scale)


def metric_value(results: dict, name: str) -> float:
    """One number out of the evaluator's result, e.g. ``Car/3d/R40/moderate``."""
    cls, kind, recall, difficulty = parse_metric_name(name)
    try:
        value = results[cls][kind][recall][difficulty]
        return float("nan") if value is None else float(value)
    except (KeyError, IndexError, TypeError):
        raise Add3dError(f"metric '{name}' is not in the evaluation result (classes: {list(results)})") from None


def flat_metrics(results: dict) -> dict[str, float]:
    """``{"Car/3d/R40/moderate": 12.3, ...}`` for logging."""
    flat = {}
    for cls, kinds in results.items():
        if not isinstance(kinds, dict):
            continue
        for kind, recalls in kinds.items():
            if not isinstance(recalls, dict):
                continue
            for recall, values in recalls.items():
                for difficulty, value in zip(("easy", "moderate", "hard"), values):
                    if value is not None:  # AOS is None when detections carry no alpha
                        flat[f"{cls}/{kind}/{recall}/{difficulty}"] = float(value)
    return flat
