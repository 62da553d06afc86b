"""Samplers shared by the map-style datamodules."""

from __future__ import annotations

from typing import Iterator, Sized

import torch
from torch.utils.data import Sampler


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
