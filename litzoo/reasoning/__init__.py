"""Verifiable reasoning tasks (arithmetic, maximum gap, combination sum) and a char-level
tokenizer for a Kimi k1.5-style long-CoT RL fine-tuner. No Lightning here.

The tokenizer (`build_char_tokenizer`, `check_tokenizer_covers`) needs `transformers`; it is
imported on first use so the tasks stay importable with the standard library alone.
"""

from litzoo.reasoning.arithmetic import ArithmeticTask
from litzoo.reasoning.base import ANSWER_MARKER, Problem, ReasoningTask
from litzoo.reasoning.combination_sum import CombinationSumTask, combination_sum
from litzoo.reasoning.max_gap import MaxGapTask, max_gap
from litzoo.reasoning.tasks import TASKS, get_task

__all__ = [
    "ANSWER_MARKER",
    "ArithmeticTask",
    "CombinationSumTask",
    "MaxGapTask",
    "Problem",
    "ReasoningTask",
    "TASKS",
    "build_char_tokenizer",
    "check_tokenizer_covers",
    "combination_sum",
    "get_task",
    "max_gap",
]


def __getattr__(name: str):
    if name in ("build_char_tokenizer", "check_tokenizer_covers", "CHARS"):
        from litzoo.reasoning import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module 'litzoo.reasoning' has no attribute {name!r}")
