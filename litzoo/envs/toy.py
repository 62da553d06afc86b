"""One-step environments whose optimal policy and values are known exactly: sanity checks for RL methods.

Like Stable-Baselines3's ``IdentityEnv``: a method that cannot learn these has a bug, and because every
episode terminates after one step, :math:`Q^*(s, a) = r(s, a)` and :math:`V^*(s) = \\max_a r(s, a)` — the
critic can be compared with the truth, not only the return.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ContextBandit(gym.Env):
    """Observe a context ``c`` (``Discrete(num_contexts)``, uniform), pull one of the arms, get ``rewards[c, a]``.

    Default: 2 contexts x 3 arms with ``rewards = [[1, 0, 0.3], [0, 0.4, 1]]``, so the best arm depends on
    the context (arm 0 for ``c = 0``, arm 2 for ``c = 1``).
    """

    R = np.array([[1.0, 0.0, 0.3], [0.0, 0.4, 1.0]])  # the default rewards[c, a] (an instance may override)

    def __init__(self, rewards: Any = None) -> None:
        rewards = type(self).R if rewards is None else rewards
        self.R = np.asarray(rewards, dtype=np.float64)
        if self.R.ndim != 2 or min(self.R.shape) < 1:
            raise ValueError(f"rewards must be a (contexts, arms) matrix, got shape {self.R.shape}.")
        self.observation_space, self.action_space = spaces.Discrete(self.R.shape[0]), spaces.Discrete(self.R.shape[1])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.c = int(self.np_random.integers(self.R.shape[0]))
        return self.c, {}

    def step(self, action):
        return self.c, float(self.R[self.c, int(action)]), True, False, {}


class ContinuousIdentity(gym.Env):
    """Observe ``s ~ U[-1, 1]^dim``, act ``a`` in ``[-2, 2]^dim``, get ``-||a - s||^2``; the optimal policy is
    ``mu*(s) = s`` and ``Q*(s, a) = -||a - s||^2``."""

    def __init__(self, dim: int = 1) -> None:
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive integer.")
        self.dim = int(dim)
        self.observation_space = spaces.Box(-1.0, 1.0, (self.dim,), np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, (self.dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.s = self.np_random.uniform(-1, 1, self.dim).astype(np.float32)
        return self.s.copy(), {}

    def step(self, action):
        return self.s.copy(), -float(np.sum((np.asarray(action) - self.s) ** 2)), True, False, {}
