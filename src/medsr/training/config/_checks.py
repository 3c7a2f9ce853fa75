"""Value checks shared by the recipe sections (messages name the offending key)."""

from __future__ import annotations

import math
from typing import Any

from medsr.errors import InvalidParameterError


def positive_int(v: Any, where: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidParameterError(f"{where} must be a positive integer, got {v!r}")


def number_range(value: Any, where: str, *, positive: bool = False) -> tuple[float, float]:
    """A number or a ``[low, high]`` pair → ``(low, high)`` with ``0 ≤ low ≤ high``."""
    lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi) or (positive and lo <= 0):
        bound = "> 0" if positive else "≥ 0"
        raise InvalidParameterError(
            f"{where} must be a number or a [low, high] range with {bound} and low ≤ high, got {value!r}"
        )
    return float(lo), float(hi)
