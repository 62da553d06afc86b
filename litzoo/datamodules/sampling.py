"""Epoch-seeded samplers (the order of epoch e is a function of (seed, e), so a resumed run reshuffles every epoch
the same way) and the loader of the map-style datamodules."""

from __future__ import annotations

from typing import Iterator, Sequence, Sized

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from litzoo.checks import check_positive_int
from litzoo.seeding import epoch_seed


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
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())

    def __len__(self) -> int:
        return len(self.data_source)


class LengthGroupedSampler(Sampler[int]):
    """Indices whose consecutive ``batch_size`` chunks have similar lengths, in a seeded random order.

    Per epoch: a permutation seeded by ``(seed, epoch)`` (so a resumed run repeats it, as
    :class:`EpochShuffleSampler`), cut into windows of
    ``group_batches * batch_size`` indices; each window is sorted by length (longest first) and cut
    into full batches; the batches are shuffled; the ``len % batch_size`` leftover indices come last
    (a ragged batch mid-stream would shift every later batch). A ``DataLoader`` with the same
    ``batch_size`` and this sampler yields the grouped batches. Under DDP Lightning wraps a custom
    sampler in a shuffling ``DistributedSamplerWrapper``, which undoes the grouping (still correct,
    just padded as without it).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int, seed: int = 0) -> None:
        check_positive_int("batch_size", batch_size)
        check_positive_int("group_batches", group_batches)
        self.lengths, self.batch_size, self.group_batches = list(lengths), batch_size, group_batches
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        b, window = self.batch_size, self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(order) - len(order) % b, window):
            chunk = sorted(order[start:min(start + window, len(order) - len(order) % b)],
                           key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + b] for j in range(0, len(chunk), b)]
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        leftover = order[len(order) - len(order) % b:]
        return iter([i for batch in shuffled for i in batch] + leftover)

    def __len__(self) -> int:
        return len(self.lengths)


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
