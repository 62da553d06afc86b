"""Tests for litzoo/reasoning/verifiers.py: the named verifiers on known responses, import paths, and score()."""

from fractions import Fraction

import pytest

from litzoo.reasoning.base import Problem
from litzoo.reasoning.rewards import score
from litzoo.reasoning.verifiers import VERIFIERS, get_verifier, last_boxed, last_number, math_number, normalize_math


def test_last_boxed_takes_the_last_box_with_balanced_nested_braces():
    assert last_boxed(r"so \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{1} then \boxed{ {a}^{ {b} } }") == " {a}^{ {b} } "
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{3} and \boxed{\frac{1}{2}") == "3"  # an unclosed last box: the one before it
    assert last_boxed("no box {1}") is None and last_boxed(r"\boxed{") is None


def test_last_number_handles_commas_negatives_decimals_and_binary_minus():
    assert last_number("the total is 1,234,567 apples") == 1234567
    assert last_number("x = -12.") == -12
    assert last_number("it went from 3 to -4.25") == Fraction(-17, 4)
    assert last_number("10-3") == 3  # a minus after a digit is subtraction
    assert last_number("f(x)-2") == 2 and last_number("a -2") == -2
    assert last_number("1,23") == 23  # commas not in groups of three separate numbers
    assert last_number("no digits") is None


def test_math_number_and_normalisation():
    assert normalize_math(r" \left( \dfrac{1}{2} \right) ") == r"(\frac{1}{2})"
    assert math_number(r"\frac{1}{2}") == math_number("1/2") == math_number("0.5") == Fraction(1, 2)
    assert math_number(r"-\frac34") == Fraction(-3, 4) and math_number(r"\frac{12}{5}") == Fraction(12, 5)
    assert math_number("1,000") == 1000 and math_number(r"\frac{1}{0}") is None and math_number("x+1") is None


@pytest.mark.parametrize("name, response, answer, reward", [
    ("exact_string", "  Paris\n", "Paris", 1.0),
    ("exact_string", "paris", "Paris", 0.0),
    ("exact_int", " -1,234 ", "-1234", 1.0),
    ("exact_int", "42.0", "42", 0.0),
    ("exact_int", "the answer is 42", "42", 0.0),
    ("last_number", "so 3+4=7, i.e. 7.00 apples", "7", 1.0),
    ("last_number", "it is 1,024.", "1024", 1.0),
    ("last_number", "it is -5", "5", 0.0),
    ("last_number", "7 then 8", "7", 0.0),
    ("boxed", r"thus \boxed{\frac{1}{2}}", "1/2", 1.0),
    ("boxed", r"thus \boxed{\dfrac{1}{2}}", r"\boxed{0.5}", 1.0),
    ("boxed", r"\boxed{x^{2}+1}", r"x^{2} + 1", 1.0),
    ("boxed", r"\boxed{\frac{1}{3}}", "1/2", 0.0),
    ("boxed", "1/2", "1/2", 0.0),  # no box, no reward
])
def test_named_verifiers_on_known_responses(name, response, answer, reward):
    assert VERIFIERS[name](response, answer) == reward


def test_malformed_responses_score_zero_never_raise():
    for verifier in VERIFIERS.values():
        for response in [None, "", "\\boxed{", "-", ",", "9" * 200_000, "\u0668\u0665"]:
            assert verifier(response, "85") == 0.0


def test_import_path_verifiers_and_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text("def lower(response, answer):\n    return response.lower() == answer\n"
                                           "NOT_A_FUNCTION = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_verifier("my_checks:lower")("YES", "yes") == 1
    with pytest.raises(ValueError, match=r"verifier='nope' is unknown; give one of \['boxed', 'exact_int'"):
        get_verifier("nope")
    with pytest.raises(ValueError, match="cannot be imported"):
        get_verifier("my_checks:missing")
    with pytest.raises(ValueError, match="is a int, not a function"):
        get_verifier("my_checks:NOT_A_FUNCTION")


def test_score_uses_the_verifier_a_table_problem_carries():
    problems = [Problem("data", 0, "What is 1/2+0?", "1/2", {"verifier": "boxed"}),
                Problem("data", 0, "What is 3+4?", "7", {"verifier": "last_number"})]
    texts = [r"\boxed{\frac{1}{2}}", "3+4=8"]
    assert score(problems, texts).tolist() == [1.0, 0.0]
    assert score(problems, [r"\boxed{0.5}", "so 7"]).tolist() == [1.0, 1.0]
