"""End to end through the command line with the real MonoDLE detector (narrow DLA, tiny inputs):
add3d train -> eval -> export-submission -> predict --vis."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from add3d.cli import main
from add3d.data.kitti import read_label
from engine_helpers import fake_calibration, train_one_epoch_run, SYNTHETIC_MONODLE_CONFIG as CONFIG



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("commands")
    return train_one_epoch_run(base, "train.checkpoint_every_steps=0", "model.score_threshold=0.0")


def test_train_writes_checkpoints_and_validation_metrics(trained):
    _, out, _ = trained
    assert (out / "checkpoint_last.pth").is_file() and (out / "checkpoint_best.pth").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["steps"] == 2
    assert "Car/3d/R40/moderate" in metrics["last_metrics"]


def test_eval_writes_predictions_and_metrics(trained, tmp_path):
    root, out, overrides = trained
    assert main(["eval", str(CONFIG), *overrides, "--checkpoint", str(out / "checkpoint_last.pth"),
                 "--out", str(tmp_path), "--submission", str(tmp_path / "val.zip")]) == 0
    files = sorted(p.name for p in (tmp_path / "predictions").glob("*.txt"))
    assert files == ["000008.txt", "000009.txt", "000010.txt"]
    for path in (tmp_path / "predictions").glob("*.txt"):
        for obj in read_label(path):
            assert obj.score is not None and obj.cls_type in ("Car", "Pedestrian", "Cyclist")
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert set(results) >= {"Car", "Pedestrian", "Cyclist"} and len(results["Car"]["3d"]["R40"]) == 3
    table = (tmp_path / "metrics.txt").read_text()
    assert "R40" in table and "Car" in table
    with zipfile.ZipFile(tmp_path / "val.zip") as archive:
        assert sorted(archive.namelist()) == files


def test_eval_metrics_equal_eval_kitti_on_the_files_eval_wrote(trained, tmp_path):
    # One number: what eval reports is what the official evaluation of its own files gives (the
    # metrics used to come from unrounded detections while the files hold 2-decimal values).
    root, out, overrides = trained
    assert main(["eval", str(CONFIG), *overrides, "--checkpoint", str(out / "checkpoint_last.pth"),
                 "--out", str(tmp_path / "eval")]) == 0
    reported = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    detections = sum(len(read_label(p)) for p in (tmp_path / "eval" / "predictions").glob("*.txt"))
    assert detections > 20  # score threshold 0: plenty of (tied, rounded) detections
    assert main(["eval-kitti", "--gt", str(root / "training" / "label_2"), "--pred", str(tmp_path / "eval" / "predictions"),
                 "--ids", str(root / "ImageSets" / "val.txt"), "--overlap", "loose", "--box2d-scale", "4", "--json", str(tmp_path / "k.json")]) == 0
    assert json.loads((tmp_path / "k.json").read_text()) == reported


def test_export_submission_lists_every_frame(trained, tmp_path):
    root, out, overrides = trained
    target = tmp_path / "submission.zip"
    assert main(["export-submission", str(CONFIG), *overrides, "--checkpoint", str(out / "checkpoint_last.pth"),
                 "--split", str(root / "ImageSets" / "train.txt"), "--out", str(target)]) == 0
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert names == [f"{i:06d}.txt" for i in range(8)]  # at the zip root, every id, empty files allowed
        for name in names:
            for line in archive.read(name).decode().splitlines():
                assert len(line.split()) == 16


def test_predict_on_own_images_with_bare_camera_matrix(trained, tmp_path, capsys):
    root, out, _ = trained
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        (images / name).write_bytes((root / "training" / "image_2" / "000000.png").read_bytes())
    calib = tmp_path / "camera.txt"
    calib.write_text(" ".join(f"{v:.6f}" for v in fake_calibration().P2.reshape(-1)) + "\n")  # 12 bare numbers
    result_dir = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(out / "checkpoint_last.pth"), "--images", str(images),
                 "--calib", str(calib), "--out", str(result_dir), "--vis", "--score-threshold", "0.0"]) == 0
    assert sorted(p.name for p in result_dir.glob("*.txt")) == ["a.txt", "b.txt"]
    # Same pixels (b.jpg holds the same PNG bytes) -> same detections, each with a score.
    assert (result_dir / "a.txt").read_text() == (result_dir / "b.txt").read_text()
    assert all(obj.score is not None for obj in read_label(result_dir / "a.txt"))
    from add3d.data.kitti import read_image

    drawing = read_image(result_dir / "vis" / "a.png")
    assert drawing.ndim == 3 and drawing.shape[1] > 200


def test_predict_errors_are_clear(trained, tmp_path, capsys):
    _, out, _ = trained
    bad = tmp_path / "bad.txt"
    bad.write_text("P2: 1 2 3\n")
    image = tmp_path / "x.png"
    from add3d.data.kitti import write_image

    write_image(image, np.zeros((64, 200, 3), np.uint8))
    code = main(["predict", "--checkpoint", str(out / "checkpoint_last.pth"), "--images", str(image),
                 "--calib", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "bad.txt" in capsys.readouterr().err
    code = main(["predict", "--checkpoint", str(tmp_path / "none.pth"), "--images", str(image),
                 "--calib", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_same_seed_same_weights(trained, tmp_path):
    """The real detector (BatchNorm, augmentation, shuffling) trains bit-identically twice on CPU."""
    import torch

    from add3d.engine.checkpoints import load_checkpoint

    _, out, overrides = trained
    again = [o for o in overrides if not o.startswith("train.out_dir=")] + [f"train.out_dir={tmp_path}"]
    assert main(["train", str(CONFIG), *again]) == 0
    first = load_checkpoint(out / "checkpoint_last.pth")["model"]
    second = load_checkpoint(tmp_path / "checkpoint_last.pth")["model"]
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_eval_with_a_mismatched_model_is_a_clear_error(trained, tmp_path, capsys):
    _, out, overrides = trained
    code = main(["eval", str(CONFIG), *overrides, "model.head_channels=16", "--checkpoint", str(out / "checkpoint_last.pth"),
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "checkpoint_last.pth" in err and "do not match" in err
