"""The one seed formula behind every per-step random stream (no Lightning).

A stream drawn from ``step_seed(seed, step, rank)`` is a pure function of the run's seed, the step
(optimizer step, rollout, ...) and the process rank: a resumed run draws exactly the noise the
uninterrupted run drew at that step, and DDP ranks never share a stream. The two multipliers keep the
three inputs apart (steps below 1_000_003, ranks below 1024 never collide).

A module's or datamodule's ``seed=None`` (the default) follows the global seed (:func:`global_seed`), taken once
and saved with the run, so ``--seed_everything N`` alone changes every stream of a run.
"""

from __future__ import annotations

import os

import torch

_STEP_STRIDE = 1_000_003  # a prime larger than any run's step count
_RANK_STRIDE = 1024  # more ranks than any run has


def rank_seed(seed: int, rank: int = 0) -> int:
    """The seed of rank ``rank``'s long-lived stream (e.g. an RL module's exploration generator)."""
    return int(seed) * _STEP_STRIDE + int(rank)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the stream used at ``step`` on ``rank``."""
    return (int(seed) * _STEP_STRIDE + int(step)) * _RANK_STRIDE + int(rank)


def step_generator(seed: int, step: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`step_seed`."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, rank))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's data order (shuffling samplers): a resumed run reshuffles each epoch the same way."""
    return int(seed) * 100_003 + int(epoch)


def epoch_coin(seed: int, epoch: int, index: int) -> bool:
    """A fair coin that is a pure function of ``(seed, epoch, item index)`` (splitmix64 of the three): per-item
    augmentation (a random flip) that a resumed run repeats, whichever worker loads the item."""
    x = (epoch_seed(seed, epoch) * _STEP_STRIDE + int(index) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return bool((x ^ (x >> 31)) >> 63)


def keyed_coin(key: int | tuple[int, int], seed: int) -> tuple[int, bool]:
    """``(index, coin)`` of a dataset key: an ``(index, epoch)`` key (what a resumable train loader passes)
    tosses :func:`epoch_coin`, which a resumed run repeats; a plain index tosses the global RNG."""
    if isinstance(key, tuple):
        return int(key[0]), epoch_coin(seed, key[1], key[0])
    return key, bool(torch.rand(()) < 0.5)


# ------------------------------------------------------------------ seed=None follows the global seed
def global_seed() -> int:
    """The run's global seed: what ``lightning.seed_everything(N)`` / ``train.py --seed_everything N`` set (the
    environment variable ``PL_GLOBAL_SEED``, which DDP child processes inherit), else 0."""
    value = os.environ.get("PL_GLOBAL_SEED")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"PL_GLOBAL_SEED={value!r} is not an integer seed; set it with seed_everything(N).") from None
