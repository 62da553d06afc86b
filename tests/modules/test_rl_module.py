"""RLModule: the checkpointed random stream (exact on one process and per rank after a DDP resume on as many
ranks, fresh and distinct per rank otherwise), the seed formula, logging every N env steps, and the action-space
check of the on-policy modules."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger

from litzoo.bases.rl import RLModule
from litzoo.datamodules.gym import GymDataModule
from litzoo.modules.actor_critic import ActorCritic
from litzoo.modules.ddpg import DDPG
from litzoo.modules.ppo import PPO
from litzoo.modules.trpo import TRPO
from litzoo.seeding import rank_seed

from rl_helpers import Counter, fit


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


def test_the_generator_of_rank_r_is_seeded_with_seed_times_1_000_003_plus_r():
    for rank in (0, 3):
        module = DDPG(**SPACES, seed=7)
        module._trainer = SimpleNamespace(world_size=4, global_rank=rank)
        module._init_generator()
        assert rank_seed(7, rank) == 7 * 1_000_003 + rank
        assert torch.equal(module._generator.get_state(), torch.Generator().manual_seed(7 * 1_000_003 + rank).get_state())


class StepLogger(Logger):
    """Records the step of every ``log_metrics`` call."""

    name, version = "steps", 0

    def __init__(self):
        super().__init__()
        self.steps = []

    @property
    def experiment(self):
        return None

    def log_hyperparams(self, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.steps.append((step, sorted(k for k in metrics if k.startswith("train/"))))


class ThreeStepsPerBatch(RLModule):
    """``env_steps_per_batch`` env steps per batch; logs ``train/calls`` through ``_log_if_due``."""

    def __init__(self, env_steps_per_batch: int = 3, log_every_n_env_steps: int = 10, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self._init_rl_state()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.metric_calls = 0

    def setup(self, stage):
        pass  # no networks to _build from the env (configure_model builds nothing either)

    def generate_batches(self, env):
        self._env = env
        while True:
            env.step(torch.zeros(env.num_envs, 1))
            self.env_steps += self.hparams.env_steps_per_batch
            yield torch.zeros(1)

    def training_step(self, batch, batch_idx):
        def metrics():
            self.metric_calls += 1
            return {"train/calls": self.metric_calls}

        self._log_if_due(metrics)

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)


def test_log_if_due_logs_at_the_first_batch_at_least_n_env_steps_after_the_last_log():
    module, logger = ThreeStepsPerBatch(env_steps_per_batch=3, log_every_n_env_steps=10), StepLogger()
    fit(module, GymDataModule(Counter, batches_per_epoch=12), logger=logger)
    # env steps after each batch: 3, 6, ..., 36; due at >= 10, then >= 12 + 10, then >= 24 + 10
    assert [step for step, _ in logger.steps] == [12, 24, 36]
    assert all(keys == ["train/calls"] for _, keys in logger.steps)
    assert module.metric_calls == 3  # the metrics are computed only when they are logged
    assert module._logged_at == 36


@pytest.mark.parametrize("cls", [ActorCritic, TRPO, PPO])
def test_unsupported_action_space_raises_value_error_naming_it(cls):
    with pytest.raises(ValueError, match=r"MultiDiscrete.*Box or Discrete"):
        cls(observation_space=gym.spaces.Box(-1, 1, (2,)), action_space=gym.spaces.MultiDiscrete([2, 3]))
