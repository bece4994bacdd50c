"""The figures of docs/SYNTHETIC.md, made from a generated synthetic root (``add3d synth --preview/--stats``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from add3d.data.dataset import KittiDataset
from add3d.data.depth_maps import lidar_depth_map
from add3d.data.kitti import Object3D
from add3d.fileio import atomic_path
from add3d.viz.draw import colorize_depth, draw_boxes3d, overlay_sparse_depth

CLASSES = ("Car", "Pedestrian", "Cyclist")
# KITTI difficulty definitions (devkit): min 2D height, max occlusion, max truncation.
DIFFICULTIES = (("easy", 40, 0, 0.15), ("moderate", 25, 1, 0.30), ("hard", 25, 2, 0.50))


def difficulty(obj: Object3D) -> str:
    """The easiest KITTI difficulty whose filter the object passes ('ignored' if none)."""
    for name, min_height, max_occlusion, max_truncation in DIFFICULTIES:
        if obj.height_2d >= min_height and obj.occlusion <= max_occlusion and obj.truncation <= max_truncation:
            return name
    return "ignored"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_examples_figure(root: str | Path, out_path: str | Path, count: int = 6, columns: int = 2) -> None:
    """Grid of the first ``count`` frames with their labelled 3D boxes, plus one frame's depth and LiDAR."""
    plt = _pyplot()
    dataset = KittiDataset(root, "trainval", load_lidar=True, depth_dir="depth_dense")
    count = min(count, len(dataset))
    frames = [dataset[i] for i in range(count)]
    height, width = frames[0].image.shape[:2]
    rows = -(-count // columns) + 1
    figure, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, rows * (7.5 * height / width + 0.35)))
    axes = np.atleast_2d(axes)
    for ax in axes.reshape(-1):
        ax.axis("off")
    for index, frame in enumerate(frames):
        ax = axes[index // columns, index % columns]
        ax.imshow(draw_boxes3d(frame.image, frame.objects, frame.calib.P2, thickness=2))
        names = [o.cls_type for o in frame.objects if o.cls_type != "DontCare"]
        ax.set_title(f"{frame.frame_id}: " + ", ".join(f"{names.count(c)} {c}" for c in sorted(set(names))), fontsize=9)
    first = frames[0]
    ax = axes[-1, 0]
    ax.imshow((0.35 * first.image + 0.65 * colorize_depth(first.depth)).astype(np.uint8))
    ax.set_title(f"{first.frame_id}: depth_dense (near = red, far = blue, sky = 0 unknown)", fontsize=9)
    if columns > 1:
        sparse = lidar_depth_map(first.lidar, first.calib, (width, height))
        ax = axes[-1, 1]
        ax.imshow(overlay_sparse_depth(first.image // 2, sparse))
        ax.set_title(f"{first.frame_id}: velodyne projected with the calib ({(sparse > 0).sum()} px)", fontsize=9)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=80)
    plt.close(figure)


def label_statistics(root: str | Path, split: str = "trainval") -> dict:
    """Per-class difficulty counts, depths, occlusion and truncation of all labels of a split."""
    dataset = KittiDataset(root, split)
    stats = {c: {"difficulty": {}, "depth": [], "occlusion": [], "truncation": [], "alpha": []} for c in CLASSES}
    stats["frames"] = len(dataset)
    stats["other"] = {}
    for index in range(len(dataset)):
        for obj in dataset.read_objects(index):
            if obj.cls_type not in CLASSES:
                stats["other"][obj.cls_type] = stats["other"].get(obj.cls_type, 0) + 1
                continue
            entry = stats[obj.cls_type]
            level = difficulty(obj)
            entry["difficulty"][level] = entry["difficulty"].get(level, 0) + 1
            entry["depth"].append(float(obj.location[2]))
            entry["occlusion"].append(obj.occlusion)
            entry["truncation"].append(obj.truncation)
            entry["alpha"].append(obj.alpha)
    return stats


def statistics_table(stats: dict) -> str:
    """Markdown table: objects per class and KITTI difficulty (each counted at its easiest level)."""
    lines = ["| class | objects | easy | moderate (only) | hard (only) | ignored | median depth (m) |",
             "|---|---|---|---|---|---|---|"]
    for cls_type in CLASSES:
        entry = stats[cls_type]
        total = len(entry["depth"])
        cells = [entry["difficulty"].get(level, 0) for level in ("easy", "moderate", "hard", "ignored")]
        share = [f"{c} ({100 * c / max(total, 1):.0f} %)" for c in cells]
        median = f"{np.median(entry['depth']):.1f}" if total else "-"
        lines.append(f"| {cls_type} | {total} | " + " | ".join(share) + f" | {median} |")
    others = ", ".join(f"{name} {count}" for name, count in sorted(stats["other"].items()))
    lines.append(f"\n{stats['frames']} frames; other labels: {others or 'none'}.")
    return "\n".join(lines)


def save_stats_figure(root: str | Path, out_path: str | Path, split: str = "trainval") -> str:
    """Difficulty bars, depth histograms, occlusion/truncation shares; returns the Markdown table."""
    plt = _pyplot()
    stats = label_statistics(root, split)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    levels = ("easy", "moderate", "hard", "ignored")
    positions = np.arange(len(levels))
    for offset, cls_type in zip((-0.27, 0.0, 0.27), CLASSES):
        counts = [stats[cls_type]["difficulty"].get(level, 0) for level in levels]
        axes[0].bar(positions + offset, counts, width=0.27, label=cls_type)
    axes[0].set_xticks(positions, ["easy", "moderate\n(not easy)", "hard\n(not moderate)", "ignored"])
    axes[0].set_ylabel("objects")
    axes[0].set_title("KITTI difficulty of the labels (easiest level passed)")
    axes[0].legend()
    bins = np.arange(0, 66, 3)
    for cls_type in CLASSES:
        axes[1].hist(stats[cls_type]["depth"], bins=bins, histtype="step", linewidth=2, density=True, label=cls_type)
    axes[1].set_xlabel("depth z of the label (m)")
    axes[1].set_ylabel("density")
    axes[1].set_title("depth distribution")
    axes[1].legend()
    for offset, cls_type in zip((-0.27, 0.0, 0.27), CLASSES):
        occlusion = np.bincount(np.asarray(stats[cls_type]["occlusion"], int), minlength=3)[:3]
        truncated = int(np.sum(np.asarray(stats[cls_type]["truncation"]) > 0.15))
        values = np.append(occlusion, truncated) / max(len(stats[cls_type]["depth"]), 1)
        axes[2].bar(np.arange(4) + offset, values, width=0.27, label=cls_type)
    axes[2].set_xticks(np.arange(4), ["occl. 0", "occl. 1", "occl. 2", "trunc. > 0.15"])
    axes[2].set_ylabel("share of the class")
    axes[2].set_title("occlusion levels and truncation")
    axes[2].legend()
    figure.suptitle(f"{Path(root).name}: {stats['frames']} frames", fontsize=10)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=90)
    plt.close(figure)
    return statistics_table(stats)
