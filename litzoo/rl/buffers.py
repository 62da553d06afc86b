r"""Experience storage shared by the RL modules: a replay buffer (off-policy: DQN, DDPG/TD3, QAC)
and a rollout buffer (on-policy: A2C, TRPO, PPO).

**Termination vs truncation** (the rule most home-made RL loops get wrong). A gymnasium step
returns ``terminated`` (the MDP reached a terminal state: its value is 0) and ``truncated`` (the
episode was cut by a time limit: the state still has a value). A TD target must therefore be

.. math::  y_t = r_t + \gamma\, (1 - \mathrm{terminated}_t)\, V(s_{t+1}^{\rm final}),

bootstrapping through truncation from the *real* final observation (not the reset observation a
vector env hands back after an episode ends). Each buffer handles this in one visible place:

* :meth:`ReplayBuffer.add` stores ``dones = terminated`` only, and the caller passes the real final
  observation as ``next_obs`` (with gymnasium's same-step autoreset it is ``info["final_obs"][i]``).
* :meth:`RolloutBuffer.compute_returns_and_advantages` adds :math:`\gamma V(s^{\rm final})` to the reward
  of every truncated (and not terminated) step, as Stable-Baselines3 does, before running GAE.

Vector-env autoreset modes. :class:`RolloutBuffer` assumes **same-step autoreset**
(``gymnasium.vector.AutoresetMode.SAME_STEP``): the observation returned with a done flag is already
the first one of the next episode and the final one is in ``info["final_obs"]``.
:class:`ReplayBuffer` works with both: under gymnasium's default **next-step autoreset** the
observation returned with the done flag *is* the final one (pass it as ``next_obs``), and the next
call to ``step`` is a no-op reset transition that must not be stored: pass ``valid=False`` for
those envs (``valid = ~(terminated | truncated)`` of the previous step).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from litzoo.rl.gae import compute_gae

ArrayLike = Tensor | np.ndarray | Sequence[Any] | float | int | bool


def spec_storage(spec: dict[str, Any]) -> tuple[tuple[int, ...], torch.dtype]:
    """How a buffer stores one element of the space ``spec`` (:func:`litzoo.rl.policy.space_to_spec`): its shape
    and dtype, ``((), torch.long)`` for a ``Discrete`` index, ``(shape, torch.float32)`` otherwise."""
    if spec["type"] == "Discrete":
        return (), torch.long
    return tuple(spec["shape"]), torch.float32


class ReplayBatch(NamedTuple):
    """A uniformly sampled minibatch of transitions; ``dones`` is float (1.0 = terminated)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    dones: Tensor


class ReplayBuffer:
    """Circular replay buffer of preallocated tensors for batched (vector-env) transitions.

    Args:
        capacity: number of transitions kept; the oldest are overwritten first. Each :meth:`add` of
            a vector-env step writes up to ``num_envs`` transitions.
        obs_shape: shape of one observation (``()`` for a discrete state index).
        action_shape: shape of one action (``()`` for a discrete action; use ``torch.long``).
        num_envs: number of parallel envs whose step is added at once.
        device: where the storage lives (and where samples come back).
        obs_dtype, action_dtype: storage dtypes (e.g. ``torch.uint8`` for images).

    Rewards and dones are stored as float32, ``dones = terminated`` (see the module docstring).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer.")
        if int(capacity) != capacity or capacity < num_envs:
            raise ValueError(
                f"capacity={capacity!r} must be an integer >= num_envs={num_envs} (one vector step must fit)."
            )
        self.capacity, self.num_envs = int(capacity), int(num_envs)
        self.obs_shape, self.action_shape = tuple(obs_shape), tuple(action_shape)
        self.device = torch.device(device)
        self.obs = torch.zeros((self.capacity, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((self.capacity, *self.action_shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.dones = torch.zeros(self.capacity, dtype=torch.float32, device=self.device)
        self.pos = 0  # next row to write
        self.size = 0  # rows holding data

    def __len__(self) -> int:
        return self.size

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def add(
        self,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        next_obs: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
        valid: ArrayLike | None = None,
    ) -> None:
        """Store one vector-env step: each argument has a leading ``num_envs`` dimension (it may be
        left out when ``num_envs == 1``).

        ``next_obs`` must be the real observation the step led to, also when the episode ended
        (the final observation, not the reset one). Only ``terminated`` is stored as ``dones``: a
        truncated transition is an ordinary one, so its TD target bootstraps from ``next_obs``.
        ``truncated`` is taken so the call mirrors ``env.step`` and that decision lives here.
        ``valid`` (bool per env, default all true) drops rows, e.g. the no-op step of a
        next-step-autoreset vector env.
        """
        n = self.num_envs
        obs = self._batch(obs, self.obs_shape, self.obs.dtype, "obs")
        next_obs = self._batch(next_obs, self.obs_shape, self.obs.dtype, "next_obs")
        action = self._batch(action, self.action_shape, self.actions.dtype, "action")
        reward = self._batch(reward, (), torch.float32, "reward")
        terminated = self._batch(terminated, (), torch.bool, "terminated")
        self._batch(truncated, (), torch.bool, "truncated")  # shape check only; see docstring
        if valid is not None:
            keep = self._batch(valid, (), torch.bool, "valid")
            obs, next_obs, action, reward, terminated = (x[keep] for x in (obs, next_obs, action, reward, terminated))
            n = int(keep.sum())
        if n == 0:
            return
        # Rows pos..pos+n-1 (mod capacity): a slice unless the write wraps around (cheaper than an index tensor).
        rows: slice | Tensor = slice(self.pos, self.pos + n)
        if self.pos + n > self.capacity:
            rows = (self.pos + torch.arange(n, device=self.device)) % self.capacity
        self.obs[rows] = obs
        self.next_obs[rows] = next_obs
        self.actions[rows] = action
        self.rewards[rows] = reward
        self.dones[rows] = terminated.to(torch.float32)  # terminated only: truncation still bootstraps
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly with replacement (``generator`` makes it reproducible)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer; add transitions first (e.g. warm-up steps).")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
        gen_device = generator.device if generator is not None else "cpu"
        idx = torch.randint(self.size, (int(batch_size),), generator=generator, device=gen_device).to(self.device)
        return ReplayBatch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.dones[idx])

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions and write position, for a checkpoint (only the filled rows are copied)."""
        rows = slice(0, self.size)
        state: dict[str, Any] = {name: getattr(self, name)[rows].clone() for name in self._fields}
        state.update(capacity=self.capacity, pos=self.pos, size=self.size)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"checkpoint buffer has capacity {state['capacity']}, this one {self.capacity}; "
                "create the ReplayBuffer with the same capacity to restore it."
            )
        size = int(state["size"])
        for name in self._fields:
            target, value = getattr(self, name), state[name]
            if tuple(value.shape) != (size, *target.shape[1:]):
                raise ValueError(
                    f"checkpoint {name!r} has shape {tuple(value.shape)}, expected {(size, *target.shape[1:])}; "
                    "obs_shape/action_shape differ from the saved buffer."
                )
            target[:size] = value.to(device=self.device, dtype=target.dtype)
        self.pos, self.size = int(state["pos"]), size

    _fields = ("obs", "actions", "rewards", "next_obs", "dones")

    def _batch(self, x: ArrayLike, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> Tensor:
        return _as_batch(x, self.num_envs, shape, dtype, self.device, name)


class RolloutBatch(NamedTuple):
    """A (mini)batch of flattened rollout steps for an on-policy update."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor


class RolloutBuffer:
    """Fixed-length on-policy rollout of ``num_steps`` steps of ``num_envs`` envs, stored as (T, N, ...).

    Per step, :meth:`add` takes what the agent knew before the step (``obs``, ``actions``,
    ``log_probs``, ``values``) and what ``env.step`` returned (``rewards``, ``terminated``,
    ``truncated``), plus ``final_values = V(final_obs)`` for envs whose episode was truncated.
    ``values`` may be left out (``None``) and given for the whole rollout at once with
    :meth:`set_values` (one batched critic forward instead of one per env step).
    :meth:`compute_returns_and_advantages` then bootstraps the truncated steps and runs GAE;
    :meth:`get` yields flattened (minibatches of) :class:`RolloutBatch`.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        device: str | torch.device = "cpu",
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, value in (("num_steps", num_steps), ("num_envs", num_envs)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        self.num_steps, self.num_envs = int(num_steps), int(num_envs)
        self.obs_shape, self.action_shape = tuple(obs_shape), tuple(action_shape)
        self.device = torch.device(device)
        T, N = self.num_steps, self.num_envs

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros((T, N, *shape), dtype=dtype, device=self.device)

        self.obs = zeros(*self.obs_shape, dtype=obs_dtype)
        self.actions = zeros(*self.action_shape, dtype=action_dtype)
        self.log_probs = zeros()
        self.values = zeros()
        self.rewards = zeros()
        self.terminated = zeros(dtype=torch.bool)
        self.truncated = zeros(dtype=torch.bool)
        self.final_values = zeros()  # V(final_obs) where truncated, else unused
        self.advantages = zeros()
        self.returns = zeros()
        self.step = 0
        self._computed = False
        self._values_missing = False  # some add() had values=None and set_values() has not run since

    @property
    def full(self) -> bool:
        return self.step == self.num_steps

    def reset(self) -> None:
        """Start a new rollout (storage is overwritten, not reallocated)."""
        self.step = 0
        self._computed = False
        self._values_missing = False

    def set_values(self, values: ArrayLike) -> None:
        """The critic's values of all ``(T, N)`` stored steps at once (after ``add(..., values=None)``).

        On-policy methods do not change the critic while they collect a rollout, so one batched
        forward over ``buffer.obs`` after the rollout gives the values a per-step forward would
        have (up to observation-normalisation statistics, which then match the update's).
        """
        values = torch.as_tensor(values).to(device=self.device, dtype=torch.float32)
        if values.shape != self.values.shape:
            raise ValueError(f"values has shape {tuple(values.shape)}; expected (num_steps, num_envs) = "
                             f"{tuple(self.values.shape)}.")
        self.values.copy_(values)
        self._values_missing = False
        self._computed = False

    def add(
        self,
        obs: ArrayLike,
        actions: ArrayLike,
        log_probs: ArrayLike,
        values: ArrayLike | None,
        rewards: ArrayLike,
        terminated: ArrayLike,
        truncated: ArrayLike,
        final_values: ArrayLike | None = None,
    ) -> None:
        """Store step ``t`` for all envs (leading dimension ``num_envs``).

        ``final_values`` is ``V(final_obs)`` per env (entries of envs that were not truncated are
        ignored, NaN included). It is required whenever some env was truncated without terminating:
        silently treating a time limit as a terminal state biases the values. (Pass zeros to choose
        that behaviour deliberately.) ``values=None``: give them later with :meth:`set_values`.
        """
        if self.full:
            raise ValueError(
                f"RolloutBuffer is full ({self.num_steps} steps); call compute_returns_and_advantages/get, then reset()."
            )

        def batch(x: ArrayLike, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> Tensor:
            return _as_batch(x, self.num_envs, shape, dtype, self.device, name)

        t = self.step
        self.obs[t] = batch(obs, self.obs_shape, self.obs.dtype, "obs")
        self.actions[t] = batch(actions, self.action_shape, self.actions.dtype, "actions")
        self.log_probs[t] = batch(log_probs, (), torch.float32, "log_probs")
        if values is None:
            self._values_missing = True
        else:
            self.values[t] = batch(values, (), torch.float32, "values")
        self.rewards[t] = batch(rewards, (), torch.float32, "rewards")
        terminated = self.terminated[t] = batch(terminated, (), torch.bool, "terminated")
        truncated = self.truncated[t] = batch(truncated, (), torch.bool, "truncated")
        if final_values is None:
            if truncated.any() and (truncated & ~terminated).any():
                needs_bootstrap = truncated & ~terminated
                raise ValueError(
                    f"envs {needs_bootstrap.nonzero().flatten().tolist()} were truncated, so pass "
                    "final_values = V(final_obs) (the critic on info['final_obs']) to bootstrap them."
                )
            self.final_values[t] = 0.0
        else:
            final = batch(final_values, (), torch.float32, "final_values")
            self.final_values[t] = torch.where(truncated & ~terminated, final, torch.zeros_like(final))
        self.step += 1
        self._computed = False

    @torch.no_grad()
    def compute_returns_and_advantages(
        self, last_values: ArrayLike, gamma: float, gae_lambda: float
    ) -> tuple[Tensor, Tensor]:
        """Bootstrap truncated steps, then GAE; returns and stores ``(advantages, returns)`` of shape (T, N).

        ``last_values`` is ``V(s_T)`` of the observation after the last step (ignored for envs whose
        last step ended an episode).
        """
        if not self.full:
            raise ValueError(f"RolloutBuffer holds {self.step}/{self.num_steps} steps; fill it before computing returns.")
        if self._values_missing:
            raise ValueError("some steps were added with values=None; call set_values(values) with the critic's "
                             "(num_steps, num_envs) values of buffer.obs first.")
        last_values = _as_batch(last_values, self.num_envs, (), torch.float32, self.device, "last_values")
        # The one place truncation is handled: a time limit is not a terminal state, so the cut-off
        # step gets r_t + gamma * V(final_obs) (SB3's rule); GAE then cuts the trace there as usual.
        bootstrap = self.truncated & ~self.terminated
        rewards = torch.where(bootstrap, self.rewards + gamma * self.final_values, self.rewards)
        ended = self.terminated | self.truncated  # the trace stops at any episode end
        # compute_gae wants dones[t] = "s_t starts a new episode" = the previous step ended one.
        episode_starts = torch.cat([torch.zeros_like(ended[:1]), ended[:-1]])
        self.advantages, self.returns = compute_gae(
            rewards, self.values, episode_starts, last_values, ended[-1], gamma, gae_lambda
        )
        self._computed = True
        return self.advantages, self.returns

    def get(self, batch_size: int | None = None, generator: torch.Generator | None = None) -> Iterator[RolloutBatch]:
        """Yield the T*N steps flattened: all at once in time-major order (``batch_size=None``), or as
        shuffled minibatches of ``batch_size`` (the last one may be smaller)."""
        if not self._computed:
            raise ValueError("call compute_returns_and_advantages(last_values, gamma, gae_lambda) before get().")
        total = self.num_steps * self.num_envs
        flat = RolloutBatch(
            self.obs.reshape(total, *self.obs_shape),
            self.actions.reshape(total, *self.action_shape),
            self.log_probs.reshape(total),
            self.values.reshape(total),
            self.advantages.reshape(total),
            self.returns.reshape(total),
        )
        if batch_size is None:
            yield flat
            return
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer or None (one full batch).")
        for _, idx in shuffled_minibatch_indices(total, int(batch_size), 1, generator, self.device):
            yield RolloutBatch(*(x[idx] for x in flat))


def shuffled_minibatch_indices(
    total: int, batch_size: int, n_epochs: int = 1, generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, Tensor]]:
    """``(epoch, indices)`` of ``n_epochs`` passes over ``total`` samples: each pass one fresh ``randperm`` cut
    into minibatches of ``batch_size`` in order (the last one smaller when ``batch_size`` does not divide
    ``total``), so every sample is used once per epoch. The permutation is drawn on ``generator``'s device
    and moved to ``device`` (the same stream on CPU and GPU). PPO's epochs, ``RolloutBuffer.get``'s shuffle."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    gen_device = generator.device if generator is not None else "cpu"
    for epoch in range(int(n_epochs)):
        order = torch.randperm(int(total), generator=generator, device=gen_device).to(device)
        for start in range(0, int(total), int(batch_size)):
            yield epoch, order[start : start + int(batch_size)]


def _as_batch(
    x: ArrayLike, num_envs: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, name: str
) -> Tensor:
    """``x`` as a (num_envs, *shape) tensor; a missing leading dim is added when num_envs == 1."""
    if isinstance(x, Tensor) and x.dtype == dtype and x.device == device and x.shape == (num_envs, *shape):
        return x  # the per-env-step case (collect_rollout, step_into_replay): nothing to convert
    t = torch.as_tensor(x).to(device=device, dtype=dtype)
    if tuple(t.shape) == (num_envs, *shape):
        return t
    if num_envs == 1 and tuple(t.shape) == shape:
        return t.unsqueeze(0)
    raise ValueError(
        f"{name} has shape {tuple(t.shape)}; expected (num_envs, *shape) = {(num_envs, *shape)}."
    )
