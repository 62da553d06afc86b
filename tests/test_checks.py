"""litzoo.checks: what each check accepts and refuses, and that the message names the argument and the rule."""

from __future__ import annotations

import numpy as np
import pytest

from litzoo.checks import (
    check_choice,
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_positive_int,
    check_positive_or_none,
    check_range,
)


def test_check_choice_names_the_allowed_values():
    check_choice("sampler", "ddim", ("ddpm", "ddim"))
    with pytest.raises(ValueError, match=r"sampler='euler' is not supported; choose one of \['ddpm', 'ddim'\]"):
        check_choice("sampler", "euler", ("ddpm", "ddim"))


@pytest.mark.parametrize("value", [1, 7, 3.0, np.int64(2), np.int32(5)])
def test_check_positive_int_accepts_whole_numbers(value):
    check_positive_int("steps", value)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, float("nan"), float("inf"), "3", None])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"steps=.* must be a positive integer"):
        check_positive_int("steps", value)


def test_check_non_negative_int_takes_zero_not_minus_one():
    check_non_negative_int("warmup_steps", 0)
    with pytest.raises(ValueError, match=r"warmup_steps=-10 must be an integer >= 0"):
        check_non_negative_int("warmup_steps", -10)


@pytest.mark.parametrize("check, good, bad", [
    (check_positive, [1e-9, 2, np.float32(0.5)], [0, -1e-3, float("nan"), float("inf"), False]),
    (check_non_negative, [0, 0.0, 3.5], [-1e-12, float("nan"), True]),
])
def test_positive_and_non_negative_bounds(check, good, bad):
    for value in good:
        check("lr", value)
    for value in bad:
        with pytest.raises(ValueError, match=r"lr=.* must be a finite number"):
            check("lr", value)


def test_check_range_open_and_closed_ends():
    check_range("gamma", 0.0, 0.0, 1.0)
    check_range("gamma", 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"class_dropout=1.0 must be in \[0.0, 1.0\)"):
        check_range("class_dropout", 1.0, 0.0, 1.0, high_open=True)
    with pytest.raises(ValueError, match=r"tau=0 must be in \(0, 1\]"):
        check_range("tau", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match=r"must be in"):
        check_range("gamma", float("nan"), 0.0, 1.0)


def test_check_positive_or_none_says_what_none_means():
    check_positive_or_none("max_grad_norm", None, "no clipping")
    check_positive_or_none("max_grad_norm", np.float32(0.5), "no clipping")
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"max_grad_norm=.* must be > 0 or None \(no clipping\)\."):
            check_positive_or_none("max_grad_norm", bad, "no clipping")
