"""Errors that the command line reports as one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class Add3dError(Exception):
    """A problem with the user's input or environment (bad file, bad option, missing data)."""


class InputWarning(UserWarning):
    """Input that is accepted but odd (the command line prints it as one ``warning:`` line)."""


class DataFormatError(Add3dError):
    """A file whose content is malformed. The message names the file and, when known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
