"""``add3d predict --checkpoint X --images DIR|FILE --calib FILE|DIR --out DIR [--vis]``.

3D detection on your own images. The camera is given by a KITTI calib file (P2 is used), a file
with a ``P2:`` line, or a plain 3x4 projection / 3x3 intrinsic matrix (12 or 9 numbers). One calib
FILE applies to every image; a calib DIR holds ``<image stem>.txt`` per image. Results: OUT/<stem>.txt
in KITTI format (with scores) and, with ``--vis``, OUT/vis/<stem>.png (3D boxes + bird's-eye view).
The model comes from the checkpoint's stored config unless ``--config`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by add3d train")
    parser.add_argument("--images", type=Path, required=True, help="an image file or a folder of images")
    parser.add_argument("--calib", type=Path, required=True, help="calibration file (all images) or folder (<stem>.txt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--vis", action="store_true", help="also draw 3D boxes and a bird's-eye view per image")
    parser.add_argument("--config", type=Path, default=None, help="config (default: the one stored in the checkpoint)")
    parser.add_argument("--score-threshold", type=float, default=None, help="default: the config's model.score_threshold")
    parser.add_argument("--device", default=None, help="default: the config's train.device")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.input_size=[384,1280]")


def read_camera(path: Path):
    """Calibration from a KITTI calib file, a ``P2:`` line, or 12 / 9 bare numbers."""
    from add3d.data.kitti import read_calib
    from add3d.errors import Add3dError, DataFormatError
    from add3d.geometry.calib import Calibration

    if not path.is_file():
        raise Add3dError(f"{path}: calibration file not found")
    text = path.read_text()
    if "R0_rect" in text and "Tr_velo_to_cam" in text:
        return read_calib(path)
    numbers: list[float] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        key, sep, rest = line.partition(":")
        if sep and key.strip() != "P2":
            continue
        try:
            numbers += [float(v) for v in (rest if sep else line).split()]
        except ValueError:
            raise DataFormatError(path, f"expected numbers, found '{line.strip()[:40]}'", line_no) from None
    if len(numbers) == 9:
        P2 = np.zeros((3, 4))
        P2[:, :3] = np.array(numbers).reshape(3, 3)
    elif len(numbers) == 12:
        P2 = np.array(numbers).reshape(3, 4)
    else:
        raise DataFormatError(path, f"expected a KITTI calib file, a 'P2:' line, or 12 / 9 numbers; found {len(numbers)} numbers")
    calib = Calibration.from_P2(P2)
    if "P2" in calib.singular_matrices():
        raise DataFormatError(path, "the camera matrix is not invertible")
    return calib


def list_images(path: Path) -> list[Path]:
    from add3d.errors import Add3dError

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise Add3dError(f"{path}: no such image file or folder")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise Add3dError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


def calib_for(image: Path, calib: Path) -> Path:
    from add3d.errors import Add3dError

    if calib.is_dir():
        candidate = calib / f"{image.stem}.txt"
        if not candidate.is_file():
            raise Add3dError(f"{candidate}: calibration for image {image.name} not found")
        return candidate
    return calib


def save_visualisation(path: Path, image: np.ndarray, objects: list, P2: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from add3d.fileio import atomic_path
    from add3d.viz.draw import draw_boxes3d, plot_bev

    boxes = draw_boxes3d(image, objects, P2)
    height, width = image.shape[:2]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 12 * height / width * 0.9 + 1.5),
                                         gridspec_kw={"width_ratios": [3, 1]})
    left.imshow(boxes)
    left.set_axis_off()
    left.set_title(f"{len(objects)} detections")
    far = max([60.0] + [float(o.location[2]) + 5 for o in objects])
    plot_bev(right, objects, x_range=(-far / 2, far / 2), z_range=(0, far))
    right.set_title("bird's-eye view")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from add3d.data.kitti import read_image, write_label
    from add3d.data.mono_dataset import batch_to_device, collate_batch, encode_sample
    from add3d.engine.checkpoints import load_checkpoint
    from add3d.engine.commands.evaluate import load_detector
    from add3d.engine.config import config_from_dict, load_config
    from add3d.engine.inference import resolve_device, set_threads
    from add3d.engine.modules import detector_input, input_kind
    from add3d.errors import Add3dError

    if args.config is not None:
        cfg = load_config(args.config, args.overrides, training=False)
    else:
        stored = load_checkpoint(args.checkpoint).get("config")
        if not isinstance(stored, dict):
            raise Add3dError(f"{args.checkpoint}: no stored config; pass --config")
        stored = {**stored, "distill": None}  # an ADD student predicts as the plain detector
        cfg = config_from_dict(stored, f"{args.checkpoint} (stored config)", args.overrides)
    if input_kind(cfg.model) != "rgb":
        raise Add3dError("predict runs RGB detectors; this checkpoint is a depth teacher (model.in_channels 5)")
    set_threads(cfg.train.threads)
    device = resolve_device(args.device or cfg.train.device)
    threshold = cfg.model.score_threshold if args.score_threshold is None else args.score_threshold
    detector = load_detector(cfg, args.checkpoint, device)
    images = list_images(args.images)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    with torch.no_grad():
        for path in tqdm(images, desc="predict", dynamic_ncols=True):
            image = read_image(path)
            calib = read_camera(calib_for(path, args.calib))
            batch = batch_to_device(collate_batch([encode_sample(path.stem, image, calib, cfg.data)]), device)
            outputs = detector(detector_input(batch, "rgb"), None, meta=batch["meta"])
            objects = detector.decode(outputs, batch["meta"], score_threshold=threshold)[0]
            total += len(objects)
            write_label(args.out / f"{path.stem}.txt", objects)
            if args.vis:
                save_visualisation(args.out / "vis" / f"{path.stem}.png", image, objects, calib.P2)
    print(f"{len(images)} images, {total} detections; results in {args.out}")
    return 0
