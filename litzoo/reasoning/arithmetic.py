"""Multi-digit arithmetic (``a+b``, ``a-b``, ``a*b``) as a verifiable reasoning task.

Difficulty ``d`` (1..6) is the number of digits of **each** operand: ``a, b`` are uniform in
``[10^(d-1), 10^d - 1]`` (``[0, 9]`` for ``d = 1``). The k1.5 benchmark uses 2-digit addition:
``ArithmeticTask(ops="+").generate(2, rng)``.

Prompt ``"47+38="``; answer the exact integer (negative for ``a - b`` with ``a < b``).

The trace is the schoolbook algorithm, one line per column (least significant first):
  addition        ``d_a+d_b+c=s w<digit> c<carry>``, then ``sum``, check ``sum - b == a``
  subtraction     (``swap`` if ``a < b``) ``t-u-b=v[+10=v'] b<borrow>``, then ``diff``,
                  check ``diff + b == a``
  multiplication  one partial product per digit of ``b`` (``47*30=1410``), running sums,
                  then ``prod``, checked by casting out nines
                  (``a mod 9 * b mod 9 == prod mod 9``)
A deliberate slip (dropped/phantom carry or borrow, or a partial product off by ``10^j``)
always changes the result by ``±10^j``, which both checks always detect (``10^j mod 9 = 1``);
the trace then writes ``fix`` and redoes the work correctly.

Example (``47+38=``)::

    7+8+0=15 w5 c1
    4+3+1=8 w8 c0
    sum 85
    chk 85-38=47 ok
    #85
"""

from __future__ import annotations

import random
from typing import Sequence

from litzoo.reasoning.base import FIX, Problem, ReasoningTask, check_line, is_int, parse_int

OPS = ("+", "-", "*")


def _digits(x: int, n: int) -> list[int]:
    """The ``n`` least significant decimal digits of ``x >= 0``, least significant first."""
    return [(x // 10**i) % 10 for i in range(n)]


class ArithmeticTask(ReasoningTask):
    """Add / subtract / multiply two ``difficulty``-digit non-negative integers.

    Args:
        ops: the operations to sample from, any of ``"+"``, ``"-"``, ``"*"`` (e.g. ``"+-"``).
        check_rate: probability that a trace without a slip writes its ``chk`` line (``ReasoningTask.write_trace``).
    """

    name = "arithmetic"
    difficulties = range(1, 7)

    def __init__(self, ops: str | Sequence[str] = "+", check_rate: float = 1.0) -> None:
        ops = tuple(ops)
        if not ops or any(op not in OPS for op in ops):
            raise ValueError(f"ops={ops!r} must be a non-empty selection of {OPS}, e.g. ops='+-*'.")
        self.ops = ops
        self.set_check_rate(check_rate)

    # ---- problems -------------------------------------------------------------------------
    def make_problem(self, a: int, b: int, op: str, difficulty: int | None = None) -> Problem:
        """A problem from explicit non-negative integer operands."""
        for label, x in (("a", a), ("b", b)):
            if not is_int(x) or x < 0:
                raise ValueError(f"{label}={x!r} must be a non-negative int.")
        if op not in OPS:
            raise ValueError(f"op={op!r} must be one of {OPS}.")
        data = {"a": a, "b": b, "op": op}
        return Problem(self.name, difficulty, f"{a}{op}{b}=", _exact(a, b, op), data)

    def draw(self, difficulty: int, rng: random.Random) -> Problem:
        lo, hi = (0 if difficulty == 1 else 10 ** (difficulty - 1)), 10**difficulty - 1
        op = rng.choice(self.ops)
        return self.make_problem(rng.randint(lo, hi), rng.randint(lo, hi), op, difficulty)

    def solve(self, problem: Problem) -> int:
        self.check_problem(problem)
        return _exact(problem.data["a"], problem.data["b"], problem.data["op"])

    # ---- answers --------------------------------------------------------------------------
    def parse_answer(self, text: str) -> int | None:
        return parse_int(text)

    def format_answer(self, answer: int) -> str:
        return str(answer)

    # ---- traces ---------------------------------------------------------------------------
    def trace_lines(self, problem: Problem, rng: random.Random, p_mistake: float) -> tuple[list[str], int]:
        a, b, op = problem.data["a"], problem.data["b"], problem.data["op"]
        work = {"+": _add_work, "-": _sub_work, "*": _mul_work}[op]
        lines: list[str] = []
        if self.wants_mistake(rng, p_mistake):
            slipped, _ = work(a, b, rng)  # the rng picks where the slip happens
            lines += slipped + [FIX]
        good, value = work(a, b, None)
        lines += good
        return lines, value


def _exact(a: int, b: int, op: str) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _add_work(a: int, b: int, slip: random.Random | None) -> tuple[list[str], int]:
    """Column addition; with ``slip`` one column's carry-in is dropped (or, if no column has a
    carry, one column sum is written one too large). Returns (lines incl. check, result)."""
    n = max(len(str(a)), len(str(b)))
    da, db = _digits(a, n), _digits(b, n)
    true_carries, c = [], 0  # carry into each column of the correct computation
    for i in range(n):
        true_carries.append(c)
        c = (da[i] + db[i] + c) // 10
    slip_col = -1
    if slip is not None:
        with_carry = [i for i in range(n) if true_carries[i] == 1]
        slip_col = slip.choice(with_carry) if with_carry else slip.randrange(n)
    lines, value, c = [], 0, 0
    for i in range(n):
        c_in = c
        if i == slip_col and c_in == 1:
            c_in = 0  # forgot the carry
        s = da[i] + db[i] + c_in + (1 if i == slip_col and c == 0 else 0)
        lines.append(f"{da[i]}+{db[i]}+{c_in}={s} w{s % 10} c{s // 10}")
        value += (s % 10) * 10**i
        c = s // 10
    value += c * 10**n
    lines.append(f"sum {value}")
    back = value - b
    lines.append(check_line(f"{value}-{b}", back, a))
    return lines, value


def _sub_work(a: int, b: int, slip: random.Random | None) -> tuple[list[str], int]:
    """Column subtraction with borrows of ``max(a,b) - min(a,b)``, negated if ``a < b``; with
    ``slip`` one borrow is dropped (or, if there is none, one column digit is off by one)."""
    lines = []
    top, bottom = (a, b) if a >= b else (b, a)
    if a < b:
        lines.append(f"swap {top}-{bottom}")
    n = len(str(top))
    dt, du = _digits(top, n), _digits(bottom, n)
    true_borrows, br = [], 0
    for i in range(n):
        true_borrows.append(br)
        br = 1 if dt[i] - du[i] - br < 0 else 0
    slip_col = -1
    if slip is not None:
        with_borrow = [i for i in range(n) if true_borrows[i] == 1]
        slip_col = slip.choice(with_borrow) if with_borrow else slip.randrange(n)
    diff, br = 0, 0
    for i in range(n):
        br_in = 0 if (i == slip_col and br == 1) else br  # forgot the borrow
        v = dt[i] - du[i] - br_in
        if v < 0:
            lines.append(f"{dt[i]}-{du[i]}-{br_in}={v}+10={v + 10} b1")
            digit, br = v + 10, 1
        else:
            if i == slip_col and br == 0:
                v = v + 1 if v < 9 else v - 1  # miscopied digit
            lines.append(f"{dt[i]}-{du[i]}-{br_in}={v} b0")
            digit, br = v, 0
        diff += digit * 10**i
    lines.append(f"diff {diff}")
    value = diff
    if a < b:
        value = -diff
        lines.append(f"neg {value}")
    back = value + b
    lines.append(check_line(f"{value}+{b}", back, a))
    return lines, value


def _mul_work(a: int, b: int, slip: random.Random | None) -> tuple[list[str], int]:
    """Long multiplication: ``a * (d_j 10^j)`` per digit of ``b``, running sums, casting out
    nines; with ``slip`` one partial product is ``10^j`` too large."""
    db = _digits(b, len(str(b)))
    slip_j = slip.randrange(len(db)) if slip is not None else -1
    lines, acc = [], 0
    for j, d in enumerate(db):
        p = a * d * 10**j + (10**j if j == slip_j else 0)
        lines.append(f"{a}*{d * 10**j}={p}")
        if j > 0:
            lines.append(f"{acc}+{p}={acc + p}")
        acc += p
    lines.append(f"prod {acc}")
    ra, rb, rp = a % 9, b % 9, acc % 9
    want = (ra * rb) % 9
    lines.append(check_line(f"{a}%9={ra} {b}%9={rb} {ra}*{rb}%9={want} {acc}%9", rp, want))
    return lines, acc
