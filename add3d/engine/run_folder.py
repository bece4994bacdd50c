"""A training run's output folder: never silently overwritten.

``add3d train`` into a folder that holds checkpoints of an earlier run refuses unless it is told to
continue that run (``--resume``) or to start afresh (``--force``), and a fresh start keeps the
earlier run's files in ``OUT_DIR/previous_<n>/`` instead of deleting them.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from add3d.errors import Add3dError

# What a run writes into its folder (evaluation outputs such as eval_val/ are left where they are).
RUN_FILES = ("checkpoint_*.pth", "config.yaml", "train_log.jsonl", "metrics.json", "tensorboard")


def earlier_checkpoints(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob("checkpoint_*.pth"))


def check_run_folder(out_dir: str | Path, resume: str | Path | None, force: bool) -> None:
    """Refuse to start a new run over an earlier run's checkpoints (before any work is done)."""
    found = earlier_checkpoints(out_dir)
    if found and resume is None and not force:
        names = ", ".join(path.name for path in found)
        raise Add3dError(
            f"{out_dir}: holds checkpoints of an earlier run ({names}); pass --resume to continue it, "
            "--force to start afresh (its files are kept in previous_<n>/), or choose another train.out_dir"
        )
    if resume is not None and force:
        raise Add3dError("--resume and --force contradict each other: continue the run, or start afresh")


def move_earlier_run(out_dir: str | Path) -> Path | None:
    """Move an earlier run's files into a new ``OUT_DIR/previous_<n>/``; returns it (None: nothing to move)."""
    out_dir = Path(out_dir)
    files = sorted({path for pattern in RUN_FILES for path in out_dir.glob(pattern)})
    if not files:
        return None
    number = 1
    while (out_dir / f"previous_{number}").exists():
        number += 1
    target = out_dir / f"previous_{number}"
    target.mkdir()
    for path in files:
        shutil.move(str(path), str(target / path.name))
    return target


@contextlib.contextmanager
def discarded_if_no_checkpoint(out_dir: str | Path) -> Iterator[None]:
    """A run that fails before writing its first checkpoint leaves nothing behind: on an exception,
    the run files it created (config.yaml, log, TensorBoard) go, and so does a folder it created."""
    out_dir = Path(out_dir)
    existed = out_dir.is_dir()
    before = {path for pattern in RUN_FILES for path in out_dir.glob(pattern)} if existed else set()
    try:
        yield
    except BaseException:
        if out_dir.is_dir() and not earlier_checkpoints(out_dir):
            for path in {path for pattern in RUN_FILES for path in out_dir.glob(pattern)} - before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not existed and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
