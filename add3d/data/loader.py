"""The DataLoader over a :class:`~add3d.data.mono_dataset.MonoDataset`, shared by training and evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from add3d.data.mono_dataset import MonoDataset, collate_batch


def build_loader(dataset: MonoDataset, batch_size: int, workers: int, sampler=None, seed: int = 0) -> DataLoader:
    """Batches of ``dataset`` in ``sampler`` order (default: dataset order); full batches only with a sampler."""
    # A private generator: creating the iterator then never consumes the global torch RNG.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_batch,
        drop_last=sampler is not None,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )
