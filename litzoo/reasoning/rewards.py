"""Verifier rewards of a batch of responses: each problem scored by its own task's verifier (no Lightning)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from litzoo.reasoning.base import Problem
from litzoo.reasoning.tasks import TASKS, get_task


def score(problems: Sequence[Problem], texts: Sequence[str]) -> Tensor:
    """Verifier rewards ``r(x, y, y*) in {0, 1}`` (malformed answers score 0, never raise)."""
    if len(problems) != len(texts):
        raise ValueError(f"{len(problems)} problems but {len(texts)} responses.")
    tasks = {name: get_task(name) for name in {p.task for p in problems} if name in TASKS}
    return torch.tensor([tasks[p.task].verify(p, t) if p.task in tasks else 0.0 for p, t in zip(problems, texts)])
