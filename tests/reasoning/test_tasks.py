"""Tests for litzoo/reasoning/{base,arithmetic,max_gap,combination_sum,tasks}.py."""

import copy
import itertools
import random
import string

import numpy as np
import pytest

from litzoo.reasoning import (
    TASKS,
    ArithmeticTask,
    CombinationSumTask,
    MaxGapTask,
    combination_sum,
    get_task,
    max_gap,
)

ALL_TASKS = [
    ArithmeticTask("+-*"),
    ArithmeticTask("+"),
    MaxGapTask(),
    CombinationSumTask(True),
    CombinationSumTask(False),
]
TASK_IDS = ["arith+-*", "add", "max_gap", "combsum39", "combsum40"]


def problems(task, n_per_level, seed=0):
    rng = random.Random(seed)
    return [task.generate(d, rng) for d in task.difficulties for _ in range(n_per_level)]


# ---------------------------------------------------------------- solvers vs brute force
def test_max_gap_matches_sorting_on_random_arrays():
    rng = random.Random(0)
    for _ in range(3000):
        n = rng.randint(0, 25)
        lo, hi = sorted(rng.sample(range(-1000, 1000), 2))
        nums = [rng.randint(lo, hi) for _ in range(n)]
        s = sorted(nums)
        want = max((s[i + 1] - s[i] for i in range(n - 1)), default=0)
        assert max_gap(nums) == want, nums


def test_max_gap_leetcode_examples_and_edge_cases():
    assert max_gap([3, 6, 9, 1]) == 3
    assert max_gap([10]) == 0
    assert max_gap([]) == 0
    assert max_gap([5, 5, 5]) == 0
    assert max_gap([1, 10000000]) == 9999999
    assert max_gap([1, 1, 1, 2, 100]) == 98


def brute_lc39(candidates, target):
    """Every multiplicity vector with c_i * m_i <= target (bounded, so finite)."""
    ranges = [range(target // c + 1) for c in candidates]
    found = set()
    for counts in itertools.product(*ranges):
        if sum(c * m for c, m in zip(candidates, counts)) == target:
            found.add(tuple(sorted(itertools.chain.from_iterable([c] * m for c, m in zip(candidates, counts)))))
    return tuple(sorted(found))


def brute_lc40(candidates, target):
    """Every subset of list positions, deduplicated as multisets."""
    found = set()
    for r in range(1, len(candidates) + 1):
        for idx in itertools.combinations(range(len(candidates)), r):
            combo = tuple(sorted(candidates[i] for i in idx))
            if sum(combo) == target:
                found.add(combo)
    return tuple(sorted(found))


def test_combination_sum_lc39_matches_exhaustive_enumeration():
    rng = random.Random(1)
    for _ in range(400):
        cands = rng.sample(range(1, 13), rng.randint(1, 5))
        target = rng.randint(1, 16)
        assert combination_sum(cands, target, reuse=True) == brute_lc39(cands, target), (cands, target)


def test_combination_sum_lc40_matches_subset_enumeration():
    rng = random.Random(2)
    for _ in range(400):
        cands = [rng.randint(1, 8) for _ in range(rng.randint(1, 9))]
        target = rng.randint(1, 16)
        assert combination_sum(cands, target, reuse=False) == brute_lc40(cands, target), (cands, target)


def test_combination_sum_leetcode_examples():
    assert combination_sum([2, 3, 6, 7], 7) == ((2, 2, 3), (7,))
    assert combination_sum([2, 3, 5], 8) == ((2, 2, 2, 2), (2, 3, 3), (3, 5))
    assert combination_sum([2], 1) == ()
    assert combination_sum([10, 1, 2, 7, 6, 1, 5], 8, reuse=False) == ((1, 1, 6), (1, 2, 5), (1, 7), (2, 6))
    assert combination_sum([2, 5, 2, 1, 2], 5, reuse=False) == ((1, 2, 2), (5,))
    assert combination_sum([3, 2, 3], 6, reuse=True) == ((2, 2, 2), (3, 3))  # repeats merged
    with pytest.raises(ValueError, match="positive"):
        combination_sum([0, 2], 4)


@pytest.mark.parametrize("task", ALL_TASKS, ids=TASK_IDS)
def test_generated_answer_is_the_solvers_answer(task):
    for p in problems(task, 40):
        assert p.task == task.name
        assert p.answer == task.solve(p)


def test_arithmetic_answer_is_exact_and_operands_have_difficulty_digits():
    task = ArithmeticTask("+-*")
    rng = random.Random(3)
    for d in task.difficulties:
        for _ in range(60):
            p = task.generate(d, rng)
            a, b, op = p.data["a"], p.data["b"], p.data["op"]
            assert p.prompt == f"{a}{op}{b}="
            assert p.answer == {"+": a + b, "-": a - b, "*": a * b}[op]
            lo = 0 if d == 1 else 10 ** (d - 1)
            assert lo <= a < 10**d and lo <= b < 10**d


def test_benchmark_levels_sample_the_specified_ranges():
    rng = random.Random(4)
    for _ in range(300):
        p = get_task("arithmetic").generate(2, rng)
        assert p.data["op"] == "+" and 10 <= p.data["a"] <= 99 and 10 <= p.data["b"] <= 99
        p = get_task("max_gap").generate(2, rng)
        assert 3 <= len(p.data["nums"]) <= 6 and all(0 <= x <= 99 for x in p.data["nums"])
        p = get_task("combination_sum").generate(2, rng)
        c = p.data["candidates"]
        assert 2 <= len(c) <= 4 and len(set(c)) == len(c) and all(2 <= x <= 9 for x in c)
        assert 4 <= p.data["target"] <= 12 and p.data["reuse"] is True


def test_generation_is_reproducible_from_the_seed():
    for task in ALL_TASKS:
        a = [(p, task.write_trace(p, random.Random(7), 0.5)) for p in problems(task, 5, seed=11)]
        b = [(p, task.write_trace(p, random.Random(7), 0.5)) for p in problems(task, 5, seed=11)]
        assert a == b


# ---------------------------------------------------------------- verifiers
@pytest.mark.parametrize("task", ALL_TASKS, ids=TASK_IDS)
def test_verifier_accepts_traces_and_direct_answers(task):
    rng = random.Random(5)
    for p in problems(task, 40):
        direct = task.write_direct(p)
        trace = task.write_trace(p, rng)
        slipped = task.write_trace(p, rng, p_mistake=1.0)
        assert direct.startswith("#") and trace.startswith("\n") and p.prompt.endswith("=")
        assert trace.count("#") == 1 and slipped.count("#") == 1
        assert task.verify(p, direct) == 1.0
        assert task.verify(p, trace) == 1.0
        assert task.verify(p, p.prompt + trace) == 1.0
        assert task.verify(p, slipped) == 1.0


@pytest.mark.parametrize("task", [ArithmeticTask("+-*"), MaxGapTask()], ids=["arith", "max_gap"])
def test_verifier_rejects_integer_answers_off_by_one(task):
    for p in problems(task, 30):
        for delta in (-1, 1, 10):
            assert task.verify(p, f"#{p.answer + delta}") == 0.0


@pytest.mark.parametrize("reuse", [True, False], ids=["lc39", "lc40"])
def test_combination_verifier_is_order_insensitive_and_rejects_missing_extra_repeated(reuse):
    task = CombinationSumTask(reuse)
    rng = random.Random(6)
    n_with, n_without = 0, 0
    for p in problems(task, 80):
        combos = [list(c) for c in p.answer]
        if not combos:
            n_without += 1
            assert task.verify(p, "#none") == 1.0
            assert task.verify(p, f"#{p.data['target'] + 1}") == 0.0
            continue
        n_with += 1
        # Shuffled inside and across combinations, with loose spacing: still right.
        shuffled = [rng.sample(c, len(c)) for c in rng.sample(combos, len(combos))]
        assert task.verify(p, "# " + " ; ".join("  ".join(map(str, c)) for c in shuffled) + " \n") == 1.0
        fmt = lambda cs: "#" + ";".join(" ".join(map(str, c)) for c in cs)  # noqa: E731
        missing = rng.sample(combos, len(combos) - 1)  # one combination left out
        assert task.verify(p, fmt(missing) if missing else "#none") == 0.0
        extra = [p.data["target"] + 1]  # sums past the target, so never a right combination
        assert task.verify(p, fmt(combos + [extra])) == 0.0
        assert task.verify(p, fmt(combos + [combos[0]])) == 0.0  # a combination listed twice
        assert task.verify(p, "#none") == 0.0
    assert n_with > 20 and n_without > 5  # both branches were exercised


def test_combination_verifier_known_answers():
    task = CombinationSumTask(True)
    p = task.make_problem([2, 3, 6, 7], 7)
    assert p.prompt == "combsum 2 3 6 7 target 7="
    assert task.verify(p, "#7;3 2 2") == 1.0
    assert task.verify(p, "#2 2 3") == 0.0
    assert task.verify(p, "#2 2 3;7;2 5") == 0.0
    assert task.verify(p, "#2 2 3;7;") == 0.0  # empty combination is malformed
    assert task.verify(p, "#2,2,3;7") == 0.0
    q = task.make_problem([5, 7], 3)
    assert q.answer == () and task.verify(q, "#none") == 1.0 and task.verify(q, "#") == 0.0


def test_verifier_reads_the_last_marker_only_up_to_its_line_end():
    task = ArithmeticTask("+")
    p = task.make_problem(47, 38, "+")
    assert task.verify(p, "#12 wait\n#85") == 1.0
    assert task.verify(p, "#85\n#12") == 0.0
    assert task.verify(p, "#85\nmore text after the answer") == 1.0
    assert task.verify(p, "#85 because") == 0.0
    assert task.verify(p, "85") == 0.0  # no marker
    assert task.verify(p, "#+85") == 0.0


MALFORMED = [
    "", "#", "# ", "#\n85", "#-", "#--3", "#1e3", "#3.0", "#٣", "#８５", "#none;", "#;", "#none none",
    "#" + "9" * 100_000, "#" + "1 " * 100_000, "#" + "1;" * 50_000, "#" + "9" * 5000 + "\n",
    "\x00#\x00", "#-" + "0" * 4000, "#" + "9" * 19, None, 85, b"#85",
]


@pytest.mark.parametrize("task", ALL_TASKS, ids=TASK_IDS)
def test_malformed_and_random_responses_score_zero_without_raising(task):
    p = problems(task, 1)[1 if len(task.difficulties) > 1 else 0]
    for text in MALFORMED:
        assert task.verify(p, text) == 0.0, repr(text)[:40]
    rng = random.Random(8)
    alphabet = string.printable + "#" * 10 + "é€\u2028😀"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        r = task.verify(p, text)
        assert r in (0.0, 1.0)
        if "#" not in text:
            assert r == 0.0


# ---------------------------------------------------------------- traces
@pytest.mark.parametrize("task", ALL_TASKS, ids=TASK_IDS)
def test_trace_with_injected_mistake_fails_its_check_and_ends_right(task):
    rng = random.Random(9)
    n_slipped = 0
    for p in problems(task, 30):
        clean = task.write_trace(p, rng)
        slipped = task.write_trace(p, rng, p_mistake=1.0)
        assert not any(ln.startswith("fix") or ln.endswith(" no") for ln in clean.split("\n"))
        assert slipped.endswith(task.write_direct(p))
        if slipped == clean:  # no slip possible (max gap n < 2; combination sum without dead end)
            assert task.name != "arithmetic"
            continue
        n_slipped += 1
        lines = slipped.split("\n")
        fix_at = next(i for i, line in enumerate(lines) if line.startswith("fix"))
        assert lines[fix_at - 1].startswith("chk") and lines[fix_at - 1].endswith(" no")
        assert sum(line.endswith(" no") for line in lines) == 1  # exactly one failed check
        if task.name in ("arithmetic", "max_gap"):
            # The work before "fix" reaches a wrong result; after "fix" it is redone exactly.
            before, after = slipped.split("\nfix\n")
            assert clean.endswith("\n" + after)  # max gap keeps its "pad" and "sort" lines
            assert task.name == "max_gap" or clean == "\n" + after
            keys = ("sum", "diff", "prod") if task.name == "arithmetic" else ("chk",)
            wrong = next(ln for ln in before.split("\n") if ln.split(" ")[0] in keys)
            right = next(ln for ln in after.split("\n") if ln.split(" ")[0] in keys)
            assert wrong != right
            if task.name == "max_gap":  # exactly one gap line differs, by one
                gap_lines = lambda text: [ln for ln in text.split("\n") if " s" in ln and " m" in ln]  # noqa: E731
                diff = [(a, b) for a, b in zip(gap_lines(before), gap_lines(after)) if a[:a.index(" ")] != b[:b.index(" ")]]
                assert len(diff) == 1 and abs(int(diff[0][0].split("=")[1].split()[0]) - int(diff[0][1].split("=")[1].split()[0])) == 1
        else:
            assert lines[fix_at].startswith("fix drop ")
            dropped = tuple(sorted(map(int, lines[fix_at][len("fix drop "):].split())))
            assert sum(dropped) != p.data["target"] and dropped not in p.answer
    assert n_slipped >= 30


def test_mistake_rate_follows_p_mistake():
    task = ArithmeticTask("+-*")
    rng = random.Random(10)
    ps = problems(task, 60)
    rate = sum("\nfix\n" in task.write_trace(p, rng, 0.3) for p in ps) / len(ps)
    assert 0.22 < rate < 0.38  # 360 draws: 4 standard deviations around 0.3


@pytest.mark.parametrize("task", [ArithmeticTask("+-*"), MaxGapTask(), MaxGapTask(check_gaps=True),
                                  CombinationSumTask(True), CombinationSumTask(False),
                                  CombinationSumTask(check_steps=True)],
                         ids=["arithmetic", "max_gap", "max_gap_check_gaps", "lc39", "lc40", "lc39_check_steps"])
def test_check_rate_leaves_out_only_clean_traces_closing_checks_at_its_rate(task):
    default, sparse = copy.copy(task), copy.copy(task)
    sparse.set_check_rate(0.6)
    ps = problems(task, 100)
    unchecked = clean = 0
    for i, p in enumerate(ps):  # the same seed: the same slip draws, then the check draw (sparse only)
        trace, full = sparse.write_trace(p, random.Random(i), 0.3), default.write_trace(p, random.Random(i), 0.3)
        assert sparse.verify(p, trace) == 1.0
        if "\nfix" in trace:  # a slip: the same trace as before, checked after the fix too
            assert trace == full
            continue
        lines = full.split("\n")
        if lines[-2].startswith("chk "):
            clean += 1
        if trace != full:  # the full trace less its closing check lines, nothing else
            unchecked += 1
            kept = trace.split("\n")
            assert kept[-1] == lines[-1] and lines[:len(kept) - 1] == kept[:-1]
            assert all(x.startswith("chk ") for x in lines[len(kept) - 1:-1]) and not kept[-2].startswith("chk ")
    assert 0.3 < unchecked / clean < 0.5, unchecked / clean  # 4 SD around 0.4 for ~250-400 clean traces
    # check_rate=1 draws nothing extra: the same trace stream from one rng as before the option existed
    always, r1, r2 = copy.copy(task), random.Random(5), random.Random(5)
    always.set_check_rate(1.0)
    assert [always.write_trace(p, r1, 0.3) for p in ps] == [default.write_trace(p, r2, 0.3) for p in ps]


def test_check_rate_is_a_task_option_and_must_be_a_probability():
    assert get_task("arithmetic", ops="+", check_rate=0.7).check_rate == 0.7
    assert get_task("max_gap", check_rate=0.5).check_rate == 0.5 and MaxGapTask().check_rate == 1.0
    assert get_task("combination_sum", reuse=False, check_rate=0.0).check_rate == 0.0
    assert get_task("max_gap", check_rate=np.float32(0.5)).check_rate == 0.5  # any real number
    for make in (lambda: ArithmeticTask("+", check_rate=1.5), lambda: MaxGapTask(check_rate=-0.1),
                 lambda: CombinationSumTask(True, check_rate=2), lambda: MaxGapTask(check_rate="0.5"),
                 lambda: MaxGapTask(check_rate=True)):
        with pytest.raises(ValueError, match="check_rate=.* must be a probability in \\[0, 1\\]"):
            make()


def test_max_gap_check_gaps_adds_each_gap_back_and_catches_the_slip_there():
    """``check_gaps``: after ``max``, one ``chk`` line per gap adding it back to the smaller number (zero-padded like
    the work), then the telescoping check; a slipped gap fails its own line and the telescoping check."""
    task = MaxGapTask(check_gaps=True)
    p = task.make_problem([41, 7, 12, 90])
    assert task.write_trace(p) == ("\npad 41 07 12 90\nsort 07 12 41 90\n12-07=05 s05 m05\n41-12=29 s34 m29\n"
                                   "90-41=49 s83 m49\nmax 49\nchk 07+05=12 ok\nchk 12+29=41 ok\nchk 41+49=90 ok\n"
                                   "chk 90-07=83 s83 ok\n#49")
    # without the option: the same trace less the gap checks (the default traces are unchanged)
    plain = MaxGapTask().write_trace(p)
    assert plain == "\n".join(x for x in task.write_trace(p).split("\n") if "+" not in x)
    n_slipped = 0
    for i, p in enumerate(problems(task, 40)):
        lines = task.write_trace(p, random.Random(i), 1.0).split("\n")
        assert task.verify(p, "\n".join(lines)) == 1.0
        if "fix" not in lines:
            continue  # a single input: no gap to slip on
        n_slipped += 1
        before = lines[:lines.index("fix")]
        failed = [x for x in before if x.endswith(" no")]
        assert len(failed) == 2 and "+" in failed[0] and failed[1] == before[-1]  # its own add-back, then the span
        a, rest = failed[0][len("chk "):].split("+")
        g, got_want = rest.split("=", 1)
        got, want = got_want[:-len(" no")].split("!=")
        assert int(a) + int(g) == int(got) != int(want) and abs(int(got) - int(want)) == 1
        after = lines[lines.index("fix") + 1:]
        assert all(x.endswith(" ok") for x in after if x.startswith("chk "))
        assert sum(x.startswith("chk ") for x in after) == len(p.data["nums"])  # n-1 gaps + the span
    assert n_slipped >= 30
    assert get_task("max_gap", check_gaps=True).check_gaps and not MaxGapTask().check_gaps
    with pytest.raises(ValueError, match="check_gaps=1 must be True or False"):
        MaxGapTask(check_gaps=1)


def test_known_traces():
    add = ArithmeticTask("+")
    assert add.write_trace(add.make_problem(47, 38, "+")) == (
        "\n7+8+0=15 w5 c1\n4+3+1=8 w8 c0\nsum 85\nchk 85-38=47 ok\n#85"
    )
    assert add.write_trace(add.make_problem(99, 1, "+")).endswith("sum 100\nchk 100-1=99 ok\n#100")
    sub = ArithmeticTask("-")
    assert sub.write_trace(sub.make_problem(38, 47, "-")) == (
        "\nswap 47-38\n7-8-0=-1+10=9 b1\n4-3-1=0 b0\ndiff 9\nneg -9\nchk -9+47=38 ok\n#-9"
    )
    mul = ArithmeticTask("*")
    assert mul.write_trace(mul.make_problem(47, 38, "*")) == (
        "\n47*8=376\n47*30=1410\n376+1410=1786\nprod 1786\nchk 47%9=2 38%9=2 2*2%9=4 1786%9=4 ok\n#1786"
    )
    mg = MaxGapTask()
    assert mg.write_trace(mg.make_problem([3, 9, 1, 7])) == (
        "\npad 3 9 1 7\nsort 1 3 7 9\n3-1=2 s2 m2\n7-3=4 s6 m4\n9-7=2 s8 m4\nmax 4\nchk 9-1=8 s8 ok\n#4"
    )
    # Zero-padded to the widest input, so every gap line has the same width.
    assert mg.write_trace(mg.make_problem([41, 7, 12, 12])) == (
        "\npad 41 07 12 12\nsort 07 12 12 41\n12-07=05 s05 m05\n12-12=00 s05 m05\n41-12=29 s34 m29\nmax 29\nchk 41-07=34 s34 ok\n#29"
    )
    assert mg.write_trace(mg.make_problem([5])) == "\nsort 5\nn<2 no gaps\n#0"
    cs = CombinationSumTask(False)
    assert cs.write_trace(cs.make_problem([1, 9, 1, 5], 6)) == (
        "\nsort 1 1 5 9\n1 6-1=5\n1 1 5-1=4 x\n1 5 5-5=0 ok\n1 dup\n5 6-5=1 x\nchk 1+5=6 ok\n#1 5"
    )
    lc39 = CombinationSumTask(True)
    assert lc39.write_trace(lc39.make_problem([7, 3, 6, 2], 7)) == (
        "\nsort 2 3 6 7\n2 7-2=5\n2 2 5-2=3\n2 2 2 3-2=1 x\n2 2 3 3-3=0 ok\n2 3 5-3=2 x\n3 7-3=4\n3 3 4-3=1 x"
        "\n6 7-6=1 x\n7 7-7=0 ok\nchk 2+2+3=7 ok\nchk 7=7 ok\n#2 2 3;7"
    )


def test_max_gap_work_lines_are_fixed_width_and_each_step_is_right():
    task, rng = MaxGapTask(), random.Random(13)
    for _ in range(300):
        p = task.generate(rng.choice([2, 4]), rng)
        lines = task.write_trace(p, rng).split("\n")
        width = len(str(max(p.data["nums"])))
        assert lines[1] == "pad " + " ".join(f"{x:0{width}d}" for x in p.data["nums"])
        s = [int(x) for x in lines[2].split()[1:]]
        assert s == sorted(p.data["nums"]) and all(len(x) == width for x in lines[2].split()[1:])
        work = lines[3:len(s) + 2]
        assert len({len(line) for line in work}) == 1  # fixed width: operands at fixed distances
        total, best = 0, -1
        for i, line in enumerate(work):
            pair, run_sum, run_max = line.split()
            hi, rest = pair.split("-")
            lo, gap = rest.split("=")
            assert (int(hi), int(lo), int(gap)) == (s[i + 1], s[i], s[i + 1] - s[i])
            total, best = total + int(gap), max(best, int(gap))
            assert run_sum == f"s{total:0{width}d}" and run_max == f"m{best:0{width}d}"
        assert lines[-3] == f"max {p.answer}" and lines[-2].endswith(f"s{total:0{width}d} ok")


@pytest.mark.parametrize("reuse", [True, False], ids=["lc39", "lc40"])
def test_combination_sum_search_lines_restate_path_and_remainder(reuse):
    task, rng = CombinationSumTask(reuse), random.Random(14)
    for _ in range(200):
        p = task.generate(rng.choice([1, 2, 3]), rng)
        target = p.data["target"]
        for line in task.write_trace(p, rng).split("\n")[2:]:
            if line.startswith(("chk", "#", "none", "fix")) or line.endswith("dup"):
                continue
            words = line.split()
            path = [int(w) for w in words[:words.index(next(w for w in words if "-" in w))]]
            rem_before, rest = words[len(path)].split("-")
            c, r = map(int, rest.split("="))
            # The remainder before the tried candidate is the target minus the rest of the path, and
            # the tried candidate is the path's last element: every operand is on the line.
            assert int(rem_before) == target - sum(path[:-1]) and c == path[-1] and r == int(rem_before) - c
            assert (r == 0) == words[-1].endswith("ok")


def test_benchmark_traces_are_short_enough_for_a_char_level_model():
    rng = random.Random(12)
    add = get_task("arithmetic")
    assert max(len(add.write_trace(add.generate(2, rng), rng, 1.0)) for _ in range(300)) < 150
    mg = get_task("max_gap")
    assert max(len(mg.write_trace(mg.generate(2, rng), rng, 1.0)) for _ in range(300)) < 400
    cs = get_task("combination_sum")
    lengths = sorted(len(cs.write_trace(cs.generate(2, rng), rng, 0.5)) for _ in range(1000))
    # The search tree grows with the number of combinations: ~4% of problems exceed 400 chars, the
    # longest ~950 (bench/kimi.py gives that task 1024 positions).
    assert lengths[500] < 150 and lengths[950] < 400 and lengths[-1] < 1000


# ---------------------------------------------------------------- registry and errors
def test_registry_builds_each_task_with_its_options():
    assert set(TASKS) == {"arithmetic", "max_gap", "combination_sum"}
    assert get_task("arithmetic", ops="*").ops == ("*",)
    assert get_task("combination_sum", reuse=False).reuse is False
    assert isinstance(get_task("max_gap"), MaxGapTask)


def test_unknown_task_name_error_lists_the_allowed_tasks():
    with pytest.raises(ValueError, match="arithmetic.*combination_sum.*max_gap"):
        get_task("sudoku")
    with pytest.raises(ValueError, match="max_gap"):
        get_task("max_gap", ops="+")


@pytest.mark.parametrize(
    "task,bad,allowed",
    [(ArithmeticTask(), 0, "1..6"), (ArithmeticTask(), 7, "1..6"), (MaxGapTask(), 6, "1..5"),
     (CombinationSumTask(), 4, "1..3"), (CombinationSumTask(), "2", "1..3"), (MaxGapTask(), True, "1..5")],
)
def test_unknown_difficulty_error_names_the_allowed_range(task, bad, allowed):
    with pytest.raises(ValueError, match=f"difficulty={bad!r}.*{allowed}"):
        task.generate(bad, random.Random(0))


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="ops"):
        ArithmeticTask("/")
    with pytest.raises(ValueError, match="p_mistake"):
        MaxGapTask().write_trace(MaxGapTask().make_problem([1, 2]), random.Random(0), p_mistake=1.5)
    with pytest.raises(ValueError, match="reuse=False"):
        CombinationSumTask(True).make_problem([2, 2, 3], 7)
    with pytest.raises(ValueError, match="candidates"):
        CombinationSumTask(True).make_problem([0, 3], 7)
    with pytest.raises(ValueError, match="use get_task"):
        MaxGapTask().verify(ArithmeticTask().make_problem(1, 2, "+"), "#3")


def test_max_gap_levels_of_your_own_draw_their_counts_and_values_and_bad_ones_name_the_fix():
    """``MaxGapTask(levels=...)`` redefines or adds levels over the built-in ones: a length-generalisation level
    (longer inputs of level 3's values) draws exactly its counts and values; the other levels are unchanged."""
    task = MaxGapTask(levels={4: (9, 10, 99), 6: (12, 12, 9)})
    assert task.difficulties == range(1, 7) and MaxGapTask.difficulties == MaxGapTask().difficulties == range(1, 6)
    rng = random.Random(0)
    drawn = [task.draw(4, rng) for _ in range(300)]
    assert {len(p.data["nums"]) for p in drawn} == {9, 10}
    assert max(max(p.data["nums"]) for p in drawn) <= 99 and max(max(p.data["nums"]) for p in drawn) >= 90
    assert all(p.difficulty == 4 and task.solve(p) == max_gap(p.data["nums"]) for p in drawn)
    assert {len(task.draw(6, rng).data["nums"]) for _ in range(20)} == {12}
    # level 3 draws as the built-in task does (the same rng stream, the same problems)
    a, b = random.Random(5), random.Random(5)
    assert [task.draw(3, a).prompt for _ in range(20)] == [MaxGapTask().draw(3, b).prompt for _ in range(20)]
    assert task.generate(6, rng).difficulty == 6
    with pytest.raises(ValueError, match=r"allowed: integers 1\.\.5"):
        MaxGapTask().generate(6, rng)
    for bad, match in [({4: (0, 3, 9)}, r"levels\[4\]"), ({4: (3, 2, 9)}, r"1 <= min count <= max count"),
                       ({"4": (9, 10, 99)}, r"the key '4': a level is an int >= 1 \(keys read from JSON"), ([], "must map a level"), ({4: (9, 10)}, r"\(min count, max count, max value\)"),
                       ([(9, 10, 99)], "must map a level"), ({7: (1, 2, 3)}, "leaves a hole")]:
        with pytest.raises(ValueError, match=match):
            MaxGapTask(levels=bad)


def test_combination_sum_check_steps_adds_each_subtraction_back_and_catches_the_slip_there():
    """``check_steps``: after the search, one ``chk r+c=R ok`` line per search line in order, then the closing sums;
    a slipped line fails its own add-back line and its combination's sum; ``none found`` comes before the checks."""
    task = CombinationSumTask(check_steps=True)
    p = task.make_problem([2, 3, 6, 7], 7)
    plain = CombinationSumTask().write_trace(p)
    trace = task.write_trace(p)
    assert trace == plain.replace("\nchk 2+2+3", "\nchk 5+2=7 ok\nchk 3+2=5 ok\nchk 1+2=3 ok\nchk 0+3=3 ok\n"
                                  "chk 2+3=5 ok\nchk 4+3=7 ok\nchk 1+3=4 ok\nchk 1+6=7 ok\nchk 0+7=7 ok\nchk 2+2+3")
    # no combination: "none found" as the search ends, the add-back lines after it (so check_rate can drop them)
    assert task.write_trace(task.make_problem([4, 6], 5)) == "\nsort 4 6\n4 5-4=1 x\nnone found\nchk 1+4=5 ok\n#none"
    n_slipped = 0
    for reuse in (True, False):
        task = CombinationSumTask(reuse, check_steps=True)
        for i, p in enumerate(problems(task, 40)):
            lines = task.write_trace(p, random.Random(i), 1.0).split("\n")
            assert task.verify(p, "\n".join(lines)) == 1.0
            steps = [tok for x in lines[2:] if not x.startswith("chk ") for tok in x.split() if "-" in tok]  # R-c=r
            checks = [x for x in lines if x.startswith("chk ")]
            for step, check in zip(steps, checks):  # the first checks: each step added back, in order
                R, c, written = map(int, step.replace("=", "-").split("-"))
                assert check == (f"chk {written}+{c}={written + c} ok" if written + c == R
                                 else f"chk {written}+{c}={written + c}!={R} no")
            assert len(checks) == len(steps) + len(p.answer) + sum(x.startswith("fix drop") for x in lines)
            if not any(x.startswith("fix") for x in lines):
                continue  # no dead end to slip on
            n_slipped += 1
            failed = [x for x in lines if x.endswith(" no")]
            assert len(failed) == 2 and failed[0].startswith("chk 0+") and lines[lines.index(failed[1]) + 1].startswith("fix drop")
            assert lines.index(failed[0]) < lines.index(failed[1])
    assert n_slipped >= 30
    assert get_task("combination_sum", check_steps=True).check_steps and not CombinationSumTask().check_steps
    with pytest.raises(ValueError, match="check_steps=1 must be True or False"):
        CombinationSumTask(check_steps=1)
