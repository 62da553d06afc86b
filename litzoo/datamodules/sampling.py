"""Samplers and the loader shared by the map-style datamodules."""

from __future__ import annotations

from typing import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """Shuffle with a permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` at the start of every epoch (as for ``DistributedSampler``), so
    a run resumed from a checkpoint sees the same batch order as an uninterrupted one; a plain
    ``RandomSampler`` would draw from the global RNG and diverge after a resume. Under DDP,
    Lightning swaps this for a ``DistributedSampler``, which is epoch-seeded the same way.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.data_source, self.seed, self.epoch = data_source, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)


def map_style_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int, train: bool) -> DataLoader:
    """The loader of every map-style datamodule: epoch-seeded shuffling for training (resume-exact),
    source order for validation; the ragged last batch is dropped only when there is more than one."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed=seed) if train else None,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
