"""Per task and difficulty metrics of sampled responses (pass@1, pass@k, length), summable over ranks.

No Lightning here: :meth:`LevelMeter.summarize` takes the cross-rank reduction as a function, and the
causal-LM base (:class:`~litzoo.bases.causal_lm.CausalLMModule`) logs the result.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from litzoo.reasoning.base import Problem


def level_key(problem: Problem) -> str:
    """``"<task>_d<difficulty>"``: the name metrics are logged under per task and difficulty."""
    return _key(problem.task, problem.difficulty)


def level_keys(levels: Iterable[tuple[str, int]]) -> list[str]:
    """:func:`level_key` of each ``(task, difficulty)`` level, e.g. a datamodule's ``levels``."""
    return [_key(task, difficulty) for task, difficulty in levels]


def _key(task: str, difficulty: int | None) -> str:
    return f"{task}_d{difficulty}"


class LevelMeter:
    """Sums of per-response metrics, per task and difficulty, for pass@1 / pass@k / length logs.

    ``add(keys, correct=..., length=...)`` accumulates; ``table(keys)`` returns a (len(keys),
    1 + len(metrics)) tensor of [count, sums...] in a fixed order, ready to be summed over ranks.
    """

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = tuple(metrics)
        self.sums: dict[str, list[float]] = {}

    def add(self, keys: Sequence[str], **values: Tensor | Sequence[float]) -> None:
        if set(values) != set(self.metrics):
            raise ValueError(f"LevelMeter.add needs exactly the metrics {self.metrics}, got {sorted(values)}.")
        cols = [torch.as_tensor(values[m], dtype=torch.float64).flatten().tolist() for m in self.metrics]
        for i, key in enumerate(keys):
            row = self.sums.setdefault(key, [0.0] * (1 + len(self.metrics)))
            row[0] += 1
            for j, col in enumerate(cols):
                row[1 + j] += col[i]

    def table(self, keys: Sequence[str]) -> Tensor:
        rows = [self.sums.get(k, [0.0] * (1 + len(self.metrics))) for k in keys]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 1 + len(self.metrics))

    def reset(self) -> None:
        self.sums.clear()

    def summarize(
        self, keys: Sequence[str] | None = None, reduce: Callable[[Tensor], Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Means over everything and per key, then :meth:`reset`: ``{metric: mean, "metric/key": mean}``.

        ``keys`` fixes the row order (it must be the same on every rank: e.g. the datamodule's levels);
        ``reduce`` sums the table over ranks (e.g. ``lambda t: module.all_gather(t).sum(0)``).
        Returns ``{}`` when nothing was added anywhere.
        """
        keys = list(keys) if keys else sorted(self.sums)
        table = self.table(keys)
        if reduce is not None:
            table = reduce(table)
        self.reset()
        count = table[:, 0].sum()
        if count == 0:
            return {}
        out = {m: table[:, 1 + j].sum() / count for j, m in enumerate(self.metrics)}
        for key, row in zip(keys, table):
            if row[0] > 0:
                out.update({f"{m}/{key}": row[1 + j] / row[0] for j, m in enumerate(self.metrics)})
        return out
