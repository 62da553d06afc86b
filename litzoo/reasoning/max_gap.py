"""Maximum gap (LeetCode 164) as a verifiable reasoning task.

Given integers ``x_1..x_n``, the answer is ``max_i (s_{i+1} - s_i)`` over the sorted array
``s``, and ``0`` when ``n < 2``.

Solver (`max_gap`): bucket sort / pigeonhole in O(n) time. With ``lo = min x``,
``hi = max x`` and bucket width ``w = max(1, floor((hi - lo) / (n - 1)))``, the ``n - 1`` gaps
of the sorted array sum to ``hi - lo``, so the largest gap is at least ``(hi - lo) / (n - 1)
>= w``. Two numbers in the same bucket ``[lo + k w, lo + (k+1) w)`` differ by at most
``w - 1 < w``, so the maximum gap is never inside a bucket: it is the largest
``min(next non-empty bucket) - max(previous non-empty bucket)``. Only each bucket's min and
max are kept, hence O(n) time and memory (``floor((hi-lo)/w) + 1 <= 2(n-1) + 1`` buckets).

Difficulty levels (``n`` numbers drawn uniformly with repetition from ``0..v_max``):

    level 1: n 1-4,  values 0-9      (includes n = 1, answer 0)
    level 2: n 3-6,  values 0-99     (the k1.5 benchmark)
    level 3: n 5-8,  values 0-99
    level 4: n 6-10, values 0-999
    level 5: n 8-12, values 0-999

Prompt ``"maxgap 3 9 1 7="``; answer a non-negative integer. The trace copies the inputs
zero-padded to the width of the largest (``pad``), sorts those (easier for a char-level model to
learn than bucket arithmetic; the bucket solver is the exact reference), then writes one line
per successive pair: the gap, the running sum of the gaps (``s``) and the running maximum
(``m``); then the max, and the check that the gaps telescope to ``max - min`` (the last running
sum). Every number in the work is zero-padded to the width of the largest input, so each line
has a fixed width and every operand an operation needs sits at a fixed distance before it (the
pair being subtracted right before ``=``, the previous ``s``/``m`` exactly one line up), so each
step is one two-operand operation on operands at fixed relative positions -- what a small
transformer learns fastest. Measured with a 2-layer width-64 Qwen2 on level 2 (greedy accuracy
after SFT, one seed each): an unpadded trace that summed all the gaps in one check line, 0.25
after 2000 steps; fixed-width lines, 0.84 after 2000 steps but 0.80 after 5000, nearly all
misses in the sort line (padding and selecting in one step); with the padded copy first, 0.965
after 4000. A deliberate slip writes one gap off by one; the running sum then misses
``max - min`` and the check catches it; ``fix`` redoes the work::

    pad 3 9 1 7
    sort 1 3 7 9
    3-1=2 s2 m2
    7-3=4 s6 m4
    9-7=2 s8 m4
    max 4
    chk 9-1=8 s8 ok
    #4

(with two-digit inputs: ``pad 41 07 12``, ``sort 07 12 41``, ``12-07=05 s05 m05``, ``41-12=29
s34 m29``, ``max 29``, ``chk 41-07=34 s34 ok``, ``#29``).

``MaxGapTask(check_gaps=True)`` double-checks every gap after ``max``, adding it back to the smaller number
(``chk 07+05=12 ok``, then ``chk 12+29=41 ok``, then the telescoping check): long-CoT data whose checks are about
40 % of a level-2 trace, which ``check_rate < 1`` leaves out of some clean traces (for long2short). A slipped gap
fails its own add-back line (``chk 41+50=91!=90 no``; its sum may run a digit over the padding).
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from litzoo.reasoning.base import CHECK_FAILED, FIX, Problem, ReasoningTask, check_line, is_int, parse_int

# level -> (min count, max count, max value)
LEVELS: dict[int, tuple[int, int, int]] = {
    1: (1, 4, 9),
    2: (3, 6, 99),
    3: (5, 8, 99),
    4: (6, 10, 999),
    5: (8, 12, 999),
}


def max_gap(nums: Sequence[int]) -> int:
    """Largest difference between successive elements of ``sorted(nums)`` (0 if fewer than 2),
    by pigeonhole buckets in O(n) (see module docstring)."""
    n = len(nums)
    if n < 2:
        return 0
    lo, hi = min(nums), max(nums)
    if lo == hi:
        return 0
    w = max(1, (hi - lo) // (n - 1))
    n_buckets = (hi - lo) // w + 1
    b_min: list[int | None] = [None] * n_buckets
    b_max: list[int | None] = [None] * n_buckets
    for x in nums:
        k = (x - lo) // w
        b_min[k] = x if b_min[k] is None else min(b_min[k], x)
        b_max[k] = x if b_max[k] is None else max(b_max[k], x)
    best, prev_max = 0, b_max[0]  # bucket 0 holds lo, so it is never empty
    for k in range(1, n_buckets):
        if b_min[k] is not None:
            best = max(best, b_min[k] - prev_max)
            prev_max = b_max[k]
    return best


class MaxGapTask(ReasoningTask):
    """Maximum gap between successive sorted elements (LeetCode 164); see module docstring. ``check_rate``: probability
    that a trace without a slip writes its closing ``chk`` line (``ReasoningTask.write_trace``). ``levels``: your own
    difficulty levels, ``{level: (min count, max count, max value)}``, over the built-in ones (``LEVELS``); e.g.
    ``{4: (9, 10, 99)}`` makes level 4 longer inputs of level 3's values (a length-generalisation level). Levels
    are not checked to grow harder (that one is not harder than the built-in level 5); the curriculum's level
    weights (``litzoo.reasoning.sampling``) assume higher levels are harder. ``check_gaps``: the closing checks also
    check every gap by adding it back to the smaller number (``chk 07+05=12 ok``, one line per gap, before the
    telescoping check) -- the redundant double-checking of a long chain of thought (with the telescoping check about
    40 % of a level-2 trace); with ``check_rate < 1`` a clean trace leaves them out with the other ``chk`` lines (data
    long2short can shorten)."""

    name = "max_gap"
    difficulties = range(1, len(LEVELS) + 1)  # the built-in levels; an instance with ``levels`` has its own

    def __init__(self, check_rate: float = 1.0, levels: Mapping[int, Sequence[int]] | None = None,
                 check_gaps: bool = False) -> None:
        self.set_check_rate(check_rate)
        if not isinstance(check_gaps, bool):
            raise ValueError(f"check_gaps={check_gaps!r} must be True or False (True: every gap is checked by "
                             "adding it back, one chk line per gap).")
        self.check_gaps = check_gaps
        own = _checked_levels({} if levels is None else levels)
        self.levels = {**LEVELS, **{k: tuple(v) for k, v in own.items()}}
        self.difficulties = range(1, max(self.levels) + 1)

    def make_problem(self, nums: Sequence[int], difficulty: int | None = None) -> Problem:
        """A problem from explicit non-negative integers."""
        nums = tuple(nums)
        if not all(is_int(x) and x >= 0 for x in nums):
            raise ValueError(f"nums={nums!r} must be non-negative ints (the prompt has no '-').")
        prompt = "maxgap" + "".join(f" {x}" for x in nums) + "="
        return Problem(self.name, difficulty, prompt, max_gap(nums), {"nums": nums})

    def draw(self, difficulty: int, rng: random.Random) -> Problem:
        n_lo, n_hi, v_max = self.levels[difficulty]
        n = rng.randint(n_lo, n_hi)
        return self.make_problem([rng.randint(0, v_max) for _ in range(n)], difficulty)

    def solve(self, problem: Problem) -> int:
        self.check_problem(problem)
        return max_gap(problem.data["nums"])

    def parse_answer(self, text: str) -> int | None:
        x = parse_int(text)
        return x if x is not None and x >= 0 else None

    def format_answer(self, answer: int) -> str:
        return str(answer)

    def trace_lines(self, problem: Problem, rng: random.Random, p_mistake: float) -> tuple[list[str], int]:
        s = sorted(problem.data["nums"])
        if len(s) < 2:
            return ["sort " + " ".join(map(str, s)), "n<2 no gaps"], 0
        width = len(str(s[-1]))  # zero-pad to the largest input: fixed-width lines
        # Copy the inputs zero-padded first (a sequential copy), then sort those fixed-width items:
        # digit-aligned comparisons, and no padding and selecting in one step.
        lines = ["pad " + " ".join(f"{x:0{width}d}" for x in problem.data["nums"]),
                 "sort " + " ".join(f"{x:0{width}d}" for x in s)]
        gaps = [s[i + 1] - s[i] for i in range(len(s) - 1)]
        if self.wants_mistake(rng, p_mistake):
            j = rng.randrange(len(gaps))
            wrong = list(gaps)
            wrong[j] += 1 if gaps[j] == 0 or rng.random() < 0.5 else -1
            lines += _gap_work(s, wrong, width, self.check_gaps) + [FIX]
        lines += _gap_work(s, gaps, width, self.check_gaps)
        return lines, max(gaps)


def _checked_levels(levels: Mapping[int, Sequence[int]]) -> Mapping[int, Sequence[int]]:
    """``levels`` if every entry is ``level: (min count, max count, max value)`` extending 1..5 without a hole."""
    if not isinstance(levels, Mapping):
        raise ValueError(f"levels={levels!r} must map a level to (min count, max count, max value), "
                         "e.g. {4: (9, 10, 99)}.")
    for level, spec in levels.items():
        if not is_int(level) or level < 1:
            raise ValueError(f"levels has the key {level!r}: a level is an int >= 1 (keys read from JSON are "
                             f"strings: convert them with int()), e.g. {{4: (9, 10, 99)}}.")
        ok = isinstance(spec, Sequence) and len(spec) == 3
        if not ok or not all(is_int(x) for x in spec) or not 1 <= spec[0] <= spec[1] or spec[2] < 0:
            raise ValueError(f"levels[{level!r}]={spec!r} must be (min count, max count, max value) with "
                             f"1 <= min count <= max count and max value >= 0, e.g. {{4: (9, 10, 99)}}.")
    if set(LEVELS) | set(levels) != set(range(1, max(set(LEVELS) | set(levels)) + 1)):
        raise ValueError(f"levels={dict(levels)!r} leaves a hole after the built-in levels 1-{len(LEVELS)}: "
                         f"number new levels {len(LEVELS) + 1}, {len(LEVELS) + 2}, ...")
    return levels


def _gap_work(s: list[int], gaps: list[int], width: int, check_gaps: bool = False) -> list[str]:
    """One line per pair (gap, running sum ``s``, running max ``m``), the max, (``check_gaps``) each gap added
    back to the smaller number, and the telescoping check: the last running sum must equal ``s[-1] - s[0]``."""
    pad = lambda x: f"{x:0{width}d}"  # noqa: E731
    lines, total, best = [], 0, gaps[0]
    for i, g in enumerate(gaps):
        total, best = total + g, max(best, g)
        lines.append(f"{pad(s[i + 1])}-{pad(s[i])}={pad(g)} s{pad(total)} m{pad(best)}")
    lines.append(f"max {best}")
    if check_gaps:  # zero-padded like the work, so the sum sits at the width of the larger number
        lines += [check_line(f"{pad(s[i])}+{pad(g)}", pad(s[i] + g), pad(s[i + 1])) for i, g in enumerate(gaps)]
    span = s[-1] - s[0]
    verdict = "ok" if total == span else CHECK_FAILED
    return lines + [f"chk {pad(s[-1])}-{pad(s[0])}={pad(span)} s{pad(total)} {verdict}"]
