"""Figures and the Markdown/HTML report that `add3d demo` writes.

The report reads like a short paper section: a results table computed by the KITTI evaluator, the
pictures people would rather look at than read, and the exact commands to reproduce every number.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from add3d.fileio import atomic_path, atomic_write_text
from add3d.viz.draw import colorize_depth, draw_boxes3d, plot_bev

DIFFICULTIES = ("easy", "moderate", "hard")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)


def plot_pr_curves(curves: dict[str, dict], cls: str, out_path: Path, metric: str = "3d",
                   difficulty: str = "moderate") -> None:
    """Precision over the 41 recall positions for each model (``curves[model][cls][metric][difficulty]``)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(5, 4))
    recall = np.linspace(0, 1, 41)
    for model, model_curves in curves.items():
        precision = model_curves.get(cls, {}).get(metric, {}).get(difficulty)
        if precision is not None:
            ax.plot(recall, np.asarray(precision) * (100 if max(precision, default=0) <= 1 else 1), label=model)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (%)")
    ax.set_title(f"{cls} {metric.upper()} {difficulty}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(figure, out_path)


def plot_side_by_side(image: np.ndarray, P2: np.ndarray, ground_truth: Sequence, predictions: dict[str, Sequence],
                      out_path: Path, title: str = "") -> None:
    """One row per model: predictions (class colours) over ground truth (white), plus a BEV panel."""
    plt = _pyplot()
    rows = len(predictions)
    aspect = image.shape[0] / image.shape[1]
    figure, axes = plt.subplots(rows, 2, figsize=(14, (10 * aspect + 1.2) * rows),
                                gridspec_kw={"width_ratios": [3.0, 1.2]}, squeeze=False)
    for row, (model, detections) in enumerate(predictions.items()):
        picture = draw_boxes3d(image, ground_truth, P2, color=(255, 255, 255), thickness=1)
        picture = draw_boxes3d(picture, detections, P2, thickness=2)
        axes[row, 0].imshow(picture)
        axes[row, 0].set_title(f"{model}: predictions (colour) vs ground truth (white)", fontsize=9)
        axes[row, 0].axis("off")
        plot_bev(axes[row, 1], ground_truth, color="black", label="ground truth", linestyle="--", x_range=(-20, 20))
        plot_bev(axes[row, 1], detections, color="tab:red", label=model, x_range=(-20, 20))
        axes[row, 1].legend(fontsize=7, loc="upper right")
        axes[row, 1].set_title("bird's-eye view", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, out_path)


def plot_teacher_input(image: np.ndarray, depth: np.ndarray, out_path: Path, title: str = "") -> None:
    """The RGB image beside the depth channel the teacher receives."""
    plt = _pyplot()
    aspect = image.shape[0] / image.shape[1]
    figure, axes = plt.subplots(1, 2, figsize=(12, 6 * aspect + 0.6))
    axes[0].imshow(image)
    axes[0].set_title("RGB (student and teacher)", fontsize=9)
    axes[1].imshow(colorize_depth(depth))
    axes[1].set_title(f"depth input of the teacher ({(depth > 0).mean():.0%} of pixels known)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    _save(figure, out_path)


def results_table(results: dict[str, dict], cls: str = "Car", metrics: Sequence[str] = ("3d", "bev"),
                  overlaps: Sequence[str] = ("0.7", "0.5"), train_seconds: dict[str, float] | None = None,
                  overlap_labels: Sequence[str] | None = None) -> str:
    """Markdown table: one row per model, AP|R40 easy/moderate/hard per metric and overlap.

    ``results[model][overlap][cls][metric]["R40"]`` holds the three values (percent);
    ``overlap_labels`` names the overlaps in the header (default: the keys themselves).
    """
    header = ["model"]
    for overlap, label in zip(overlaps, overlap_labels or overlaps):
        for metric in metrics:
            header.append(f"AP{metric.upper()}\\|R40 @{label} (E / M / H)")
    if train_seconds:
        header.append("train time")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, by_overlap in results.items():
        cells = [model]
        for overlap in overlaps:
            for metric in metrics:
                values = by_overlap.get(overlap, {}).get(cls, {}).get(metric, {}).get("R40")
                cells.append(" / ".join(f"{v:.2f}" for v in values) if values else "–")
        if train_seconds:
            seconds = train_seconds.get(model)
            cells.append(f"{seconds / 60:.1f} min" if seconds is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_to_html(markdown: str, base_dir: Path, title: str) -> str:
    """A small, dependency-free renderer for the report's own Markdown (headings, tables, images,
    code blocks, paragraphs). Images are embedded so the HTML file stands alone."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:center}"
           "th{background:#eee}pre{background:#f5f5f5;padding:.8em;overflow-x:auto}img{max-width:100%}"
           "code{background:#f5f5f5}</style></head><body>"]
    lines = markdown.splitlines()
    i = 0

    def inline(text: str) -> str:
        text = html.escape(text).replace("\\|", "|")
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
        return text

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre>" + html.escape("\n".join(block)) + "</pre>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            i -= 1
            cells = [re.split(r"(?<!\\)\|", row.strip().strip("|")) for row in rows if not set(row) <= set("|-: ")]
            out.append("<table>")
            for r, row in enumerate(cells):
                tag = "th" if r == 0 else "td"
                out.append("<tr>" + "".join(f"<{tag}>{inline(c.strip())}</{tag}>" for c in row) + "</tr>")
            out.append("</table>")
        elif match := re.match(r"!\[([^\]]*)\]\(([^)]+)\)", line):
            alt, src = match.groups()
            path = base_dir / src
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>")
            else:
                out.append(f"<p>[missing picture: {html.escape(src)}]</p>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out)


def write_report(out_dir: Path, markdown: str, title: str) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``out_dir``."""
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, markdown)
    atomic_write_text(html_path, markdown_to_html(markdown, out_dir, title))
    return md_path, html_path
