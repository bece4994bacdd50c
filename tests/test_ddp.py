"""DistributedDataParallel on CPU (gloo, 2 processes): the same global batch gives the same loss
trajectory as one process.

Why the tiny detector and not MonoDLE here: BatchNorm statistics are per process unless
SyncBatchNorm is used, and PyTorch's SyncBatchNorm has no CPU kernel. The tiny detector uses
GroupNorm (per-sample statistics) and a per-sample-mean loss, so two processes x 2 samples compute
exactly the gradients of one process x 4 samples; any difference would come from the engine
(sampler order, batch split, gradient or loss averaging).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from add3d.engine.config import load_config
from add3d.engine.trainer import LAST_CHECKPOINT, train
from add3d.engine.checkpoints import load_checkpoint
from engine_helpers import TinyDetector, make_fake_kitti, tiny_config_overrides

HELPER = Path(__file__).with_name("engine_helpers.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "step"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_match_one_process(tmp_path):
    root = make_fake_kitti(tmp_path / "data", frames=12, val_frames=2)
    extra = ["train.epochs=2", "optim.lr=0.01"]  # 2 epochs x 3 steps of global batch 4

    single_out = tmp_path / "single"
    train(load_config(None, tiny_config_overrides(root, single_out) + extra), detector=TinyDetector())

    ddp_out = tmp_path / "ddp"
    port = free_port()
    processes = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        processes.append(subprocess.Popen(
            [sys.executable, str(HELPER), "none", *tiny_config_overrides(root, ddp_out), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]

    single, distributed = losses(single_out), losses(ddp_out)
    assert len(single) == len(distributed) == 6
    assert distributed == pytest.approx(single, abs=1e-5)
    assert single[-1] < single[0]  # it actually trained
    # Rank 0 alone wrote the checkpoint; its weights match the single-process run's.
    a = load_checkpoint(single_out / LAST_CHECKPOINT)["model"]
    b = load_checkpoint(ddp_out / LAST_CHECKPOINT)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)


def test_global_batch_must_split_evenly():
    from add3d.engine.distributed import DistributedContext, per_process_batch_size
    from add3d.errors import Add3dError

    assert per_process_batch_size(16, DistributedContext(rank=1, world_size=4)) == 4
    with pytest.raises(Add3dError, match="divisible"):
        per_process_batch_size(6, DistributedContext(rank=0, world_size=4))


def test_sync_batchnorm_on_cpu_is_a_clear_error():
    from add3d.engine.distributed import DistributedContext, wrap_model
    from add3d.errors import Add3dError

    with pytest.raises(Add3dError, match="SyncBatchNorm"):
        wrap_model(torch.nn.BatchNorm2d(3), DistributedContext(rank=0, world_size=2), torch.device("cpu"), True)
