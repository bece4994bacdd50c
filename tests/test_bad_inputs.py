"""Bad input, every command: one line naming the file (and line) and what is wrong, exit code 2,
no traceback, and nothing left behind (no partial output, no overwritten file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from add3d.cli import main
from add3d.data.kitti import write_label
from engine_helpers import train_one_epoch_run, SYNTHETIC_MONODLE_CONFIG as CONFIG



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fake KITTI root, a trained checkpoint, a prediction folder and the overrides that made them."""
    base = tmp_path_factory.mktemp("bad_inputs")
    root, run, overrides = train_one_epoch_run(base, "train.eval_every=-1")
    predictions = base / "pred"
    predictions.mkdir()
    for frame_id in ("000008", "000009", "000010"):
        shutil.copy(root / "training" / "label_2" / f"{frame_id}.txt", predictions / f"{frame_id}.txt")
        lines = (predictions / f"{frame_id}.txt").read_text().splitlines()
        (predictions / f"{frame_id}.txt").write_text("".join(line + " 0.9\n" for line in lines))
    return {"root": root, "run": run, "checkpoint": run / "checkpoint_last.pth", "overrides": overrides,
            "pred": predictions, "val_ids": root / "ImageSets" / "val.txt"}


def eval_kitti(world, pred, *extra):
    return ["eval-kitti", "--gt", str(world["root"] / "training" / "label_2"), "--pred", str(pred),
            "--ids", str(world["val_ids"]), "--json", str(pred.parent / "out.json"), *extra]


def copy_predictions(world, tmp, frame_id="000009", line=None, remove=()):
    pred = tmp / "pred"
    shutil.copytree(world["pred"], pred)
    if line is not None:
        path = pred / f"{frame_id}.txt"
        path.write_text(path.read_text() + line + "\n")
    for name in remove:
        (pred / f"{name}.txt").unlink()
    return pred


def bad_line(world, tmp, line):
    pred = copy_predictions(world, tmp, line=line)
    count = len((pred / "000009.txt").read_text().splitlines())
    return eval_kitti(world, pred), f"{pred / '000009.txt'}:{count}: "


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def train_args(world, tmp, *extra):
    return ["train", str(CONFIG), *world["overrides"], f"train.out_dir={tmp / 'new_run'}", *extra]


def eval_args(world, tmp, checkpoint, *extra):
    return ["eval", str(CONFIG), *world["overrides"], "--checkpoint", str(checkpoint), "--out", str(tmp / "eval"), *extra]


def foreign_checkpoint(world, tmp):
    """A complete training checkpoint of another model."""
    state = torch.load(world["checkpoint"], weights_only=True)
    state["model"] = {"backbone.stem.weight": torch.zeros(4, 3, 3, 3)}
    path = tmp / "other_model.pth"
    torch.save(state, path)
    return path


def pickled_checkpoint(tmp):
    path = tmp / "pickled.pth"
    torch.save({"model": {}, "note": Path("objects/are/not/loaded")}, path)
    return path


def bad_label_root(world, tmp):
    root = tmp / "data"
    shutil.copytree(world["root"], root)
    path = root / "training" / "label_2" / "000005.txt"
    path.write_text(path.read_text() + "Car 0.0 7 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0\n")  # occlusion 7
    return root, path, len(path.read_text().splitlines())


def one_image(world, tmp):
    images = tmp / "images"
    images.mkdir()
    shutil.copy(world["root"] / "training" / "image_2" / "000000.png", images / "a.png")
    return images


def predict_args(world, tmp, images, calib):
    return ["predict", "--checkpoint", str(world["checkpoint"]), "--images", str(images), "--calib", str(calib),
            "--out", str(tmp / "predicted")]


def case_worker_error(world, tmp):
    root, path, line = bad_label_root(world, tmp)
    return train_args(world, tmp, f"data.root={root}", "train.workers=1"), f"{path}:{line}: occlusion must be 0, 1, 2 or 3"


def case_resume_foreign(world, tmp):
    return (train_args(world, tmp, "--resume", str(foreign_checkpoint(world, tmp))),
            "other_model.pth: weights do not match the configured model")


CASES = {
    # eval-kitti: result files
    "pred: not a number": lambda w, t: bad_line(w, t, "Car 0 0 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0 high"),
    "pred: 15 fields": lambda w, t: bad_line(w, t, "Car 0 0 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0"),
    "pred: 17 fields": lambda w, t: bad_line(w, t, "Car 0 0 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0 0.5 1"),
    "pred: unknown class --strict": lambda w, t: (lambda a: (a[0] + ["--strict"], a[1]))(
        bad_line(w, t, "Lorry 0 0 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0 0.5")),
    "pred: NaN score": lambda w, t: bad_line(w, t, "Car 0 0 0 10 10 50 50 1.5 1.6 3.9 0 1.6 20 0 nan"),
    "pred: negative size": lambda w, t: bad_line(w, t, "Car 0 0 0 10 10 50 50 -1.5 1.6 3.9 0 1.6 20 0 0.5"),
    "pred: inverted box --strict": lambda w, t: (bad_line(w, t, "Car 0 0 0 50 10 10 50 1.5 1.6 3.9 0 1.6 20 0 0.5")[0] + ["--strict"],
                                                 bad_line(w, t / "x", "Car 0 0 0 50 10 10 50 1.5 1.6 3.9 0 1.6 20 0 0.5")[1].replace("/x/", "/")),
    "pred: missing files": lambda w, t: (eval_kitti(w, copy_predictions(w, t, remove=("000008", "000010"))),
                                         "2 of 3 prediction files are missing (first: 000008.txt, 000010.txt)"),
    "pred: empty folder": lambda w, t: (eval_kitti(w, write(t / "empty" / "README", "").parent, "--missing-as-empty"),
                                        "none of the 3 prediction files"),
    "gt: occlusion 7": lambda w, t: _gt_case(w, t),
    "gt: ids file names a missing label": lambda w, t: (["eval-kitti", "--gt", str(w["root"] / "training" / "label_2"), "--pred", str(w["pred"]),
                                                         "--ids", str(write(t / "ids.txt", "000008\n000042\n")), "--json", str(t / "o.json")],
                                                        "000042.txt: label file not found"),
    "gt: folder missing": lambda w, t: (["eval-kitti", "--gt", str(t / "nowhere"), "--pred", str(w["pred"])], "nowhere: label directory not found"),
    # configs and overrides
    "config: file missing": lambda w, t: (["train", str(t / "none.yaml")], "none.yaml: config file not found"),
    "config: invalid YAML": lambda w, t: (["train", str(write(t / "c.yaml", "train:\n  epochs: [1, 2\n"))], "c.yaml:3: invalid YAML"),
    "config: unknown key": lambda w, t: (["train", str(write(t / "c.yaml", "train:\n  epoch: 3\n"))], "c.yaml: bad config key 'train.epoch'"),
    "config: wrong type in YAML": lambda w, t: (["train", str(write(t / "c.yaml", "train:\n  epochs: many\n"))], "c.yaml: bad config key 'train.epochs'"),
    "config: circular base": lambda w, t: (["train", str(write(t / "c.yaml", "_base_: c.yaml\n"))], "circular _base_"),
    "override: wrong type": lambda w, t: (train_args(w, t, "train.epochs=abc"), "command-line override 'train.epochs=abc': bad config key 'train.epochs'"),
    "override: out of range": lambda w, t: (train_args(w, t, "train.epochs=-3"), "command-line override 'train.epochs=-3': train.epochs must be >= 1, got -3"),
    "override: not key=value": lambda w, t: (train_args(w, t, "epochs"), "override 'epochs' must look like section.key=value"),
    "override: input size not /32": lambda w, t: (train_args(w, t, "data.input_size=[64,200]"),
                                                  "command-line override 'data.input_size=[64,200]': data.input_size must be [height, width], positive multiples of 32"),
    "override: unknown key": lambda w, t: (train_args(w, t, "train.epoch=3"), "command-line override 'train.epoch=3': bad config key 'train.epoch'"),
    # train
    "train: data root missing": lambda w, t: (train_args(w, t, f"data.root={t / 'nodata'}"), "nodata: KITTI root folder not found"),
    "train: split file missing": lambda w, t: (train_args(w, t, "data.train_split=nosuchsplit"), "nosuchsplit.txt"),
    "train: label error in a worker": case_worker_error,
    "train: resume garbage": lambda w, t: (train_args(w, t, "--resume", str(write(t / "garbage.pth", "not a zip"))),
                                           "garbage.pth: not a readable torch checkpoint"),
    "train: resume pickled objects": lambda w, t: (train_args(w, t, "--resume", str(pickled_checkpoint(t))),
                                                   "pickled.pth: not a readable torch checkpoint (it holds Python objects"),
    "train: resume another model": case_resume_foreign,
    "train: folder holds a run": lambda w, t: (["train", str(CONFIG), *w["overrides"]], "holds checkpoints of an earlier run"),
    # eval / export / predict
    "eval: checkpoint missing": lambda w, t: (eval_args(w, t, t / "none.pth"), "checkpoint not found: "),
    "eval: checkpoint of another model": lambda w, t: (eval_args(w, t, foreign_checkpoint(w, t)), "other_model.pth: weights do not match"),
    "eval: --device cuda without CUDA": lambda w, t: (eval_args(w, t, w["checkpoint"], "--device", "cuda"),
                                                      "--device is 'cuda' but CUDA is not available; use --device cpu"),
    "export: pickled checkpoint": lambda w, t: (["export-submission", str(CONFIG), *w["overrides"], "--checkpoint", str(pickled_checkpoint(t)),
                                                 "--split", "val", "--out", str(t / "s.zip")], "pickled.pth: not a readable torch checkpoint"),
    "predict: calib not numbers": lambda w, t: (predict_args(w, t, one_image(w, t), write(t / "cam.txt", "1 0 0\n0 1 x\n")), "cam.txt:2: expected numbers"),
    "predict: calib 10 numbers": lambda w, t: (predict_args(w, t, one_image(w, t), write(t / "cam.txt", "1 2 3 4 5 6 7 8 9 10\n")),
                                               "cam.txt: expected a KITTI calib file"),
    "predict: calib singular": lambda w, t: (predict_args(w, t, one_image(w, t), write(t / "cam.txt", "0 0 0 0 0 0 0 0 1\n")),
                                             "cam.txt: the camera matrix is not invertible"),
    "predict: no images": lambda w, t: (predict_args(w, t, write(t / "imgs" / "notes.txt", "").parent, t / "cam.txt"), "imgs: no images"),
    "predict: calib folder lacks a file": lambda w, t: (predict_args(w, t, one_image(w, t), write(t / "calibs" / "b.txt", "").parent),
                                                        "calibs/a.txt: calibration for image a.png not found"),
    # data commands
    "make-depth: root missing": lambda w, t: (["make-depth", "--root", str(t / "nodata"), "--source", "lidar", "--out", str(t / "d")],
                                              "nodata: KITTI root folder not found"),
    "show-frame: unknown frame": lambda w, t: (["show-frame", "--root", str(w["root"]), "--id", "999999", "--depth", "none",
                                                "--out", str(t / "f.png")], "frame 999999 is not in split train"),
    "synth: non-empty folder": lambda w, t: (["synth", "--out", str(write(t / "full" / "x.txt", "").parent), "--frames", "2", "--quiet"],
                                             "full: folder is not empty"),
    "synth: zero frames": lambda w, t: (["synth", "--out", str(t / "s"), "--frames", "0", "--quiet"], "--frames must be between 1"),
    "import-monodle: garbage": lambda w, t: (["import-monodle", str(write(t / "rel.pth", "zzz")), str(t / "out.pth")],
                                             "rel.pth: not a readable torch checkpoint"),
}


def _gt_case(world, tmp):
    root, path, line = bad_label_root(world, tmp)
    ids = write(tmp / "ids.txt", "000005\n")
    return (["eval-kitti", "--gt", str(root / "training" / "label_2"), "--pred", str(world["pred"]), "--ids", str(ids),
             "--missing-as-empty", "--json", str(tmp / "out.json")], f"{path}:{line}: occlusion must be 0, 1, 2 or 3")


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(world, tmp_path, capsys, name):
    argv, expected = CASES[name](world, tmp_path)
    run_before = snapshot(world["run"])
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"add3d {argv[0]}: error: "), captured.err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out and "weights_only=False" not in lines[0]
    assert snapshot(tmp_path) == before  # no partial output, nothing touched
    assert snapshot(world["run"]) == run_before


def test_the_suite_has_at_least_30_bad_input_cases():
    assert len(CASES) >= 30
