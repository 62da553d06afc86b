"""Held-out problems disjoint from the training pools up to the task's symmetries (litzoo/reasoning/heldout.py)."""

import random

import pytest

from litzoo.reasoning import get_task
from litzoo.reasoning.heldout import canonical_key, check_disjoint, draw_held_out, problem_keys, without_keys


def test_keys_identify_exactly_the_task_symmetries():
    cs, cs40, mg, add = (get_task("combination_sum"), get_task("combination_sum", reuse=False), get_task("max_gap"),
                         get_task("arithmetic", ops="+"))
    assert canonical_key(cs.make_problem([3, 2, 5], 8)) == canonical_key(cs.make_problem([5, 3, 2], 8))
    assert canonical_key(cs.make_problem([3, 2, 5], 8)) != canonical_key(cs.make_problem([3, 2, 5], 9))
    assert canonical_key(cs.make_problem([3, 2, 5], 8)) != canonical_key(cs40.make_problem([3, 2, 5], 8))  # LC 39 vs 40
    assert canonical_key(cs40.make_problem([2, 2, 3], 5)) != canonical_key(cs40.make_problem([2, 3, 3], 5))  # multisets
    assert canonical_key(mg.make_problem([3, 9, 1, 7])) == canonical_key(mg.make_problem([7, 1, 9, 3]))
    assert canonical_key(mg.make_problem([3, 9, 9])) != canonical_key(mg.make_problem([3, 3, 9]))
    assert canonical_key(mg.make_problem([3, 9], 2)) == canonical_key(mg.make_problem([9, 3], 3))  # level is no part
    assert canonical_key(add.make_problem(12, 34, "+")) != canonical_key(add.make_problem(34, 12, "+"))  # ordered


def test_held_out_set_never_shares_a_key_with_the_pool():
    task = get_task("combination_sum")
    rng = random.Random(0)
    pool = [task.generate(2, rng) for _ in range(3000)]  # covers most of level 2's ~1400 classes
    held = draw_held_out(task, 2, 100, 1, exclude=problem_keys(pool))
    assert len(problem_keys(held)) == 100 and not problem_keys(held) & problem_keys(pool)
    check_disjoint(held, pool)
    # a prompt-level check (what the datamodule did) misses reorderings: reorder a pool problem, it is caught
    p = pool[0]
    reordered = task.make_problem(list(reversed(p.data["candidates"])), p.data["target"], 2)
    assert reordered.prompt != p.prompt and reordered.prompt not in {q.prompt for q in pool[1:]} | {p.prompt}
    with pytest.raises(ValueError, match="1 held-out problems are in the pool up to symmetries"):
        check_disjoint(held[:5] + [reordered], pool)
    # the other direction: a pool without the held-out classes
    kept = without_keys(pool, problem_keys([reordered]))
    assert len(kept) == len(pool) - sum(canonical_key(q) == canonical_key(p) for q in pool)
    check_disjoint([reordered], kept)


def test_max_gap_and_an_exhausted_level():
    mg = get_task("max_gap")
    pool = [mg.make_problem([5, 1, 9]), mg.make_problem([40, 2])]
    with pytest.raises(ValueError, match=r"'maxgap 9 5 1=' ~ 'maxgap 5 1 9='"):
        check_disjoint([mg.make_problem([9, 5, 1])], pool)
    rng = random.Random(0)
    pool = [mg.generate(1, rng) for _ in range(3000)]  # level 1 (1-4 numbers in 0-9) has 1000 classes in all
    with pytest.raises(ValueError, match="only .* of 1000 problems found outside"):
        draw_held_out(mg, 1, 1000, 0, exclude=problem_keys(pool), max_tries=5)
