"""Checks of single settings, shared by the configs (``settings_schema`` words a refused setting
with them), the checkpoint metadata and the model registry.

Each check returns the value (as a plain int/float/str/bool) or raises ``BTUnetError`` with a
message that starts with the field's name, so a user knows which setting to change.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from .errors import BTUnetError


def _refuse(name: str, wanted: str, value: Any) -> None:
    raise BTUnetError(f"{name} must be {wanted}, got {value!r}")


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if hi is None:
        return f"{'above' if lo_open else 'at least'} {lo:g}"
    if lo_open or hi_open:
        return f"{'above' if lo_open else 'at least'} {lo:g} and {'below' if hi_open else 'at most'} {hi:g}"
    return f"from {lo:g} to {hi:g}"


def whole(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """A whole number (not a bool, not a float) in [lo, hi]."""
    wanted = f"a whole number {_range_text(lo, hi)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _refuse(name, wanted, value)
    if value < lo or (hi is not None and value > hi):
        _refuse(name, wanted, value)
    return int(value)


def whole_in(name: str, value: Any, allowed: Iterable[int], wanted: str) -> int:
    """A whole number (not a bool, not a float) from ``allowed``; ``wanted`` says which in words."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in tuple(allowed):
        _refuse(name, wanted, value)
    return int(value)


def number(name: str, value: Any, lo: float, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number (not a bool) in the range; ``*_open`` excludes that end."""
    wanted = f"a finite number {_range_text(lo, hi, lo_open, hi_open)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _refuse(name, wanted, value)
    too_low = value < lo or (lo_open and value == lo)
    too_high = hi is not None and (value > hi or (hi_open and value == hi))
    if too_low or too_high:
        _refuse(name, wanted, value)
    return float(value)


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        _refuse(name, f"one of {', '.join(allowed)}", value)
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _refuse(name, "True or False", value)
    return value


def text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        _refuse(name, "a string", value)
    return value
