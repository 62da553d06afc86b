r"""Stepping gymnasium vector envs for learning, no Lightning: the collection every RL method shares.

* :class:`EnvRunner` steps a vector env (same-step autoreset, the real final observation in
  ``info["final_obs"]``) with torch actions and returns torch tensors (:class:`EnvStep`); it keeps
  episode statistics. ``final_obs`` is the real :math:`s_{t+1}` also where an episode ended: the
  observation a TD target bootstraps from when the episode was only *truncated* (``terminated``
  marks the only transitions whose next state has value 0).
* :func:`collect_rollout` (on-policy) and :func:`step_into_replay` (off-policy) fill the
  :mod:`litzoo.rl.buffers`; the buffers apply the termination/truncation rule.
* :func:`check_env_id`: a clear error for an env id gymnasium does not know.
* :meth:`EnvRunner.get_state` / :meth:`~EnvRunner.set_state`: the envs in flight (observations, and each
  env's :func:`litzoo.envs.get_env_state`) for a resume that continues the very same episodes.

The RL modules (:mod:`litzoo.modules`) receive an :class:`EnvRunner` from
:class:`litzoo.datamodules.gym.GymDataModule` in ``generate_batches(env)``; outside Lightning, build
one directly: ``EnvRunner(SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from litzoo.envs import get_env_state, set_env_state  # (importing litzoo.envs registers "litzoo/GridWorld-v0")
from litzoo.rl.buffers import ReplayBuffer, RolloutBuffer


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

    def get_state(self) -> dict[str, Any] | None:
        """What an exact resume needs, in plain types: the current observations and every env's
        :func:`litzoo.envs.get_env_state`. ``None`` where the envs cannot say: an async vector env (its envs
        live in subprocesses) or envs without ``get_state()`` (litzoo's ``GridWorld`` has it)."""
        subs = list(self.envs.envs) if isinstance(self.envs, gym.vector.SyncVectorEnv) else None
        if self.obs is None or subs is None or not all(callable(getattr(s.unwrapped, "get_state", None)) for s in subs):
            return None
        return {"obs": self.obs.cpu(), "envs": [get_env_state(sub) for sub in subs]}

    def set_state(self, state: dict[str, Any]) -> bool:
        """Continue from :meth:`get_state` (after a ``reset``); ``False``, changing nothing, when these are not the
        envs that were saved (another number, observation type or wrapper stack, e.g. another time limit)."""
        current = self.get_state()
        if current is None or len(current["envs"]) != len(state["envs"]):
            return False
        if state["obs"].shape != self.obs.shape or state["obs"].dtype != self.obs.dtype:
            return False
        if any(len(a["time_limits"]) != len(b["time_limits"]) for a, b in zip(current["envs"], state["envs"])):
            return False  # another wrapper stack, e.g. another max_episode_steps
        for sub, env_state in zip(self.envs.envs, state["envs"]):
            set_env_state(sub, env_state)
        self.obs = state["obs"].to(self.device)
        return True

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
