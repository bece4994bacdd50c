"""The training DataLoader: thread caps in workers and in-process, persistent workers and epochs,
and the LiDAR depth map's fast path against the straightforward projection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from add3d.data import kitti
from add3d.data.config import DataConfig
from add3d.data.depth_maps import lidar_depth_map
from add3d.data.loader import build_loader, init_worker
from add3d.data.mono_dataset import build_mono_dataset
from add3d.geometry.calib import Calibration
from engine_helpers import make_fake_kitti

KITTI_CLASSES = ("Car", "Pedestrian", "Cyclist")  # model.classes: the detected classes, in id order


class ThreadReport(torch.utils.data.Dataset):
    """Each sample: the BLAS thread counts and OpenCV's thread count seen inside the worker."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        return {"blas": blas, "opencv": cv2.getNumThreads()}


def widen_then_init_worker(worker_id: int) -> None:
    """Two threads per pool first (the tests run with OMP_NUM_THREADS=1), then the loader's init."""
    threadpool_limits(limits=2, user_api="blas")
    cv2.setNumThreads(2)
    init_worker(worker_id)


def test_workers_cap_blas_and_opencv_threads():
    loader = torch.utils.data.DataLoader(ThreadReport(), batch_size=None, num_workers=1,
                                         worker_init_fn=widen_then_init_worker)
    (report,) = list(loader)
    assert report["blas"] and all(threads == 1 for threads in report["blas"])
    assert report["opencv"] == 1


def test_persistent_workers_draw_each_epochs_augmentation(tmp_path):
    root = make_fake_kitti(tmp_path / "kitti", frames=4, val_frames=0)
    cfg = DataConfig(root=str(root), input_size=[64, 192], skip_unknown_difficulty=False)
    dataset = build_mono_dataset(cfg, "train", augment=True, seed=3, classes=KITTI_CLASSES)
    loader = build_loader(dataset, batch_size=2, workers=1, sampler=torch.utils.data.SequentialSampler(dataset))
    assert loader.persistent_workers and loader.prefetch_factor == 2
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        images = torch.cat([batch["image"] for batch in loader])
        expected = torch.stack([dataset[(epoch, index)]["image"] for index in range(len(dataset))])
        assert torch.equal(images, expected)  # the worker used this epoch's draws, not epoch 0's
        seen.append(images)
    assert not all(torch.equal(seen[0], other) for other in seen[1:])  # epochs differ somewhere


FORK_AFTER_OPENCV = """
import cv2, numpy as np, torch
from add3d.data.loader import build_loader

class Warps(torch.utils.data.Dataset):
    epoch = 0
    def __len__(self):
        return 2
    def __getitem__(self, index):
        warped = cv2.warpAffine(np.zeros((94, 310, 3), np.uint8), np.float64([[1.03, 0, 1], [0, 1.03, 2]]), (320, 96))
        return {"image": torch.from_numpy(warped), "meta": {"frame_id": str(index)}}

for trial in range(30):
    loader = build_loader(Warps(), batch_size=2, workers=1)
    for _ in range(20):
        Warps()[0]  # this process warps right before its worker forks (as with the balance batches)
    assert sum(1 for _ in loader) == 1
print("done")
"""


def test_workers_forked_right_after_this_process_used_opencv_do_not_hang():
    # Before the fix a forked worker hung in cv2.setNumThreads (at the 5th and the 19th fork in two
    # tries, never in 50 forks since; a fork takes ~0.2 s on a quiet core): a subprocess with a
    # timeout tells.
    result = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENCV], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "done"


def test_building_a_loader_caps_this_process_blas_and_opencv_only():
    torch_threads, opencv_threads = torch.get_num_threads(), cv2.getNumThreads()
    with threadpool_limits(limits=None):  # restores this process's pools afterwards
        try:
            threadpool_limits(limits=2, user_api="blas")
            cv2.setNumThreads(2)
            for workers in (0, 1):
                threadpool_limits(limits=2, user_api="blas")
                cv2.setNumThreads(2)
                build_loader(ThreadReport(), batch_size=1, workers=workers)
                blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
                assert all(threads == 1 for threads in blas) and cv2.getNumThreads() == 1
            assert torch.get_num_threads() == torch_threads  # train.threads stays the trainer's business
        finally:
            cv2.setNumThreads(opencv_threads)


def reference_lidar_depth_map(points: np.ndarray, calib: Calibration, size: tuple[int, int]) -> np.ndarray:
    """Every point projected with the full homogeneous chain, floors, then the nearest point wins."""
    width, height = size
    hom = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    rect = hom @ (np.vstack([np.hstack([calib.R0_rect, np.zeros((3, 1))]), [0, 0, 0, 1]])
                  @ np.vstack([calib.Tr_velo_to_cam, [0, 0, 0, 1]])).T
    projected = rect @ calib.P2.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = projected[:, 0] / projected[:, 2], projected[:, 1] / projected[:, 2]
    out = np.zeros((height, width), dtype=np.float32)
    best = np.full((height, width), np.inf)
    for ui, vi, z in zip(u, v, rect[:, 2]):
        if z > 0.1 and 0 <= ui < width and 0 <= vi < height:
            col, row = int(np.floor(ui)), int(np.floor(vi))
            if z <= best[row, col]:
                best[row, col] = z
                out[row, col] = z
    return out


def test_lidar_depth_map_fast_path_matches_the_plain_projection(kitti_mini):
    calib = kitti.read_calib(kitti_mini / "training/calib/000000.txt")
    points = kitti.read_velodyne(kitti_mini / "training/velodyne/000000.bin")[::20]  # ~6k points
    # plus points behind the camera, beyond the image and exactly on the camera plane
    rng = np.random.default_rng(0)
    extra = np.concatenate([rng.uniform(-80, 80, (500, 3)), np.zeros((3, 3))]).astype(np.float32)
    points = np.concatenate([points[:, :3], extra])
    size = (1242, 375)
    np.testing.assert_array_equal(lidar_depth_map(points, calib, size), reference_lidar_depth_map(points, calib, size))


def assert_samples_equal(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_samples_equal(got[key], value)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def test_frame_cache_gives_the_same_samples_and_keeps_to_its_budget(tmp_path):
    root = make_fake_kitti(tmp_path / "kitti", frames=6, val_frames=0)
    options = dict(root=str(root), input_size=[64, 192], skip_unknown_difficulty=False, depth_source="object",
                   depth_fill=3, depth_jitter=0.2)
    plain = build_mono_dataset(DataConfig(**options), "train", augment=True, seed=5, classes=KITTI_CLASSES)
    frame_mb = (plain.frames[0].image.nbytes + plain.depth_map(plain.frames[0]).nbytes) / 2**20
    cached = build_mono_dataset(DataConfig(**options, frame_cache_mb=3.5 * frame_mb), "train", augment=True, seed=5,
                                classes=KITTI_CLASSES)
    for epoch in range(3):
        for dataset in (plain, cached):
            dataset.set_epoch(epoch)
        for index in range(len(plain)):
            assert_samples_equal(cached[index], plain[index])
    assert sorted(cached._cached_frames) == [0, 1, 2]  # 3.5 frames' worth: the first three, then full
    assert all(frame.lidar is None and frame.depth is None for frame, _ in cached._cached_frames.values())
    assert not plain._cached_frames
