"""Combination sum (LeetCode 39 and 40) as a verifiable reasoning task.

Find every multiset of candidates summing to ``target``:
  - ``reuse=True``  (LC 39): distinct positive candidates, each usable any number of times;
  - ``reuse=False`` (LC 40): candidates may repeat, each list entry used at most once, and
    equal combinations are reported once.

Solver: backtracking over the **sorted** candidates with a start index (a combination is
built in non-decreasing index order, so each multiset is generated once). At a node with
remainder ``r`` it tries ``c_i`` for ``i >= start``; it stops at the first ``c_i > r``
(sorting makes every later candidate too large), recurses from ``i`` (LC 39, reuse) or
``i + 1`` (LC 40), and, for LC 40, skips ``c_i == c_{i-1}`` when ``i > start`` (the equal
candidate at the same depth would rebuild the same combinations).

Difficulty levels (``k`` candidates, values, target):

    reuse=True  (LC 39, distinct)          reuse=False (LC 40, repeats allowed)
    level 1: k 2-3, 2-6,  target 2-8       k 3-4, 1-6,  target 3-8
    level 2: k 2-4, 2-9,  target 4-12      k 4-6, 1-9,  target 4-12
    level 3: k 3-5, 2-12, target 6-16      k 5-8, 1-12, target 6-16
Level 2 with ``reuse=True`` is the k1.5 benchmark.

Prompt ``"combsum 2 3 6 7 target 7="`` (LC 40: ``"combsum once 1 1 2 5 target 8="``).
Answer: combinations as a sorted tuple of non-decreasing tuples; written
``"2 2 3;7"`` (numbers by spaces, combinations by ``;``) or ``"none"``. The verifier
compares as multisets: order inside and across combinations is free, a missing, extra or
repeated combination is wrong.

The trace is the search itself, one line per tried candidate: the path (the candidates chosen
so far, the tried one last), then the subtraction that tries it, ``<R>-<c>=<r>`` (``R`` the
remainder before it), then ``ok`` (found), ``x`` (dead end: the next allowed candidate is
larger than ``r``) or nothing (its children follow); LC 40 adds ``<path> <c> dup`` for a
skipped duplicate. The path and ``R`` are restated on every line so that each step is a
local operation for a small transformer: a child copies the line above and appends, a
sibling copies it and swaps the last candidate, the subtraction has both operands right
before it, and the checks and the answer copy the ``ok`` paths. Then each found combination
is checked by adding it up. A deliberate slip writes a dead end as ``=0 ok``; its check fails
and the trace drops it (``fix drop ...``)::

    sort 2 3 6 7
    2 7-2=5
    2 2 5-2=3
    2 2 2 3-2=1 x
    2 2 3 3-3=0 ok
    2 3 5-3=2 x
    3 7-3=4
    3 3 4-3=1 x
    6 7-6=1 x
    7 7-7=0 ok
    chk 2+2+3=7 ok
    chk 7=7 ok
    #2 2 3;7

``CombinationSumTask(check_steps=True)`` also double-checks every subtraction of the search by adding it back
(``chk 1+2=3 ok`` for ``2 2 2 3-2=1 x``: remainder plus candidate gives ``R``), one line per subtraction line in
order (LC 40's ``dup`` lines have none), before the closing checks: long-CoT data whose checks are about half of a
level-2 trace (194 tokens on average with them, 95 without), which ``check_rate < 1`` leaves out of some clean
traces (for long2short). A slipped line fails its own add-back line (``chk 0+2=2!=3 no``) and its combination's
sum. ``none found`` is written as soon as it is known: right after the search when it found nothing, after the
``fix`` lines when they dropped everything.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from litzoo.reasoning.base import FIX, Problem, ReasoningTask, check_line, is_int

Combinations = tuple[tuple[int, ...], ...]
Event = tuple[int, int, int, str, tuple[int, ...]]  # (depth, c, remainder, kind, path)

# level -> (min count, max count, min value, max value, min target, max target)
LEVELS_REUSE: dict[int, tuple[int, int, int, int, int, int]] = {
    1: (2, 3, 2, 6, 2, 8),
    2: (2, 4, 2, 9, 4, 12),
    3: (3, 5, 2, 12, 6, 16),
}
LEVELS_ONCE: dict[int, tuple[int, int, int, int, int, int]] = {
    1: (3, 4, 1, 6, 3, 8),
    2: (4, 6, 1, 9, 4, 12),
    3: (5, 8, 1, 12, 6, 16),
}
NONE = "none"


def search(candidates: Sequence[int], target: int, reuse: bool) -> Iterator[Event]:
    """The backtracking search as events ``(depth, c, remainder, kind, path)``.

    ``kind`` is ``"ok"`` (path sums to target), ``"x"`` (dead end), ``"try"`` (children
    follow) or ``"dup"`` (LC 40 duplicate skipped; path excludes it). ``candidates`` must be
    sorted ascending and positive.
    """
    c, path = list(candidates), []

    def rec(start: int, rem: int, depth: int) -> Iterator[Event]:
        for i in range(start, len(c)):
            if c[i] > rem:
                break  # sorted: every later candidate is too large as well
            if not reuse and i > start and c[i] == c[i - 1]:
                yield depth, c[i], rem, "dup", tuple(path)
                continue
            path.append(c[i])
            r, nxt = rem - c[i], (i if reuse else i + 1)
            if r == 0:
                yield depth, c[i], r, "ok", tuple(path)
            elif nxt >= len(c) or c[nxt] > r:
                yield depth, c[i], r, "x", tuple(path)
            else:
                yield depth, c[i], r, "try", tuple(path)
                yield from rec(nxt, r, depth + 1)
            path.pop()

    yield from rec(0, target, 0)


def combination_sum(candidates: Sequence[int], target: int, reuse: bool = True) -> Combinations:
    """All combinations summing to ``target`` (LC 39 if ``reuse`` else LC 40), canonical order.

    Candidates must be positive (a 0 would make reuse loop forever); with ``reuse`` repeated
    values are merged, since unlimited copies of one value are the same choice.
    """
    if not all(is_int(x) and x >= 1 for x in candidates):
        raise ValueError(f"candidates={tuple(candidates)!r} must all be positive ints.")
    cands = sorted(set(candidates)) if reuse else sorted(candidates)
    found = [p for _, _, _, kind, p in search(cands, target, reuse) if kind == "ok"]
    return tuple(sorted(found))


class CombinationSumTask(ReasoningTask):
    """Combination sum, LC 39 (``reuse=True``) or LC 40 (``reuse=False``); see module doc. ``check_rate``: probability
    that a trace without a slip writes its closing ``chk`` lines (``ReasoningTask.write_trace``). ``check_steps``:
    the closing checks also add every search subtraction back (``chk 1+2=3 ok``, one line per subtraction, before
    the combinations' sums) -- the redundant double-checking of a long chain of thought, about half of a level-2
    trace; with ``check_rate < 1`` a clean trace leaves them out with the other ``chk`` lines (data long2short can
    shorten)."""

    name = "combination_sum"
    difficulties = range(1, 4)

    def __init__(self, reuse: bool = True, check_rate: float = 1.0, check_steps: bool = False) -> None:
        self.reuse = bool(reuse)
        self.set_check_rate(check_rate)
        if not isinstance(check_steps, bool):
            raise ValueError(f"check_steps={check_steps!r} must be True or False (True: every search subtraction "
                             "is checked by adding it back, one chk line per subtraction).")
        self.check_steps = check_steps

    def make_problem(
        self, candidates: Sequence[int], target: int, difficulty: int | None = None
    ) -> Problem:
        """A problem from explicit positive candidates (distinct when ``reuse``) and target."""
        candidates = tuple(candidates)
        if not candidates or not all(is_int(x) and x >= 1 for x in candidates):
            raise ValueError(
                f"candidates={candidates!r} must be a non-empty sequence of positive ints."
            )
        if self.reuse and len(set(candidates)) != len(candidates):
            raise ValueError(
                f"candidates={candidates!r} repeat a value, which LC 39 (reuse=True) forbids; "
                "pass distinct values or use CombinationSumTask(reuse=False) (LC 40)."
            )
        if not is_int(target) or target < 1:
            raise ValueError(f"target={target!r} must be a positive int.")
        head = "combsum " if self.reuse else "combsum once "
        prompt = head + " ".join(map(str, candidates)) + f" target {target}="
        data = {"candidates": candidates, "target": target, "reuse": self.reuse}
        answer = combination_sum(candidates, target, self.reuse)
        return Problem(self.name, difficulty, prompt, answer, data)

    def draw(self, difficulty: int, rng: random.Random) -> Problem:
        levels = LEVELS_REUSE if self.reuse else LEVELS_ONCE
        k_lo, k_hi, v_lo, v_hi, t_lo, t_hi = levels[difficulty]
        k = rng.randint(k_lo, k_hi)
        if self.reuse:
            candidates = rng.sample(range(v_lo, v_hi + 1), k)
        else:
            candidates = [rng.randint(v_lo, v_hi) for _ in range(k)]
        return self.make_problem(candidates, rng.randint(t_lo, t_hi), difficulty)

    def solve(self, problem: Problem) -> Combinations:
        self.check_problem(problem)
        d = problem.data
        return combination_sum(d["candidates"], d["target"], d["reuse"])

    def parse_answer(self, text: str) -> Combinations | None:
        """``"none"`` -> ``()``; ``"2 2 3;7"`` -> ``((2, 2, 3), (7,))``; repeats are kept so a
        repeated combination fails the comparison; anything else -> ``None``."""
        if text == NONE:
            return ()
        combos = []
        for part in text.split(";"):
            tokens = part.split()
            if not tokens or not all(t.isascii() and t.isdigit() and len(t) <= 18 for t in tokens):
                return None
            combos.append(tuple(sorted(int(t) for t in tokens)))
        return tuple(sorted(combos))

    def format_answer(self, answer: Combinations) -> str:
        return ";".join(" ".join(map(str, combo)) for combo in answer) if answer else NONE

    def trace_lines(self, problem: Problem, rng: random.Random, p_mistake: float) -> tuple[list[str], Combinations]:
        d = problem.data
        cands, target = sorted(d["candidates"]), d["target"]
        events = list(search(cands, target, d["reuse"]))
        dead = [j for j, e in enumerate(events) if e[3] == "x"]
        mistake = self.wants_mistake(rng, p_mistake)
        slip = rng.choice(dead) if mistake and dead else -1  # no dead end: nothing to slip on
        lines, found, added_back = ["sort " + " ".join(map(str, cands))], [], []
        for j, (depth, c, r, kind, path) in enumerate(events):
            if kind == "dup":  # path excludes the skipped candidate
                lines.append(" ".join(map(str, path + (c,))) + " dup")
                continue
            head = f"{' '.join(map(str, path))} {r + c}-{c}="
            written = 0 if kind == "ok" or j == slip else r  # the slip: a dead end miscounted as remainder 0
            if written == 0:
                lines.append(f"{head}0 ok")
                found.append(path)
            else:
                lines.append(f"{head}{r}" + (" x" if kind == "x" else ""))
            added_back.append(check_line(f"{written}+{c}", written + c, r + c))
        if not found:
            lines.append("none found")  # known as the search ends, so it comes before any check line
        if self.check_steps:
            lines += added_back
        kept = []
        for path in found:
            lines.append(check_line("+".join(map(str, path)), sum(path), target))
            if sum(path) == target:
                kept.append(path)
            else:
                lines.append(f"{FIX} drop {' '.join(map(str, path))}")
        if found and not kept:
            lines.append("none found")
        return lines, tuple(sorted(kept))
