"""KITTI evaluator: hand-computed devkit cases, invariants, file front-end, CLI and error reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from add3d.cli import main as cli_main
from add3d.data.kitti import Object3D, read_label, write_label
from add3d.errors import Add3dError, DataFormatError
from add3d.evaluation.devkit_matching import average_precision, recall_thresholds
from add3d.evaluation.kitti_eval import CLASSES, evaluate, evaluate_dirs, format_table

# Scenes: one object per frame, far apart, so hand counting stays easy.
CAR_DIMS = (1.5, 1.6, 3.9)
PED_DIMS = (1.8, 0.6, 0.8)


def obj(cls="Car", box=(100.0, 100.0, 200.0, 160.0), x=0.0, z=20.0, ry=0.0, alpha=0.0, score=None,
        truncation=0.0, occlusion=0, dims=None) -> Object3D:
    dims = dims if dims is not None else (PED_DIMS if cls in ("Pedestrian", "Person_sitting", "Cyclist") else CAR_DIMS)
    return Object3D(cls, truncation, occlusion, alpha, np.array(box, float), np.array(dims, float),
                    np.array([x, 1.6, z]), ry, score)


def det_of(gt: Object3D, score: float, **changes) -> Object3D:
    """A detection equal to ``gt`` (then modified by ``changes``)."""
    fields = dict(cls=gt.cls_type, box=gt.box2d.copy(), x=gt.location[0], z=gt.location[2], ry=gt.rotation_y,
                  alpha=gt.alpha, dims=gt.dims.copy(), score=score)
    fields.update(changes)
    return obj(**fields)


def perfect(num: int, cls="Car"):
    """num frames with one easy GT each and an identical detection (distinct scores)."""
    gt = {f"{i:06d}": [obj(cls)] for i in range(num)}
    dt = {k: [det_of(v[0], score=1.0 - i / 1000)] for i, (k, v) in enumerate(gt.items())}
    return gt, dt


def aps(result, cls="Car", metric="3d", split="R40"):
    return result[cls][metric][split]


# --------------------------------------------------------------------------------------------- basics
def test_identical_boxes_give_100_everywhere_with_41_gt():
    gt, dt = perfect(41)
    result = evaluate(gt, dt, classes=("Car",))
    for metric in ("2d", "bev", "3d", "aos"):
        for split in ("R11", "R40"):
            assert aps(result, metric=metric, split=split) == pytest.approx([100.0] * 3, abs=1e-9)


def test_small_gt_counts_follow_the_devkit_sampling():
    # n <= 40 perfect detections give n thresholds with precision 1, the rest of the 41 points 0:
    # R40 = (n - 1) / 40, R11 = ceil(n / 4) / 11 (the devkit's known small-sample behaviour).
    for n in (1, 10, 40):
        gt, dt = perfect(n)
        result = evaluate(gt, dt, classes=("Car",))
        assert aps(result, split="R40") == pytest.approx([100 * (n - 1) / 40] * 3)
        assert aps(result, split="R11") == pytest.approx([100 * np.ceil(n / 4) / 11] * 3)


def test_half_of_the_objects_found():
    # 80 GT, the first 40 detected exactly: the thresholds sit at recalls 1/80, 2/80, 4/80, ..., 40/80
    # (21 of them, every 1/40 step), so R40 = 20/40 and R11 = 6/11 (points 0, 4, ..., 20).
    gt = {f"{i:06d}": [obj()] for i in range(80)}
    dt = {f"{i:06d}": [det_of(gt[f"{i:06d}"][0], score=1.0 - i / 100)] for i in range(40)}
    result = evaluate(gt, dt, classes=("Car",))
    assert aps(result, split="R40") == pytest.approx([50.0] * 3)
    assert aps(result, split="R11") == pytest.approx([100 * 6 / 11] * 3)


def test_recall_thresholds_by_hand():
    scores = np.linspace(1, 0.01, 40)
    kept = recall_thresholds(scores, 80)
    np.testing.assert_allclose(kept, scores[[0] + list(range(1, 40, 2))])
    assert len(recall_thresholds(np.ones(1000), 1000)) == 41
    assert len(recall_thresholds(np.zeros(0), 5)) == 0


def test_average_precision_points():
    curve = np.zeros(41)
    curve[0] = 1.0
    assert average_precision(curve) == pytest.approx((100 / 11, 0.0))
    assert average_precision(np.ones(41)) == pytest.approx((100.0, 100.0))


def test_false_positives_above_every_true_positive():
    # 41 perfect TPs (scores 0.5 ... 0.46) and 41 far-away FPs scored higher (0.9): at every threshold all
    # 41 FPs count, so precision at the k-th threshold is k / (k + 41), k = 1..41.
    gt, dt = perfect(41)
    for i, key in enumerate(gt):
        dt[key][0].score = 0.5 - i / 1000
        dt[key].append(obj(box=(600, 100, 700, 160), x=15.0, z=50.0, score=0.9))
    result = evaluate(gt, dt, classes=("Car",))
    k = np.arange(1, 42)
    curve = np.maximum.accumulate((k / (k + 41.0))[::-1])[::-1]
    expected_r40 = 100 * curve[1:].sum() / 40
    assert aps(result, metric="2d") == pytest.approx([expected_r40] * 3)
    assert aps(result, metric="3d") == pytest.approx([expected_r40] * 3)


def test_low_scored_false_positives_do_not_matter():
    gt, dt = perfect(41)
    for key in gt:
        dt[key].append(obj(box=(600, 100, 700, 160), x=15.0, z=50.0, score=0.01))
    result = evaluate(gt, dt, classes=("Car",))
    assert aps(result, metric="3d") == pytest.approx([100.0] * 3)


# ------------------------------------------------------------------------------------------ matching
def test_overlap_must_be_strictly_greater_than_threshold():
    # Pedestrian 2D threshold 0.5: the detection covers the top half of the GT box -> IoU exactly 0.5.
    gt = {f"{i:06d}": [obj("Pedestrian", box=(100, 100, 200, 200))] for i in range(41)}
    half = {k: [det_of(v[0], 0.9, box=np.array([100, 100, 200, 150.0]))] for k, v in gt.items()}
    more = {k: [det_of(v[0], 0.9, box=np.array([100, 100, 200, 151.0]))] for k, v in gt.items()}
    assert aps(evaluate(gt, half, classes=("Pedestrian",)), "Pedestrian", "2d") == [0.0, 0.0, 0.0]
    assert aps(evaluate(gt, more, classes=("Pedestrian",)), "Pedestrian", "2d") == pytest.approx([100.0] * 3)


def test_gt_height_limit_is_inclusive_and_detection_height_is_truncated():
    # GT exactly 40 px high is too small for "easy" (height <= 40 is ignored) -> no valid GT, AP 0.
    gt = {f"{i:06d}": [obj(box=(100, 100, 200, 140.0))] for i in range(41)}
    dt = {k: [det_of(v[0], 0.9)] for k, v in gt.items()}
    assert aps(evaluate(gt, dt, classes=("Car",)), metric="2d") == pytest.approx([0.0, 100.0, 100.0])
    # Detections 39.9 px high: int(39.9) = 39 < 40 -> ignored for easy (consumed, neither TP nor FP).
    gt = {f"{i:06d}": [obj(box=(100, 100, 200, 145.0))] for i in range(41)}
    short = {k: [det_of(v[0], 0.9, box=np.array([100, 100, 200, 139.9]))] for k, v in gt.items()}
    assert aps(evaluate(gt, short, classes=("Car",)), metric="2d") == pytest.approx([0.0, 100.0, 100.0])
    tall = {k: [det_of(v[0], 0.9, box=np.array([100, 100, 200, 140.0]))] for k, v in gt.items()}
    assert aps(evaluate(gt, tall, classes=("Car",)), metric="2d") == pytest.approx([100.0] * 3)


def test_difficulty_filters_occlusion_and_truncation():
    gt, dt = perfect(41)
    for i, key in enumerate(gt):  # every object moderately occluded: invalid for easy only
        gt[key][0].occlusion = 1
    assert aps(evaluate(gt, dt, classes=("Car",))) == pytest.approx([0.0, 100.0, 100.0])
    for key in gt:
        gt[key][0].occlusion, gt[key][0].truncation = 0, 0.4  # > 0.3: hard only
    assert aps(evaluate(gt, dt, classes=("Car",))) == pytest.approx([0.0, 0.0, 100.0])


def test_neighbour_class_detections_are_not_false_positives():
    gt, dt = perfect(41)
    key = next(iter(gt))
    van = obj("Van", box=(600, 100, 700, 160), x=15.0, z=50.0)
    gt[key].append(van)
    dt[key].append(det_of(van, score=2.0, cls="Car"))  # a Car detection on a Van: ignored, not an FP
    assert aps(evaluate(gt, dt, classes=("Car",))) == pytest.approx([100.0] * 3)
    gt[key][-1].cls_type = "Truck"  # not a neighbour class: now it is a false positive
    assert aps(evaluate(gt, dt, classes=("Car",)))[1] < 100.0


def test_dontcare_absorbs_false_positives_in_2d_only():
    gt, dt = perfect(41)
    key = next(iter(gt))
    gt[key].append(Object3D("DontCare", -1, -1, -10, np.array([590, 90, 720, 170.0]), -np.ones(3),
                            np.full(3, -1000.0), -10))
    dt[key].append(obj(box=(600, 100, 700, 160), x=15.0, z=50.0, score=2.0))  # inside the DontCare box
    result = evaluate(gt, dt, classes=("Car",))
    assert aps(result, metric="2d") == pytest.approx([100.0] * 3)
    assert aps(result, metric="3d")[1] < 100.0  # DontCare regions have no 3D extent


def test_pass_two_matches_by_overlap_not_by_score():
    # Per frame: GT1 (100..200) and GT2 (130..230) side by side. Detection A (117..217) overlaps both
    # (2D IoU 0.709 and 0.770), detection B equals GT1. Same score, A listed first.
    # Pass 1 (thresholds) takes the first top-scored candidate: GT1 <- A, so one TP per frame.
    # Pass 2 takes the best overlap: GT1 <- B, GT2 <- A: precision 1 at every threshold. With 82 GT and
    # 41 threshold scores this is the "half found" case: R40 = 50 (a score-based pass 2 would give 25).
    gt, dt = {}, {}
    for i in range(41):
        gt1, gt2 = obj(box=(100, 100, 200, 200)), obj(box=(130, 100, 230, 200), x=5.0)
        gt[f"{i:06d}"] = [gt1, gt2]
        score = 1.0 - i / 100
        dt[f"{i:06d}"] = [det_of(gt2, score, box=np.array([117, 100, 217, 200.0])), det_of(gt1, score)]
    result = evaluate(gt, dt, classes=("Car",))
    assert aps(result, metric="2d") == pytest.approx([50.0] * 3)


def test_lower_scored_duplicates_never_enter():
    # Thresholds come from the pass-1 true positives (the higher-scored duplicate), so exact detections
    # scored lower are never active: AP stays 100 although each frame has two detections.
    gt, dt = perfect(41)
    for key in gt:
        dt[key].append(det_of(gt[key][0], score=2.0, x=gt[key][0].location[0] + 0.3))
    assert aps(evaluate(gt, dt, classes=("Car",))) == pytest.approx([100.0] * 3)


def test_aos_measures_orientation():
    gt, dt = perfect(41)
    for key in gt:
        dt[key][0].alpha = gt[key][0].alpha + np.pi / 2  # similarity (1 + cos 90deg) / 2 = 0.5
    result = evaluate(gt, dt, classes=("Car",))
    assert aps(result, metric="aos") == pytest.approx([50.0] * 3)
    assert aps(result, metric="2d") == pytest.approx([100.0] * 3)
    dt[next(iter(dt))][0].alpha = -10  # one invalid alpha switches AOS off, as in the devkit
    result = evaluate(gt, dt, classes=("Car",))
    assert result["Car"]["aos"] == {"R11": [None] * 3, "R40": [None] * 3}
    aos_row = next(line for line in format_table(result).splitlines() if line.startswith("Car") and "AOS" in line)
    assert "None" not in aos_row and aos_row.replace("|", " ").split()[2:] == ["-"] * 6


def test_loose_overlap_setting():
    gt, dt = perfect(41)
    for key in gt:  # shifted 1.2 m along the length: BEV and 3D IoU = 2.7 / 5.1 = 0.53
        dt[key][0].location = dt[key][0].location + [1.2, 0, 0]
    default = evaluate(gt, dt, classes=("Car",))
    loose = evaluate(gt, dt, classes=("Car",), overlap="loose")
    assert aps(default) == [0.0, 0.0, 0.0]
    assert aps(loose) == pytest.approx([100.0] * 3)
    assert aps(loose, metric="2d") == aps(default, metric="2d")  # 2D thresholds unchanged


def test_class_confusion_and_missing_classes():
    gt, dt = perfect(41)
    for key in dt:
        dt[key][0].cls_type = "Pedestrian"  # tall enough: simply a wrong class
    result = evaluate(gt, dt)
    assert set(result) == set(CLASSES)
    assert aps(result, "Car") == [0.0, 0.0, 0.0]
    assert aps(result, "Pedestrian") == [0.0, 0.0, 0.0]  # no Pedestrian GT: no valid GT -> 0
    assert aps(result, "Cyclist", "2d", "R11") == [0.0, 0.0, 0.0]


def test_empty_frames_and_frame_order_do_not_change_results():
    rng = np.random.default_rng(0)
    gt, dt = perfect(50)
    for i, key in enumerate(dt):
        dt[key][0].location = dt[key][0].location + rng.normal(0, 0.3, 3)
        dt[key][0].score = float(rng.choice([0.3, 0.6, 0.9]))  # ties
    base = evaluate(gt, dt)
    keys = list(gt)
    rng.shuffle(keys)
    shuffled = evaluate({k: gt[k] for k in keys}, dt)
    gt_more = dict(gt, **{f"9{i:05d}": [] for i in range(20)})
    padded = evaluate(gt_more, dt)
    for cls in CLASSES:
        for metric in ("2d", "bev", "3d", "aos"):
            for split in ("R11", "R40"):
                assert shuffled[cls][metric][split] == pytest.approx(base[cls][metric][split], abs=1e-9)
                assert padded[cls][metric][split] == pytest.approx(base[cls][metric][split], abs=1e-9)


def test_curves_are_optional_and_monotone():
    gt, dt = perfect(60)
    for i, key in enumerate(dt):
        if i % 3 == 0:
            dt[key][0].location = dt[key][0].location + [2.0, 0, 0]
    result = evaluate(gt, dt, return_curves=True)
    assert "curves" not in evaluate(gt, dt)
    curve = np.array(result["curves"]["Car"]["3d"][1])
    assert curve.shape == (41,)
    assert np.all(np.diff(curve) <= 1e-12)  # running max from the right
    assert average_precision(curve)[1] == pytest.approx(result["Car"]["3d"]["R40"][1])


def test_bad_options_raise():
    gt, dt = perfect(2)
    with pytest.raises(Add3dError, match="classes"):
        evaluate(gt, dt, classes=("Truck",))
    with pytest.raises(Add3dError, match="overlap"):
        evaluate(gt, dt, overlap="strict")
    dt[next(iter(dt))][0].score = None
    with pytest.raises(Add3dError, match="score"):
        evaluate(gt, dt)


# ------------------------------------------------------------------------------------- files and CLI
def write_dirs(tmp_path: Path, gt, dt) -> tuple[Path, Path]:
    for key, objects in gt.items():
        write_label(tmp_path / "gt" / f"{key}.txt", objects)
    (tmp_path / "pred").mkdir(exist_ok=True)
    for key, objects in dt.items():
        write_label(tmp_path / "pred" / f"{key}.txt", objects)
    return tmp_path / "gt", tmp_path / "pred"


def test_evaluate_dirs_matches_python_api_and_missing_predictions(tmp_path):
    rng = np.random.default_rng(1)
    gt, dt = perfect(45)
    for key in dt:
        dt[key][0].location = dt[key][0].location + rng.normal(0, 0.2, 3)
    del dt["000003"]  # a missing prediction file = no detections
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    with pytest.raises(Add3dError, match=r"1 of 45 prediction files are missing \(first: 000003.txt\).*--missing-as-empty"):
        evaluate_dirs(gt_dir, pred_dir)
    from_files = evaluate_dirs(gt_dir, pred_dir, missing_as_empty=True)
    # compare with the API on the same (2-decimal rounded) values the files hold
    gt_read = {k: read_label(gt_dir / f"{k}.txt") for k in gt}
    dt_read = {k: read_label(pred_dir / f"{k}.txt") for k in dt}
    assert from_files == evaluate(gt_read, dt_read)
    (tmp_path / "ids.txt").write_text("000000\n000001")
    subset = evaluate_dirs(gt_dir, pred_dir, ids=tmp_path / "ids.txt")  # both files present
    assert subset["Car"]["2d"]["R40"] == pytest.approx([100 * 1 / 40] * 3)  # 2 GT, both found in 2D


def test_prediction_files_from_other_tools_are_accepted(tmp_path):
    # OpenPCDet-style lines write -1 -1 for truncation/occlusion; the devkit never reads them.
    gt, dt = perfect(41)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    for path in pred_dir.glob("*.txt"):
        fields = path.read_text().split()
        fields[1:3] = ["-1", "-1"]
        path.write_text(" ".join(fields) + "\n")
    assert evaluate_dirs(gt_dir, pred_dir)["Car"]["3d"]["R40"] == pytest.approx([100.0] * 3)


@pytest.mark.parametrize(
    "line, message",
    [
        ("Car 0 0 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0", "score"),  # 15 fields
        ("Car 0 0 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0 0.5 7", "fields"),
        ("Car 0 0 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0 high", "not a number"),
        ("Car 0 0 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0 nan", "finite"),
    ],
)
def test_malformed_prediction_lines_name_file_and_line(tmp_path, line, message):
    gt, dt = perfect(3)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    path = pred_dir / "000001.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataFormatError, match=message) as error:
        evaluate_dirs(gt_dir, pred_dir)
    assert error.value.path == str(path) and error.value.line == 2


def test_malformed_and_missing_ground_truth(tmp_path):
    gt, dt = perfect(3)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    (gt_dir / "000002.txt").write_text("Car 0 0 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0 0.9\n")
    with pytest.raises(DataFormatError, match="15") as error:
        evaluate_dirs(gt_dir, pred_dir)
    assert error.value.line == 1
    (gt_dir / "000002.txt").write_text("Car 0 5 0 100 100 200 160 1.5 1.6 3.9 0 1.6 20 0\n")
    with pytest.raises(DataFormatError, match="occlusion"):
        evaluate_dirs(gt_dir, pred_dir)
    (tmp_path / "ids.txt").write_text("000000\n000009\n")
    with pytest.raises(Add3dError, match="000009.txt"):
        evaluate_dirs(gt_dir, pred_dir, ids=tmp_path / "ids.txt")
    with pytest.raises(Add3dError, match="not found"):
        evaluate_dirs(tmp_path / "nowhere", pred_dir)


def test_box2d_scale_equals_evaluating_scaled_label_files(tmp_path, capsys):
    # Quarter-size frames: a 10 px car is "hard"-too-small unscaled (<= 25 px) but moderate at x4.
    rng = np.random.default_rng(3)
    gt, dt = {}, {}
    for i in range(30):
        top = 20.0 + i
        height = float(rng.uniform(5.0, 14.0))
        car = obj(box=(50.0, top, 70.0, top + height), z=20.0 + i)
        gt[f"{i:06d}"] = [car]
        dt[f"{i:06d}"] = [det_of(car, score=float(rng.uniform()), box=np.array([50.0, top, 70.0, top + height * 0.97]),
                                 z=20.0 + i + float(rng.normal(0, 1.0)))]
    scale = 4.0

    def scaled(frames):
        out = {}
        for key, objects in frames.items():
            out[key] = [det_of(o, o.score, box=o.box2d * scale) if o.score is not None else
                        obj(box=tuple(o.box2d * scale), x=o.location[0], z=o.location[2]) for o in objects]
        return out

    expected = evaluate(scaled(gt), scaled(dt), classes=("Car",), overlap="loose")
    result = evaluate(gt, dt, classes=("Car",), overlap="loose", box2d_scale=scale)
    assert result == expected
    assert aps(result, metric="2d")[1] > 0 and aps(evaluate(gt, dt, classes=("Car",)), metric="2d") == [0.0, 0.0, 0.0]
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    assert evaluate_dirs(gt_dir, pred_dir, classes=("Car",), overlap="loose", box2d_scale=scale) == expected
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir), "--box2d-scale", "4",
                     "--classes", "Car"]) == 0
    assert "not the official protocol" in capsys.readouterr().out
    with pytest.raises(Add3dError, match="box2d_scale"):
        evaluate(gt, dt, box2d_scale=0.0)


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    gt, dt = perfect(41)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    out = tmp_path / "out" / "ap.json"
    code = cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json", str(out),
                     "--classes", "Car", "Pedestrian"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "R40 easy" in printed and "R11 easy" in printed
    assert any(line.startswith("Car") and "3D" in line and line.count("100.00") == 6 for line in printed.splitlines())
    data = json.loads(out.read_text())
    assert list(data) == ["Car", "Pedestrian"]
    assert list(data["Car"]) == ["2d", "bev", "3d", "aos"]
    assert data["Car"]["3d"] == {"R11": [100.0, 100.0, 100.0], "R40": [100.0, 100.0, 100.0]}
    bad = pred_dir / "000000.txt"
    bad.write_text("Car 0 0 0\n")
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    assert f"{bad}:1" in capsys.readouterr().err


def test_real_kitti_labels_against_themselves(kitti_mini, tmp_path):
    labels = kitti_mini / "training" / "label_2"
    gt = {path.stem: read_label(path) for path in sorted(labels.glob("*.txt"))}
    dt = {k: [det_of(o, 0.9, cls=o.cls_type) for o in v if o.cls_type != "DontCare"] for k, v in gt.items()}
    result = evaluate(gt, dt)
    limits = {0: (40, 0, 0.15), 1: (25, 1, 0.30), 2: (25, 2, 0.50)}
    for cls in CLASSES:
        for difficulty, (min_height, max_occlusion, max_truncation) in limits.items():
            n = sum(
                1 for v in gt.values() for o in v
                if o.cls_type == cls and o.occlusion <= max_occlusion and o.truncation <= max_truncation
                and o.height_2d > min_height
            )
            # n <= 40 perfect detections: R40 = (n - 1) / 40 (see the small-count test); 0 without GT.
            assert result[cls]["2d"]["R40"][difficulty] == pytest.approx(100 * max(n - 1, 0) / 40)
    _, pred_dir = write_dirs(tmp_path, {}, dt)
    assert evaluate_dirs(labels, pred_dir) == evaluate(gt, {k: read_label(pred_dir / f"{k}.txt") for k in dt})


def test_threshold_where_every_detection_is_absorbed_gives_nan_like_the_devkit():
    # Pass 1: Van g0 takes the higher-scored d1, so Car g1 is found by d2 (the only threshold, 0.5).
    # Pass 2 at 0.5: g0 takes d2 (better overlap), g1 finds nothing, Van g2 absorbs d1: TP = FP = 0,
    # precision 0/0. The devkit keeps that NaN at point 0: R11 is NaN, R40 (points 1..40) is 0.
    g0 = obj("Van", box=(0, 0, 100, 100))
    g1 = obj("Car", box=(-10, 0, 90, 95), x=5.0)
    g2 = obj("Van", box=(12, 0, 112, 100), x=10.0)
    d1 = obj("Car", box=(10, 0, 110, 100), x=20.0, score=0.9)
    d2 = obj("Car", box=(0, 0, 100, 95), x=30.0, score=0.5)
    result = evaluate({"000000": [g0, g1, g2]}, {"000000": [d1, d2]}, classes=("Car",), return_curves=True)
    assert np.isnan(result["curves"]["Car"]["2d"][0][0]) and result["curves"]["Car"]["2d"][0][1] == 0.0
    assert np.isnan(result["Car"]["2d"]["R11"]).all() and result["Car"]["2d"]["R40"] == [0.0, 0.0, 0.0]


def test_empty_inputs():
    assert evaluate({}, {})["Car"]["3d"] == {"R11": [0.0] * 3, "R40": [0.0] * 3}
    gt, dt = perfect(3)
    assert evaluate(gt, {})["Car"]["2d"]["R40"] == [0.0] * 3
    assert evaluate({k: [] for k in gt}, dt)["Car"]["2d"]["R40"] == [0.0] * 3


# ------------------------------------------------------------------ brute-force reference (per frame)
def _reference_curve(gt_frames, dt_frames, cls, metric, difficulty, min_overlap):
    """The devkit's loops written plainly (frame by frame, threshold by threshold, GT by GT)."""
    from add3d.geometry.boxes import box2d_iou
    from add3d.geometry.iou import bev_iou, iou_3d

    min_height, max_occ, max_trunc = [(40, 0, 0.15), (25, 1, 0.30), (25, 2, 0.50)][difficulty]
    neighbour = {"Car": "Van", "Pedestrian": "Person_sitting"}.get(cls)

    def boxes(objs):
        return np.array([[*o.location, *o.dims, o.rotation_y] for o in objs]).reshape(-1, 7)

    frames = []
    for key, gts in gt_frames.items():
        dts = dt_frames.get(key, [])
        dcs = [g for g in gts if g.cls_type == "DontCare"]
        gflag = []
        for g in gts:
            hard = g.occlusion > max_occ or g.truncation > max_trunc or g.height_2d <= min_height
            if g.cls_type == cls and not hard:
                gflag.append(0)
            elif g.cls_type == neighbour or g.cls_type == cls:
                gflag.append(1)
            else:
                gflag.append(-1)
        dflag = [1 if int(abs(d.box2d[3] - d.box2d[1])) < min_height else 0 if d.cls_type == cls else -1 for d in dts]
        if metric == "2d":
            ov = box2d_iou(np.array([g.box2d for g in gts]), np.array([d.box2d for d in dts]))
        else:
            ov = (bev_iou if metric == "bev" else iou_3d)(boxes(gts), boxes(dts))
        in_dc = [False] * len(dts)
        for j, d in enumerate(dts):
            for c in dcs:  # 2D only: DontCare boxes carry no 3D extent
                if metric == "2d":
                    x1, y1 = max(d.box2d[0], c.box2d[0]), max(d.box2d[1], c.box2d[1])
                    x2, y2 = min(d.box2d[2], c.box2d[2]), min(d.box2d[3], c.box2d[3])
                    area = (d.box2d[2] - d.box2d[0]) * (d.box2d[3] - d.box2d[1])
                    if x2 > x1 and y2 > y1 and (x2 - x1) * (y2 - y1) / area > min_overlap:
                        in_dc[j] = True
        frames.append((gts, dts, gflag, dflag, ov.reshape(len(gts), len(dts)), in_dc))

    def match(frame, thresh, by_score):
        gts, dts, gflag, dflag, ov, in_dc = frame
        used, tp_scores, tp, fp, sim = [False] * len(dts), [], 0, 0, 0.0
        for i in range(len(gts)):
            if gflag[i] == -1:
                continue
            cands = [j for j in range(len(dts)) if dflag[j] != -1 and not used[j]
                     and dts[j].score >= thresh and ov[i, j] > min_overlap]
            if by_score:
                pick = max(cands, key=lambda j: (dts[j].score, -j), default=None)
            else:
                valid = [j for j in cands if dflag[j] == 0]
                pick = max(valid, key=lambda j: (ov[i, j], -j)) if valid else (cands[0] if cands else None)
            if pick is None:
                continue
            used[pick] = True
            if gflag[i] == 0 and dflag[pick] == 0:
                tp += 1
                tp_scores.append(dts[pick].score)
                sim += (1 + np.cos(gts[i].alpha - dts[pick].alpha)) / 2
        fp = sum(1 for j in range(len(dts)) if dflag[j] == 0 and not used[j] and dts[j].score >= thresh and not in_dc[j])
        return tp_scores, tp, fp, sim

    scores = sorted((s for f in frames for s in match(f, -np.inf, True)[0]), reverse=True)
    n_gt = sum(flag == 0 for f in frames for flag in f[2])
    thresholds, current = [], 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(scores) - 1 else left
        if i < len(scores) - 1 and (right - current) < (current - left):
            continue
        thresholds.append(score)
        current += 1 / 40
    precision, aos = np.zeros(41), np.zeros(41)
    for t, thresh in enumerate(thresholds):
        totals = np.sum([match(f, thresh, False)[1:] for f in frames], axis=0)
        precision[t] = totals[0] / (totals[0] + totals[1])
        aos[t] = totals[2] / (totals[0] + totals[1])
    for t in range(len(thresholds)):
        precision[t], aos[t] = precision[t:].max(), aos[t:].max()
    return precision, aos


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_matching_equals_plain_loops(tmp_path, seed):
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_speed", Path(__file__).parents[1] / "benchmarks" / "eval_speed.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    gt_dir, pred_dir, _ = generator.write_eval_set(tmp_path, 25, seed=seed, crowded=seed != 1, noise_scale=0.1)
    gt = {p.stem: read_label(p) for p in sorted(gt_dir.glob("*.txt"))}
    dt = {p.stem: read_label(p) for p in sorted(pred_dir.glob("*.txt"))}
    result = evaluate(gt, dt, return_curves=True)
    for cls, min_overlap in (("Car", 0.7), ("Pedestrian", 0.5)):
        for metric in ("2d", "bev", "3d"):
            for difficulty in range(3):
                precision, aos = _reference_curve(gt, dt, cls, metric, difficulty, min_overlap)
                np.testing.assert_allclose(result["curves"][cls][metric][difficulty], precision, atol=1e-12)
                if metric == "2d":
                    np.testing.assert_allclose(result["curves"][cls]["aos"][difficulty], aos, atol=1e-12)


def test_two_d_only_result_files(tmp_path):
    # KITTI's convention for detections without a 3D box: h w l = -1, x y z = -1000. The devkit then
    # evaluates 2D (and AOS) only; BEV/3D are skipped, which we report as 0.
    gt, dt = perfect(41)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    for path in pred_dir.glob("*.txt"):
        fields = path.read_text().split()
        fields[8:15] = ["-1", "-1", "-1", "-1000", "-1000", "-1000", "-10"]
        path.write_text(" ".join(fields) + "\n")
    result = evaluate_dirs(gt_dir, pred_dir)
    assert result["Car"]["2d"]["R40"] == pytest.approx([100.0] * 3)
    assert result["Car"]["aos"]["R40"] == pytest.approx([100.0] * 3)
    assert result["Car"]["bev"]["R40"] == [0.0] * 3 and result["Car"]["3d"]["R11"] == [0.0] * 3


# ------------------------------------------------------------------------------------ one number
def test_in_memory_metrics_equal_the_written_files_metrics(tmp_path):
    # Detections straight from a network carry full precision; their result files hold 2 decimals
    # (scores 4). Training validation, `add3d eval` and the demo evaluate them as written, so their
    # numbers are eval-kitti's on the folder they write.
    from add3d.engine.inference import evaluate_predictions, write_predictions

    rng = np.random.default_rng(3)
    gt, dt = {}, {}
    for i in range(60):
        truth = obj(x=float(rng.uniform(-8, 8)), z=float(rng.uniform(8, 40)), alpha=float(rng.uniform(-3, 3)))
        gt[f"{i:06d}"] = [truth]
        dt[f"{i:06d}"] = [
            det_of(truth, score=float(0.5 + rng.uniform(0, 4e-4)), x=truth.location[0] + rng.normal(0, 0.3),
                   alpha=truth.alpha + rng.normal(0, 0.3), box=truth.box2d + rng.normal(0, 8, 4)),
            det_of(truth, score=float(0.5 + rng.uniform(0, 4e-4)), x=truth.location[0] + 3 + rng.normal(0, 1)),
        ]
    gt_dir = tmp_path / "gt"
    for key, objects in gt.items():
        write_label(gt_dir / f"{key}.txt", objects)
    write_predictions(dt, tmp_path / "pred")
    gt = {key: read_label(gt_dir / f"{key}.txt", allow_score=False) for key in gt}  # as eval reads it
    for overlap in ("default", "loose"):
        from_files = evaluate_dirs(gt_dir, tmp_path / "pred", overlap=overlap)
        assert evaluate_predictions(gt, dt, CLASSES, overlap) == from_files
        assert evaluate(gt, dt, overlap=overlap) != from_files  # the unrounded values disagree (the old bug)


# ------------------------------------------------------------------- what the devkit reads, we read
def test_inverted_2d_boxes_are_scored_as_the_devkit_does(tmp_path):
    # The devkit reads an inverted box: height |y1 - y2| (so the difficulty filter still sees it),
    # 2D overlap 0 (a 2D false positive), BEV/3D from the 3D fields as usual.
    gt, dt = perfect(41)
    for key in ("000001", "000002"):
        x1, y1, x2, y2 = dt[key][0].box2d
        dt[key][0].box2d = np.array([x2, y2, x1, y1])  # inverted in x and y
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    with pytest.warns(UserWarning, match=r"2 detections in 2 files have an inverted 2D box \(x2 < x1 or y2 < y1; first .*000001.txt:1\)"):
        result = evaluate_dirs(gt_dir, pred_dir)
    assert result == evaluate(gt, dt)  # the in-memory path agrees
    assert aps(result, metric="3d") == pytest.approx([100.0] * 3)
    assert aps(result, metric="bev") == pytest.approx([100.0] * 3)
    assert aps(result, metric="2d")[0] < 100.0  # two GT lose their 2D match
    with pytest.raises(DataFormatError, match="x2 < x1") as error:
        evaluate_dirs(gt_dir, pred_dir, strict=True)
    assert error.value.path == str(pred_dir / "000001.txt") and error.value.line == 1


def test_inverted_box_warning_and_strict_through_the_cli(tmp_path, capsys):
    gt, dt = perfect(3)
    x1, y1, x2, y2 = dt["000000"][0].box2d
    dt["000000"][0].box2d = np.array([x2, y1, x1, y2])
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("add3d eval-kitti: warning: ") and "inverted 2D box" in err[0]
    out_json = tmp_path / "r.json"
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir), "--strict", "--json", str(out_json)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"add3d eval-kitti: error: {pred_dir / '000000.txt'}:1: 2D box has x2 < x1 or y2 < y1: {x2} {y1} {x1} {y2}"]
    assert not out_json.exists()


def test_missing_and_empty_prediction_folders(tmp_path, capsys):
    gt, dt = perfect(12)
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    for key in ("000004", "000007", "000009"):
        (pred_dir / f"{key}.txt").unlink()
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"add3d eval-kitti: error: {pred_dir}: 3 of 12 prediction files are missing (first: 000004.txt, 000007.txt, "
        "000009.txt); pass --missing-as-empty (missing_as_empty=True) to score them as frames without detections")
    assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(pred_dir), "--missing-as-empty"]) == 0
    assert "Car" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra in ([], ["--missing-as-empty"]):  # an empty folder is always an error
        assert cli_main(["eval-kitti", "--gt", str(gt_dir), "--pred", str(empty), *extra]) == 2
        assert "none of the 12 prediction files" in capsys.readouterr().err


def test_unknown_class_names_are_read_as_the_devkit_reads_them(tmp_path):
    # The devkit compares names with the evaluated class: a "Bus" is another class (never matched;
    # like any detection below the height limit it is ignored, not a false positive).
    gt, dt = perfect(41)
    dt["000003"].append(det_of(gt["000003"][0], score=0.99, cls="Bus"))
    dt["000005"].append(det_of(gt["000005"][0], score=0.98, cls="Bus", box=(100.0, 100.0, 120.0, 110.0)))  # small
    gt_dir, pred_dir = write_dirs(tmp_path, gt, dt)
    with pytest.warns(UserWarning, match=r"2 detections of classes KITTI does not have \(Bus; first .*000003.txt:2\)"):
        result = evaluate_dirs(gt_dir, pred_dir)
    assert result == evaluate(gt, dt)
    assert aps(result, metric="3d") == pytest.approx([100.0] * 3)  # the Bus boxes change nothing for Car
    with pytest.raises(DataFormatError, match="unknown class 'Bus'") as error:
        evaluate_dirs(gt_dir, pred_dir, strict=True)
    assert error.value.line == 2
