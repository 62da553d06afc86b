r"""Loss pieces of Kimi k1.5 policy optimisation, its length penalty, DAPO's overlong punishment, and DPO.

Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599, Sec. 2.3.
For a problem ``x`` with ``k`` responses ``y_1..y_k`` sampled from the reference policy
``pi_ref`` (the policy at the start of the current iteration), rewards ``r_j`` and their mean
``r_bar = (1/k) sum_j r_j``, online mirror descent with a relative-entropy term gives the
surrogate loss (no value network: ``r_bar`` is the baseline)

    L(theta) = (1/k) sum_j [ -(r_j - r_bar) * log pi_theta(y_j|x)
                             + (tau/2) * (log pi_theta(y_j|x) - log pi_ref(y_j|x))^2 ],

averaged over the problems of a batch. Its gradient at ``tau = 0`` is REINFORCE with the mean
reward as baseline; the squared log-ratio keeps ``pi_theta`` near ``pi_ref`` and vanishes, with
its gradient, at ``pi_theta = pi_ref``.

Length penalty (Sec. 2.3.3), against "overthinking": with ``len_i`` the length of response ``i``
and ``min_len``/``max_len`` over the ``k`` responses of the problem,

    lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)
    len_reward_i = lambda_i              if y_i is correct
                 = min(0, lambda_i)      otherwise,

and ``len_reward = 0`` for all ``i`` when ``max_len = min_len``. Short correct answers gain up to
+0.5, long ones lose up to -0.5, and a wrong answer is never rewarded for being short.

Soft overlong punishment (Yu et al. 2025, "DAPO", arXiv:2503.14476, eq. 13), a length-aware reward
for responses near the budget ``L_max`` with a punishment interval of ``L_cache`` tokens:

    R_length(y) = 0                                   if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
                = -1                                   if |y| > L_max.

Unlike the k1.5 penalty it does not compare the k responses: it only punishes those that run into
the budget (a cut response scores -1 whether or not its answer was right).

DPO (Rafailov et al. 2023, "Direct Preference Optimization", arXiv:2305.18290), used by
long2short (Sec. 2.4) on (short correct, long) pairs:

    L_DPO = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def length_penalty(lengths: Tensor, correct: Tensor) -> Tensor:
    """Per-response length reward of Sec. 2.3.3 for the ``k`` responses of each problem.

    Args:
        lengths: (..., k) response lengths (tokens).
        correct: (..., k) 1/True where the verifier accepted the answer.

    Returns:
        (..., k) float ``len_reward`` (0 for a group whose lengths are all equal).
    """
    if lengths.shape != correct.shape:
        raise ValueError(f"lengths {tuple(lengths.shape)} and correct {tuple(correct.shape)} must have one shape.")
    lengths = lengths.double()
    min_len = lengths.min(-1, keepdim=True).values
    max_len = lengths.max(-1, keepdim=True).values
    span = max_len - min_len
    lam = 0.5 - (lengths - min_len) / span.clamp(min=1e-12)
    reward = torch.where(correct.bool(), lam, lam.clamp(max=0.0))
    return torch.where(span > 0, reward, torch.zeros_like(reward)).float()


def soft_overlong_punishment(lengths: Tensor, max_len: int, cache: int) -> Tensor:
    """DAPO's ``R_length`` (eq. 13, module docstring) of each response length (tokens, incl. ``eos``).

    Args:
        lengths: (...) response lengths ``|y|``.
        max_len: ``L_max``, the response budget.
        cache: ``L_cache``, the punishment interval below it, in ``[1, max_len]``.

    Returns:
        (...) float rewards in ``[-1, 0]``.
    """
    if not 1 <= cache <= max_len:
        raise ValueError(f"cache={cache} must be in [1, max_len={max_len}] (the punished tokens below the budget).")
    free = max_len - cache  # L_max - L_cache
    lengths = lengths.double()
    ramp = (free - lengths) / cache
    beyond = torch.where(lengths <= max_len, ramp, -torch.ones_like(ramp))
    return torch.where(lengths <= free, torch.zeros_like(ramp), beyond).float()


def kimi_policy_loss(log_probs: Tensor, ref_log_probs: Tensor, rewards: Tensor, tau: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The k1.5 surrogate loss (module docstring), averaged over problems.

    Args:
        log_probs: (P, k) ``log pi_theta(y_j|x)`` with gradient (sums over each response's trained tokens).
        ref_log_probs: (P, k) ``log pi_ref(y_j|x)`` of the same tokens (no gradient needed).
        rewards: (P, k) rewards ``r_j`` (verifier reward plus any length reward).
        tau: weight of the squared log-ratio (``tau = 0``: REINFORCE with mean baseline).

    Returns:
        ``(loss, parts)`` with ``parts["pg"]`` (policy-gradient term), ``parts["log_ratio_sq"]``
        (mean squared log-ratio) and ``parts["advantages"]`` (P, k) ``r_j - r_bar``.
    """
    if not (log_probs.shape == ref_log_probs.shape == rewards.shape) or log_probs.ndim != 2:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)}, ref_log_probs {tuple(ref_log_probs.shape)} and rewards "
            f"{tuple(rewards.shape)} must all be (problems, k)."
        )
    if tau < 0:
        raise ValueError(f"tau={tau} must be >= 0.")
    rewards = rewards.to(log_probs.dtype)
    advantages = rewards - rewards.mean(-1, keepdim=True)
    pg = -(advantages.detach() * log_probs).mean(-1)
    log_ratio = log_probs - ref_log_probs.detach().to(log_probs.dtype)
    sq = (log_ratio**2).mean(-1)
    loss = (pg + 0.5 * tau * sq).mean()
    return loss, {"pg": pg.mean().detach(), "log_ratio_sq": sq.mean().detach(), "advantages": advantages.detach()}


def dpo_loss(
    chosen_log_probs: Tensor,
    rejected_log_probs: Tensor,
    ref_chosen_log_probs: Tensor,
    ref_rejected_log_probs: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO loss (module docstring), mean over pairs; ``parts["accuracy"]`` = share of pairs with
    a positive implicit reward margin, ``parts["margin"]`` its mean."""
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0.")
    margin = beta * (
        (chosen_log_probs - ref_chosen_log_probs.detach()) - (rejected_log_probs - ref_rejected_log_probs.detach())
    )
    loss = -F.logsigmoid(margin).mean()
    return loss, {"margin": margin.mean().detach(), "accuracy": (margin > 0).float().mean().detach()}


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """``sum_t values[..., t] * mask[..., t]``: a sequence log-prob from per-token log-probs."""
    return (values * mask.to(values.dtype)).sum(-1)
