r"""Generalized advantage estimation (GAE).

Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous Control Using Generalized
Advantage Estimation", ICLR 2016 (arXiv:1506.02438), Eq. 16:

.. math::

    \delta_t = r_t + \gamma V(s_{t+1}) - V(s_t), \qquad
    \hat A_t^{\mathrm{GAE}(\gamma,\lambda)} = \sum_{l=0}^{\infty} (\gamma\lambda)^l \delta_{t+l}
                                         = \delta_t + \gamma\lambda \hat A_{t+1},

with the sum cut at the end of an episode (no bootstrapping across it) and at the end of the rollout
(where :math:`V(s_T)` = ``last_values`` bootstraps). The value targets are
:math:`\hat R_t = \hat A_t + V(s_t)` (the :math:`\lambda`-return). Special cases:

* ``gae_lambda = 0``: :math:`\hat A_t = \delta_t`, the TD(0) error; :math:`\hat R_t = r_t + \gamma V(s_{t+1})`.
* ``gae_lambda = 1``: :math:`\hat A_t = \sum_l \gamma^l r_{t+l} + \gamma^{n} V(s_{t+n}) - V(s_t)`, the
  n-step (Monte-Carlo within the rollout) advantage; :math:`\hat R_t` is the bootstrapped discounted
  return used by A2C (Mnih et al. 2016).

**Done convention** (CleanRL's ``dones``, SB3's ``episode_starts``): ``dones[t] = 1`` when the
observation ``s_t`` is the *first* of a new episode, i.e. the previous step ended one; ``last_dones``
says the same of ``s_T``, the observation after the last stored step. So step ``t`` is cut when
``dones[t+1]`` (``last_dones`` for ``t = T-1``) is set; ``dones[0]`` is never used. This is what a
vector env with same-step autoreset produces. Truncated episodes are cut here too: bootstrap them by
adding :math:`\gamma V(s_{\rm final})` to their last reward first (:class:`litzoo.rl.RolloutBuffer`
does it in one place).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    last_values: Tensor,
    last_dones: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE advantages and lambda-returns (Schulman et al. 2016), computed without gradients.

    Args:
        rewards: ``r_t``, shape (T, N) (T steps of N parallel envs; any trailing batch shape works).
        values: ``V(s_t)``, shape (T, N).
        dones: 1/True where ``s_t`` starts a new episode, shape (T, N) (see the module docstring).
        last_values: ``V(s_T)`` for the observation after the last step, shape (N,).
        last_dones: 1/True where ``s_T`` starts a new episode, shape (N,).
        gamma: discount factor in [0, 1].
        gae_lambda: GAE's lambda in [0, 1]; 0 gives TD(0) errors, 1 gives n-step advantages.

    Returns:
        ``(advantages, returns)``, both shaped like ``rewards``; ``returns = advantages + values``.
    """
    if rewards.ndim < 1 or values.shape != rewards.shape or dones.shape != rewards.shape:
        raise ValueError(
            f"rewards, values and dones must share one (T, N) shape; got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)} and {tuple(dones.shape)}."
        )
    if last_values.shape != rewards.shape[1:] or last_dones.shape != rewards.shape[1:]:
        raise ValueError(
            f"last_values and last_dones must have shape {tuple(rewards.shape[1:])} (one per env); got "
            f"{tuple(last_values.shape)} and {tuple(last_dones.shape)}."
        )
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma={gamma!r} must be in [0, 1].")
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda={gae_lambda!r} must be in [0, 1] (0: TD(0), 1: n-step returns).")

    # The recursion runs in numpy on the host: T small steps of a few ops each cost ~1 us per op there
    # and ~3 us as torch CPU ops (SB3 does the same); rollouts are small, so a GPU round trip is cheap.
    dtype = rewards.dtype if rewards.dtype in (torch.float32, torch.float64) else torch.float32  # numpy has no bf16

    def host(x: Tensor) -> np.ndarray:
        return x.detach().to(dtype).cpu().numpy()

    r, v = host(rewards), host(values)
    next_values = np.concatenate([v[1:], host(last_values)[None]])
    # 1 while s_{t+1} still belongs to s_t's episode; 0 cuts both the bootstrap and the trace.
    ends = np.concatenate([dones[1:].detach().cpu().numpy(), last_dones.detach().cpu().numpy()[None]])
    next_nonterminal = (1 - ends.astype(r.dtype)).astype(r.dtype)
    deltas = r + r.dtype.type(gamma) * next_values * next_nonterminal - v
    trace = r.dtype.type(gamma * gae_lambda) * next_nonterminal

    advantages = np.empty_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in range(r.shape[0] - 1, -1, -1):
        running = deltas[t] + trace[t] * running
        advantages[t] = running
    out = torch.from_numpy(advantages).to(rewards.device)
    return out, out + values.to(dtype)
