"""Reading and writing the KITTI object-detection formats, with strict validation.

Every parse error raises :class:`add3d.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from add3d.errors import Add3dError, DataFormatError
from add3d.fileio import atomic_path, atomic_write_bytes, atomic_write_text
from add3d.geometry.calib import Calibration

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")


@dataclass
class Object3D:
    """One line of a KITTI label (or result) file.

    ``box2d`` is (x1, y1, x2, y2) in pixels; ``dims`` is (h, w, l) in metres; ``location`` is the
    bottom centre of the 3D box in the rectified camera frame; ``score`` is set for detections.
    """

    cls_type: str
    truncation: float = 0.0
    occlusion: int = 0
    alpha: float = -10.0
    box2d: np.ndarray = field(default_factory=lambda: np.zeros(4))
    dims: np.ndarray = field(default_factory=lambda: np.zeros(3))
    location: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation_y: float = -10.0
    score: float | None = None

    def __post_init__(self) -> None:
        self.box2d = np.asarray(self.box2d, dtype=np.float64).reshape(4)
        self.dims = np.asarray(self.dims, dtype=np.float64).reshape(3)
        self.location = np.asarray(self.location, dtype=np.float64).reshape(3)

    @property
    def h(self) -> float:
        return float(self.dims[0])

    @property
    def w(self) -> float:
        return float(self.dims[1])

    @property
    def l(self) -> float:  # noqa: E743 - KITTI's own name for the length
        return float(self.dims[2])

    @property
    def height_2d(self) -> float:
        return float(self.box2d[3] - self.box2d[1])

    @property
    def center_3d(self) -> np.ndarray:
        """Geometric centre of the 3D box (the label's location is its bottom centre)."""
        return self.location - np.array([0.0, self.dims[0] / 2.0, 0.0])

    def to_line(self) -> str:
        values = [
            self.cls_type,
            f"{self.truncation:.2f}",
            f"{int(self.occlusion)}",
            f"{self.alpha:.2f}",
            *(f"{v:.2f}" for v in self.box2d),
            *(f"{v:.2f}" for v in self.dims),
            *(f"{v:.2f}" for v in self.location),
            f"{self.rotation_y:.2f}",
        ]
        if self.score is not None:
            values.append(f"{self.score:.4f}")
        return " ".join(values)

    def as_written(self) -> "Object3D":
        """This object with exactly the values its :meth:`to_line` stores (rounded as in the file).

        Metrics computed in memory use this, so that they equal the metrics of the result files
        (``add3d eval`` == ``add3d eval-kitti`` on its files); no validation, like the devkit.
        """
        fields = self.to_line().split()
        numbers = [float(value) for value in fields[1:]]
        return Object3D(fields[0], numbers[0], int(numbers[1]), numbers[2], numbers[3:7], numbers[7:10],
                        numbers[10:13], numbers[13], numbers[14] if len(numbers) == 15 else None)


def _floats(values: list[str], path: Path, line_no: int, what: str) -> list[float]:
    out = []
    for value in values:
        try:
            number = float(value)
        except ValueError:
            raise DataFormatError(path, f"{what}: '{value}' is not a number", line_no) from None
        if not np.isfinite(number):
            raise DataFormatError(path, f"{what}: '{value}' is not a finite number", line_no)
        out.append(number)
    return out


def parse_label_line(text: str, path: str | Path = "<string>", line_no: int = 1, allow_score: bool = True) -> Object3D:
    """Parse one label line (15 fields, or 16 with a detection score)."""
    path = Path(path)
    fields = text.split()
    expected = "15 or 16" if allow_score else "15"
    if len(fields) not in ((15, 16) if allow_score else (15,)):
        raise DataFormatError(path, f"expected {expected} fields, found {len(fields)}", line_no)
    cls_type = fields[0]
    if cls_type not in KITTI_CLASSES:
        raise DataFormatError(
            path, f"unknown class '{cls_type}' (accepted: {', '.join(KITTI_CLASSES)})", line_no
        )
    numbers = _floats(fields[1:], path, line_no, "label field")
    truncation, occlusion, alpha = numbers[0], numbers[1], numbers[2]
    if occlusion != int(occlusion):
        raise DataFormatError(path, f"occlusion must be an integer, found '{fields[2]}'", line_no)
    if cls_type != "DontCare":
        if not 0.0 <= truncation <= 1.0:
            raise DataFormatError(path, f"truncation must be in [0, 1], found {truncation}", line_no)
        if int(occlusion) not in (0, 1, 2, 3):
            raise DataFormatError(path, f"occlusion must be 0, 1, 2 or 3, found {int(occlusion)}", line_no)
        x1, y1, x2, y2 = numbers[3:7]
        if x2 < x1 or y2 < y1:
            raise DataFormatError(path, f"2D box has x2 < x1 or y2 < y1: {x1} {y1} {x2} {y2}", line_no)
        if min(numbers[7:10]) < 0:
            raise DataFormatError(path, f"3D dimensions must be non-negative, found {numbers[7:10]}", line_no)
    return Object3D(
        cls_type=cls_type,
        truncation=truncation,
        occlusion=int(occlusion),
        alpha=alpha,
        box2d=numbers[3:7],
        dims=numbers[7:10],
        location=numbers[10:13],
        rotation_y=numbers[13],
        score=numbers[14] if len(numbers) == 15 else None,
    )


def read_label(path: str | Path, allow_score: bool = True) -> list[Object3D]:
    """Read a label_2 (or result) file. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: label file not found")
    objects = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            objects.append(parse_label_line(line, path, line_no, allow_score))
    return objects


def write_label(path: str | Path, objects: list[Object3D]) -> None:
    atomic_write_text(path, "".join(obj.to_line() + "\n" for obj in objects))


def read_calib(path: str | Path) -> Calibration:
    """Read a KITTI calib file (``key: 12 or 9 numbers`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: calibration file not found")
    matrices: dict[str, np.ndarray] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep:
            raise DataFormatError(path, f"expected 'KEY: values', found '{line.strip()[:40]}'", line_no)
        if key not in Calibration.SHAPES:
            continue  # other sensors' keys (e.g. raw-data calib files) are irrelevant here
        shape = Calibration.SHAPES[key]
        values = _floats(rest.split(), path, line_no, key)
        if len(values) != shape[0] * shape[1]:
            raise DataFormatError(
                path, f"{key} needs {shape[0] * shape[1]} values, found {len(values)}", line_no
            )
        matrices[key] = np.array(values, dtype=np.float64).reshape(shape)
    missing = [key for key in ("P2", "R0_rect", "Tr_velo_to_cam") if key not in matrices]
    if missing:
        raise DataFormatError(path, f"missing calibration key(s): {', '.join(missing)}")
    for key in ("P0", "P1", "P3"):
        matrices.setdefault(key, matrices["P2"].copy())
    matrices.setdefault("Tr_imu_to_velo", np.eye(3, 4))
    calib = Calibration(**matrices)
    singular = calib.singular_matrices()
    if singular:
        raise DataFormatError(path, f"non-invertible matrix: {', '.join(singular)}")
    return calib


def format_calib(calib: Calibration) -> str:
    lines = []
    for key in CALIB_KEYS:
        values = getattr(calib, key).reshape(-1)
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in values))
    return "\n".join(lines) + "\n"


def write_calib(path: str | Path, calib: Calibration) -> None:
    atomic_write_text(path, format_calib(calib))


def read_velodyne(path: str | Path) -> np.ndarray:
    """Read a velodyne ``.bin`` scan as an (N, 4) float32 array of x, y, z, reflectance."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: velodyne file not found")
    size = path.stat().st_size
    if size % 16:
        raise DataFormatError(path, f"size {size} bytes is not a multiple of 16 (4 float32 per point)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def write_velodyne(path: str | Path, points: np.ndarray) -> None:
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 4:
        raise Add3dError(f"velodyne points must be (N, 4), got {points.shape}")
    atomic_write_bytes(path, points.tobytes())


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: image file not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataFormatError(path, "cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, image: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
            raise Add3dError(f"{path}: cannot encode image")


def read_split(path: str | Path) -> list[str]:
    """Read an ImageSets file: one frame id per line, trailing newline optional."""
    path = Path(path)
    if not path.is_file():
        raise Add3dError(f"{path}: split file not found")
    ids = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        frame_id = line.strip()
        if not frame_id:
            continue
        if not frame_id.isdigit():
            raise DataFormatError(path, f"frame id must be digits, found '{frame_id[:40]}'", line_no)
        ids.append(frame_id)
    return ids


def write_split(path: str | Path, ids: list[str]) -> None:
    atomic_write_text(path, "".join(f"{frame_id}\n" for frame_id in ids))
