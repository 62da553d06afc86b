"""Registry of the verifiable reasoning tasks (see `litzoo.reasoning.base` for the interface).

``get_task("arithmetic", ops="+")`` builds a task; the keyword options are the task class's
constructor arguments (`ArithmeticTask(ops, check_rate)`, `CombinationSumTask(reuse, check_rate, check_steps)`,
`MaxGapTask(check_rate, levels, check_gaps)`).
The k1.5 benchmark problems are::

    get_task("arithmetic", ops="+").generate(2, rng)       # 2-digit addition
    get_task("max_gap").generate(2, rng)                   # 3-6 integers in 0-99
    get_task("combination_sum").generate(2, rng)           # LC 39, 2-4 candidates in 2-9
"""

from __future__ import annotations

from typing import Any

from litzoo.reasoning.arithmetic import ArithmeticTask
from litzoo.reasoning.base import ReasoningTask
from litzoo.reasoning.combination_sum import CombinationSumTask
from litzoo.reasoning.max_gap import MaxGapTask

TASKS: dict[str, type[ReasoningTask]] = {
    "arithmetic": ArithmeticTask,
    "max_gap": MaxGapTask,
    "combination_sum": CombinationSumTask,
}


def get_task(name: str, **options: Any) -> ReasoningTask:
    """The task registered as ``name``, built with ``options`` (its constructor arguments)."""
    if name not in TASKS:
        raise ValueError(f"task={name!r} is unknown; allowed tasks: {sorted(TASKS)}.")
    try:
        return TASKS[name](**options)
    except TypeError as e:  # an unknown keyword: say which ones the task takes
        raise ValueError(
            f"bad options {options!r} for task {name!r} ({e}); see {TASKS[name].__name__}.__init__."
        ) from None
