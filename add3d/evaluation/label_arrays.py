"""Labels of many frames as flat numpy arrays, and fast strict readers of label/result folders.

The evaluator works on whole columns (all boxes of all frames at once), never on per-object Python
objects, which is what makes a 3769-frame evaluation take about a second. Files are read with a
vectorised fast path; any line that does not pass the same checks as
:func:`add3d.data.kitti.parse_label_line` is re-parsed by that function, so a malformed line raises
exactly the error the rest of the project raises (file and line named).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from add3d.data.kitti import KITTI_CLASSES, Object3D, parse_label_line, read_split
from add3d.errors import Add3dError, DataFormatError, InputWarning

INVALID_COORDINATE = -1000.0  # KITTI's "no 3D box" placeholder


@dataclass
class LabelArrays:
    """All objects of ``num_frames`` frames, one row per object (rows grouped by frame, file order).

    ``frame`` indexes the frame list; ``box2d`` is (x1, y1, x2, y2); ``dims`` is (h, w, l); ``location``
    is the bottom centre (rect camera frame); ``score`` is NaN for ground truth.
    """

    num_frames: int
    frame: np.ndarray
    cls_type: np.ndarray
    truncation: np.ndarray
    occlusion: np.ndarray
    alpha: np.ndarray
    box2d: np.ndarray
    dims: np.ndarray
    location: np.ndarray
    rotation_y: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def boxes_3d(self) -> np.ndarray:
        """(N, 7) boxes as (x, y, z, h, w, l, ry), the layout of :mod:`add3d.geometry.iou`."""
        return np.concatenate([self.location, self.dims, self.rotation_y[:, None]], axis=1)

    def select(self, index: np.ndarray) -> "LabelArrays":
        """Rows picked by a boolean mask or an index array, frame numbering unchanged."""
        return LabelArrays(
            self.num_frames,
            *(getattr(self, name)[index] for name in _COLUMNS),
        )

    @classmethod
    def from_rows(cls, num_frames: int, frame: np.ndarray, names: list[str], numbers: np.ndarray) -> "LabelArrays":
        """Build from class names and an (N, 15) array of the numeric label fields (score last, NaN if none)."""
        numbers = np.asarray(numbers, dtype=np.float64).reshape(-1, 15)
        return cls(
            num_frames=num_frames,
            frame=np.asarray(frame, dtype=np.int64).reshape(-1),
            cls_type=np.array(names, dtype=object).reshape(-1),
            truncation=numbers[:, 0].copy(),
            occlusion=numbers[:, 1].astype(np.int64),
            alpha=numbers[:, 2].copy(),
            box2d=numbers[:, 3:7].copy(),
            dims=numbers[:, 7:10].copy(),
            location=numbers[:, 10:13].copy(),
            rotation_y=numbers[:, 13].copy(),
            score=numbers[:, 14].copy(),
        )

    @classmethod
    def from_objects(cls, frames: list[list[Object3D]]) -> "LabelArrays":
        """Flatten per-frame lists of :class:`Object3D` (the Python API's input)."""
        names, rows, frame = [], [], []
        for index, objects in enumerate(frames):
            for obj in objects:
                names.append(obj.cls_type)
                score = np.nan if obj.score is None else float(obj.score)
                rows.append(
                    [obj.truncation, obj.occlusion, obj.alpha, *obj.box2d, *obj.dims, *obj.location, obj.rotation_y, score]
                )
                frame.append(index)
        return cls.from_rows(len(frames), np.array(frame, dtype=np.int64), names, np.array(rows, dtype=np.float64))


_COLUMNS = ("frame", "cls_type", "truncation", "occlusion", "alpha", "box2d", "dims", "location", "rotation_y", "score")


def _prediction_line(text: str, strict: bool = False) -> str:
    """Neutralise the parts of a result line that the devkit accepts but does not use.

    * truncation and occlusion: read as "trash" by the devkit; many tools write ``-1 -1`` there.
    * 2D-only detections: the KITTI convention ``-1 -1 -1 -1000 -1000 -1000`` for (h, w, l, x, y, z).
      Accepted as written (the devkit skips BEV/3D for them; in BEV a DontCare placeholder even
      absorbs them, both being unit squares at -1000).
    * inverted 2D boxes (x2 < x1 or y2 < y1), unless ``strict``: the devkit takes the height as
      |y1 - y2| and gets a 2D overlap of 0; BEV/3D are scored normally (docs/EVALUATION.md).
    * class names KITTI does not have (e.g. ``Bus``), unless ``strict``: the devkit reads them as
      detections of another class (never matched; ignored when below the height limit).
    Only the validation sees the neutralised line; the values as written are evaluated.
    Non-numeric fields are left alone so that parse_label_line names them.
    """
    fields = text.split()
    if len(fields) != 16:
        return text
    try:
        numbers = [float(value) for value in fields[1:]]
    except ValueError:
        return text
    if all(np.isfinite(numbers[0:2])):
        fields[1:3] = ["0", "0"]
    if numbers[10:13] == [INVALID_COORDINATE] * 3:  # only for validation; the values are kept
        fields[8:11] = [value if float(value) >= 0 else "0" for value in fields[8:11]]
    if not strict and fields[0] not in KITTI_CLASSES and not _is_number(fields[0]):
        fields[0] = "Misc"
    if not strict and all(np.isfinite(numbers[3:7])):
        x1, y1, x2, y2 = numbers[3:7]
        fields[4:8] = [repr(min(x1, x2)), repr(min(y1, y2)), repr(max(x1, x2)), repr(max(y1, y2))]
    return " ".join(fields)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown_class(names: np.ndarray) -> np.ndarray:
    """Rows whose class field is a name KITTI does not have (a number there is a broken layout)."""
    unknown = ~np.isin(names, KITTI_CLASSES)
    unknown[unknown] = [not _is_number(name) for name in names[unknown]]
    return unknown


def parse_strict(text: str, path: Path, line_no: int, prediction: bool, strict: bool = False) -> Object3D:
    """Parse one line with the project's parser; predictions must carry a finite score (16 fields).

    A non-finite score is always an error: the devkit reads NaN, but its AP then depends on where
    NaN lands in its sort, so no number computed from such a file means anything.
    """
    if prediction:
        count = len(text.split())
        if count == 15:
            raise DataFormatError(path, "prediction has 15 fields; the 16th (score) is required", line_no)
        return parse_label_line(_prediction_line(text, strict), path, line_no, allow_score=True)
    return parse_label_line(text, path, line_no, allow_score=False)


def _inverted(numbers: np.ndarray) -> np.ndarray:
    """Rows whose 2D box has x2 < x1 or y2 < y1."""
    return (numbers[:, 5] < numbers[:, 3]) | (numbers[:, 6] < numbers[:, 4])


def _line_ok(names: np.ndarray, numbers: np.ndarray, prediction: bool, strict: bool = False) -> np.ndarray:
    """Vectorised version of parse_label_line's checks; False rows are re-parsed to raise its error."""
    known = np.isin(names, KITTI_CLASSES)
    ok = (known | (prediction and not strict)) & np.isfinite(numbers[:, :14]).all(axis=1)
    box_ok = (numbers[:, 7:10] >= 0).all(axis=1)
    if not prediction or strict:
        box_ok &= ~_inverted(numbers)
    if prediction:
        ok &= np.isfinite(numbers[:, 14])  # truncation/occlusion are not used (see _prediction_line)
    else:
        occlusion = numbers[:, 1]
        ok &= occlusion == np.round(occlusion)
        box_ok &= (numbers[:, 0] >= 0) & (numbers[:, 0] <= 1) & np.isin(occlusion, (0, 1, 2, 3))
    return ok & ((names == "DontCare") | box_ok)


def _strict_rows(path: str, text: str, prediction: bool, strict: bool = False) -> list[Object3D]:
    """Parse a whole file line by line with the project's parser (raises on the first bad line)."""
    return [
        parse_strict(line, Path(path), line_no, prediction, strict)
        for line_no, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _first_line(text: str, test) -> int:
    """Number of the first non-blank line of ``text`` whose fields pass ``test``."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip() and test(line.split()):
            return line_no
    return 1  # pragma: no cover


def read_label_dir(directory: str | Path, ids: list[str], prediction: bool, strict: bool = False,
                   missing_as_empty: bool = False) -> LabelArrays:
    """Read ``directory/<id>.txt`` for every id into :class:`LabelArrays`.

    Ground truth (``prediction=False``): every file must exist, 15 fields per line.
    Predictions: 16 fields per line (score required). A missing file is an error naming how many
    are missing and the first ids, unless ``missing_as_empty`` (then: a frame without detections);
    a folder holding none of the files is always an error. Lines the devkit reads but that are
    odd (inverted 2D boxes) are evaluated as the devkit does and counted in one
    :class:`~add3d.errors.InputWarning`; ``strict`` makes them errors.

    Fast path: each file is split into whitespace tokens and all files are converted at once. A file
    whose token count is not a multiple of the field count, a misplaced class name, a non-number or a
    value outside the accepted ranges sends that file through the strict line parser, which raises
    the project's usual error naming the file and line.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise Add3dError(f"{directory}: {'prediction' if prediction else 'label'} directory not found")
    expected = 16 if prediction else 15
    folder = str(directory)
    tokens: list[str] = []
    rows_per_file: list[int] = []
    files: list[tuple[str, str]] = []  # (path, text) of every file read, for the strict fallback
    frame_of_file: list[int] = []
    missing: list[str] = []
    for index, frame_id in enumerate(ids):
        path = os.path.join(folder, f"{frame_id}.txt")
        try:
            with open(path) as handle:
                text = handle.read()
        except FileNotFoundError:
            if prediction:
                missing.append(frame_id)
                continue
            raise Add3dError(f"{path}: label file not found") from None
        except OSError as error:
            raise Add3dError(f"{path}: cannot read ({error})") from None
        file_tokens = text.split()
        if len(file_tokens) % expected:
            _strict_rows(path, text, prediction)  # raises the field-count error
        tokens.extend(file_tokens)
        rows_per_file.append(len(file_tokens) // expected)
        files.append((path, text))
        frame_of_file.append(index)
    if prediction and ids and len(missing) == len(ids):
        raise Add3dError(f"{directory}: none of the {len(ids)} prediction files (<id>.txt) is there; "
                         f"first ids {', '.join(missing[:3])}")
    if missing and not missing_as_empty:
        raise Add3dError(
            f"{directory}: {len(missing)} of {len(ids)} prediction files are missing (first: "
            f"{', '.join(f'{i}.txt' for i in missing[:5])}); pass --missing-as-empty "
            "(missing_as_empty=True) to score them as frames without detections"
        )
    table = np.array(tokens, dtype=object).reshape(-1, expected)
    file_of_row = np.repeat(np.arange(len(files)), rows_per_file)
    names = table[:, 0]
    misplaced = np.flatnonzero(~np.isin(names, KITTI_CLASSES) & ~(_unknown_class(names) & (prediction and not strict)))
    if len(misplaced):
        _strict_rows(*files[file_of_row[misplaced[0]]], prediction)  # raises (unknown class or bad layout)
    try:
        numbers = table[:, 1:].astype(np.float64)
    except ValueError:
        for path, text in files:  # find the file holding the non-number; the strict parser names it
            try:
                np.array(text.split(), dtype=object).reshape(-1, expected)[:, 1:].astype(np.float64)
            except ValueError:
                _strict_rows(path, text, prediction)
        raise Add3dError(f"{directory}: unreadable numbers") from None  # pragma: no cover
    if not prediction:
        numbers = np.concatenate([numbers, np.full((len(numbers), 1), np.nan)], axis=1)
    bad = np.flatnonzero(~_line_ok(names, numbers, prediction, strict))
    for file_index in np.unique(file_of_row[bad]):
        # Raises if the file is malformed. If it passes, the line uses a tolerated convention (see
        # _prediction_line) and the values as written are kept: the devkit evaluates them as written.
        _strict_rows(*files[file_index], prediction, strict)
    if prediction:
        numbers[:, 0:2] = 0.0  # unused by the evaluation (see _prediction_line)
        _warn_oddities(directory, names, numbers, files, file_of_row)
    frame = np.repeat(np.array(frame_of_file, dtype=np.int64), rows_per_file)
    return LabelArrays.from_rows(len(ids), frame, list(names), numbers)


def _warn_oddities(directory: Path, names: np.ndarray, numbers: np.ndarray, files: list[tuple[str, str]],
                   file_of_row: np.ndarray) -> None:
    """One :class:`InputWarning` counting the result lines the devkit reads but that are odd."""
    oddities = []
    inverted = np.flatnonzero(_inverted(numbers) & (names != "DontCare"))
    if len(inverted):
        path, text = files[file_of_row[inverted[0]]]
        line_no = _first_line(text, lambda f: f[0] != "DontCare" and (float(f[6]) < float(f[4]) or float(f[7]) < float(f[5])))
        oddities.append(
            f"{len(inverted)} detections in {len(np.unique(file_of_row[inverted]))} files have an inverted 2D box "
            f"(x2 < x1 or y2 < y1; first {path}:{line_no}), scored as the official devkit does: height |y1 - y2|, "
            "2D overlap 0, BEV/3D as usual"
        )
    unknown = np.flatnonzero(_unknown_class(names))
    if len(unknown):
        path, text = files[file_of_row[unknown[0]]]
        line_no = _first_line(text, lambda f: f[0] not in KITTI_CLASSES)
        kinds = ", ".join(sorted(set(names[unknown])))
        oddities.append(
            f"{len(unknown)} detections of classes KITTI does not have ({kinds}; first {path}:{line_no}), read as "
            "the devkit does: another class, never matched"
        )
    if oddities:
        warnings.warn(InputWarning(f"{directory}: " + "; ".join(oddities) + " (--strict makes these errors)"), stacklevel=3)


def list_frame_ids(label_dir: str | Path, ids_file: str | Path | None = None) -> list[str]:
    """Frame ids to evaluate: the ids file's lines, else the stems of every ``*.txt`` in ``label_dir``."""
    if ids_file is not None:
        return read_split(ids_file)
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise Add3dError(f"{label_dir}: label directory not found")
    ids = sorted(path.stem for path in label_dir.glob("*.txt"))
    if not ids:
        raise Add3dError(f"{label_dir}: no *.txt label files")
    return ids
