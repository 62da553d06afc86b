r"""Which problems an RL iteration trains on: curriculum and prioritised sampling.

Kimi k1.5 (arXiv:2501.12599, Sec. 2.3.4):

* **Curriculum sampling** -- start on easy problems and move to harder ones, so early
  iterations (when the policy solves little) still see reward signal. Here the difficulty
  levels of a task are unlocked one by one over ``curriculum_steps``: at training progress
  ``p in [0, 1]`` the easiest ``1 + floor(p * n_levels)`` levels (capped at ``n_levels``) are
  sampled, each with equal probability, so the easy ones are still revisited.
* **Prioritised sampling** -- track each problem's success rate ``s_i`` and sample problem
  ``i`` with probability proportional to ``1 - s_i``: solved problems fade out, hard ones come
  back. ``s_i = successes_i / attempts_i`` (0 before the first attempt); ``decay < 1`` turns the
  counts into exponentially discounted ones so an early failure is eventually forgotten.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def curriculum_level_weights(difficulties: Sequence[int], progress: float) -> dict[int, float]:
    """Probability of each difficulty level at training progress ``progress`` (see module doc)."""
    levels = sorted(set(difficulties))
    if not levels:
        raise ValueError("difficulties must not be empty.")
    progress = min(max(float(progress), 0.0), 1.0)
    unlocked = min(len(levels), 1 + int(progress * len(levels)))
    return {d: (1.0 / unlocked if i < unlocked else 0.0) for i, d in enumerate(levels)}


class PrioritizedSampler:
    """Sample problem indices with probability proportional to ``(1 - s_i) * base_i``.

    Args:
        num_problems: size of the problem pool.
        decay: multiplies a problem's past counts before each update (1 = plain averages).
        min_weight: floor on ``1 - s_i`` so a solved problem keeps a small chance (0 = exact k1.5).
    """

    def __init__(self, num_problems: int, decay: float = 1.0, min_weight: float = 0.0) -> None:
        if num_problems < 1:
            raise ValueError(f"num_problems={num_problems} must be >= 1.")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay={decay} must be in (0, 1].")
        if not 0.0 <= min_weight <= 1.0:
            raise ValueError(f"min_weight={min_weight} must be in [0, 1].")
        self.decay, self.min_weight = decay, min_weight
        self.attempts = torch.zeros(num_problems, dtype=torch.float64)
        self.successes = torch.zeros(num_problems, dtype=torch.float64)

    @property
    def success_rate(self) -> Tensor:
        return torch.where(self.attempts > 0, self.successes / self.attempts.clamp(min=1e-12), torch.zeros_like(self.attempts))

    def weights(self) -> Tensor:
        """``max(1 - s_i, min_weight)`` for every problem."""
        return (1.0 - self.success_rate).clamp(min=self.min_weight)

    def update(self, problem_ids: Tensor | Sequence[int], success: Tensor | Sequence[float]) -> None:
        """Record one attempt per entry (ids may repeat: ``k`` samples of one problem = ``k`` attempts)."""
        ids = torch.as_tensor(problem_ids, dtype=torch.long).flatten().cpu()
        s = torch.as_tensor(success, dtype=torch.float64).flatten().cpu()
        if ids.shape != s.shape:
            raise ValueError(f"{ids.numel()} problem ids but {s.numel()} success values.")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.attempts.numel()):
            raise ValueError(f"problem ids must be in [0, {self.attempts.numel()}).")
        if self.decay < 1.0:
            seen = torch.unique(ids)
            self.attempts[seen] *= self.decay
            self.successes[seen] *= self.decay
        self.attempts.index_add_(0, ids, torch.ones_like(s))
        self.successes.index_add_(0, ids, s.clamp(0.0, 1.0))

    def sample(self, n: int, generator: torch.Generator | None = None, base_weights: Tensor | None = None,
               replacement: bool = True) -> Tensor:
        """``n`` indices drawn with probability proportional to ``weights() * base_weights``.

        When every weight is 0 (all problems solved, ``min_weight = 0``) it falls back to
        ``base_weights`` alone, so sampling never stalls.
        """
        w = self.weights()
        if base_weights is not None:
            base = torch.as_tensor(base_weights, dtype=torch.float64)
            if base.shape != w.shape:
                raise ValueError(f"base_weights has shape {tuple(base.shape)}, expected {tuple(w.shape)}.")
            w = w * base
        else:
            base = torch.ones_like(w)
        if not (w > 0).any():
            w = base
        if not (w > 0).any():
            raise ValueError("all sampling weights are 0; no problem can be drawn.")
        if not replacement and n > int((w > 0).sum()):
            replacement = True  # fewer candidates than draws: repeats are unavoidable
        return torch.multinomial(w, n, replacement=replacement, generator=generator)

    def state_dict(self) -> dict[str, Tensor]:
        return {"attempts": self.attempts.clone(), "successes": self.successes.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["attempts"].shape != self.attempts.shape:
            raise ValueError(
                f"sampler state is for {state['attempts'].numel()} problems but the pool has {self.attempts.numel()}; "
                "resume with the same datamodule settings (tasks, difficulties, num_train, seed)."
            )
        self.attempts.copy_(state["attempts"])
        self.successes.copy_(state["successes"])
