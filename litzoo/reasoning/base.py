"""Shared pieces of the verifiable reasoning tasks: the `Problem` record, the answer marker and
the `ReasoningTask` interface.

Kimi k1.5 (Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599,
Sec. 2.3) trains on problems ``x`` with a ground truth ``y*`` and a reward model
``r(x, y, y*) in {0, 1}`` that only looks at the final answer of the sampled response ``y``.
Here ``r`` is a rule-based verifier: a task parses the text after the **last** answer marker
``#`` (up to the end of that line) and compares it with the exact answer of its solver.

Every task gives, for one problem:
  - ``generate(difficulty, rng)``  -> ``Problem`` (prompt text + canonical answer + data)
  - ``solve(problem)``             -> the exact answer, computed from ``problem.data``
  - ``verify(problem, response)``  -> 1.0 / 0.0; malformed text scores 0.0 and never raises
  - ``write_trace(problem, rng, p_mistake)`` -> a plan/work/check(/fix) chain of thought
    that ends in ``"#<answer>"``; with probability ``p_mistake`` the work contains one
    deliberate slip which the check catches (``"... no"`` then ``"fix"``) and corrects; with a
    task's ``check_rate < 1`` a trace without a slip leaves out its closing ``chk`` lines with
    probability ``1 - check_rate`` (traces of two lengths: long-CoT data that long2short can shorten)
  - ``write_direct(problem)``      -> ``"#<answer>"`` alone, for a no-CoT baseline

A task implements ``draw`` (``generate`` checks the level and makes the rng first) and
``trace_lines`` (``write_trace`` checks the problem, makes the rng, and writes the lines and the
marked answer); :func:`check_line` writes the ``chk`` lines of their checks.

Text conventions (a char-level model reads them, so they stay short and use a small alphabet):
a prompt ends with ``"="``; a trace (completion) starts with ``"\\n"``; a direct answer
starts with ``"#"``; the model's first completion character thus says "think" or "answer".
"""

from __future__ import annotations

import numbers
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping

ANSWER_MARKER = "#"
# Longest final-answer line a verifier will parse; longer lines are malformed (score 0) so a
# degenerate policy cannot stall training by emitting megabytes of digits (and Python refuses
# int() on strings over 4300 digits anyway).
MAX_ANSWER_CHARS = 1000
# Words a trace writes when its check fails and it corrects the work (see `write_trace`).
CHECK_FAILED = "no"
FIX = "fix"


@dataclass(frozen=True)
class Problem:
    """One problem with a verifiable answer.

    Attributes:
        task: registry name of the task that made it (``"arithmetic"``, ``"max_gap"``, ...).
        difficulty: the task's difficulty level, or ``None`` for a hand-made problem.
        prompt: the text shown to the model, ending with ``"="``.
        answer: the canonical structured answer (``int`` or a tuple of sorted tuples).
        data: the task's inputs (operands, numbers, candidates...) that `solve` reads.
    """

    task: str
    difficulty: int | None
    prompt: str
    answer: Any
    data: Mapping[str, Any] = field(default_factory=dict)


def as_rng(rng: random.Random | int | None) -> random.Random:
    """A `random.Random` from a generator (returned as is), a seed, or ``None`` (fresh seed)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, int):
        return random.Random(rng)
    raise ValueError(
        f"rng must be a random.Random, an int seed or None, got {type(rng).__name__}; "
        "pass e.g. random.Random(0)."
    )


def final_answer_text(response: str) -> str | None:
    """The text after the last ``#`` up to the end of its line, stripped; ``None`` if absent.

    Never raises: anything that is not a string, has no marker, or has an over-long answer
    line gives ``None`` (the verifiers turn that into reward 0).
    """
    if not isinstance(response, str):
        return None
    i = response.rfind(ANSWER_MARKER)
    if i < 0:
        return None
    line = response[i + 1 :].split("\n", 1)[0].strip()
    if len(line) > MAX_ANSWER_CHARS:
        return None
    return line


def check_line(expr: str, got: Any, want: Any) -> str:
    """``chk <expr>=<got> ok``, or ``chk <expr>=<got>!=<want> no`` when the check fails."""
    return f"chk {expr}={got} ok" if got == want else f"chk {expr}={got}!={want} {CHECK_FAILED}"


def is_int(x: Any) -> bool:
    """``x`` is an ``int`` and not a ``bool`` (``True`` is no difficulty level or operand)."""
    return isinstance(x, int) and not isinstance(x, bool)


def parse_int(text: str) -> int | None:
    """``text`` as an int when it is an optional ``-`` then ASCII digits only, else ``None``."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    return int(text)


class ReasoningTask(ABC):
    """A family of problems with exact solver, verifier and trace writer (see module doc)."""

    name: str
    difficulties: range
    check_rate: float = 1.0  # probability that a trace without a slip keeps its closing checks (see write_trace)

    def set_check_rate(self, check_rate: float) -> None:
        """Validate and set ``check_rate`` (the constructors' argument of that name)."""
        if isinstance(check_rate, bool) or not isinstance(check_rate, numbers.Real) or not 0.0 <= check_rate <= 1.0:
            raise ValueError(f"check_rate={check_rate!r} must be a probability in [0, 1] (1: every trace checks).")
        self.check_rate = float(check_rate)

    def check_difficulty(self, difficulty: int) -> None:
        if not is_int(difficulty) or difficulty not in self.difficulties:
            lo, hi = self.difficulties.start, self.difficulties.stop - 1
            raise ValueError(
                f"difficulty={difficulty!r} is not a level of task {self.name!r}; "
                f"allowed: integers {lo}..{hi} (see {type(self).__name__} docstring)."
            )

    def check_problem(self, problem: Problem) -> None:
        if not isinstance(problem, Problem) or problem.task != self.name:
            got = problem.task if isinstance(problem, Problem) else type(problem).__name__
            raise ValueError(
                f"task {self.name!r} got a problem of {got!r}; use get_task(problem.task)."
            )

    def generate(self, difficulty: int, rng: random.Random | int | None = None) -> Problem:
        """A random problem of the given difficulty level."""
        self.check_difficulty(difficulty)
        return self.draw(difficulty, as_rng(rng))

    def draw(self, difficulty: int, rng: random.Random) -> Problem:
        """A random problem of a valid difficulty level (what :meth:`generate` returns).

        Not abstract, so a task written before this hook existed (overriding ``generate`` itself) still works."""
        raise NotImplementedError(f"{type(self).__name__} must implement draw() (or override generate()).")

    @abstractmethod
    def solve(self, problem: Problem) -> Any:
        """The exact answer, computed from ``problem.data`` (not read from ``problem.answer``)."""

    @abstractmethod
    def parse_answer(self, text: str) -> Any | None:
        """The structured answer in a final-answer line (text after ``#``), or ``None``."""

    @abstractmethod
    def format_answer(self, answer: Any) -> str:
        """The canonical text of an answer (what follows ``#`` in traces)."""

    def write_trace(
        self, problem: Problem, rng: random.Random | int | None = None, p_mistake: float = 0.0
    ) -> str:
        """A chain of thought for ``problem`` ending in ``"#" + format_answer(answer)``."""
        self.check_problem(problem)
        rng = as_rng(rng)
        lines, answer = self.trace_lines(problem, rng, p_mistake)
        # A slipped trace always checks (the check is what catches the slip). Drawn only when it can matter,
        # so check_rate=1 leaves the rng stream, and every trace, as it was.
        slipped = any(line == FIX or line.startswith(FIX + " ") for line in lines)
        if self.check_rate < 1.0 and not slipped and rng.random() >= self.check_rate:
            while lines and lines[-1].startswith("chk "):
                lines = lines[:-1]
        return "\n" + "\n".join(lines) + "\n" + ANSWER_MARKER + self.format_answer(answer)

    def trace_lines(self, problem: Problem, rng: random.Random, p_mistake: float) -> tuple[list[str], Any]:
        """The lines of the chain of thought (plan, work, check, fix) and the answer they reach."""
        raise NotImplementedError(f"{type(self).__name__} must implement trace_lines() (or override write_trace()).")

    def answers_equal(self, predicted: Any, answer: Any) -> bool:
        return predicted == answer

    def verify(self, problem: Problem, response: str) -> float:
        """Reward 1.0 when the final answer after the last ``#`` is right, else 0.0.

        Malformed, empty or huge responses score 0.0; this never raises on ``response``.
        """
        self.check_problem(problem)
        line = final_answer_text(response)
        if line is None:
            return 0.0
        predicted = self.parse_answer(line)
        if predicted is None:
            return 0.0
        return 1.0 if self.answers_equal(predicted, problem.answer) else 0.0

    def write_direct(self, problem: Problem) -> str:
        """Only the marked final answer, e.g. ``"#85"`` (the no-CoT baseline's target)."""
        self.check_problem(problem)
        return ANSWER_MARKER + self.format_answer(problem.answer)

    @staticmethod
    def wants_mistake(rng: random.Random, p_mistake: float) -> bool:
        if not 0.0 <= p_mistake <= 1.0:
            raise ValueError(f"p_mistake={p_mistake!r} must be a probability in [0, 1].")
        # Draw only when needed so p_mistake=0 leaves the caller's rng stream untouched.
        return p_mistake > 0.0 and rng.random() < p_mistake
