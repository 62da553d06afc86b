"""Held-out problems disjoint from the training pools *up to the task's symmetries*.

Two problems are the same problem when they differ only by a symmetry that leaves the answer and
the work unchanged, so a held-out problem whose reordering was trained on is no held-out problem.
:func:`canonical_key` names a problem's symmetry class:

* combination sum: the sorted candidates (a multiset for LC 40, whose duplicates matter), the
  target and the variant (``reuse``): LC 39 ``combsum 3 2 5 target 8`` is ``combsum 2 3 5 target 8``;
* maximum gap: the sorted inputs (a multiset: repeats change nothing else but are kept);
* arithmetic: ``(op, a, b)`` **ordered**. ``12+34`` and ``34+12`` stay different problems: the
  task's trace works through the operands in prompt order (other column digits, other carries),
  and the k1.5 protocol (issue 19) names only the search tasks' symmetries;
* any other problem (e.g. read from a table): its prompt text.

The difficulty is not part of the key: the same inputs drawn at two levels are one problem.
:func:`draw_held_out` draws problems whose keys avoid a set (the training pools' keys), and
:func:`check_disjoint` refuses a held-out set that shares a key with a pool. No Lightning here.
"""

from __future__ import annotations

import random
from typing import Callable, Hashable, Iterable, Sequence

from litzoo.reasoning.base import Problem, ReasoningTask


def canonical_key(problem: Problem) -> tuple[Hashable, ...]:
    """The problem's class under its task's symmetries (module docstring)."""
    d = problem.data
    if problem.task == "combination_sum" and "candidates" in d:
        return ("combination_sum", bool(d.get("reuse", True)), tuple(sorted(d["candidates"])), int(d["target"]))
    if problem.task == "max_gap" and "nums" in d:
        return ("max_gap", tuple(sorted(d["nums"])))
    if problem.task == "arithmetic" and {"a", "b", "op"} <= set(d):
        return ("arithmetic", d["op"], int(d["a"]), int(d["b"]))
    return (problem.task, problem.prompt)


def problem_keys(problems: Iterable[Problem]) -> set[tuple[Hashable, ...]]:
    return {canonical_key(p) for p in problems}


def without_keys(problems: Sequence[Problem], keys: set) -> list[Problem]:
    """``problems`` minus those whose key is in ``keys`` (e.g. a pool minus the held-out classes)."""
    return [p for p in problems if canonical_key(p) not in keys]


def draw_held_out(task: ReasoningTask, difficulty: int, n: int, rng: random.Random | int | None,
                  exclude: set, max_tries: int = 50, accept: Callable[[Problem], bool] | None = None) -> list[Problem]:
    """``n`` problems of ``task`` at ``difficulty`` with distinct keys, none in ``exclude`` (and, with
    ``accept``, only those it accepts, e.g. whose clean trace fits the response budget).

    Draws at most ``max_tries * n`` problems; raises if the level has fewer than ``n`` classes left
    (a small level can be exhausted by a large pool: then hold the classes out of the pool instead,
    with :func:`without_keys`).
    """
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    out, seen = [], set(exclude)
    for _ in range(max_tries * n):
        if len(out) == n:
            break
        p = task.generate(difficulty, rng)
        key = canonical_key(p)
        if key not in seen and (accept is None or accept(p)):
            seen.add(key)
            out.append(p)
    if len(out) < n:
        raise ValueError(f"{task.name} difficulty {difficulty}: only {len(out)} of {n} problems found outside the "
                         f"{len(exclude)} excluded classes in {max_tries * n} draws; hold these classes out of the "
                         "training pool instead (without_keys) or ask for fewer.")
    return out


def check_disjoint(held_out: Sequence[Problem], pool: Sequence[Problem], name: str = "pool") -> None:
    """Raise if a held-out problem is, up to symmetries, in ``pool`` (names one shared pair)."""
    pool_keys = {canonical_key(p): p for p in pool}
    shared = [(p, pool_keys[canonical_key(p)]) for p in held_out if canonical_key(p) in pool_keys]
    if shared:
        held, trained = shared[0]
        raise ValueError(f"{len(shared)} held-out problems are in the {name} up to symmetries, e.g. {held.prompt!r} "
                         f"~ {trained.prompt!r}; draw the held-out set with draw_held_out(..., exclude=problem_keys("
                         f"{name})) or drop its classes from the {name} with without_keys.")
