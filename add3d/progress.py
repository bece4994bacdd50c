"""Progress reporting: a tqdm bar on a terminal, plain periodic lines in logs, nothing when quiet.

A tqdm bar written to a file or pipe is a stream of carriage returns (hundreds of KB per run in a
batch log); :class:`PlainProgress` writes one readable line every ``interval`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO

from tqdm import tqdm

PLAIN_INTERVAL = 30.0  # seconds between two plain progress lines


class PlainProgress:
    """The part of tqdm's interface the project uses, as ``desc: n/total (postfix)`` lines."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, initial: int = 0,
                 interval: float = PLAIN_INTERVAL, file: TextIO | None = None, enabled: bool = True):
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, initial
        self.interval, self.file, self.enabled = interval, file, enabled
        self.postfix = ""
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def update(self, count: int = 1) -> None:
        self.n += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._print(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def _print(self, now: float) -> None:
        if not self.enabled:
            return
        of_total = f"/{self.total}" if self.total is not None else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of_total} ({now - self.start:.0f} s{postfix})", file=self.file or sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.n and time.monotonic() - self.start >= self.interval:
            self._print(time.monotonic())  # a long loop ends with its final count


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", enabled: bool = True,
             initial: int = 0, unit: str = "it", leave: bool = True):
    """A progress-reporting wrapper of ``iterable``: tqdm when stderr is a terminal, else plain lines
    every :data:`PLAIN_INTERVAL` seconds; silent when not ``enabled`` (``--quiet``, non-main ranks)."""
    if enabled and sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=leave, dynamic_ncols=True)
    return PlainProgress(iterable, total, desc, initial, enabled=enabled)
