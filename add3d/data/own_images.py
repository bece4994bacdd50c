"""Your own images and their cameras (``add3d predict``): image listing and calibration files.

A camera is given by a KITTI calib file (P2 is used), a file with a ``P2:`` line, or a plain 3x4
projection / 3x3 intrinsic matrix (12 or 9 numbers). One calib FILE applies to every image; a calib
DIR holds ``<image stem>.txt`` per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from add3d.data.kitti import read_calib
from add3d.errors import Add3dError, DataFormatError
from add3d.geometry.calib import Calibration

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_camera(path: Path) -> Calibration:
    """Calibration from a KITTI calib file, a ``P2:`` line, or 12 / 9 bare numbers."""
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
    """``path`` itself if it is a file, else the images in the folder, sorted by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise Add3dError(f"{path}: no such image file or folder")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise Add3dError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return images


def calib_for(image: Path, calib: Path) -> Path:
    """The calibration file of ``image``: ``calib`` itself, or ``calib/<image stem>.txt`` for a folder."""
    if calib.is_dir():
        candidate = calib / f"{image.stem}.txt"
        if not candidate.is_file():
            raise Add3dError(f"{candidate}: calibration for image {image.name} not found")
        return candidate
    return calib
