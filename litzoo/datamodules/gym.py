r"""Environments as LightningDataModules: the data stream of an RL method is its own experience.

:class:`GymDataModule` builds gymnasium vector envs (same-step autoreset, the real final
observation in ``info["final_obs"]``) and serves an ``IterableDataset`` of exactly
``batches_per_epoch`` batches per epoch on every rank. The dataset does not know the algorithm:
it asks the LightningModule being trained for its batches,

.. code-block:: python

    class MyMethod(LightningModule):
        def generate_batches(self, env: EnvRunner) -> Iterator[Batch]:
            while True:
                ...  # act with the current policy, env.step(actions), fill a buffer
                yield batch  # a replay sample (off-policy) or a whole rollout (on-policy)

so the envs are stepped with the *current* policy, in the training process, between optimizer
steps. The dataset has a length, which tells Lightning's fetcher not to pre-fetch: batch ``k+1``
is collected after update ``k`` (an on-policy rollout must come from the policy being updated).

What every method shares lives here once:

* :class:`EnvRunner`: steps the vector env with torch actions and returns torch tensors
  (:class:`EnvStep`), keeps episode statistics; ``final_obs`` is the real :math:`s_{t+1}` also where
  an episode ended — the observation a TD target bootstraps from when the episode was only
  *truncated* (``terminated`` marks the only transitions whose next state has value 0).
* :func:`collect_rollout` (on-policy) and :func:`step_into_replay` (off-policy) fill the
  :mod:`litzoo.rl.buffers`; the buffers apply the termination/truncation rule.
* :func:`log_rl_metrics`: episode return/length, env steps and env-steps/s (over all ranks) to the
  loggers (x-axis: env steps) and the progress bar, called every N env steps, not every batch.
* :func:`disable_ddp_gradient_sync` / :func:`all_reduce_gradients`: an RL update does not fit DDP's
  reducer (TD3's delayed steps leave the actor without gradients, which plain ``strategy="ddp"``
  rejects); the modules average their gradients with one all-reduce per update instead, and DDP
  keeps its other job, starting every rank from rank 0's weights.

Seeds: env ``i`` of rank ``r`` (dataloader worker ``w``) is reset with
``seed + env_steps + num_envs * (r + world_size * w) + i``, so DDP ranks explore different episodes
and a resumed run (``env_steps > 0``) does not replay the episodes it started with.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Optional, Union

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import litzoo.envs  # noqa: F401  (registers "litzoo/GridWorld-v0")
from litzoo.rl.buffers import ReplayBuffer, RolloutBuffer
from litzoo.rl.policy import space_to_spec

VECTORIZATION = ("sync", "async")


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` that says how to register ``env_id`` when gymnasium does not know it."""
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        namespace = env_id.split("/")[0] if "/" in env_id else None
        hint = f" (e.g. `import {namespace.lower()}` if a package of that name registers the '{namespace}/' namespace)" if namespace else ""
        raise ValueError(
            f"env_id={env_id!r} is not registered with gymnasium ({err}). Register it first with "
            "`gymnasium.register(id=..., entry_point='my_package.module:MyEnv')`, or import the package that "
            f"registers it{hint}; from the CLI, `--data.env_id my_package:MyEnv-v0` imports `my_package` "
            "before looking the id up. You can also pass a callable that returns the env as `env_id`."
        ) from None


class EnvStep(NamedTuple):
    """One vector-env step as tensors on the runner's device (leading dimension ``num_envs``)."""

    obs: Tensor  # observation after the step: the first one of a new episode where one ended
    rewards: Tensor  # float32
    terminated: Tensor  # bool: the MDP reached a terminal state (its value is 0)
    truncated: Tensor  # bool: cut by a time limit (the state still has a value: bootstrap)
    final_obs: Tensor  # the real s_{t+1}: equal to ``obs`` except where an episode ended


class EnvRunner:
    """Steps a gymnasium vector env (same-step autoreset) with torch actions; tracks episodes.

    Attributes: ``obs`` (current observations, raw dtype: float32 for Box, int64 for Discrete),
    ``num_envs``, ``observation_space`` / ``action_space`` (of one env), ``steps`` (env steps taken,
    all envs), ``seed`` (the seed of the last reset).
    """

    def __init__(self, envs: gym.vector.VectorEnv, device: str | torch.device = "cpu") -> None:
        mode = envs.metadata.get("autoreset_mode")
        if mode is not None and mode != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                f"EnvRunner needs a vector env with autoreset_mode=SAME_STEP, got {mode}; build it with "
                "SyncVectorEnv(..., autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)."
            )
        self.envs = envs
        self.num_envs = envs.num_envs
        self.observation_space, self.action_space = envs.single_observation_space, envs.single_action_space
        self.device = torch.device(device)
        self._on_cpu = self.device.type == "cpu"
        self.obs: Tensor | None = None
        self.seed: int | None = None
        self.steps = 0
        self._discrete_actions = isinstance(self.action_space, gym.spaces.Discrete)
        self._action_dtype = self.action_space.dtype
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished_returns: list[float] = []
        self._finished_lengths: list[int] = []

    def to(self, device: str | torch.device) -> EnvRunner:
        self.device = torch.device(device)
        self._on_cpu = self.device.type == "cpu"
        if self.obs is not None:
            self.obs = self.obs.to(self.device)
        return self

    def _tensor(self, x: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if t.dtype == torch.float64:
            t = t.float()
        return t if self._on_cpu else t.to(self.device)  # 4 calls per env step: skip the no-op .to on CPU

    def reset(self, seed: int | None = None) -> Tensor:
        obs, _ = self.envs.reset(seed=seed)
        self.seed = seed
        self.obs = self._tensor(obs)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self.obs

    def step(self, actions: Tensor) -> EnvStep:
        """Step all envs with ``actions`` (``(num_envs, *action_shape)``, in the env's action space)."""
        if self.obs is None:
            raise RuntimeError("EnvRunner.step() before reset(); call env.reset(seed) first.")
        np_actions = actions.detach().cpu().numpy().astype(self._action_dtype, copy=False)
        obs, rewards, terminated, truncated, info = self.envs.step(np_actions)
        self.steps += self.num_envs
        self._episode_return += rewards
        self._episode_length += 1
        done = terminated | truncated
        next_obs = self._tensor(obs)
        final_obs = next_obs
        if done.any():
            final = np.array(obs, copy=True)  # rows of envs that ended get their real last observation
            for i in np.flatnonzero(done):
                final[i] = info["final_obs"][i]
                self._finished_returns.append(float(self._episode_return[i]))
                self._finished_lengths.append(int(self._episode_length[i]))
            self._episode_return[done] = 0.0
            self._episode_length[done] = 0
            final_obs = self._tensor(final)
        self.obs = next_obs
        return EnvStep(
            next_obs,
            self._tensor(rewards.astype(np.float32, copy=False)),
            self._tensor(terminated),
            self._tensor(truncated),
            final_obs,
        )

    def pop_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = (self._finished_returns, self._finished_lengths)
        self._finished_returns, self._finished_lengths = [], []
        return out

    def close(self) -> None:
        self.envs.close()


# ----------------------------------------------------------------------------------- collection
@torch.no_grad()
def step_into_replay(env: EnvRunner, buffer: ReplayBuffer, actions: Tensor, env_actions: Tensor) -> EnvStep:
    """Off-policy: step with ``env_actions`` and store ``(s, actions, r, s'_final, terminated)``.

    ``actions`` is what the learner sees (e.g. DDPG's action in ``[-1, 1]``), ``env_actions`` what the
    env gets. The buffer stores the real final observation and bootstraps through truncation.
    """
    obs = env.obs
    step = env.step(env_actions)
    buffer.add(obs, actions, step.rewards, step.final_obs, step.terminated, step.truncated)
    return step


@torch.no_grad()
def collect_rollout(
    env: EnvRunner,
    buffer: RolloutBuffer,
    act: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    value: Callable[[Tensor], Tensor],
    reward_transform: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    step_values: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
) -> Tensor:
    r"""On-policy: fill ``buffer`` with ``buffer.num_steps`` steps of every env; return ``V(s_T)``.

    ``act(obs) -> (actions, env_actions, log_probs)``: what is stored, what the env gets and
    :math:`\log\pi(a|s)`. ``value(obs)`` is the bootstrap value of an observation (``V(s)``, or
    :math:`E_\pi Q(s, \cdot)`); it is evaluated on the final observations of truncated episodes and on
    ``s_T``. The critic's value of each stored step is ``value(obs)`` or, if given,
    ``step_values(obs, actions)`` (e.g. QAC's ``Q(s, a)``).
    ``reward_transform(rewards, dones)`` (e.g. a return normaliser) changes the stored rewards.

    The step values are computed once for the whole rollout, in one batched forward (together with
    ``V(s_T)``), not per env step: the critic does not change while the rollout is collected, and with
    a few envs and small networks the per-step forward cost more than the env.
    """
    buffer.reset()
    for _ in range(buffer.num_steps):
        obs = env.obs
        actions, env_actions, log_probs = act(obs)
        step = env.step(env_actions)
        rewards = step.rewards
        if reward_transform is not None:
            rewards = reward_transform(rewards, step.terminated | step.truncated)
        final_values = None
        if (step.truncated & ~step.terminated).any():
            final_values = value(step.final_obs)  # time limit: the state still has a value
        buffer.add(obs, actions, log_probs, None, rewards, step.terminated, step.truncated, final_values)
    T, N = buffer.num_steps, buffer.num_envs
    obs = buffer.obs.flatten(0, 1)
    if step_values is None:
        values = value(torch.cat([obs, env.obs.to(obs.dtype)]))
        buffer.set_values(values[: T * N].view(T, N))
        return values[T * N :]
    buffer.set_values(step_values(obs, buffer.actions.flatten(0, 1)).view(T, N))
    return value(env.obs)


# ----------------------------------------------------------------------------------- Lightning glue
def log_rl_metrics(module: L.LightningModule, env: EnvRunner, metrics: dict[str, Any], clock: dict[str, float]) -> None:
    """Log ``metrics`` and the episode statistics since the last call (averaged over all ranks).

    Keys: ``rollout/ep_return``, ``rollout/ep_length``, ``rollout/episodes``, ``time/env_steps``
    (all ranks), ``time/env_steps_per_s``; ``metrics`` as given. They go to the loggers with the
    env-step count as x-axis, and to ``trainer.callback_metrics`` / the progress bar
    (``ep_return`` and ``env_steps``) through ``module.log``. ``clock`` keeps the last call's time and
    step count between calls (a dict owned by the caller). Every rank must call it (it reduces).
    """
    trainer = module.trainer
    returns, lengths = env.pop_episodes()
    stats = torch.tensor([sum(returns), sum(lengths), len(returns)], dtype=torch.float64)
    if trainer.world_size > 1:
        stats = trainer.strategy.reduce(stats.to(module.device), reduce_op="sum").cpu()
    total_steps = int(module.env_steps) * trainer.world_size
    now = time.perf_counter()
    last_time, last_steps = clock.get("time", now), clock.get("steps", total_steps)
    clock.update(time=now, steps=total_steps)
    out: dict[str, float] = {k: float(v) for k, v in metrics.items()}
    out["time/env_steps"] = float(total_steps)
    if now > last_time:
        out["time/env_steps_per_s"] = (total_steps - last_steps) / (now - last_time)
    if stats[2] > 0:
        out["rollout/ep_return"] = float(stats[0] / stats[2])
        out["rollout/ep_length"] = float(stats[1] / stats[2])
        out["rollout/episodes"] = float(stats[2])
    for key, val in out.items():
        module.log(key, val, logger=False, prog_bar=key in ("rollout/ep_return", "time/env_steps"))
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(out, step=total_steps)


def disable_ddp_gradient_sync(trainer: L.Trainer) -> None:
    """Stop DDP's reducer from syncing gradients (the module calls :func:`all_reduce_gradients`).

    DDP expects every parameter to get a gradient in every backward (or ``find_unused_parameters``,
    a graph search per step); a TD3 step without actor update, or several backward passes per
    step, break that contract. Setting ``require_backward_grad_sync = False`` (what
    ``DDP.no_sync()`` does) for the whole run leaves the reducer idle; DDP still broadcasts rank 0's
    weights when it wraps the module. Call it in ``on_train_start`` (the module is wrapped by then).
    """
    from torch.nn.parallel import DistributedDataParallel

    model = getattr(trainer.strategy, "model", None)
    if isinstance(model, DistributedDataParallel):
        model.require_backward_grad_sync = False


def all_reduce_gradients(trainer: L.Trainer, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over all ranks in one collective (no-op on one process).

    Every rank must call it with the same parameters having gradients (the update schedule is the
    same on every rank, since every rank serves the same number of batches).
    """
    if trainer.world_size <= 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = trainer.strategy.reduce(flat, reduce_op="mean")
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])


# ----------------------------------------------------------------------------------- datamodule
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
        for _ in range(len(self)):
            yield next(self._batches)


class GymDataModule(L.LightningDataModule):
    """A gymnasium environment as the data source of an RL LightningModule (see the module docstring).

    Args:
        env_id: a registered gymnasium id (``"Pendulum-v1"``, ``"litzoo/GridWorld-v0"``,
            ``"my_package:MyEnv-v0"`` imports ``my_package`` first), or a callable returning a
            ``gymnasium.Env`` (called with ``env_kwargs`` and, for rendering, ``render_mode``).
        num_envs: parallel envs per process.
        batches_per_epoch: batches the dataloader yields per epoch (identical on every rank).
        seed: base seed of the envs (offset per rank/worker/env, see the module docstring).
        env_kwargs: keyword arguments for ``gymnasium.make`` / the callable.
        max_episode_steps: time limit (``gymnasium.make``'s ``TimeLimit``); ``None`` keeps the env's own.
        vectorization: ``"sync"`` (one process; fastest for cheap envs) or ``"async"`` (a subprocess per env).

    Attributes: ``observation_space`` / ``action_space`` (of one env), ``env`` (the
    :class:`EnvRunner`, after ``setup("fit")``).
    """

    def __init__(
        self,
        env_id: Union[str, Callable[..., gym.Env]] = "Pendulum-v1",
        num_envs: int = 1,
        batches_per_epoch: int = 1000,
        seed: int = 0,
        env_kwargs: Optional[dict[str, Any]] = None,
        max_episode_steps: Optional[int] = None,
        vectorization: str = "sync",
    ) -> None:
        super().__init__()
        for name, value in (("num_envs", num_envs), ("batches_per_epoch", batches_per_epoch)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if max_episode_steps is not None and (int(max_episode_steps) != max_episode_steps or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps={max_episode_steps!r} must be a positive integer or None.")
        if vectorization not in VECTORIZATION:
            raise ValueError(f"vectorization={vectorization!r} is not one of {VECTORIZATION}.")
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
        self.seed, self.env_kwargs = int(seed), dict(env_kwargs or {})
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
        # The envs are stepped with the live policy, so the data must be produced in this process:
        # no workers (Lightning's "few workers" hint does not apply), and a length on purpose.
        warnings.filterwarnings("ignore", message=r".*IterableDataset.*has .__len__. defined.*")
        warnings.filterwarnings("ignore", message=r".*train_dataloader.*does not have many workers.*")
        # The modules log every N env steps themselves, whatever Trainer(log_every_n_steps) says.
        warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging interval.*")
        return DataLoader(_EnvStream(self), batch_size=None, num_workers=0)

    def teardown(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.env is not None:
            self.env.close()
            self.env = None
