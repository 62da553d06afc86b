"""RLModule's checkpointed random stream: exact on one process and per rank after a DDP resume on as many ranks,
fresh and distinct per rank otherwise."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from litzoo.modules.ddpg import DDPG

SPACES = dict(observation_space=gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
              action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32))


def _checkpoint_after_draws(world_size: int) -> tuple[dict, torch.Tensor]:
    module = DDPG(**SPACES, seed=3)
    module._trainer = SimpleNamespace(world_size=world_size, global_rank=0)
    module._init_generator()
    torch.rand(5, generator=module._generator)  # advance the stream past its seed
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    expected_next = torch.rand(4, generator=module._generator)
    return checkpoint, expected_next


def _resumed_draws(checkpoint: dict, world_size: int, rank: int) -> torch.Tensor:
    module = DDPG(**SPACES, seed=3)
    module.on_load_checkpoint(checkpoint)
    module._trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    module._init_generator()
    return torch.rand(4, generator=module._generator)


def test_a_single_process_resume_continues_the_saved_random_stream_exactly():
    checkpoint, expected_next = _checkpoint_after_draws(world_size=1)
    assert torch.equal(_resumed_draws(checkpoint, world_size=1, rank=0), expected_next)


def test_after_a_ddp_resume_every_rank_draws_its_own_stream_not_rank_0s():
    # A checkpoint holding one stream saved under DDP (the format before per-rank states): reusing it on every
    # rank would make the ranks' exploration noise and replay minibatches identical.
    checkpoint, rank0_next = _checkpoint_after_draws(world_size=2)
    checkpoint["litzoo_rl"]["env_steps"] = 5000
    draws = [_resumed_draws(checkpoint, world_size=2, rank=r) for r in (0, 1)]
    assert not torch.equal(draws[0], draws[1])
    assert not any(torch.equal(d, rank0_next) for d in draws)
    # ... and deterministic: the same checkpoint gives the same per-rank streams.
    assert torch.equal(draws[1], _resumed_draws(checkpoint, world_size=2, rank=1))


def test_a_ddp_checkpoint_holds_every_rank_s_stream_each_resumed_rank_continues_its_own():
    # What on_save_checkpoint gathers under DDP (the gather itself: tests/modules/test_dqn.py's 2-process test).
    streams = []
    for rank in (0, 1):
        module = DDPG(**SPACES, seed=3)
        module._trainer = SimpleNamespace(world_size=2, global_rank=rank)
        module._init_generator()
        torch.rand(5 + rank, generator=module._generator)
        streams.append(module)
    checkpoint = {"litzoo_rl": {"env_steps": 5000, "num_updates": 0, "ranks": [m._rank_state() for m in streams]}}
    expected = [torch.rand(4, generator=m._generator) for m in streams]
    for rank in (0, 1):  # the same number of ranks: exact
        assert torch.equal(_resumed_draws(checkpoint, world_size=2, rank=rank), expected[rank])
    # Another number of ranks: fresh, distinct streams (no rank may replay another's).
    draws = [_resumed_draws(checkpoint, world_size=3, rank=r) for r in (0, 1, 2)] + [_resumed_draws(checkpoint, 1, 0)]
    for i, d in enumerate(draws):
        assert not any(torch.equal(d, e) for e in expected)
        assert not any(torch.equal(d, other) for other in draws[i + 1:3])
