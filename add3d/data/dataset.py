"""An index over a KITTI-layout root and split, yielding raw (un-augmented) frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from add3d.data.depth_maps import read_depth_png
from add3d.data.kitti import Object3D, read_calib, read_image, read_label, read_split, read_velodyne
from add3d.errors import Add3dError
from add3d.geometry.calib import Calibration


@dataclass
class KittiFrame:
    frame_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    calib: Calibration
    objects: list[Object3D]  # empty for the test split
    lidar: np.ndarray | None = None  # (N, 4) float32
    depth: np.ndarray | None = None  # (H, W) float32 metres, 0 = unknown


def resolve_split(root: Path, split: str | Path) -> tuple[Path, list[str]]:
    """Split name (``ImageSets/<name>.txt``) or path -> (frames folder, ids)."""
    candidate = Path(split)
    if candidate.suffix == ".txt" or candidate.is_file():
        split_file = candidate
    else:
        split_file = root / "ImageSets" / f"{split}.txt"
    ids = read_split(split_file)
    subset = "testing" if split_file.stem == "test" else "training"
    return root / subset, ids


class KittiDataset:
    """Frames of a KITTI root (``training/`` or ``testing/``) listed by an ImageSets split.

    ``depth_dir`` names a folder of 16-bit depth PNGs (relative to the subset folder, e.g.
    ``depth_lidar``, or absolute) loaded as ``frame.depth``. Missing files raise a clear error naming
    the path when the frame is read; :meth:`check` reports all of them up front.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path = "train",
        load_lidar: bool = False,
        depth_dir: str | Path | None = None,
        load_labels: bool | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise Add3dError(f"{self.root}: KITTI root folder not found")
        self.subset_dir, self.ids = resolve_split(self.root, split)
        self.load_lidar = load_lidar
        self.depth_dir = None if depth_dir is None else self.subset_dir / depth_dir
        self.load_labels = (self.subset_dir.name == "training") if load_labels is None else load_labels

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, kind: str, frame_id: str) -> Path:
        suffix = {"image_2": ".png", "velodyne": ".bin"}.get(kind, ".txt")
        return self.subset_dir / kind / f"{frame_id}{suffix}"

    def depth_path(self, frame_id: str) -> Path:
        assert self.depth_dir is not None
        return self.depth_dir / f"{frame_id}.png"

    def check(self) -> list[Path]:
        """Every file the split needs that is missing."""
        kinds = ["image_2", "calib"] + (["label_2"] if self.load_labels else []) + (
            ["velodyne"] if self.load_lidar else []
        )
        missing = [self.path(kind, i) for i in self.ids for kind in kinds if not self.path(kind, i).is_file()]
        if self.depth_dir is not None:
            missing += [self.depth_path(i) for i in self.ids if not self.depth_path(i).is_file()]
        return missing

    def read_calib(self, index: int) -> Calibration:
        return read_calib(self.path("calib", self.ids[index]))

    def read_objects(self, index: int) -> list[Object3D]:
        return read_label(self.path("label_2", self.ids[index]), allow_score=False) if self.load_labels else []

    def __getitem__(self, index: int) -> KittiFrame:
        frame_id = self.ids[index]
        frame = KittiFrame(
            frame_id=frame_id,
            image=read_image(self.path("image_2", frame_id)),
            calib=self.read_calib(index),
            objects=self.read_objects(index),
        )
        if self.load_lidar:
            frame.lidar = read_velodyne(self.path("velodyne", frame_id))
        if self.depth_dir is not None:
            frame.depth = read_depth_png(self.depth_path(frame_id))
            if frame.depth.shape != frame.image.shape[:2]:
                raise Add3dError(
                    f"{self.depth_path(frame_id)}: depth map is {frame.depth.shape[::-1]} (w, h) "
                    f"but the image is {frame.image.shape[1::-1]}"
                )
        return frame
