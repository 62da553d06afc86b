r"""The losses of PPO and SAC as plain functions of tensors (no networks, no Lightning), so each is tested
against hand-computed values.

**PPO** (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", Eq. 7 and 9). With the ratio
:math:`r_t(\theta) = \pi_\theta(a_t|s_t) / \pi_{\theta_{old}}(a_t|s_t)`,

.. math::  L^{CLIP}(\theta) = \hat{\mathbb E}_t\big[\min\big(r_t \hat A_t,\ \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon)\,\hat A_t\big)\big],

:func:`ppo_clipped_surrogate` returns :math:`-L^{CLIP}` (a loss to minimise), the fraction of clipped
ratios and the KL estimate :math:`\hat{\mathbb E}[(r - 1) - \log r]` (Schulman's low-variance unbiased
estimator of :math:`D_{KL}(\pi_{old}\|\pi_\theta)`, the one SB3 and CleanRL stop on).
:func:`ppo_value_loss` is :math:`(V_\phi(s_t) - \hat R_t)^2`, or with value clipping (OpenAI baselines'
PPO2) :math:`\max\big((V - \hat R)^2, (V_{old} + \mathrm{clip}(V - V_{old}, -\epsilon_V, \epsilon_V) - \hat R)^2\big)`.

**SAC** (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", Eq. 3, 7, 18):

.. math::  y = r + \gamma (1 - d)\big(\min_{e} Q_{\bar\phi_e}(s', a') - \alpha \log\pi(a'|s')\big),\quad a' \sim \pi(\cdot|s')

(:func:`sac_soft_target`), and the temperature loss :math:`J(\alpha) = \mathbb E[-\alpha(\log\pi(a|s) + \bar{\mathcal H})]`
minimised in :math:`\log\alpha` (:func:`sac_temperature_loss`): when the policy's entropy
:math:`-\mathbb E\log\pi` is below the target :math:`\bar{\mathcal H}` the gradient raises :math:`\alpha`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor


class SurrogateResult(NamedTuple):
    loss: Tensor  # -L^CLIP (differentiable)
    clip_fraction: Tensor  # share of samples with |r - 1| > epsilon (no gradient)
    approx_kl: Tensor  # E[(r - 1) - log r] (no gradient)


def ppo_clipped_surrogate(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip_range: float) -> SurrogateResult:
    """PPO's clipped surrogate loss :math:`-L^{CLIP}` of a minibatch (see the module docstring)."""
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    unclipped = advantages * ratio
    clipped = advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = -torch.min(unclipped, clipped).mean()
    with torch.no_grad():
        clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
    return SurrogateResult(loss, clip_fraction, approx_kl)


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip_range_vf: Optional[float] = None) -> Tensor:
    """Mean squared error of the value predictions, pessimistically clipped around ``old_values`` if asked."""
    loss = (values - returns).pow(2)
    if clip_range_vf is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
        loss = torch.max(loss, (clipped - returns).pow(2))
    return loss.mean()


def sac_soft_target(rewards: Tensor, dones: Tensor, next_q: Tensor, next_log_probs: Tensor, alpha: Tensor | float,
                    gamma: float) -> Tensor:
    """:math:`r + \\gamma(1-d)(\\min_e Q'_e(s', a') - \\alpha\\log\\pi(a'|s'))`; ``next_q`` is ``(num_critics, B)``."""
    soft_value = next_q.min(dim=0).values - alpha * next_log_probs
    return rewards + gamma * (1.0 - dones) * soft_value


def sac_temperature_loss(log_alpha: Tensor, log_probs: Tensor, target_entropy: float) -> Tensor:
    """:math:`-\\log\\alpha\\,\\mathbb E[\\log\\pi + \\bar{\\mathcal H}]` (SB3's and the authors' form: the
    gradient in :math:`\\log\\alpha` has the sign of :math:`\\mathcal H(\\pi) - \\bar{\\mathcal H}`)."""
    return -(log_alpha * (log_probs.detach() + target_entropy)).mean()
