"""An error bound per voxel, calibrated on the input itself one scale down.

The uncertainty map (:func:`medsr.safeguards.maps.uncertainty_map`, the spread of the model's
output over the 8 flips and 90° rotations of the input) ranks the regions to trust less, but it is
no error bar: on the leave-one-source-out validation images the error's RMS is 3–47× the map's,
and only about a quarter of the pixels have an error within twice its value
(``benchmarks/results/trust_maps.md``). Two things are missing from it:

* the **noise of the truth**, which no interpolator can predict: an MR's thermal noise, a
  radiograph's quantum noise. It is the error's floor wherever the image is flat, where the
  spread is zero. It is estimated from the input (:func:`noise_sigma`: J. Immerkær, "Fast noise
  variance estimation", CVIU 64(2):300, 1996 — the mean absolute response of a 3×3 Laplacian
  difference, which cancels any plane and most of a smooth image);
* the **scale**: how many spreads the error is. It is measured where the truth is known — the
  input itself, degraded once more (the stated physics, else bicubic) and upscaled back by the
  same pipeline with the same settings (:func:`medsr.pipeline.upscale_with_safeguards` does it):
  ``k`` is the :data:`COVERAGE` quantile of ``|error| / √(spread² + noise²)`` there
  (:func:`calibration_factor`; split conformal calibration, with the input one scale down as the
  calibration set — A. N. Angelopoulos et al., "Image-to-image regression with
  distribution-free uncertainty quantification", ICML 2022).

The bound is ``k · √(spread² + noise²)`` (:func:`error_bound`): the error of about
:data:`COVERAGE` of the voxels is expected below it. One scale down is not the scale of the
output, so the coverage is not guaranteed: ``benchmarks/trust_maps.py`` measures it against the
truth, per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "COVERAGE",
    "bound_summary",
    "calibration_factor",
    "calibration_record",
    "error_bound",
    "image_noise",
    "noise_sigma",
]

#: the fraction of voxels whose error the bound is calibrated to hold
COVERAGE = 0.9
#: Immerkær's 3×3 kernel: two Laplacians' difference, zero on any plane (and on x², y², xy)
_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def noise_sigma(planes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The noise standard deviation of each plane of ``planes`` ``(N, Y, X)`` (Immerkær 1996),
    ``(N,)`` float64, in the planes' units; ``valid`` ``(N, Y, X)``: the measured pixels (others
    — padding, no data — and every 3×3 window that touches one are left out). A plane with no
    whole 3×3 window of measured pixels gets NaN."""
    from scipy import ndimage

    a = np.asarray(planes, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"planes must be (N, Y, X); got shape {a.shape}")
    ok = np.isfinite(a) if valid is None else (np.asarray(valid, bool) & np.isfinite(a))
    out = np.full(a.shape[0], np.nan)
    for k in range(a.shape[0]):
        plane = np.where(ok[k], a[k], 0.0)
        whole = ndimage.binary_erosion(ok[k], np.ones((3, 3), bool), border_value=0)
        n = int(whole.sum())
        if n:
            response = ndimage.convolve(plane, _KERNEL, mode="nearest")
            out[k] = np.sqrt(np.pi / 2.0) * float(np.abs(response[whole]).sum()) / (6.0 * n)
    return out


def _spread(std: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``√(std² + noise²)`` per voxel, ``noise`` one value per plane (axis 0 of ``std``)."""
    s = np.asarray(std, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64).reshape((-1,) + (1,) * (s.ndim - 1))
    return np.hypot(s, np.nan_to_num(n, nan=0.0))


def calibration_factor(
    error: np.ndarray,
    std: np.ndarray,
    noise: np.ndarray,
    keep: np.ndarray | None = None,
    coverage: float = COVERAGE,
) -> float | None:
    """``k``: the ``coverage`` quantile of ``|error| / √(std² + noise²)`` over the voxels ``keep``
    (all finite ones when ``None``); ``error`` and ``std`` ``(N, Y, X)``, ``noise`` ``(N,)``.
    ``None`` when no voxel can be scored (none kept, or a zero spread everywhere)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1); got {coverage}")
    spread = _spread(std, noise)
    err = np.abs(np.asarray(error, dtype=np.float64))
    ok = np.isfinite(err) & np.isfinite(spread) & (spread > 0)
    if keep is not None:
        ok &= np.asarray(keep, bool)
    if not ok.any():
        return None
    return float(np.quantile(err[ok] / spread[ok], coverage))


def calibration_record(
    error: np.ndarray,
    std: np.ndarray,
    noise: np.ndarray,
    keep: np.ndarray,
    *,
    reason: str,
    **fields: Any,
) -> dict[str, Any]:
    """The record of an error bound's calibration, as every front end's summary keeps it:
    ``calibrated``, ``coverage`` and ``factor`` (:func:`calibration_factor` at
    :data:`COVERAGE`), then ``fields`` (how it was calibrated); ``{"calibrated": False,
    "reason": reason}`` when no voxel can be scored."""
    factor = calibration_factor(error, std, noise, keep, COVERAGE)
    if factor is None:
        return {"calibrated": False, "reason": reason}
    return {"calibrated": True, "coverage": COVERAGE, "factor": round(factor, 6), **fields}


def error_bound(std: np.ndarray, noise: np.ndarray, factor: float) -> np.ndarray:
    """The bound ``factor · √(std² + noise²)`` ``(N, Y, X)`` float32 (NaN where ``std`` is)."""
    return (float(factor) * _spread(std, noise)).astype(np.float32)


def image_noise(planes: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """The noise of each plane of an image ``(C, Z, Y, X)`` (:func:`noise_sigma` of each
    channel's plane, averaged over the channels): ``(Z,)``; ``valid`` shaped alike."""
    a = np.asarray(planes)
    c, z = a.shape[:2]
    flat_valid = None if valid is None else np.asarray(valid, bool).reshape(c * z, *a.shape[2:])
    sigma = noise_sigma(a.reshape(c * z, *a.shape[2:]), flat_valid).reshape(c, z)
    with np.errstate(all="ignore"):
        finite = np.isfinite(sigma)
        return np.where(
            finite.any(axis=0), np.nansum(sigma, axis=0) / np.maximum(finite.sum(axis=0), 1), np.nan
        )


def bound_summary(
    info: dict[str, Any],
    bound: np.ndarray,
    noise: np.ndarray,
    none: np.ndarray | None,
    rng: float,
    threshold: float,
    units: str,
) -> dict[str, Any]:
    """``info`` (a calibration's record) completed with the input's noise ``noise`` (one value
    per input plane) and the statistics of ``bound`` over the voxels that hold data; ``bound``
    is set to 0 in place on ``none``, the output voxels kept exact (no data)."""
    from medsr.safeguards.maps import summarize_map

    held = bound  # the voxels the summary is over: those that hold data
    if none is not None:
        bound[none] = 0.0
        held = bound[~none]
    finite = noise[np.isfinite(noise)]
    info["noise_sigma"] = {
        "method": "Immerkaer 1996 (3x3 Laplacian difference), per plane",
        "mean": round(float(finite.mean()), 6) if finite.size else None,
        "max": round(float(finite.max()), 6) if finite.size else None,
        "units": units,
    }
    info["map"] = summarize_map(held, data_range=rng, threshold_rel=threshold, units=units)
    if none is not None:
        info["map"]["over"] = "the voxels that hold data (the bound is 0 on the rest: kept exact)"
    return info
