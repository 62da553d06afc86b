"""Epoch-seeded samplers (the order of epoch e is a function of (seed, e), so a resumed run reshuffles every epoch
the same way) and the resumable loader of the map-style datamodules (a resume from a mid-epoch checkpoint
skips the batches the run already trained on)."""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence, Sized

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from litzoo.checks import check_positive_int
from litzoo.seeding import epoch_seed


def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group (``(0, 1)`` without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _EpochSeededSampler(DistributedSampler):
    """An order that is a function of ``(seed, epoch)`` only, of which each DDP rank takes its own share.

    A ``DistributedSampler`` so that Lightning leaves it in place under DDP (``use_distributed_sampler`` replaces
    any other sampler by its ``DistributedSamplerWrapper``, which re-shuffles with a ``PL_GLOBAL_SEED``-seeded
    permutation: the order would then hang on the global seed too, e.g. a random one of a resumed run). The rank and
    world size are those of ``torch.distributed`` when iterated (the process group exists by the time Lightning asks
    for the training loader); ``DistributedSampler.__init__``, which needs the group, is not called. Ranks get
    equally many indices: as ``DistributedSampler`` does, the order is padded with its first indices.
    """

    shuffle, drop_last = True, False  # as DistributedSampler's attributes, for code that reads them

    def __init__(self, seed: int) -> None:
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def rank(self) -> int:
        return _world()[0]

    @property
    def num_replicas(self) -> int:
        return _world()[1]

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))

    def _order(self) -> list[int]:
        raise NotImplementedError

    def _size(self) -> int:
        raise NotImplementedError

    def _shard(self, order: list[int], rank: int, world: int) -> list[int]:
        order = order + order[:(-len(order)) % world]
        return order[rank::world]

    def __iter__(self) -> Iterator[int]:
        rank, world = _world()
        order = self._order()
        return iter(order if world == 1 else self._shard(order, rank, world))

    def __len__(self) -> int:
        return math.ceil(self._size() / self.num_replicas)


class EpochShuffleSampler(_EpochSeededSampler):
    """Shuffle with a permutation that depends only on ``(seed, epoch)``; under DDP rank ``r`` of ``W`` takes
    positions ``r, r + W, ...`` of it (padded to a multiple of ``W`` with its first indices).

    Lightning calls ``set_epoch`` at the start of every epoch (as for ``DistributedSampler``), so
    a run resumed from a checkpoint sees the same batch order as an uninterrupted one; a plain
    ``RandomSampler`` would draw from the global RNG and diverge after a resume.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(seed)
        self.data_source = data_source

    def _size(self) -> int:
        return len(self.data_source)

    def _order(self) -> list[int]:
        return torch.randperm(len(self.data_source), generator=self._generator()).tolist()


class LengthGroupedSampler(_EpochSeededSampler):
    """Indices whose consecutive ``batch_size`` chunks have similar lengths, in a seeded random order.

    Per epoch: a permutation seeded by ``(seed, epoch)`` (so a resumed run repeats it, as
    :class:`EpochShuffleSampler`), cut into windows of
    ``group_batches * batch_size`` indices; each window is sorted by length (longest first) and cut
    into full batches; the batches are shuffled; the ``len % batch_size`` leftover indices come last
    (a ragged batch mid-stream would shift every later batch). A ``DataLoader`` with the same
    ``batch_size`` and this sampler yields the grouped batches. Under DDP rank ``r`` of ``W`` takes
    the grouped batches ``r, r + W, ...`` (padded with the first ones to a multiple of ``W``), then its share of
    the leftovers: batches stay grouped.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int, seed: int = 0) -> None:
        check_positive_int("batch_size", batch_size)
        check_positive_int("group_batches", group_batches)
        super().__init__(seed)
        self.lengths, self.batch_size, self.group_batches = list(lengths), batch_size, group_batches

    def _size(self) -> int:
        return len(self.lengths)

    def _order(self) -> list[int]:
        generator = self._generator()
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        b, window = self.batch_size, self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(order) - len(order) % b, window):
            chunk = sorted(order[start:min(start + window, len(order) - len(order) % b)],
                           key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + b] for j in range(0, len(chunk), b)]
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        leftover = order[len(order) - len(order) % b:]
        return [i for batch in shuffled for i in batch] + leftover

    def _shard(self, order: list[int], rank: int, world: int) -> list[int]:
        b = self.batch_size
        full = len(order) - len(order) % b
        batches = [order[j:j + b] for j in range(0, full, b)]
        mine = super()._shard(batches, rank, world) if batches else []
        return [i for batch in mine for i in batch] + (super()._shard(order[full:], rank, world) if full < len(order)
                                                       else [])

    def __len__(self) -> int:
        world, b = self.num_replicas, self.batch_size
        full = len(self.lengths) // b
        return math.ceil(full / world) * b + math.ceil((len(self.lengths) - full * b) / world)


class _SkipFirst:
    """The loader's index sampler without the first ``loader._skip_now`` batches, each index keyed
    ``(index, epoch)`` for datasets that draw per-item randomness from it (``epoch_keyed``); ``len`` is the
    full epoch's. Both are read when an iteration starts: persistent workers re-iterate this same object."""

    def __init__(self, loader: "ResumableDataLoader", base) -> None:
        self.loader, self.base = loader, base

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator:
        keyed = getattr(self.loader.dataset, "epoch_keyed", False)
        return self._indices(self.loader._skip_now, self.loader._epoch_now if keyed else None)

    def _indices(self, skip: int, epoch: int | None) -> Iterator:
        it = iter(self.base)
        for _ in range(skip):  # indices only: the skipped batches are never loaded
            if next(it, None) is None:
                return
        if epoch is None:
            yield from it
            return
        for item in it:
            yield [(i, epoch) for i in item] if isinstance(item, list) else (item, epoch)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose position in the epoch is part of the checkpoint.

    Lightning saves the ``state_dict()`` of a stateful train loader in the fit loop's checkpoint state and
    loads it into the new loader before a resumed run iterates it. The state is ``{"epoch", "batches"}``:
    the sampler's epoch and the batches this loader has handed to the training loop in it (counted in the
    main process, so worker prefetching does not count). A resumed iteration of the same epoch skips that
    many batches of the same order (the sampler's order is a function of ``(seed, epoch)``; under DDP the
    skip applies to this rank's shard), so the run goes on with the batch the interrupted run would have
    trained on next. The skip is decided at the first ``next()``, i.e. after Lightning's ``set_epoch``, so
    a checkpoint at an epoch's end resumes at the next epoch's first batch. Datasets with
    ``epoch_keyed = True`` receive ``(index, epoch)`` keys (e.g. to draw a random flip from them).
    """

    # Class-level defaults: Lightning re-creates the loader (DDP sampler injection) from its __init__ arguments.
    _pending: tuple[int, int] | None = None  # (epoch, batches) loaded from a checkpoint, not yet applied
    _position: list[int] | None = None  # [epoch, batches handed out] of the current iteration
    _skip_now = 0
    _epoch_now: int | None = None

    def _sampler_epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    @property
    def _index_sampler(self):
        return _SkipFirst(self, super()._index_sampler)

    def __iter__(self) -> Iterator[Any]:
        epoch, skip = self._sampler_epoch(), 0
        if self._pending is not None:
            if self._pending[0] == epoch:
                skip = self._pending[1]
            self._pending = None
        self._position = [epoch, skip]
        self._skip_now, self._epoch_now = skip, epoch  # read by _SkipFirst when the iteration starts
        for batch in super().__iter__():
            self._position[1] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._position is None:  # not iterated since the (re)start
            epoch, batches = self._pending if self._pending is not None else (self._sampler_epoch(), 0)
        else:
            epoch, batches = self._position
        if batches >= len(self):  # a finished epoch: the next run starts the next one
            epoch, batches = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pending, self._position = (int(state["epoch"]), int(state["batches"])), None


def map_style_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int, train: bool) -> DataLoader:
    """The loader of every map-style datamodule: epoch-seeded shuffling for training with the position saved
    in checkpoints (resume-exact), source order for validation; the ragged last batch is dropped only when
    there is more than one."""
    return (ResumableDataLoader if train else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed=seed) if train else None,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
