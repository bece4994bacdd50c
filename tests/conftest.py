"""Shared fixtures. Real KITTI frames live in ../shared/data/kitti_mini beside the repository;
tests that need them skip cleanly when a user's fresh clone does not have that folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADD3D_SHARED", REPO_ROOT.parent / "shared"))
KITTI_MINI = SHARED / "data" / "kitti_mini"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the pure-numpy parts do not need torch
        pass


@pytest.fixture(scope="session")
def kitti_mini() -> Path:
    """Read-only path of the three real KITTI frames."""
    if not (KITTI_MINI / "training" / "calib").is_dir():
        pytest.skip(f"real KITTI frames not found at {KITTI_MINI}")
    return KITTI_MINI


@pytest.fixture
def kitti_mini_copy(kitti_mini: Path, tmp_path: Path) -> Path:
    """A writable copy of kitti_mini (without velodyne unless copied by the test)."""
    target = tmp_path / "kitti_mini"
    shutil.copytree(kitti_mini, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target
