"""One grammar for durations on every command line and in every API (core).

``"90"`` or ``90`` (seconds), ``"500ms"``, ``"60s"``/``"60 sec"``, ``"2m"``/``"2 min"``,
``"1h"``, ``"1d"``, and sums of them (``"1m30s"``, ``"1h 30m"``); case and spaces do not matter.
Used by ``medsr upscale --budget``, ``medsr serve --retention/--decode-timeout/--shutdown-grace``
and ``medsr pacs watch --interval``.
"""

from __future__ import annotations

import re

from medsr.errors import InvalidParameterError

__all__ = ["UNITS", "ZERO_SHOT_BUDGET_S", "parse_duration"]

#: training time of a zero-shot upscale that states none, on every front end: ``medsr upscale
#: --method zero-shot`` (``--budget``), :func:`medsr.selfsup.zero_shot_upscale`,
#: ``medsr.api.upscale_file`` and the web service's zero-shot jobs (their ``budget`` field)
ZERO_SHOT_BUDGET_S = 60.0

#: seconds per unit
UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|min|sec|s|m|h|d)?", re.IGNORECASE)


def parse_duration(
    text: str | float | int, what: str = "duration", *, allow_days: bool = True
) -> float:
    """``text`` in seconds (> 0), or one clear :class:`InvalidParameterError` naming ``what``."""
    example = "e.g. 90, 500ms, 60s, 2m, 1h" + (", 1d" if allow_days else "") + " or 1m30s"
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        value = str(text).strip().lower()
        parts = _PART.findall(value)
        rest = _PART.sub("", value).strip()
        units = [u for _, u in parts]
        if (
            not parts
            or rest
            or (len(parts) > 1 and not all(units))
            or (not allow_days and "d" in units)
        ):
            raise InvalidParameterError(f"{what} {text!r} is not a duration: use {example}")
        seconds = sum(float(n) * UNITS[u or "s"] for n, u in parts)
    if not seconds > 0:
        raise InvalidParameterError(f"{what} must be more than 0 seconds, got {text!r}")
    return seconds
