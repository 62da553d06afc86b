"""Argument checks shared by every module, datamodule and math package (no Lightning, no torch).

Each raises a ``ValueError`` that names the argument, the value it got and what is allowed, so a bad
hyperparameter fails at construction with a message that says how to fix it, not deep inside ``fit``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """``value`` must be one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}.")


def check_bool(name: str, value: Any) -> None:
    """``value`` must be ``True`` or ``False`` (not 1/0, which would be saved as ints)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False.")


def _is_number(value: Any) -> bool:
    # numbers.Real covers numpy scalars too; a bool is a number to Python but never a hyperparameter value.
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return _is_number(value) and (isinstance(value, numbers.Integral) or float(value).is_integer())


def check_positive_int(name: str, value: Any) -> None:
    """``value`` must be an integer >= 1 (``True``/``False`` are refused)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


def check_non_negative_int(name: str, value: Any) -> None:
    """``value`` must be an integer >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0.")


def check_positive(name: str, value: Any) -> None:
    """``value`` must be a finite number > 0."""
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0.")


def check_non_negative(name: str, value: Any) -> None:
    """``value`` must be a finite number >= 0."""
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0.")


def check_positive_or_none(name: str, value: Any, meaning: str) -> None:
    """``value`` must be ``None`` (``meaning``: what ``None`` does, e.g. "no clipping") or a number > 0."""
    if value is not None and not value > 0:
        raise ValueError(f"{name}={value!r} must be > 0 or None ({meaning}).")


def check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """``value`` must lie in the interval from ``low`` to ``high`` (closed ends unless ``*_open``)."""
    ok = _is_number(value) and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}={value!r} must be in {interval}.")
