"""Helpers for the engine tests: a tiny KITTI-layout dataset and a tiny detector.

The detector implements the MonoDetector protocol of docs/DESIGN.md with a few convolutions and
no BatchNorm (GroupNorm instead): its loss is a per-sample mean, so a global batch split over two
DDP processes gives exactly the gradients of one process -- what the DDP test checks.

Run as a script it trains with that detector (``python engine_helpers.py CONFIG [overrides]
[--resume PATH]``), which is how the tests start training in subprocesses (DDP, SIGKILL).
"""

from __future__ import annotations

import argparse
import os
import sys
import signal
from pathlib import Path

import numpy as np
import torch
from torch import nn

from add3d.data.kitti import Object3D, write_calib, write_image, write_label, write_split
from add3d.geometry.boxes import box3d_corners, project_boxes_to_2d
from add3d.geometry.calib import Calibration

FAKE_SIZE = (200, 64)  # (width, height) of the fake frames


def fake_calibration(width: int = FAKE_SIZE[0], height: int = FAKE_SIZE[1]) -> Calibration:
    focal = width * 0.58
    P2 = np.array([[focal, 0, width / 2, 4.5], [0, focal, height * 0.48, 0.0], [0, 0, 1, 0.003]])
    return Calibration.from_P2(P2)


def fake_objects(rng: np.random.Generator, calib: Calibration, width: int, height: int) -> list[Object3D]:
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        dims = np.array([1.5, 1.6, 3.9]) * rng.uniform(0.9, 1.1, 3)
        location = np.array([rng.uniform(-6, 6), 1.65, rng.uniform(8, 35)])
        ry = rng.uniform(-np.pi, np.pi)
        corners = box3d_corners(dims[None], location[None], np.array([ry]))
        box = project_boxes_to_2d(corners, calib.P2, (width, height))[0]
        u = calib.rect_to_image((location - [0, dims[0] / 2, 0])[None])[0][0, 0]
        objects.append(Object3D("Car", 0.0, 0, float(calib.ry_to_alpha(ry, u)), box, dims, location, ry))
    return objects


def make_fake_kitti(root: Path, frames: int = 12, val_frames: int = 4, seed: int = 0) -> Path:
    """Frames of noise with bright boxes where labelled cars are; ids 000000.. in train, then val."""
    rng = np.random.default_rng(seed)
    width, height = FAKE_SIZE
    calib = fake_calibration(width, height)
    ids = [f"{i:06d}" for i in range(frames + val_frames)]
    for frame_id in ids:
        objects = fake_objects(rng, calib, width, height)
        image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        for obj in objects:
            x1, y1, x2, y2 = obj.box2d.astype(int)
            image[y1 : y2 + 1, x1 : x2 + 1] = np.clip(255 - 4 * obj.location[2], 60, 255)
        training = root / "training"
        write_image(training / "image_2" / f"{frame_id}.png", image)
        write_calib(training / "calib" / f"{frame_id}.txt", calib)
        write_label(training / "label_2" / f"{frame_id}.txt", objects)
    write_split(root / "ImageSets" / "train.txt", ids[:frames])
    write_split(root / "ImageSets" / "val.txt", ids[frames:])
    return root


class TinyDetector(nn.Module):
    """Two strided convs to stride 4, heatmap + depth heads; no BatchNorm."""

    stride = 4
    feature_channels = 8

    def __init__(self, num_classes: int = 3, in_channels: int = 3, seed: int = 0):
        super().__init__()
        self.num_classes = num_classes
        with torch.random.fork_rng():  # same initial weights in every process, whatever ran before
            torch.manual_seed(seed)
            self._build(num_classes, in_channels)

    def _build(self, num_classes: int, in_channels: int) -> None:
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, stride=2, padding=1),
            nn.GroupNorm(2, 8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.heatmap = nn.Conv2d(8, num_classes, 1)
        self.depth = nn.Conv2d(8, 1, 1)
        nn.init.constant_(self.heatmap.bias, -2.0)

    def forward(self, image, targets=None, meta=None):
        if self.training and os.environ.get("ADD3D_TEST_KILL_AT_STEP"):
            # The SIGKILL test's kill, inside the forward of that training step: the same point
            # whatever the machine's load (a kill sent by the test itself raced the checkpoints).
            self.training_steps = getattr(self, "training_steps", 0) + 1
            if self.training_steps == int(os.environ["ADD3D_TEST_KILL_AT_STEP"]):
                os.kill(os.getpid(), signal.SIGKILL)
        features = self.trunk(image)
        return {"heatmap": self.heatmap(features), "depth": self.depth(features), "features": features}

    def loss(self, outputs, targets, meta):
        heatmap = torch.sigmoid(outputs["heatmap"])
        heatmap_loss = ((heatmap - targets["heatmap"]) ** 2).mean() * 100
        depth_map = outputs["depth"].flatten(1)
        depth = torch.gather(depth_map, 1, targets["indices"]) * 10 + 20
        mask = targets["mask_3d"]
        depth_loss = ((depth - targets["depth"][..., 0]).abs() * mask).mean()  # per-sample mean: DDP-exact
        total = heatmap_loss + depth_loss
        return total, {"heatmap": heatmap_loss.detach(), "depth": depth_loss.detach()}

    def decode(self, outputs, meta, score_threshold=0.2, top_k=50):
        heatmap = torch.sigmoid(outputs["heatmap"][:, 0])
        b, h, w = heatmap.shape
        results = []
        for i in range(b):
            score, index = heatmap[i].flatten().max(0)
            if score < score_threshold:
                results.append([])
                continue
            y, x = divmod(int(index), w)
            depth = float(outputs["depth"][i, 0, y, x]) * 10 + 20
            affine = meta["input_to_original"][i].double().cpu().numpy()
            u, v = affine[:, :2] @ np.array([(x + 0.5) * 4, (y + 0.5) * 4]) + affine[:, 2]
            calib = Calibration.from_P2(meta["P2"][i].double().cpu().numpy())
            centre = calib.image_to_rect(np.array([u]), np.array([v]), np.array([depth]))[0]
            dims = np.array([1.5, 1.6, 3.9])
            location = centre + [0, dims[0] / 2, 0]
            box = project_boxes_to_2d(box3d_corners(dims[None], location[None], np.zeros(1)), calib.P2)[0]
            results.append([Object3D("Car", 0, 0, float(calib.ry_to_alpha(0.0, u)), box, dims, location, 0.0, float(score))])
        return results

    def response_outputs(self, outputs, targets, meta, with_uncertainty=True, depth_in_metres=False):
        return {"depth": torch.gather(outputs["depth"].flatten(1), 1, targets["indices"])[..., None]}


def tiny_config_overrides(root: Path, out_dir: Path) -> list[str]:
    """Overrides that make any config CPU-tiny for the fake data."""
    return [
        f"data.root={root}",
        "data.input_size=[64,192]",
        f"train.out_dir={out_dir}",
        "train.epochs=2",
        "train.batch_size=4",
        "train.workers=0",
        "train.log_every=1",  # the tests read every step's loss
        "train.eval_every=-1",
        "train.device=cpu",
        "data.skip_unknown_difficulty=false",
        "schedule.warmup_epochs=1",
        "schedule.milestones=[]",
    ]


SYNTHETIC_MONODLE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "monodle" / "synthetic.yaml"


def train_one_epoch_run(base: Path, *extra: str) -> tuple[Path, Path, list[str]]:
    """A fake KITTI root and a 1-epoch MonoDLE run on it through ``add3d train``.

    Returns (root, run folder, the overrides used), so that tests can call eval/predict alike.
    """
    from add3d.cli import main as cli_main

    root = make_fake_kitti(base / "data", frames=8, val_frames=3)
    run = base / "run"
    overrides = [f"data.root={root}", "data.input_size=[64,192]", f"train.out_dir={run}", "train.epochs=1",
                 "train.batch_size=4", "train.workers=0", "train.device=cpu", *extra]
    assert cli_main(["train", str(SYNTHETIC_MONODLE_CONFIG), *overrides, "--quiet"]) == 0
    return root, run, overrides


def main(argv: list[str] | None = None) -> int:
    from add3d.engine.config import load_config
    from add3d.engine.distributed import shutdown_distributed
    from add3d.engine.trainer import train

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("config", help="YAML config, or 'none' for the defaults")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(None if args.config == "none" else args.config, args.overrides)
    finished = False
    try:
        train(cfg, resume=args.resume, detector=TinyDetector(len(cfg.model.classes)))
        finished = True
    finally:
        # Leave the process group before the interpreter exits, after the peers are done too:
        # otherwise gloo aborted one process now and then (rc -6). `add3d train` does the same.
        shutdown_distributed(wait_for_peers=finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
