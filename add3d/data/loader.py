"""The DataLoader of training, validation and evaluation: thread caps, persistent workers, pinning.

Native thread pools: numpy's OpenBLAS and OpenCV each start one thread per core in every process.
The per-sample work (4x4 projections of ~100k LiDAR points, one warp per map) is far too small to
share, so N loader workers x (one thread per core) mostly spin and contend: on a busy 2-core
machine a KITTI LiDAR depth map took 68 ms of CPU with two BLAS threads and 7 ms with one. Every worker
therefore caps BLAS and OpenCV to ``DATA_THREADS``. The process that builds a loader is capped the
same way, whatever ``workers`` is: it computes samples itself with ``workers=0`` and at times beside
its workers (``distill.balance: auto``'s batches), and a worker forked from a process whose OpenCV
pool had started hung for ever in ``cv2.setNumThreads`` (it waits for pool threads that do not exist
in the child). torch's own intra-op threads (``train.threads``) are not touched: torch's MKL and
OpenMP are separate libraries.

Persistent workers keep their copy of the dataset for the whole run, so the epoch whose
augmentation a sample draws travels with its index (:class:`EpochIndexSampler`) instead of through
``dataset.set_epoch`` in the main process, which a persistent worker would never see.
"""

from __future__ import annotations

import re
from typing import Iterator

import cv2
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Sampler, SequentialSampler

from add3d.data.mono_dataset import MonoDataset, collate_batch
from add3d.errors import Add3dError

# The last line of a worker's traceback when it raised one of the project's errors.
_WORKER_ERROR = re.compile(r"^add3d\.errors\.\w+: (.+)$", re.MULTILINE)
DATA_THREADS = 1  # BLAS / OpenCV threads per process that computes samples


def limit_data_threads(threads: int = DATA_THREADS) -> None:
    """Cap the BLAS (numpy, OpenCV's bundled OpenBLAS) and OpenCV thread pools of this process."""
    threadpool_limits(limits=threads, user_api="blas")
    if cv2.getNumThreads() != threads:  # a forked copy of a started OpenCV pool must not be resized
        cv2.setNumThreads(threads)


def init_worker(worker_id: int) -> None:
    """``worker_init_fn``: one BLAS / OpenCV thread per loader worker (torch already uses one).

    OpenCV is left alone when the parent already capped it (``build_loader`` does)."""
    limit_data_threads()


class EpochIndexSampler(Sampler):
    """Yields ``(epoch, index)``: ``sampler``'s indices tagged with ``dataset.epoch`` as it was when
    the iterator was created (that is, after the trainer's ``set_epoch``)."""

    def __init__(self, sampler: Sampler, dataset: MonoDataset):
        self.sampler = sampler
        self.dataset = dataset

    def __iter__(self):
        epoch = self.dataset.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class Add3dDataLoader(DataLoader):
    """A DataLoader whose workers' :class:`Add3dError` reaches the caller as that one-line error.

    PyTorch re-raises a worker's exception with the worker's whole traceback as its message (and
    as a RuntimeError when the type cannot be rebuilt from one string, like DataFormatError), so a
    bad label file would otherwise end in a traceback instead of its one-line message.
    """

    def __iter__(self) -> Iterator:
        iterator = super().__iter__()
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (Add3dError, RuntimeError) as error:
                text = str(error)
                found = _WORKER_ERROR.findall(text) if text.startswith("Caught ") and "DataLoader worker" in text else []
                if not found:
                    raise
                raise Add3dError(found[-1]) from None
            yield batch


def build_loader(
    dataset: MonoDataset,
    batch_size: int,
    workers: int,
    sampler: Sampler | None = None,
    seed: int = 0,
    prefetch_factor: int = 2,
) -> DataLoader:
    """Batches of ``dataset`` in ``sampler``'s order (default: sequential, last partial batch kept).

    With a sampler (training) incomplete last batches are dropped. Workers persist across epochs;
    batches are pinned when CUDA is available so host-to-device copies can overlap compute.
    """
    limit_data_threads()
    drop_last = sampler is not None
    sampler = EpochIndexSampler(sampler if sampler is not None else SequentialSampler(dataset), dataset)
    return Add3dDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_batch,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=init_worker if workers > 0 else None,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        # A private generator: creating the iterator then never consumes the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
    )
