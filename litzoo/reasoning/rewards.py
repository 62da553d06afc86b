"""Verifier rewards of a batch of responses: each problem scored by its own task's verifier (no Lightning).

A problem of a registered task (:data:`~litzoo.reasoning.tasks.TASKS`) is scored by that task; a problem read from
a user's table carries its verifier's name or import path in ``problem.data["verifier"]``
(:mod:`litzoo.reasoning.verifiers`) and is scored by it against ``problem.answer``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from litzoo.reasoning.base import Problem
from litzoo.reasoning.tasks import TASKS, get_task
from litzoo.reasoning.verifiers import verify


def score(problems: Sequence[Problem], texts: Sequence[str]) -> Tensor:
    """Verifier rewards ``r(x, y, y*) in [0, 1]`` (malformed answers score 0, never raise)."""
    if len(problems) != len(texts):
        raise ValueError(f"{len(problems)} problems but {len(texts)} responses.")
    tasks = {name: get_task(name) for name in {p.task for p in problems} if name in TASKS}

    def one(p: Problem, text: str) -> float:
        if p.task in tasks:
            return tasks[p.task].verify(p, text)
        spec = p.data.get("verifier") if isinstance(p.data, dict) else None
        return verify(spec, text, p.answer) if spec is not None else 0.0

    return torch.tensor([one(p, t) for p, t in zip(problems, texts)], dtype=torch.float32)
