r"""Answer verifiers for problems a user brings (a jsonl / parquet / ``datasets`` table of prompts and answers).

A verifier is ``verifier(response: str, answer: str) -> float`` in ``[0, 1]`` (1 = correct): the rule-based reward
``r(x, y, y*)`` of Kimi k1.5 (Sec. 2.3) that looks only at the final answer of the sampled response ``y``. The
built-in ones are chosen by name (:data:`VERIFIERS`); any other is given as an import path
``"package.module:function"`` (:func:`get_verifier`). The built-in ones never raise on a malformed response
(it scores 0): a policy can write anything.

- ``"exact_string"``: the response, stripped of surrounding white space, equals the answer (also stripped).
- ``"exact_int"``: the stripped response is an integer (optional sign, digits, optional thousands commas)
  equal to the answer's integer.
- ``"last_number"``: the last number in the response (``-3``, ``1,234``, ``2.50``) equals the answer as a
  number (exact decimal comparison: ``2.50 == 2.5``). A ``-`` right after a letter, digit or closing bracket is a
  minus sign between terms (``10-3`` ends in ``3``), not part of the number.
- ``"boxed"``: the content of the last ``\boxed{...}`` (balanced braces, so ``\boxed{\frac{1}{2}}`` gives
  ``\frac{1}{2}``) equals the answer (unwrapped too if it is boxed) after removing spaces, ``\left``/``\right``,
  ``\!``/``\,`` and turning ``\dfrac``/``\tfrac`` into ``\frac``; when both sides are numbers
  (``0.5``, ``1/2``, ``\frac{1}{2}``, ``-\frac{3}{4}``, ``1,000``) they are compared as exact fractions.

No Lightning and no torch here.
"""

from __future__ import annotations

import importlib
import re
from fractions import Fraction
from typing import Callable

Verifier = Callable[[str, str], float]

# Longest response text a built-in verifier reads from the end (a degenerate policy can emit megabytes).
MAX_RESPONSE_CHARS = 100_000
# Longest number a verifier converts (Python refuses int() on strings over 4300 digits): longer is malformed.
MAX_NUMBER_CHARS = 1000

# ASCII digits only: "\d" would take any script's digits, and int() converts them.
_INT = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)", re.ASCII)
# Digits with thousands commas (only in groups of three) or plain digits, then an optional decimal part.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?", re.ASCII)


def _as_text(x) -> str | None:
    return x[-MAX_RESPONSE_CHARS:] if isinstance(x, str) else None


def parse_int(text: str) -> int | None:
    """``text`` (stripped) as an int: optional sign, digits, optional thousands commas (``-1,234``); else ``None``."""
    text = text.strip()
    return int(text.replace(",", "")) if len(text) <= MAX_NUMBER_CHARS and _INT.fullmatch(text) else None


def last_number(text: str) -> Fraction | None:
    """The last number in ``text`` as an exact fraction (``"x = -1,234.5."`` -> ``-2469/2``), else ``None``."""
    found = None
    for m in _NUMBER.finditer(text):
        s = m.group()
        if s.startswith("-") and m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] in ")]}"):
            s = s[1:]  # "10-3": a binary minus, the number is 3
        found = s
    return None if found is None or len(found) > MAX_NUMBER_CHARS else Fraction(found.replace(",", ""))


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``) with balanced braces, else ``None``."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None


def normalize_math(text: str) -> str:
    r"""``text`` without spaces, ``\left``/``\right``, ``\!``/``\,``/``\;``, with ``\dfrac``/``\tfrac`` -> ``\frac``
    and a surrounding ``$...$`` removed."""
    text = text.strip().strip("$")
    for old, new in ((r"\left", ""), (r"\right", ""), (r"\!", ""), (r"\,", ""), (r"\;", ""), (r"\dfrac", r"\frac"),
                     (r"\tfrac", r"\frac")):
        text = text.replace(old, new)
    return re.sub(r"\s+", "", text)


def math_number(text: str) -> Fraction | None:
    r"""A normalised answer as an exact number: ``-3``, ``1,000``, ``0.25``, ``3/4``, ``\frac{3}{4}``, ``-\frac34``."""
    if len(text) > MAX_NUMBER_CHARS:
        return None
    m = re.fullmatch(r"(-?)\\frac(?:\{(\d+)\}\{(\d+)\}|(\d)(\d))", text, re.ASCII)  # \frac{12}{5} or \frac34
    if m:
        num, den = int(m.group(2) or m.group(4)), int(m.group(3) or m.group(5))
        return None if den == 0 else Fraction(num, den) * (-1 if m.group(1) else 1)
    m = re.fullmatch(r"(-?\d+)/(\d+)", text, re.ASCII)
    if m:
        return None if int(m.group(2)) == 0 else Fraction(int(m.group(1)), int(m.group(2)))
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?", text, re.ASCII):
        return Fraction(text.replace(",", ""))
    return None


def exact_string(response: str, answer: str) -> float:
    text = _as_text(response)
    return float(text is not None and text.strip() == str(answer).strip())


def exact_int(response: str, answer: str) -> float:
    text = _as_text(response)
    got, want = (parse_int(text) if text is not None else None), parse_int(str(answer))
    return float(got is not None and got == want)


def last_number_match(response: str, answer: str) -> float:
    text = _as_text(response)
    got, want = (last_number(text) if text is not None else None), last_number(str(answer))
    return float(got is not None and got == want)


def boxed_match(response: str, answer: str) -> float:
    text = _as_text(response)
    got = last_boxed(text) if text is not None else None
    if got is None:
        return 0.0
    answer = str(answer)
    want = normalize_math(last_boxed(answer) if last_boxed(answer) is not None else answer)
    got = normalize_math(got)
    if got == want:
        return 1.0
    a, b = math_number(got), math_number(want)
    return float(a is not None and a == b)


VERIFIERS: dict[str, Verifier] = {
    "exact_string": exact_string,
    "exact_int": exact_int,
    "last_number": last_number_match,
    "boxed": boxed_match,
}


def get_verifier(spec: str) -> Verifier:
    """A built-in verifier by name (:data:`VERIFIERS`), or ``"package.module:function"`` imported."""
    if not isinstance(spec, str):
        raise ValueError(f"verifier={spec!r} must be a name in {sorted(VERIFIERS)} or 'package.module:function'.")
    if spec in VERIFIERS:
        return VERIFIERS[spec]
    if ":" not in spec:
        raise ValueError(f"verifier={spec!r} is unknown; give one of {sorted(VERIFIERS)} or an import path "
                         "'package.module:function' to a function (response: str, answer: str) -> float.")
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"verifier={spec!r} cannot be imported ({err}); the module must be importable from the "
                         "working directory / PYTHONPATH and define the function.") from None
    if not callable(fn):
        raise ValueError(f"verifier={spec!r} is a {type(fn).__name__}, not a function (response, answer) -> float.")
    return fn


def verify(spec: str, response: str, answer: str) -> float:
    """``get_verifier(spec)(response, answer)`` as a float, checked to be in ``[0, 1]``."""
    value = float(get_verifier(spec)(response, answer))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"verifier {spec!r} returned {value} for answer {answer!r}; rewards must be in [0, 1].")
    return value
