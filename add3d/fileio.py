"""Files in and out: atomic writes (a reader never sees a half-written file, even after a crash)
that honour the umask, and the one safe reader of torch files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from add3d.errors import DataFormatError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix so writers that choose a format by extension
    (OpenCV, matplotlib) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); the result gets the mode a plain open() would
        # give, e.g. 0644 under umask 022, so that colleagues on a shared server can read it.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    with atomic_path(path) as tmp:
        save(tmp)


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is one :class:`DataFormatError`
    line naming the file, without torch's advice to retry with ``weights_only=False`` (which would
    run arbitrary code from the file)."""
    import torch  # here, so that importing fileio (every command does) stays cheap

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip / unpickling errors come in many types
        text = str(error).strip()
        if "weights_only" in text or "Weights only load failed" in text:
            reason = "it holds Python objects other than tensors and plain containers, so it is not loaded"
        else:
            reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        raise DataFormatError(path, f"not a readable torch checkpoint ({reason})") from None
