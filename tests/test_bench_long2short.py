"""bench/long2short.py's pure pieces: the target rule, the deltas and the split of a response into its parts."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from long2short import delta_pct, delta_points, meets_target, method_list, results_tag, trace_parts  # noqa: E402


def test_deltas():
    assert delta_points(0.87, 0.89) == pytest.approx(-2.0)
    assert delta_pct(42.0, 60.0) == pytest.approx(-30.0)
    assert delta_pct(66.0, 60.0) == pytest.approx(10.0)


@pytest.mark.parametrize("d_points, d_pct, met", [
    (-1.0, -30.0, True),    # both limits exactly: met
    (-1.01, -40.0, False),  # more than a point lost
    (+3.0, -29.9, False),   # not short enough
    (0.0, -50.0, True),
])
def test_target_rule(d_points, d_pct, met):
    assert meets_target(d_points, d_pct) is met


def test_trace_parts_addition():
    clean = "\n3+5+0=8 w8 c0\n6+1+0=7 w7 c0\nsum 78\nchk 78-15=63 ok\n#78"
    assert trace_parts(clean) == {"slip": 0, "check": len("chk 78-15=63 ok\n"), "has_slip": 0}
    slip_part = "\n3+5+0=8 w8 c0\n6+1+0=8 w8 c0\nsum 88\nchk 88-15=73!=63 no\nfix\n"
    parts = trace_parts(slip_part + clean[1:])
    # the slip is everything up to the last fix line; the check counted is the one after it
    assert parts == {"slip": len(slip_part), "check": len("chk 78-15=63 ok\n"), "has_slip": 1}
    assert len(slip_part + clean[1:]) - parts["slip"] == len(clean) - 1


def test_trace_parts_combination_sum_fixes_in_place():
    """Combination sum's slip is a dead end written ``=0 ok``: its extra lines are the wrong combination's failed sum
    and the ``fix drop`` line; the rest (search, add-back checks, the right sums) is the clean trace's length but for
    the slipped line's add-back, which fails (``!=5 no`` instead of `` ok``)."""
    from litzoo.reasoning import get_task

    task = get_task("combination_sum", check_steps=True)
    p = task.make_problem([2, 3, 6, 7], 7)
    clean, slipped = task.write_trace(p), task.write_trace(p, 3, p_mistake=1.0)
    assert "\nfix drop 2 3\n" in slipped
    parts = trace_parts(slipped)
    extra = len("chk 2+3=5!=7 no\n") + len("fix drop 2 3\n")
    longer = len("chk 0+3=3!=5 no") - len("chk 2+3=5 ok")  # the slipped line's failed add-back instead of its ok
    assert parts == {"slip": extra, "check": trace_parts(clean)["check"] + longer, "has_slip": 1}
    assert len(slipped) - parts["slip"] == len(clean) + longer + len("=0 ok") - len("=2 x")  # and its search line
    assert trace_parts(clean) == {"slip": 0, "check": sum(len(x) + 1 for x in clean.split("\n") if x.startswith("chk")),
                                  "has_slip": 0}


def test_method_list_puts_srs_first_for_merges():
    class A:
        methods, merge_weights = ["lp_rl", "merge"], [0.3, 0.5]
    assert method_list(A) == ["srs", "lp_rl", "merge_w0.3", "merge_w0.5"]


def test_results_tag_keeps_the_earlier_folders_names_and_marks_the_new_settings():
    """The earlier runs' folders (model.generate samples, DPO without RPO) keep their names; RPO, another length
    weight and litzoo's sampler each get their mark, so no run reuses another's results."""
    import argparse

    old = argparse.Namespace(long_rl_cpu_s=0.0, budget_cpu_s=180.0, eval_limit=None, num_eval=200, rs_n=64,
                             rs_problems=512, rs_temperature=0.5, sft2_steps=100, sft2_lr=1e-4, dpo_steps=100,
                             dpo_lr=1e-4, dpo_beta=0.1, dpo_long_factor=1.3, dpo_rpo_alpha=1.0, lp_weight=1.0,
                             lp_warmup=0, rs_sampler="transformers", seed=0)
    assert results_tag(old) == ("results_long0_budget180_eval200_rs64x512T0.5_sft100lr0.0001_dpo100lr0.0001b0.1lf1.3"
                                "rpo1_lpw0_seed0")  # the max_gap_optcheck folder of BENCHMARKS.md
    new = argparse.Namespace(**{**vars(old), "rs_sampler": "litzoo", "lp_weight": 0.25, "dpo_rpo_alpha": 0.0,
                                "dpo_long_factor": 1.5})
    assert results_tag(new) == "results_long0_budget180_eval200_rs64x512T0.5_sft100lr0.0001_dpo100lr0.0001b0.1_lp0.25_lpw0_rslitzoo_seed0"
