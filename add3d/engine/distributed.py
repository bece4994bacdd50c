"""Multi-process training with ``torchrun``: process group, sampler, DDP wrapping, rank-0 helpers.

Launch: ``torchrun --nproc_per_node=N -m add3d train CONFIG`` (multi-node: add ``--nnodes``,
``--node_rank``, ``--rdzv_endpoint``). torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them
everything runs as a single process. The backend is NCCL on CUDA and gloo on CPU.

``train.batch_size`` is the GLOBAL batch: each of the N processes loads batch_size / N samples.
The sampler hands rank r the samples r, r + N, r + 2N, ... of one shuffled order that depends only on
(seed, epoch), so N processes see exactly the samples one process would see in a global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from add3d.errors import Add3dError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext()
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as error:
        raise Add3dError(f"bad RANK / WORLD_SIZE / LOCAL_RANK environment variables: {error}") from None
    if world_size <= 1:
        return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(wait_for_peers: bool = False) -> None:
    """Leave the process group (a process that exits with gloo's threads running aborts).

    ``wait_for_peers`` (after a run that finished on every rank): a barrier first, so that no rank
    tears its connections down while another is still finishing (rank 0 writes the last checkpoint
    and evaluates alone): with gloo that made the other rank abort now and then ("terminate called
    without an active exception", rc -6). Not after an error: the peers may never reach a barrier.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over all processes (identity for one process)."""
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def all_reduce_min(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def per_process_batch_size(global_batch: int, ctx: DistributedContext) -> int:
    if global_batch % ctx.world_size:
        raise Add3dError(
            f"train.batch_size {global_batch} is the global batch and must be divisible by the number of "
            f"processes ({ctx.world_size})"
        )
    return global_batch // ctx.world_size


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way through (mid-epoch resume).

    Also used with one process (num_replicas=1), so single- and multi-process runs share one order.
    """

    def __init__(self, dataset, ctx: DistributedContext, shuffle: bool, seed: int, drop_last: bool):
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self):
        return iter(list(super().__iter__())[self.start_index :])

    def __len__(self) -> int:
        return super().__len__() - self.start_index


def wrap_model(module: torch.nn.Module, ctx: DistributedContext, device: torch.device, sync_batchnorm: bool,
               find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` (optionally with SyncBatchNorm); identity for one process."""
    if not ctx.enabled:
        return module
    if sync_batchnorm and device.type == "cpu":
        raise Add3dError("train.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); set it to false")
    if sync_batchnorm:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
