"""bench/kimi_traces.py: a maximum-gap answer counts as worked out only when the trace's ``pad`` line copies every
input (as a multiset, any order); per input count, accuracy, that share and the accuracy among those."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "kimi_traces.py"


@pytest.fixture(scope="module")
def traces():
    spec = importlib.util.spec_from_file_location("bench_kimi_traces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_kimi_traces"] = module
    spec.loader.exec_module(module)
    return module


def test_a_copy_counts_only_with_every_input_in_any_order(traces):
    from litzoo.reasoning.max_gap import MaxGapTask

    p = MaxGapTask().make_problem([41, 7, 12, 7])
    assert traces.copies_every_input(p, "\npad 41 07 12 07\nsort 07 07 12 41\n#29")
    assert traces.copies_every_input(p, "\npad 07 41 07 12\n#29")  # order does not matter
    assert not traces.copies_every_input(p, "\npad 41 07 12\nsort 07 12 41\n#29")  # an input missing: luck
    assert not traces.copies_every_input(p, "\npad 41 07 12 12\n#29")  # a duplicate of the wrong input
    assert not traces.copies_every_input(p, "\npad 41 07 12 07 07\n#29")  # one too many
    assert not traces.copies_every_input(p, "\nsort 07 07 12 41\n#29")  # no pad line
    assert not traces.copies_every_input(p, "\npad 41 0x 12 07\n#29")  # a malformed number
    assert [traces.copied_inputs(p, t) for t in ("\npad 07 41 07 12", "\npad 41 07 12 12", "\npad 41 07 12 07 07",
                                                 "\nsort 07", "\npad 41 0x")] == [4, 3, 4, 0, 0]


def test_check_splits_accuracy_by_input_count_and_by_full_copies(traces, monkeypatch):
    from litzoo.reasoning.max_gap import MaxGapTask

    task = MaxGapTask(levels={4: (9, 10, 99)})
    problems = [task.make_problem(list(range(0, 90, 10))), task.make_problem(list(range(0, 45, 5))),  # 9 inputs
                task.make_problem(list(range(0, 100, 10)))]  # 10 inputs
    full = lambda p: "\npad " + " ".join(f"{x:02d}" for x in p.data["nums"])  # noqa: E731
    texts = [full(problems[0]) + "\n#10",  # worked out and right
             "\npad 00 05\n#5",  # right by luck: a partial copy
             full(problems[2]) + "\n#11"]  # worked out and wrong
    monkeypatch.setattr(traces.kimi, "evaluate_with_texts", lambda *a: ({}, texts))
    out = traces.check(None, None, problems, 64, want="110")
    assert out[9] == (1.0, 0.5, 1.0, 5.5) and out[10] == (0.0, 1.0, 0.0, 10.0)
    with pytest.raises(RuntimeError, match="does not reproduce its run's saved per-problem results"):
        traces.check(None, None, problems, 64, want="111")
    texts[2] = "\npad 00\n#11"
    assert math.isnan(traces.check(None, None, problems, 64)[10][2])  # no full copy: no accuracy among them
