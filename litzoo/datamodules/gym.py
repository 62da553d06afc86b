r"""Environments as LightningDataModules: the data stream of an RL method is its own experience.

:class:`GymDataModule` builds gymnasium vector envs (same-step autoreset, the real final
observation in ``info["final_obs"]``), wraps them in an :class:`~litzoo.rl.collect.EnvRunner` and
serves an ``IterableDataset`` of exactly ``batches_per_epoch`` batches per epoch on every rank. The
dataset does not know the algorithm: it asks the LightningModule being trained for its batches,

.. code-block:: python

    class MyMethod(RLModule):
        def generate_batches(self, env: EnvRunner) -> Iterator[Batch]:
            while True:
                ...  # act with the current policy, env.step(actions), fill a buffer
                yield batch  # a replay sample (off-policy) or a whole rollout (on-policy)

so the envs are stepped with the *current* policy, in the training process, between optimizer
steps. The dataset has a length, which tells Lightning's fetcher not to pre-fetch: batch ``k+1``
is collected after update ``k`` (an on-policy rollout must come from the policy being updated).

This file is only the datamodule (envs, spaces, the stream). The collection itself, Lightning-free,
is :mod:`litzoo.rl.collect` (``EnvRunner``, ``collect_rollout``, ``step_into_replay``); logging every N
env steps and the DDP gradient all-reduce are :class:`litzoo.bases.rl.RLModule`'s.

Seeds: env ``i`` of rank ``r`` (dataloader worker ``w``) is reset with
``seed + env_steps + num_envs * (r + world_size * w) + i``, so DDP ranks explore different episodes
and a resumed run (``env_steps > 0``) does not replay the episodes it started with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, Optional, Union

import gymnasium as gym
import lightning as L
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from litzoo.checks import check_choice, check_positive_int
from litzoo.rl.collect import EnvRunner, check_env_id
from litzoo.rl.policy import space_to_spec
from litzoo.datamodules.seed import DataSeed

VECTORIZATION = ("sync", "async")

_stream_warnings_silenced = False


def _silence_stream_warnings() -> None:
    """Ignore three Lightning warnings that do not apply to an env stream, once per process.

    Lightning emits them in ``FitLoop.setup_data`` *after* ``train_dataloader()`` has returned
    (``has_len_all_ranks``, ``_worker_check``, the logging-interval check), so a
    ``warnings.catch_warnings()`` block around our code cannot catch them; hence one narrow filter per
    message, installed at the first ``train_dataloader()`` call and not again at every call (which
    moved them before the user's own filters each time).
    """
    global _stream_warnings_silenced
    if _stream_warnings_silenced:
        return
    _stream_warnings_silenced = True
    # The length is on purpose (no pre-fetching, see the module docstring) and the data must be produced
    # in this process, where the live policy is: no workers.
    warnings.filterwarnings("ignore", message=r".*IterableDataset.*has .__len__. defined.*")
    warnings.filterwarnings("ignore", message=r".*train_dataloader.*does not have many workers.*")
    # The modules log every N env steps themselves, whatever Trainer(log_every_n_steps) says.
    warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging interval.*")


class _EnvStream(IterableDataset):
    """``batches_per_epoch`` batches from ``lightning_module.generate_batches(env)`` per epoch."""

    def __init__(self, datamodule: GymDataModule) -> None:
        self.datamodule = datamodule
        self._batches: Iterator[Any] | None = None
        self._owner: Any = None

    def __len__(self) -> int:
        return self.datamodule.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        dm = self.datamodule
        trainer = dm.trainer
        if trainer is None:
            raise RuntimeError("GymDataModule's dataloader is stepped by the module being trained; use it through a Trainer.")
        module = trainer.lightning_module
        if not callable(getattr(module, "generate_batches", None)):
            raise ValueError(
                f"{type(module).__name__} has no generate_batches(env) method; GymDataModule feeds RL modules "
                "(litzoo.modules.ddpg.DDPG, litzoo.modules.actor_critic.ActorCritic, ...)."
            )
        env = dm.env
        if env is None:
            dm.setup("fit")
            env = dm.env
        if env.obs is None or self._owner is not module:
            worker = get_worker_info()
            worker_id = worker.id if worker is not None else 0
            rank, world = trainer.global_rank, trainer.world_size
            seed = dm.seed + int(getattr(module, "env_steps", 0)) + dm.num_envs * (rank + world * worker_id)
            env.to(module.device).reset(seed=seed)
            self._batches, self._owner = module.generate_batches(env), module
        env.to(module.device)
        module._batch_stream = self._batches  # this fit's stream: the module may pull more batches within a step
        for _ in range(len(self)):
            yield next(self._batches)


class GymDataModule(DataSeed, L.LightningDataModule):
    """A gymnasium environment as the data source of an RL LightningModule (see the module docstring):
    the envs, their spaces and the stream of batches; the collection is :mod:`litzoo.rl.collect`'s.

    Args:
        env_id: a registered gymnasium id (``"Pendulum-v1"``, ``"litzoo/GridWorld-v0"``,
            ``"my_package:MyEnv-v0"`` imports ``my_package`` first), or a callable returning a
            ``gymnasium.Env`` (called with ``env_kwargs`` and, for rendering, ``render_mode``).
        num_envs: parallel envs per process.
        batches_per_epoch: batches the dataloader yields per epoch (identical on every rank).
        seed: base seed of the envs (offset per rank/worker/env, see the module docstring); ``None`` (default):
            the global seed (``seed_everything`` / ``--seed_everything``, else 0), taken at the first reset and kept
            by checkpoints.
        env_kwargs: keyword arguments for ``gymnasium.make`` / the callable.
        max_episode_steps: time limit (``gymnasium.make``'s ``TimeLimit``); ``None`` keeps the env's own.
        vectorization: ``"sync"`` (one process; fastest for cheap envs) or ``"async"`` (a subprocess per env).

    Attributes: ``observation_space`` / ``action_space`` (of one env), ``env`` (the
    :class:`~litzoo.rl.collect.EnvRunner`, after ``setup("fit")``).
    """

    def __init__(
        self,
        env_id: Union[str, Callable[..., gym.Env]] = "Pendulum-v1",
        num_envs: int = 1,
        batches_per_epoch: int = 1000,
        seed: Optional[int] = None,
        env_kwargs: Optional[dict[str, Any]] = None,
        max_episode_steps: Optional[int] = None,
        vectorization: str = "sync",
    ) -> None:
        super().__init__()
        check_positive_int("num_envs", num_envs)
        check_positive_int("batches_per_epoch", batches_per_epoch)
        if max_episode_steps is not None:
            check_positive_int("max_episode_steps", max_episode_steps)
        check_choice("vectorization", vectorization, VECTORIZATION)
        if isinstance(env_id, str) and "max_episode_steps" in (env_kwargs or {}):
            # gymnasium.make consumes the keyword itself (a TimeLimit), so it could never reach the env.
            raise ValueError(
                "env_kwargs must not contain 'max_episode_steps': pass GymDataModule(max_episode_steps=N) for a time "
                "limit; to set an env constructor argument of that name (e.g. GridWorld(max_episode_steps=None) for "
                "never-ending episodes) pass a callable, env_id=functools.partial(GridWorld, max_episode_steps=None)."
            )
        if isinstance(env_id, str):
            check_env_id(env_id)
            self.save_hyperparameters()
        elif not callable(env_id):
            raise ValueError(f"env_id={env_id!r} must be a registered gymnasium id or a callable returning an env.")
        self.env_id, self.num_envs, self.batches_per_epoch = env_id, int(num_envs), int(batches_per_epoch)
        self.seed, self.env_kwargs = seed, dict(env_kwargs or {})
        self.max_episode_steps, self.vectorization = max_episode_steps, vectorization
        self.env: EnvRunner | None = None
        self._spaces: tuple[gym.Space, gym.Space] | None = None

    # ------------------------------------------------------------------ envs
    def make_env(self, render_mode: Optional[str] = None) -> gym.Env:
        """One (non-vector) env as configured; e.g. for evaluation or rendering."""
        kwargs = dict(self.env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        if isinstance(self.env_id, str):
            return gym.make(self.env_id, max_episode_steps=self.max_episode_steps, **kwargs)
        env = self.env_id(**kwargs)
        if self.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, self.max_episode_steps)
        return env

    def make_vector_env(self, num_envs: Optional[int] = None) -> gym.vector.VectorEnv:
        """``num_envs`` envs (default: ``self.num_envs``) with same-step autoreset."""
        fns = [self.make_env] * (num_envs or self.num_envs)
        mode = gym.vector.AutoresetMode.SAME_STEP
        if self.vectorization == "async":
            return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)

    def _probe_spaces(self) -> tuple[gym.Space, gym.Space]:
        if self._spaces is None:
            if self.env is not None:
                self._spaces = (self.env.observation_space, self.env.action_space)
            else:
                env = self.make_env()
                self._spaces = (env.observation_space, env.action_space)
                env.close()
        return self._spaces

    @property
    def observation_space(self) -> gym.Space:
        return self._probe_spaces()[0]

    @property
    def action_space(self) -> gym.Space:
        return self._probe_spaces()[1]

    def space_specs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The observation and action spaces as plain dicts (:func:`litzoo.rl.policy.space_to_spec`)."""
        return space_to_spec(self.observation_space), space_to_spec(self.action_space)

    # ------------------------------------------------------------------ Lightning
    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.env is None:
            self.env = EnvRunner(self.make_vector_env())
            self._spaces = (self.env.observation_space, self.env.action_space)

    def train_dataloader(self) -> DataLoader:
        # The envs are stepped with the live policy, so the data must be produced in this process.
        _silence_stream_warnings()
        return DataLoader(_EnvStream(self), batch_size=None, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        # A seed that followed the global one: the resumed run resets its envs from the first run's.
        return self.seed_state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.load_seed_state_dict(state_dict)

    def teardown(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.env is not None:
            self.env.close()
            self.env = None
