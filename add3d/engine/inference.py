"""Running a detector over a dataset or an image: detections, KITTI result files, metrics.

Shared by periodic validation in training, ``add3d eval``, ``add3d export-submission``,
``add3d predict`` and the demo so that all of them load, decode and write results in exactly the
same way.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import torch

from add3d.data.kitti import Object3D, write_label
from add3d.data.loader import build_loader
from add3d.data.mono_dataset import MonoDataset, batch_to_device, build_mono_dataset, collate_batch, encode_sample
from add3d.distill.teacher_input import InputSpec, detector_input
from add3d.engine.checkpoints import load_checkpoint, load_detector_weights
from add3d.engine.config import Config, config_from_dict, load_config, parse_metric_name
from add3d.engine.modules import input_spec_from_config
from add3d.errors import Add3dError
from add3d.evaluation.kitti_eval import evaluate
from add3d.fileio import atomic_path
from add3d.geometry.calib import Calibration
from add3d.models import build_detector
from add3d.progress import progress as progress_bar


def set_threads(threads: int | None) -> None:
    """Apply ``train.threads`` (None keeps PyTorch's default)."""
    if threads:
        torch.set_num_threads(int(threads))


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without it is a clear error that
    names where the device was asked for (``option``: the config key or the command-line flag)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fix = "--device cpu" if option.startswith("--") else f"{option}=cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise Add3dError(f"{option} '{name}' is not a device (auto | cpu | cuda | cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Add3dError(f"{option} is '{name}' but CUDA is not available; use {fix}")
    return device


def load_detector(cfg: Config, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    """The configured detector with the checkpoint's weights, on ``device``, in eval mode.

    ``detector.input_spec`` is the input the checkpoint was trained on (the config must agree).
    """
    model_cfg = cfg.model
    if getattr(model_cfg, "pretrained", None):
        model_cfg = dataclasses.replace(model_cfg, pretrained=None)  # the checkpoint has all the weights
    detector = build_detector(model_cfg)
    detector.input_spec = load_detector_weights(detector, checkpoint, input_spec_from_config(cfg))
    return detector.to(device).eval()


def predict_split(cfg: Config, checkpoint: str | Path, split: str, batch_size: int | None = None,
                  device_name: str | None = None, progress: bool = True) -> tuple[MonoDataset, dict[str, list[Object3D]]]:
    """(dataset, detections by frame id) of a split; ``progress=False`` reports nothing."""
    set_threads(cfg.train.threads)
    device = resolve_device(device_name, "--device") if device_name else resolve_device(cfg.train.device)
    detector = load_detector(cfg, checkpoint, device)
    dataset = build_mono_dataset(cfg.data, split, augment=False, with_depth=detector.input_spec.kind == "rgbd",
                                 classes=cfg.model.classes)
    loader = build_loader(dataset, batch_size or cfg.train.batch_size, cfg.train.workers)
    predictions = predict_loader(detector, loader, device, detector.input_spec, cfg.model.score_threshold,
                                 progress=progress, description=f"predict {split}")
    return dataset, predictions


def predict_config(checkpoint: str | Path, config: str | Path | None, overrides: list[str]) -> Config:
    """The config to run an RGB checkpoint with: ``config``, else the one stored in the checkpoint."""
    if config is not None:
        cfg = load_config(config, overrides, training=False)
    else:
        stored = load_checkpoint(checkpoint).get("config")
        if not isinstance(stored, dict):
            raise Add3dError(f"{checkpoint}: no stored config; pass --config")
        stored = {**stored, "distill": None}  # an ADD student predicts as the plain detector
        cfg = config_from_dict(stored, f"{checkpoint} (stored config)", overrides)
    if input_spec_from_config(cfg).kind != "rgb":
        raise Add3dError(f"{checkpoint}: predict runs RGB detectors; this config is a depth teacher's (model.in_channels 5)")
    return cfg


@torch.no_grad()
def predict_image(detector: torch.nn.Module, frame_id: str, image: np.ndarray, calib: Calibration, cfg: Config,
                  device: torch.device, score_threshold: float | None) -> list[Object3D]:
    """Detections of an RGB detector on one image (original-image coordinates)."""
    batch = batch_to_device(collate_batch([encode_sample(frame_id, image, calib, cfg.data)]), device)
    outputs = detector(detector_input(batch, InputSpec()), None, meta=batch["meta"])
    return list(detector.decode(outputs, batch["meta"], score_threshold=score_threshold)[0])


@torch.no_grad()
def predict_loader(
    detector: torch.nn.Module,
    loader,
    device: torch.device,
    spec: InputSpec = InputSpec(),
    score_threshold: float | None = None,
    progress: bool = True,
    description: str = "predict",
    transform=None,
) -> dict[str, list[Object3D]]:
    """Detections (original-image coordinates) for every frame of ``loader``, by frame id.

    ``transform`` (batch -> batch) edits each batch before the model sees it (e.g. the depth probes).
    """
    was_training = detector.training
    detector.eval()
    predictions: dict[str, list[Object3D]] = {}
    try:
        for batch in progress_bar(loader, total=len(loader), desc=description, enabled=progress, leave=False):
            batch = batch_to_device(batch, device)
            if transform is not None:
                batch = transform(batch)
            outputs = detector(detector_input(batch, spec), None, meta=batch["meta"])
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


def write_submission_zip(predictions: dict[str, list[Object3D]], ids: list[str], path: str | Path) -> None:
    """The KITTI test server's zip: one ``<id>.txt`` result file per id (empty when there is no
    detection; label_2 format with the score as the 16th value), written atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for frame_id in ids:
                text = "".join(obj.to_line() + "\n" for obj in predictions.get(frame_id, []))
                archive.writestr(f"{frame_id}.txt", text)


def evaluate_predictions(
    ground_truth: dict[str, list[Object3D]],
    predictions: dict[str, list[Object3D]],
    classes: tuple[str, ...],
    overlap: str = "default",
    box2d_scale: float = 1.0,
    return_curves: bool = False,
) -> dict:
    """KITTI metrics (percent) through the project's devkit-identical evaluator (see its ``box2d_scale``).

    The one place where training validation, ``add3d eval`` and the demo compute metrics. Detections
    are evaluated as :func:`write_predictions` stores them (values rounded as in the files), so these
    numbers equal ``add3d eval-kitti`` on the written folder.
    """
    evaluated = [c for c in classes if c in ("Car", "Pedestrian", "Cyclist")]
    dt = {frame_id: [obj.as_written() for obj in predictions.get(frame_id, [])] for frame_id in ground_truth}
    return evaluate(ground_truth, dt, classes=tuple(evaluated), overlap=overlap, return_curves=return_curves,
                    box2d_scale=box2d_scale)


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
