"""Reviewing predictions against labels: per-frame matching, worst-first order, pictures and the
HTML gallery of `add3d show-predictions`."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from add3d.cli import main
from add3d.data.kitti import Object3D, read_label, write_label, write_split
from add3d.evaluation.frame_review import review_frame, worst_first
from add3d.errors import Add3dError

CLASSES = ("Car", "Pedestrian", "Cyclist")


def box(cls, x1, depth, score=None, width=40.0):
    return Object3D(cls, box2d=np.array([x1, 100.0, x1 + width, 140.0]), dims=np.array([1.5, 1.6, 3.9]),
                    location=np.array([0.0, 1.6, depth]), rotation_y=0.0, alpha=0.0, score=score)


def test_review_matches_by_class_and_iou_and_counts_errors():
    labels = [box("Car", 100, 20.0), box("Car", 300, 30.0), box("Pedestrian", 500, 10.0),
              Object3D("DontCare", box2d=np.array([700.0, 90.0, 800.0, 150.0]))]
    predictions = [
        box("Car", 102, 22.5, 0.9),  # matches the first car, +2.5 m
        box("Car", 298, 29.0, 0.8),  # matches the second car, -1 m
        box("Cyclist", 500, 10.0, 0.7),  # right place, wrong class: a false positive, the pedestrian is missed
        box("Car", 710, 40.0, 0.6),  # inside the DontCare region: not counted
        box("Car", 104, 25.0, 0.5),  # a worse-overlapping duplicate of the first car: a false positive
    ]
    review = review_frame("000007", labels, predictions, CLASSES)
    assert review.matches == [(0, 0), (1, 1)]
    np.testing.assert_allclose(review.depth_errors(), [2.5, -1.0])
    assert review.max_depth_error == pytest.approx(2.5) and review.mean_depth_error == pytest.approx(1.75)
    assert review.missed == [2] and review.false_positives == [2, 4]
    assert len(review.ground_truth) == 3  # DontCare is not an object to find
    assert review_frame("x", labels, predictions, CLASSES, min_score=0.85).matches == [(0, 0)]


def test_worst_first_orders():
    a = review_frame("a", [box("Car", 100, 20.0)], [box("Car", 100, 29.0, 0.9)], CLASSES)  # 9 m off
    b = review_frame("b", [box("Car", 100, 20.0), box("Car", 300, 20.0)], [box("Car", 100, 20.5, 0.9)], CLASSES)
    c = review_frame("c", [box("Car", 100, 20.0)], [box("Car", 100, 20.0, 0.9)], CLASSES)
    assert [r.frame_id for r in worst_first([c, a, b], "missed")] == ["b", "a", "c"]
    assert [r.frame_id for r in worst_first([c, a, b], "depth")] == ["a", "b", "c"]
    with pytest.raises(Add3dError, match="order"):
        worst_first([a], "score")


def test_show_predictions_gallery_from_a_result_folder(kitti_mini_copy, tmp_path):
    """Labels turned into predictions, one frame made bad: it comes first and gets a picture."""
    root = kitti_mini_copy
    ids = ["000000", "000001", "000002"]
    write_split(root / "ImageSets" / "all.txt", ids)
    results = tmp_path / "results"
    for frame_id in ids:
        objects = [o for o in read_label(root / "training" / "label_2" / f"{frame_id}.txt") if o.cls_type in CLASSES]
        predicted = []
        for i, obj in enumerate(objects):
            guess = copy.deepcopy(obj)
            guess.score = 0.9 - 0.1 * i
            if frame_id == "000001":
                guess.location = guess.location + np.array([0.0, 0.0, 4.0])  # 4 m too far
            predicted.append(guess)
        if frame_id == "000002":
            predicted = predicted[1:]  # misses one object
        write_label(results / f"{frame_id}.txt", predicted)
    out = tmp_path / "review"
    assert main(["show-predictions", "--predictions", str(results), "--root", str(root), "--split", "all",
                 "--out", str(out), "--limit", "2"]) == 0
    page = (out / "index.html").read_text()
    order = re.findall(r"<b>(\d{6})</b>", page)
    assert order == ["000002", "000001", "000000"]
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == ["000001.png", "000002.png"]
    assert 'src="frames/000002.png"' in page and "4.00" in page  # the 4 m depth error is listed
    assert main(["show-predictions", "--predictions", str(results), "--root", str(root), "--split", "all",
                 "--out", str(tmp_path / "by_depth"), "--order", "depth", "--limit", "0"]) == 0
    assert re.findall(r"<b>(\d{6})</b>", (tmp_path / "by_depth" / "index.html").read_text())[0] == "000001"


def test_show_predictions_needs_result_files(kitti_mini_copy, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    code = main(["show-predictions", "--predictions", str(tmp_path / "results"), "--root", str(kitti_mini_copy),
                 "--split", "val", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "000002.txt: no result file" in capsys.readouterr().err
    assert not (tmp_path / "out" / "index.html").exists()
