"""An HTML page listing reviewed frames worst first, with their pictures (``add3d show-predictions``)."""

from __future__ import annotations

import html
from pathlib import Path

from add3d.evaluation.frame_review import FrameReview, review_frame, worst_first
from add3d.fileio import atomic_write_text
from add3d.viz.review_figure import save_review_figure

PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; }
td.frame { text-align: left; }
img { max-width: 1100px; width: 100%; }
.bad { color: #c0141a; font-weight: bold; }
"""


def write_gallery(path: str | Path, reviews: list[FrameReview], pictures: dict[str, str], title: str,
                  summary: str = "", order: str = "missed") -> Path:
    """``reviews`` in display order (worst first); ``pictures`` maps frame id -> image path relative to
    the page (frames without one are listed without a picture)."""
    rows = []
    for rank, review in enumerate(reviews, start=1):
        missed_class = ' class="bad"' if review.missed else ""
        picture = pictures.get(review.frame_id)
        image = (f'<br><a href="{html.escape(picture)}"><img src="{html.escape(picture)}" loading="lazy" '
                 f'alt="frame {html.escape(review.frame_id)}"></a>') if picture else ""
        rows.append(
            f"<tr><td>{rank}</td><td class=\"frame\"><b>{html.escape(review.frame_id)}</b>{image}</td>"
            f"<td>{len(review.ground_truth)}</td><td>{len(review.matches)}</td>"
            f"<td{missed_class}>{len(review.missed)}</td><td>{len(review.false_positives)}</td>"
            f"<td>{review.max_depth_error:.2f}</td><td>{review.mean_depth_error:.2f}</td></tr>"
        )
    ordering = ("most missed objects first, then largest depth error" if order == "missed"
                else "largest depth error first, then most missed objects")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(summary)}</p>
<p>Worst frames first ({ordering}). A label is <i>found</i> when a prediction of its class overlaps it with
2D IoU &ge; 0.5 (one-to-one, highest IoU first); depth error = predicted - labelled depth (metres). Pictures: labels white (missed: red),
predictions in class colours with their score; bird's-eye view coloured by depth error.</p>
<table>
<tr><th>#</th><th>frame</th><th>labelled</th><th>found</th><th>missed</th><th>false positives</th>
<th>max |depth error| (m)</th><th>mean |depth error| (m)</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
    atomic_write_text(path, page)
    return Path(path)


def write_review(out_dir: str | Path, frames, predictions: dict, classes: tuple[str, ...], order: str = "missed",
                 limit: int | None = 50, min_score: float = 0.0, title: str = "predictions vs labels") -> list[FrameReview]:
    """Review every frame of ``frames`` (a labelled data.dataset.KittiDataset) against ``predictions``
    (frame id -> objects): OUT/frames/<id>.png for the ``limit`` worst frames, OUT/index.html listing all."""
    out_dir = Path(out_dir)
    reviews = []
    for index, frame_id in enumerate(frames.ids):
        labels = frames.read_objects(index)
        reviews.append(review_frame(frame_id, labels, predictions.get(frame_id, []), classes, min_score=min_score))
    ordered = worst_first(reviews, order)
    pictures = {}
    for review in ordered[: len(ordered) if limit is None else limit]:
        frame = frames[frames.ids.index(review.frame_id)]
        save_review_figure(out_dir / "frames" / f"{review.frame_id}.png", frame.image, frame.calib.P2, review)
        pictures[review.frame_id] = f"frames/{review.frame_id}.png"
    labelled = sum(len(r.ground_truth) for r in reviews)
    found = sum(len(r.matches) for r in reviews)
    summary = (f"{len(reviews)} frames, {labelled} labelled objects of {', '.join(classes)}: {found} found, "
               f"{labelled - found} missed, {sum(len(r.false_positives) for r in reviews)} false positives.")
    write_gallery(out_dir / "index.html", ordered, pictures, title, summary, order)
    return ordered
