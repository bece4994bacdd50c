"""KITTI file formats: round trips on real frames and clear errors on malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from add3d.data import kitti
from add3d.data.dataset import KittiDataset
from add3d.data.depth_maps import read_depth_png, write_depth_png
from add3d.errors import Add3dError, DataFormatError

GOOD_LABEL = "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57"
GOOD_CALIB = (
    "P0: 7.07e+02 0 6.04e+02 0 0 7.07e+02 1.80e+02 0 0 0 1 0\n"
    "P1: 7.07e+02 0 6.04e+02 -3.79e+02 0 7.07e+02 1.80e+02 0 0 0 1 0\n"
    "P2: 7.07e+02 0 6.04e+02 4.57e+01 0 7.07e+02 1.80e+02 -3.45e-01 0 0 1 4.98e-03\n"
    "P3: 7.07e+02 0 6.04e+02 -3.34e+02 0 7.07e+02 1.80e+02 2.33 0 0 1 3.20e-03\n"
    "R0_rect: 1 0 0 0 1 0 0 0 1\n"
    "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.06 1 0 0 -0.33\n"
    "Tr_imu_to_velo: 1 0 0 -0.8 0 1 0 0.3 0 0 1 -0.8\n"
)


def test_real_labels_calib_velodyne_load(kitti_mini: Path) -> None:
    objects = kitti.read_label(kitti_mini / "training/label_2/000001.txt")
    assert [o.cls_type for o in objects] == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    car = objects[1]
    np.testing.assert_allclose(car.box2d, [387.63, 181.54, 423.81, 203.12])
    np.testing.assert_allclose(car.dims, [1.67, 1.87, 3.69])
    np.testing.assert_allclose(car.location, [-16.53, 2.39, 58.49])
    assert car.rotation_y == pytest.approx(1.57) and car.score is None
    calib = kitti.read_calib(kitti_mini / "training/calib/000000.txt")
    assert calib.P2[0, 3] == pytest.approx(45.75831) and calib.R0_rect.shape == (3, 3)
    points = kitti.read_velodyne(kitti_mini / "training/velodyne/000000.bin")
    assert points.dtype == np.float32 and points.shape == (1846144 // 16, 4)
    image = kitti.read_image(kitti_mini / "training/image_2/000000.png")
    assert image.shape == (370, 1224, 3) and image.dtype == np.uint8


def test_label_and_calib_round_trip(kitti_mini: Path, tmp_path: Path) -> None:
    for frame in ("000000", "000001", "000002"):
        objects = kitti.read_label(kitti_mini / f"training/label_2/{frame}.txt")
        kitti.write_label(tmp_path / "l.txt", objects)
        again = kitti.read_label(tmp_path / "l.txt")
        assert [o.to_line() for o in again] == [o.to_line() for o in objects]
        for a, b in zip(again, objects):
            np.testing.assert_allclose(np.r_[a.box2d, a.dims, a.location], np.r_[b.box2d, b.dims, b.location])
        calib = kitti.read_calib(kitti_mini / f"training/calib/{frame}.txt")
        kitti.write_calib(tmp_path / "c.txt", calib)
        again = kitti.read_calib(tmp_path / "c.txt")
        for key in kitti.CALIB_KEYS:
            np.testing.assert_allclose(getattr(again, key), getattr(calib, key), rtol=1e-11)


def test_detection_lines_keep_scores(tmp_path: Path) -> None:
    path = tmp_path / "det.txt"
    path.write_text(GOOD_LABEL + " 0.8765\n\n")
    (obj,) = kitti.read_label(path)
    assert obj.score == pytest.approx(0.8765)
    kitti.write_label(path, [obj])
    assert path.read_text().split()[-1] == "0.8765"


def test_split_with_and_without_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("000001\n000007\n")
    (tmp_path / "b.txt").write_text("000001\n000007")
    assert kitti.read_split(tmp_path / "a.txt") == kitti.read_split(tmp_path / "b.txt") == ["000001", "000007"]


def test_dataset_yields_frames(kitti_mini: Path) -> None:
    dataset = KittiDataset(kitti_mini, "train", load_lidar=True)
    assert dataset.ids == ["000000", "000001"] and len(dataset) == 2
    frame = dataset[1]
    assert frame.frame_id == "000001" and frame.image.shape == (375, 1242, 3)
    assert len(frame.objects) == 7 and frame.lidar.shape[1] == 4
    assert dataset.check() == []
    by_path = KittiDataset(kitti_mini, kitti_mini / "ImageSets/val.txt")
    assert by_path.ids == ["000002"]


def test_dataset_reports_missing_files(kitti_mini_copy: Path) -> None:
    (kitti_mini_copy / "training/calib/000001.txt").unlink()
    dataset = KittiDataset(kitti_mini_copy, "train", depth_dir="depth_lidar")
    missing = {p.relative_to(kitti_mini_copy).as_posix() for p in dataset.check()}
    assert "training/calib/000001.txt" in missing and "training/depth_lidar/000000.png" in missing
    with pytest.raises(Add3dError, match="000001.txt: calibration file not found"):
        dataset[1]


# ----- malformed input: every case must name the file and, where there is one, the line -------------
LABEL_CASES = {
    "too few fields": ("Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49", "expected 15 or 16 fields, found 14"),
    "too many fields": (GOOD_LABEL + " 0.9 7", "found 17"),
    "non-numeric": (GOOD_LABEL.replace("1.85", "abc"), "'abc' is not a number"),
    "unknown class": (GOOD_LABEL.replace("Car", "Bus"), "unknown class 'Bus'"),
    "nan value": (GOOD_LABEL.replace("58.49", "nan"), "not a finite number"),
    "fractional occlusion": (GOOD_LABEL.replace("0.00 0 1.85", "0.00 1.5 1.85"), "occlusion must be an integer"),
    "occlusion out of range": (GOOD_LABEL.replace("0.00 0 1.85", "0.00 5 1.85"), "occlusion must be 0, 1, 2 or 3"),
    "truncation out of range": (GOOD_LABEL.replace("Car 0.00", "Car 1.50"), "truncation must be in [0, 1]"),
    "inverted 2D box": (GOOD_LABEL.replace("387.63 181.54 423.81", "423.81 181.54 387.63"), "x2 < x1"),
    "negative dimension": (GOOD_LABEL.replace("1.67 1.87", "-1.67 1.87"), "dimensions must be non-negative"),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_malformed_label_lines(case: str, tmp_path: Path) -> None:
    line, message = LABEL_CASES[case]
    path = tmp_path / "000042.txt"
    path.write_text(GOOD_LABEL + "\n" + line + "\n")
    with pytest.raises(DataFormatError) as error:
        kitti.read_label(path)
    assert error.value.line == 2
    assert str(error.value).startswith(f"{path}:2: ") and message in str(error.value)


def test_ground_truth_with_score_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(GOOD_LABEL + " 0.5\n")
    with pytest.raises(DataFormatError, match=r"gt.txt:1: expected 15 fields, found 16"):
        kitti.read_label(path, allow_score=False)


CALIB_CASES = {
    "missing P2": (lambda s: "\n".join(l for l in s.splitlines() if not l.startswith("P2")), None, "missing calibration key(s): P2"),
    "short P2": (lambda s: s.replace("4.98e-03", ""), 3, "P2 needs 12 values, found 11"),
    "non-numeric R0": (lambda s: s.replace("R0_rect: 1 0", "R0_rect: one 0"), 5, "'one' is not a number"),
    "no colon": (lambda s: s + "garbage line\n", 8, "expected 'KEY: values'"),
    "singular R0": (lambda s: s.replace("R0_rect: 1 0 0 0 1 0 0 0 1", "R0_rect: 0 0 0 0 0 0 0 0 0"), None, "non-invertible matrix: R0_rect"),
    "singular P2": (lambda s: s.replace("P2: 7.07e+02 0 6.04e+02 4.57e+01 0 7.07e+02 1.80e+02", "P2: 0 0 0 4.57e+01 0 0 0"), None, "non-invertible matrix: P2"),
}


@pytest.mark.parametrize("case", sorted(CALIB_CASES))
def test_malformed_calib(case: str, tmp_path: Path) -> None:
    edit, line, message = CALIB_CASES[case]
    path = tmp_path / "000042.txt"
    path.write_text(edit(GOOD_CALIB))
    with pytest.raises(DataFormatError) as error:
        kitti.read_calib(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)
    assert error.value.line == line


def test_malformed_split_velodyne_image_depth(tmp_path: Path) -> None:
    (tmp_path / "split.txt").write_text("000001\n00x002\n")
    with pytest.raises(DataFormatError, match=r"split.txt:2: frame id must be digits"):
        kitti.read_split(tmp_path / "split.txt")
    (tmp_path / "scan.bin").write_bytes(b"\0" * 20)
    with pytest.raises(DataFormatError, match=r"scan.bin: size 20 bytes is not a multiple of 16"):
        kitti.read_velodyne(tmp_path / "scan.bin")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"broken.png: cannot decode image"):
        kitti.read_image(tmp_path / "broken.png")
    kitti.write_image(tmp_path / "rgb.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DataFormatError, match=r"rgb.png: depth PNG must be single-channel 16-bit"):
        read_depth_png(tmp_path / "rgb.png")
    for reader in (kitti.read_label, kitti.read_calib, kitti.read_split, kitti.read_velodyne, kitti.read_image, read_depth_png):
        with pytest.raises(Add3dError, match="nothing.xyz"):
            reader(tmp_path / "nothing.xyz")


def test_cli_reports_malformed_file_without_traceback(kitti_mini_copy: Path, capsys) -> None:
    from add3d.cli import main

    calib = kitti_mini_copy / "training/calib/000001.txt"
    code = main(["make-depth", "--root", str(kitti_mini_copy), "--split", "val", "--source", "object"])
    assert code == 0  # val holds only 000002
    lines = calib.read_text().splitlines()
    assert lines[4].startswith("R0_rect")
    lines[4] = "R0_rect: 1 2"
    calib.write_text("\n".join(lines) + "\n")
    code = main(["make-depth", "--root", str(kitti_mini_copy), "--split", "train", "--source", "object"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{calib}:5: R0_rect needs 9 values, found 2" in err and "Traceback" not in err
    written = sorted(p.name for p in (kitti_mini_copy / "training/depth_object").iterdir())
    assert written == ["000000.png", "000002.png"]  # the good frame before the bad one, no temp files


def test_depth_png_round_trip(tmp_path: Path) -> None:
    depth = np.array([[0.0, 1.0, 12.3456], [79.99, np.inf, -3.0]], dtype=np.float32)
    write_depth_png(tmp_path / "d.png", depth)
    back = read_depth_png(tmp_path / "d.png")
    expected = np.array([[0.0, 1.0, 12.3456], [79.99, 0.0, 0.0]])
    np.testing.assert_allclose(back, expected, atol=0.5 / 256)
