"""litzoo.seeding: the per-step seed formula every resumable random stream uses."""

from __future__ import annotations

import torch

from litzoo.seeding import rank_seed, step_generator, step_seed


def test_step_seed_is_the_documented_formula():
    # The value checkpoints and published runs depend on: changing it changes every run's noise.
    assert step_seed(0, 0, 0) == 0
    assert step_seed(3, 17, 1) == (3 * 1_000_003 + 17) * 1024 + 1
    assert rank_seed(3, 1) == 3 * 1_000_003 + 1


def test_streams_differ_across_seed_step_and_rank():
    seeds = {step_seed(s, t, r) for s in range(3) for t in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4


def test_step_generator_reproduces_the_same_draws():
    a = torch.randn(5, generator=step_generator(1, 2, 3))
    b = torch.randn(5, generator=step_generator(1, 2, 3))
    c = torch.randn(5, generator=step_generator(1, 3, 3))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_epoch_seed_is_the_samplers_formula():
    from litzoo.seeding import epoch_seed

    assert epoch_seed(2, 5) == 2 * 100_003 + 5
