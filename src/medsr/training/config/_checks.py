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


def unit_fraction(value: Any, where: str) -> None:
    """``value`` must be a finite number in [0, 1]."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidParameterError(f"{where} must be in [0, 1], got {value}")


def canonical_names(names: Any, allowed: Any) -> tuple[list[str], list[str]]:
    """``names`` spelled as in ``allowed`` (case and surrounding blanks ignored), and those of
    them ``allowed`` does not have (as given)."""
    canon = {a.lower(): a for a in allowed}
    out = [canon.get(str(n).strip().lower(), str(n)) for n in names]
    return out, [str(n) for n in names if str(n).strip().lower() not in canon]
