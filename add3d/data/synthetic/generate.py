"""Generate synthetic frames and write them in the exact KITTI layout.

Every frame is a pure function of ``(seed, frame index, image size)``: its random streams are
seeded from that pair (scene, textures/noise, LiDAR each get their own), so the output does not
depend on ``workers`` and the same seed gives the same 3D world at every image size.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from add3d import __version__
from add3d.data.depth_maps import write_depth_png
from add3d.data.kitti import Object3D, write_calib, write_image, write_label, write_split, write_velodyne
from add3d.data.synthetic.camera import KITTI_HEIGHT, KITTI_WIDTH, Rig, build_rig, sample_rig_parameters
from add3d.data.synthetic.labels import make_labels
from add3d.data.synthetic.lidar import scan
from add3d.data.synthetic.render import RenderedFrame, render
from add3d.data.synthetic.scene import Scene, sample_scene
from add3d.errors import Add3dError
from add3d.fileio import atomic_write_text
from add3d.progress import progress as progress_bar

GENERATOR_VERSION = 1
TAN_HALF_FOV = 0.87  # KITTI's camera: (1242 - 609) / 721; fixed so scenes do not depend on the image size
SUBFOLDERS = ("image_2", "calib", "label_2", "velodyne", "depth_dense")


@dataclass
class SyntheticFrame:
    rig: Rig
    scene: Scene
    rendered: RenderedFrame
    lidar: np.ndarray  # (N, 4) float32
    labels: list[Object3D]
    facts: list[dict]  # per label: scene-object index, visible fraction, visible pixels


def image_size(width: int | None = None, height: int | None = None, scale: float | None = None) -> tuple[int, int]:
    """Resolve ``--width/--height`` or ``--scale`` (of KITTI's 1242 x 375) to (width, height)."""
    if scale is not None and (width is not None or height is not None):
        raise Add3dError("give either --scale or --width/--height, not both")
    if scale is not None:
        if not 0.05 <= scale <= 4.0:
            raise Add3dError(f"--scale must be in [0.05, 4], got {scale}")
        width, height = round(KITTI_WIDTH * scale), round(KITTI_HEIGHT * scale)
    width = KITTI_WIDTH if width is None else int(width)
    height = KITTI_HEIGHT if height is None else int(height)
    if width < 32 or height < 16 or width > 8192 or height > 8192:
        raise Add3dError(f"image size {width}x{height} is out of range (32..8192 x 16..8192)")
    return width, height


def frame_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the scene, the renderer's textures/noise and the LiDAR."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(3)
    return tuple(np.random.default_rng(child) for child in children)  # type: ignore[return-value]


def synthesize_frame(seed: int, index: int, width: int = KITTI_WIDTH, height: int = KITTI_HEIGHT) -> SyntheticFrame:
    """Build one frame in memory (what ``add3d synth`` writes for frame ``index``)."""
    scene_rng, render_rng, lidar_rng = frame_rngs(seed, index)
    rig = build_rig(sample_rig_parameters(scene_rng), width, height)
    scene = sample_scene(scene_rng, rig.ground, TAN_HALF_FOV)
    rendered = render(scene, rig, render_rng)
    labels, facts = make_labels(scene, rig, rendered)
    return SyntheticFrame(rig, scene, rendered, scan(scene, rig, lidar_rng), labels, facts)


def write_frame(training_dir: Path, frame_id: str, frame: SyntheticFrame) -> None:
    """Write one frame's five files (each atomically)."""
    write_image(training_dir / "image_2" / f"{frame_id}.png", frame.rendered.image)
    write_calib(training_dir / "calib" / f"{frame_id}.txt", frame.rig.calib)
    write_label(training_dir / "label_2" / f"{frame_id}.txt", frame.labels)
    write_velodyne(training_dir / "velodyne" / f"{frame_id}.bin", frame.lidar)
    write_depth_png(training_dir / "depth_dense" / f"{frame_id}.png", frame.rendered.depth)


def _make_and_write(job: tuple[str, int, int, int, int]) -> dict[str, int]:
    training_dir, seed, index, width, height = job
    frame = synthesize_frame(seed, index, width, height)
    write_frame(Path(training_dir), f"{index:06d}", frame)
    counts: dict[str, int] = {}
    for label in frame.labels:
        counts[label.cls_type] = counts.get(label.cls_type, 0) + 1
    return counts


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def split_ids(frames: int, val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Random (seeded) train / val partition of the frame ids; both sorted."""
    n_val = int(round(frames * val_fraction))
    if frames > 1:
        n_val = min(max(n_val, 1 if val_fraction > 0 else 0), frames - 1)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 2**31 - 1])).permutation(frames)
    val = sorted(int(i) for i in order[:n_val])
    train = sorted(int(i) for i in order[n_val:])
    return [f"{i:06d}" for i in train], [f"{i:06d}" for i in val]


def _readme(frames: int, train: int, val: int, width: int, height: int, seed: int, counts: dict[str, int]) -> str:
    objects = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return f"""Synthetic KITTI-format scenes made by add3d {__version__} (generator version {GENERATOR_VERSION}).

Command: add3d synth --out <this folder> --frames {frames} --width {width} --height {height} --seed {seed}
Frames: {frames} ({train} in ImageSets/train.txt, {val} in ImageSets/val.txt, all in trainval.txt), {width} x {height} px.
Objects labelled: {objects}.

Everything here is made up; no real data was used. Each frame is a pure function of (seed, frame index,
image size). The camera is KITTI-like (intrinsics of the KITTI drives scaled to the image size, 1.65 m
above a slightly tilted road); objects are unions of boxes rendered with a z-buffer; labels come from the
geometry (2D box = visible pixels, occlusion from the visible fraction, truncation from the projected box).
training/velodyne holds a simulated 64-beam scan (+2 to -24.9 deg, 0.16 deg azimuth steps over +-41 deg
around the forward axis only) ray-cast against the same geometry; training/depth_dense holds the
renderer's exact depth as 16-bit PNG (value / 256 = metres, 0 = sky or beyond 250 m).
See docs/SYNTHETIC.md in the add3d repository.
"""


def generate_dataset(
    out_dir: str | Path,
    frames: int = 1000,
    val_fraction: float = 0.25,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    seed: int = 0,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write a synthetic KITTI root at ``out_dir``; returns a summary (sizes, ids, object counts).

    Refuses a non-empty ``out_dir`` unless ``force`` (then files are overwritten in place).
    """
    out_dir = Path(out_dir)
    if frames < 1 or frames > 1_000_000:
        raise Add3dError(f"--frames must be between 1 and 1000000, got {frames}")
    if not 0.0 <= val_fraction < 1.0:
        raise Add3dError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if workers < 1:
        raise Add3dError(f"--workers must be at least 1, got {workers}")
    width, height = image_size(width, height, scale)
    if out_dir.exists() and not out_dir.is_dir():
        raise Add3dError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise Add3dError(f"{out_dir}: folder is not empty (use --force to overwrite)")
    training_dir = out_dir / "training"
    for name in SUBFOLDERS:
        (training_dir / name).mkdir(parents=True, exist_ok=True)

    jobs = [(str(training_dir), seed, index, width, height) for index in range(frames)]
    counts: dict[str, int] = {}
    bar = progress_bar(total=frames, desc="synth", unit="frame", enabled=progress)
    if workers == 1:
        results = map(_make_and_write, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(min(workers, frames), initializer=_worker_init)
        results = pool.imap(_make_and_write, jobs, chunksize=max(1, min(16, frames // (4 * workers))))
    try:
        for frame_counts in results:
            for name, count in frame_counts.items():
                counts[name] = counts.get(name, 0) + count
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    train, val = split_ids(frames, val_fraction, seed)
    write_split(out_dir / "ImageSets" / "train.txt", train)
    write_split(out_dir / "ImageSets" / "val.txt", val)
    write_split(out_dir / "ImageSets" / "trainval.txt", sorted(train + val))
    atomic_write_text(out_dir / "README.txt", _readme(frames, len(train), len(val), width, height, seed, counts))
    return {"root": out_dir, "width": width, "height": height, "train": train, "val": val, "objects": counts}
