"""Windowed PNG previews of one slice of a job's input, output or maps (for the viewer)."""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.reports.render import CT_WINDOWS
from medsr.service.jobs import Job, JobNotReadyError


def parse_window(spec: str, default: tuple[float, float]) -> tuple[float, float]:
    """``auto`` (the job's window), a CT preset name, or ``centre,width``."""
    s = spec.strip().lower()
    if s in ("", "auto", "default"):
        return default
    if s in CT_WINDOWS:
        return CT_WINDOWS[s]
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*", s)
    if m:
        centre, width = float(m.group(1)), float(m.group(2))
        if width > 0 and math.isfinite(centre) and math.isfinite(width):
            return centre, width
    raise InvalidParameterError(
        f"window must be auto, {', '.join(CT_WINDOWS)}, or 'centre,width' (e.g. 40,400); got {spec!r}"
    )


@lru_cache(maxsize=1)
def map_lut() -> np.ndarray:
    """The colour table of map previews (inferno, 256 × RGB)."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def uniform_value(plane: np.ndarray) -> float | None:
    """The one value a map's slice holds where the image holds data, or ``None`` when it holds
    several: its finite values other than 0 (the value of a map where no data was measured, kept
    exact) all equal, to float32 rounding. A classical interpolator's error bound is one:
    ``k · noise`` of the plane (it has no per-pixel spread), so a colour map of it is one flat
    colour at the top of its scale, which reads as "high everywhere"."""
    held = plane[np.isfinite(plane) & (plane != 0)]
    if held.size == 0:
        return None
    lo, hi = float(held.min()), float(held.max())
    return hi if hi - lo <= 1e-6 * max(abs(hi), abs(lo)) else None


def render_preview(
    job: Job,
    which: str,
    slice_index: int | None,
    window: str,
    max_size: int,
    time_index: int = 0,
) -> tuple[bytes, int, float | None, float | None]:
    """The PNG of slice ``slice_index`` (middle when ``None``) of ``which`` (of its time point
    ``time_index``, from 0, for an image over time); returns the PNG, the
    number of slices and, for a map, the value its brightest colour stands for (the slice's
    99.5th percentile, in the map's units: what the viewer's colour bar reads; ``None`` for the
    input and output) and the one value the slice holds where it holds data
    (:func:`uniform_value`; ``None`` when it holds several, and for the input and output)."""
    from medsr.reports.render import to_png_bytes, window_to_uint8

    if which == "input":
        path = job.dir / "input.npy"
    elif which == "output" or which in job.maps:
        if job.state != "done":
            raise JobNotReadyError(f"the job is {job.state}; the {which} is not available yet")
        path = job.dir / ("output.npy" if which == "output" else f"map_{which}.npy")
    else:
        raise InvalidParameterError(
            f"which must be input, output{''.join(', ' + m for m in job.maps)}; got {which!r}"
        )
    win = parse_window(window, job.window)
    try:
        arr = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise JobNotReadyError("the job's files were deleted") from None
    color = job.input_info.get("channels") == "RGB" and which in ("input", "output")
    points = arr.shape[0] if arr.ndim == 4 and not color else 1  # (T, Z, Y, X): over time
    if not 0 <= time_index < points:
        raise InvalidParameterError(
            f"time must be between 0 and {points - 1}; got {time_index}"
            if points > 1
            else f"this image has one time point: time must be 0; got {time_index}"
        )
    if arr.ndim == 4 and not color:
        arr = arr[time_index]
    n = arr.shape[-3]
    k = n // 2 if slice_index is None else slice_index
    if not 0 <= k < n:
        raise InvalidParameterError(f"slice must be between 0 and {n - 1}; got {k}")
    plane = np.asarray(arr[:, k] if arr.ndim == 4 else arr[k], dtype=np.float32)
    top: float | None = None
    one: float | None = None
    if which in ("input", "output"):
        pixels = window_to_uint8(plane, win)
    else:
        one = uniform_value(plane)
        hi = float(np.percentile(plane, 99.5)) if plane.size else 1.0
        top = max(hi, 1e-6)
        idx = np.clip(plane / top * 255, 0, 255).astype(np.uint8)
        pixels = map_lut()[idx]
    h, w = pixels.shape[:2]
    if max(h, w) > max_size:
        from PIL import Image

        f = max_size / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    return to_png_bytes(pixels), n, top, one
