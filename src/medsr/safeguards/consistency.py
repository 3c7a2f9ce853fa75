"""Data consistency of a super-resolved image with the measured one: error map and projection.

``consistency_error(sr, lr)`` degrades the SR image with the assumed measurement model
(:mod:`medsr.safeguards.operators`) and subtracts the measured LR image, in the image's units on
the LR grid. ``enforce_consistency(sr, lr)`` projects the SR image so that this error vanishes
(iterative back-projection, or measured-k-space replacement for MR). Both work plane by plane
(volumes slice-wise, colour per channel) in small batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.safeguards.operators import Measurement, resolve_measurement

__all__ = [
    "check_pair",
    "consistency_error",
    "consistency_map",
    "enforce_consistency",
    "infer_scale",
]


def infer_scale(sr: MedImage, lr: MedImage) -> int:
    """The integer in-plane factor between ``sr`` and ``lr`` (their plane sizes must say it)."""
    (_, hs, ws), (_, hl, wl) = sr.spatial_shape, lr.spatial_shape
    if hl == 0 or wl == 0 or hs % hl or ws % wl or hs // hl != ws // wl:
        raise InvalidParameterError(
            f"the upscaled image ({hs}×{ws}) is not an integer multiple of the input ({hl}×{wl})"
        )
    return hs // hl


def check_pair(sr: MedImage, lr: MedImage, scale: int | None) -> int:
    """Validate that ``sr`` is ``lr`` upscaled in-plane by ``scale`` (inferred when ``None``)."""
    f = infer_scale(sr, lr) if scale is None else int(scale)
    (zs, hs, ws), (zl, hl, wl) = sr.spatial_shape, lr.spatial_shape
    if zs != zl or hs != f * hl or ws != f * wl:
        raise InvalidParameterError(
            f"the upscaled image {zs}×{hs}×{ws} is not the input {zl}×{hl}×{wl} upscaled ×{f} in-plane"
        )
    if sr.num_channels != lr.num_channels:
        raise InvalidParameterError(
            f"the upscaled image has {sr.num_channels} channels, the input {lr.num_channels}"
        )
    return f


def _planes(image: MedImage) -> np.ndarray:
    cf = image.channel_first()
    return cf.reshape(-1, *cf.shape[-2:])


def _data_range(lr: MedImage) -> float:
    arr = lr.array[np.isfinite(lr.array)]
    return float(arr.max() - arr.min()) if arr.size else 1.0


def _measurement(
    sr: MedImage, lr: MedImage, degradation: Any, scale: int | None, params: dict[str, Any]
) -> tuple[Measurement, int]:
    f = check_pair(sr, lr, scale)
    return resolve_measurement(degradation, f, lr.modality, **params), f


def degrade_planes(meas: Measurement, planes: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """``D`` applied to ``(P, H, W)`` planes → ``(P, H/f, W/f)`` (float32)."""
    import torch

    f = meas.scale
    out = np.empty((planes.shape[0], planes.shape[1] // f, planes.shape[2] // f), np.float32)
    with torch.no_grad():
        for k in range(0, planes.shape[0], batch_size):
            t = torch.from_numpy(np.ascontiguousarray(planes[k : k + batch_size], np.float32))
            out[k : k + batch_size] = meas.forward(t[:, None])[:, 0].numpy()
    return out


def consistency_error(
    sr: MedImage,
    lr: MedImage,
    degradation: str | dict[str, Any] | Measurement | None = None,
    scale: int | None = None,
    **params: Any,
) -> np.ndarray:
    """Signed ``D(SR) − LR`` on the LR grid, in the image's units, shaped like ``lr.array``.

    Args:
        sr: the super-resolved image (``lr`` upscaled ×``scale`` in-plane).
        lr: the measured image.
        degradation: the assumed measurement (see :func:`resolve_measurement`; ``None`` → the
            modality's default).
        scale: the factor (inferred from the shapes when ``None``).
        **params: parameters of the degradation kind.
    """
    meas, _ = _measurement(sr, lr, degradation, scale, params)
    diff = degrade_planes(meas, _planes(sr)) - _planes(lr)
    return diff.reshape(lr.array.shape)


def consistency_map(
    sr: MedImage,
    lr: MedImage,
    degradation: str | dict[str, Any] | Measurement | None = None,
    scale: int | None = None,
    *,
    grid: str = "lr",
    **params: Any,
) -> np.ndarray:
    """``|D(SR) − LR|`` as a ``(Z, Y, X)`` map (mean over colour channels).

    ``grid="lr"``: on the measured grid (one value per measured pixel); ``grid="sr"``: the same
    values replicated (nearest neighbour) onto the SR grid for display beside the output — no
    interpolation, so the map does not pretend to sub-pixel precision it does not have.
    """
    err = np.abs(consistency_error(sr, lr, degradation, scale, **params))
    if lr.channels:
        err = err.mean(axis=0)
    if grid == "lr":
        return err.astype(np.float32)
    if grid == "sr":
        f = check_pair(sr, lr, scale)
        return np.repeat(np.repeat(err, f, axis=-2), f, axis=-1).astype(np.float32)
    raise InvalidParameterError(f"grid must be 'lr' or 'sr', got {grid!r}")


def enforce_consistency(
    sr: MedImage,
    lr: MedImage,
    degradation: str | dict[str, Any] | Measurement | None = None,
    scale: int | None = None,
    *,
    iterations: int = 30,
    tol: float = 1e-3,
    step: float = 1.5,
    clip: bool = True,
    batch_size: int = 8,
    kernel: str = "sinc",
    **params: Any,
) -> MedImage:
    """Project ``sr`` so that degrading it reproduces the measured ``lr``.

    Iterative back-projection (Irani & Peleg 1991) for blur + downsampling models, replacement of
    the measured central k-space for MR k-space truncation (see
    :mod:`medsr.safeguards.operators`). Iterations stop once the largest residual is below
    ``tol`` × the LR data range (default 0.1 %) or after ``iterations``.

    Args:
        sr: the super-resolved image (``lr`` upscaled in-plane).
        lr: the measured image.
        degradation: the assumed measurement (``None``/``"auto"`` → the modality's default:
            CT ``ct-detector``, MR ``kspace``, CR/DX ``radiograph``, others ``bicubic``).
        scale: the factor (inferred from the shapes when ``None``).
        iterations: maximum number of back-projection steps (k-space: replacement steps).
        tol: stopping tolerance relative to the LR data range.
        step: relaxation of each back-projection step (halved automatically on divergence).
        clip: keep values inside the measured intensity range afterwards (as
            :func:`medsr.upscale` does); the residual reported is measured after clipping.
        batch_size: planes per batch.
        kernel: back-projection kernel, ``"sinc"`` (band-limited: adds nothing above the
            input's Nyquist frequency; default) or ``"bicubic"``.
        **params: parameters of the degradation kind (e.g. ``sigma=0.8`` for ``ct-detector``).

    Returns:
        A MedImage on the SR grid whose ``meta["consistency"]`` records the projection
        (``degradation``, ``iterations``, ``residual_max`` relative to the LR range, before and
        after).
    """
    import torch

    meas, f = _measurement(sr, lr, degradation, scale, params)
    rng = max(_data_range(lr), 1e-12)
    src, meas_planes = _planes(sr), _planes(lr)
    out = np.empty_like(src)
    iters, before, after = 0, 0.0, 0.0
    lo, hi = float(np.nanmin(lr.array)), float(np.nanmax(lr.array))
    with torch.no_grad():
        for k in range(0, src.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(src[k : k + batch_size]))[:, None]
            y = torch.from_numpy(np.ascontiguousarray(meas_planes[k : k + batch_size]))[:, None]
            before = max(before, float((meas.forward(x) - y).abs().max()) / rng)
            xp, info = meas.project(
                x, y, iterations=iterations, tol=tol, step=step, data_range=rng, kernel=kernel
            )
            if clip:
                xp = xp.clamp(lo, hi)
            after = max(after, float((meas.forward(xp) - y).abs().max()) / rng)
            iters = max(iters, int(info["iterations"]))
            out[k : k + batch_size] = xp[:, 0].numpy()
    arr = out.reshape(sr.array.shape)
    record = {
        "degradation": meas.as_dict(),
        "method": "k-space replacement"
        if meas.kind == "kspace"
        else f"iterative back-projection ({kernel} kernel)",
        "iterations": iters,
        "residual_max_before": round(before, 6),
        "residual_max_after": round(after, 6),
        "tol": tol,
    }
    meta = {**sr.meta, "consistency": record}
    step_text = (
        f"data consistency: {record['method']} with {meas.describe()} x{f}, {iters} iterations"
    )
    return sr.replace(array=arr, meta=meta, history=(*sr.history, step_text))
