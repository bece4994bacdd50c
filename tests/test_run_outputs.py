"""What runs leave on disk and print: file modes, progress output, quiet mode, demo continuation."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from add3d.cli import main
from add3d.commands.train import summary_line
from add3d.fileio import atomic_write_text
from add3d.progress import PlainProgress, progress
from engine_helpers import make_fake_kitti

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "monodle" / "synthetic.yaml"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask_and_stay_atomic(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left


def test_plain_progress_lines_without_carriage_returns():
    out = io.StringIO()
    bar = PlainProgress(range(5), total=5, desc="epoch 1/2", interval=0.0, file=out)
    bar.set_postfix(loss="1.234")
    assert list(bar) == list(range(5))
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 6
    assert lines[0].startswith("epoch 1/2: 1/5 (") and lines[0].endswith(", loss=1.234)")
    assert lines[4].startswith("epoch 1/2: 5/5 (")


def test_progress_is_plain_off_a_terminal_and_silent_when_disabled(capsys):
    # pytest's stderr is not a terminal: no tqdm bar, and nothing at all within the 30 s interval.
    assert isinstance(progress(range(3), total=3, desc="x"), PlainProgress)
    assert list(progress(range(3), total=3, desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_train_and_eval_quiet_and_the_summary_line(tmp_path, capsys):
    root = make_fake_kitti(tmp_path / "data", frames=8, val_frames=3)
    overrides = [f"data.root={root}", "data.input_size=[64,192]", f"train.out_dir={tmp_path / 'run'}", "train.epochs=1",
                 "train.batch_size=4", "train.workers=0", "train.device=cpu", "train.eval_every=-1"]
    assert main(["train", str(CONFIG), "--quiet", *overrides]) == 0  # options before overrides work too
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.strip().splitlines() == [
        f"done: 1 epochs, 2 steps; not validated (train.eval_every: -1); outputs in {tmp_path / 'run'}"]
    assert "-inf" not in captured.out
    assert main(["eval", str(CONFIG), "--checkpoint", str(tmp_path / "run" / "checkpoint_last.pth"), *overrides,
                 "--quiet", "--out", str(tmp_path / "eval")]) == 0
    assert capsys.readouterr().err == ""
    validated = {"epochs": 3, "steps": 9, "best_metric": 12.345, "best_metric_name": "Car/3d/R40/moderate",
                 "last_metrics": {"Car/3d/R40/moderate": 12.345}, "out_dir": "runs/x"}
    assert summary_line(validated) == "done: 3 epochs, 9 steps; best Car/3d/R40/moderate = 12.35; outputs in runs/x"


def test_demo_stage_reuses_resumes_or_retrains(tmp_path, capsys):
    from add3d.demo import train_stage
    from add3d.engine.checkpoints import load_checkpoint
    from add3d.engine.config import load_config
    from add3d.errors import Add3dError

    root = make_fake_kitti(tmp_path / "data", frames=8, val_frames=3)
    out = tmp_path / "baseline"
    base = [f"data.root={root}", "data.input_size=[64,192]", f"train.out_dir={out}", "train.batch_size=4",
            "train.workers=0", "train.device=cpu", "train.eval_every=-1"]
    train_stage(load_config(CONFIG, base + ["train.epochs=1"]), fresh=False)
    first = (out / "checkpoint_last.pth").read_bytes()
    capsys.readouterr()
    train_stage(load_config(CONFIG, base + ["train.epochs=1"]), fresh=False)  # finished: reused
    assert "already trained (1 epochs)" in capsys.readouterr().out
    assert (out / "checkpoint_last.pth").read_bytes() == first
    train_stage(load_config(CONFIG, base + ["train.epochs=2"]), fresh=False)  # unfinished: resumed
    assert load_checkpoint(out / "checkpoint_last.pth")["epoch"] == 2 and not (out / "previous_1").exists()
    with pytest.raises(Add3dError, match="trained with another config than this demo run's; pass --fresh"):
        train_stage(load_config(CONFIG, base + ["train.epochs=2", "optim.lr=0.5"]), fresh=False)
    train_stage(load_config(CONFIG, base + ["train.epochs=1"]), fresh=True)  # --fresh: retrained, old kept
    assert load_checkpoint(out / "checkpoint_last.pth")["epoch"] == 1
    assert load_checkpoint(out / "previous_1" / "checkpoint_last.pth")["epoch"] == 2


def test_an_override_right_after_a_bare_resume_is_an_override(tmp_path, capsys):
    root = make_fake_kitti(tmp_path / "data", frames=8, val_frames=3)
    overrides = [f"data.root={root}", "data.input_size=[64,192]", f"train.out_dir={tmp_path / 'run'}",
                 "train.batch_size=4", "train.workers=0", "train.device=cpu", "train.eval_every=-1"]
    assert main(["train", str(CONFIG), *overrides, "train.epochs=1", "--quiet"]) == 0
    assert main(["train", str(CONFIG), *overrides, "--quiet", "--resume", "train.epochs=2"]) == 0
    from add3d.engine.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pth")["epoch"] == 2
    assert "done: 2 epochs, 4 steps" in capsys.readouterr().out
