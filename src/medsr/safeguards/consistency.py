"""Data consistency of a super-resolved image with the measured one: error map and projection.

``consistency_error(sr, lr)`` degrades the SR image with the assumed measurement model
(:mod:`medsr.safeguards.operators`) and subtracts the measured LR image, in the image's units on
the LR grid. ``enforce_consistency(sr, lr)`` projects the SR image so that this error vanishes
(iterative back-projection, or measured-k-space replacement for MR). Both work plane by plane
(volumes slice-wise, colour per channel) in small batches.

Through-plane (``degradation="thick-slice"``): ``sr`` is the measured volume ``lr`` with ``f``×
the slices along z (same rows and columns; e.g. the ``f·Z``-slice grid of
:func:`medsr.selfsup.through_plane_upscale` before any resampling to a target spacing). The
volume is then handled as sagittal reformats ``(z, y)`` — one per column and colour channel —
with z as the rows, and the slice profile acts along z only (a ``thick-slice`` measurement's
``axis`` is replaced by that of the reformats). The errors and maps live on the thick-slice grid.

Padding (:func:`medsr.io.padding.no_data_mask`: DICOM pixel padding, a CT's fill outside the
reconstruction circle, non-finite voxels) was never measured, so it is not a constraint: for the
in-plane error and projection both images see the darkest measured value there (as the network
did), the error at padding pixels is 0, and the projected output keeps its padding exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.safeguards.operators import THROUGH_PLANE, Measurement, resolve_measurement

__all__ = [
    "CONSISTENCY_CHOICES",
    "CONSISTENCY_DEFAULT",
    "CONSISTENCY_RELATIVE",
    "CONSISTENCY_THRESHOLD",
    "ConsistencyWarning",
    "check_pair",
    "consistency_error",
    "consistency_exceeded",
    "consistency_map",
    "consistency_setting",
    "enforce_consistency",
    "infer_scale",
]


def infer_scale(sr: MedImage, lr: MedImage, *, through_plane: bool = False) -> int:
    """The integer in-plane factor between ``sr`` and ``lr`` (their plane sizes must say it);
    with ``through_plane``, the factor between their slice counts."""
    (zs, hs, ws), (zl, hl, wl) = sr.spatial_shape, lr.spatial_shape
    if through_plane:
        if zl == 0 or zs % zl:
            raise InvalidParameterError(
                f"the upscaled volume ({zs} slices) is not an integer multiple of the input "
                f"({zl} slices)"
            )
        return zs // zl
    if hl == 0 or wl == 0 or hs % hl or ws % wl or hs // hl != ws // wl:
        raise InvalidParameterError(
            f"the upscaled image ({hs}×{ws}) is not an integer multiple of the input ({hl}×{wl})"
        )
    return hs // hl


def check_pair(
    sr: MedImage, lr: MedImage, scale: int | None, *, through_plane: bool = False
) -> int:
    """Validate that ``sr`` is ``lr`` upscaled in-plane by ``scale`` (inferred when ``None``),
    or, with ``through_plane``, ``lr`` with ``scale``× the slices along z."""
    f = infer_scale(sr, lr, through_plane=through_plane) if scale is None else int(scale)
    (zs, hs, ws), (zl, hl, wl) = sr.spatial_shape, lr.spatial_shape
    if through_plane:
        if zs != f * zl or hs != hl or ws != wl:
            raise InvalidParameterError(
                f"the upscaled volume {zs}×{hs}×{ws} is not the input {zl}×{hl}×{wl} with ×{f} "
                "the slices along z (thick-slice consistency is through-plane)"
            )
    elif zs != zl or hs != f * hl or ws != f * wl:
        raise InvalidParameterError(
            f"the upscaled image {zs}×{hs}×{ws} is not the input {zl}×{hl}×{wl} upscaled ×{f} in-plane"
        )
    if sr.num_channels != lr.num_channels:
        raise InvalidParameterError(
            f"the upscaled image has {sr.num_channels} channels, the input {lr.num_channels}"
        )
    return f


def _planes(image: MedImage, through_plane: bool = False) -> np.ndarray:
    """``(P, H, W)`` planes: axial slices, or (``through_plane``) ``(z, y)`` reformats."""
    cf = image.channel_first()
    if through_plane:  # (C, Z, Y, X) → (C·X, Z, Y)
        return np.ascontiguousarray(cf.transpose(0, 3, 1, 2)).reshape(-1, *cf.shape[1:3])
    return cf.reshape(-1, *cf.shape[-2:])


def _unplanes(planes: np.ndarray, like: MedImage, through_plane: bool = False) -> np.ndarray:
    """Inverse of :func:`_planes` for planes with the layout of ``like``'s planes (any sizes)."""
    cf_shape = like.channel_first().shape
    if through_plane:
        c, x = cf_shape[0], cf_shape[3]
        vol = planes.reshape(c, x, *planes.shape[-2:]).transpose(0, 2, 3, 1)
        shape = (*like.array.shape[:-3], *vol.shape[1:])
        return np.ascontiguousarray(vol).reshape(shape)
    shape = (*like.array.shape[:-2], *planes.shape[-2:])
    return planes.reshape(shape)


def _is_through_plane(degradation: Any) -> bool:
    if isinstance(degradation, Measurement):
        return degradation.through_plane
    if isinstance(degradation, dict):
        degradation = degradation.get("kind")
    return isinstance(degradation, str) and degradation.strip().lower() in THROUGH_PLANE


def _data_range(lr: MedImage) -> float:
    arr = lr.array[np.isfinite(lr.array)]
    return float(arr.max() - arr.min()) if arr.size else 1.0


def _measurement(
    sr: MedImage, lr: MedImage, degradation: Any, scale: int | None, params: dict[str, Any]
) -> tuple[Measurement, int]:
    through = _is_through_plane(degradation)
    f = check_pair(sr, lr, scale, through_plane=through)
    meas = resolve_measurement(degradation, f, lr.modality, **params)
    if meas.scale != f:
        raise InvalidParameterError(
            f"the measurement is ×{meas.scale} but the images are ×{f} apart"
        )
    if through and meas.params.get("axis") != -2:  # z is the rows of the reformats
        meas = dataclasses.replace(meas, params={**meas.params, "axis": -2})
    return meas, f


def _without_padding(
    sr: MedImage, lr: MedImage, f: int, through: bool
) -> tuple[MedImage, MedImage, np.ndarray | None, np.ndarray | None]:
    """``sr`` and ``lr`` with their padding set to the darkest measured value of ``lr``, and the
    padding masks of both (shaped like their arrays), or the inputs and None when ``lr`` has no
    padding (or the measurement is through-plane)."""
    from medsr.io.padding import block_mask, fill_no_data

    if through:
        return sr, lr, None, None
    lr_f, m_lr, fill = fill_no_data(lr)
    if m_lr is None:
        return sr, lr, None, None
    m_sr = block_mask(m_lr, f)
    if m_sr.shape != sr.array.shape:
        return sr, lr, None, None
    sr_f = sr.replace(array=np.where(m_sr, np.float32(fill), sr.array))  # (T, 1, 1, 1): per time
    return sr_f, lr_f, m_sr, m_lr


def _padding_planes(
    sr: MedImage, lr: MedImage, f: int, through: bool
) -> tuple[np.ndarray, float | np.ndarray] | None:
    """``lr``'s padding as ``(P, h, w)`` planes (:func:`_planes`' layout) and the value both
    images read there — its darkest measured value, as :func:`medsr.io.padding.fill_no_data`
    sets it (an image over time: each time point's own, one per plane ``(P,)``) — or None (no
    padding; through-plane). Nothing is copied or filled here: :func:`degrade_planes` fills each
    batch of ``sr``'s planes as it reads them."""
    from medsr.io.padding import no_data_fill

    if through:
        return None
    mask, low = no_data_fill(lr)  # shaped like lr.array
    if mask is None:
        return None
    h, w = mask.shape[-2:]
    if sr.array.shape != (*mask.shape[:-2], h * f, w * f):
        return None
    planes = mask.reshape(-1, h, w)
    if np.ndim(low):  # one per time point → one per plane (time-major)
        low = np.repeat(np.asarray(low, np.float32).ravel(), planes.shape[0] // np.size(low))
    return planes, low


def degrade_planes(
    meas: Measurement,
    planes: np.ndarray,
    batch_size: int = 8,
    *,
    padding: tuple[np.ndarray, float | np.ndarray] | None = None,
) -> np.ndarray:
    """``D`` applied to ``(P, H, W)`` planes → ``(P, H/f, W/f)`` (float32; through-plane kinds
    reduce only their axis, ``ct-sparse-view`` at ×1 keeps the size). ``padding``: ``(mask,
    value)``, a ``(P, H/f, W/f)`` mask on the reduced grid whose ``f × f`` blocks of the planes
    read ``value``, one number or one per plane ``(P,)`` (an in-plane kind; the planes
    themselves are not changed)."""
    import torch

    from medsr.io.padding import fill_blocks

    f = meas.scale
    reduced = meas.reduced_axes(4)
    h, w = (n // f if d in reduced else n for d, n in ((2, planes.shape[1]), (3, planes.shape[2])))
    out = np.empty((planes.shape[0], h, w), np.float32)
    with torch.no_grad():
        for k in range(0, planes.shape[0], batch_size):
            part = planes[k : k + batch_size]
            t = torch.from_numpy(np.ascontiguousarray(part, np.float32))
            if padding is not None:  # a new tensor with the padding blocks filled, one pass
                mask, value = padding
                m = torch.from_numpy(np.ascontiguousarray(mask[k : k + batch_size]))
                v: Any = value
                if np.ndim(value):  # each plane its own: a tensor shaped like the mask
                    v = torch.from_numpy(np.asarray(value, np.float32)[k : k + batch_size])
                    v = v.view(-1, 1, 1).expand(m.shape)
                else:
                    v = float(value)
                t = fill_blocks(t, m, v, f)
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
    meas, f = _measurement(sr, lr, degradation, scale, params)
    through = meas.through_plane
    padding = _padding_planes(sr, lr, f, through)
    diff = degrade_planes(meas, _planes(sr, through), padding=padding) - _planes(lr, through)
    if padding is not None:  # no error where nothing was measured
        diff[padding[0]] = 0.0
    return _unplanes(diff, lr, through).reshape(lr.array.shape)


def consistency_map(
    sr: MedImage,
    lr: MedImage,
    degradation: str | dict[str, Any] | Measurement | None = None,
    scale: int | None = None,
    *,
    grid: str = "lr",
    **params: Any,
) -> np.ndarray:
    """``|D(SR) − LR|`` as a ``(Z, Y, X)`` map (mean over the colour channels or time frames
    that hold data at each pixel: :func:`medsr.io.padding.mean_over_held`).

    ``grid="lr"``: on the measured grid (one value per measured pixel); ``grid="sr"``: the same
    values replicated (nearest neighbour) onto the SR grid for display beside the output — no
    interpolation, so the map does not pretend to sub-pixel precision it does not have
    (through-plane: replicated along z only).
    """
    err = np.abs(consistency_error(sr, lr, degradation, scale, **params))
    if lr.channels:  # over the channels/frames that hold data at each pixel (no error: none)
        from medsr.io.padding import mean_over_held, no_data_mask

        err = mean_over_held(err, no_data_mask(lr))
    if grid == "lr":
        return err.astype(np.float32)
    if grid == "sr":
        through = _is_through_plane(degradation)
        f = check_pair(sr, lr, scale, through_plane=through)
        if through:
            return np.repeat(err, f, axis=-3).astype(np.float32)
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

    Iterative back-projection (Irani & Peleg 1991) for blur + downsampling models (ultrasound
    lateral blur included), replacement of the measured central k-space for MR k-space
    truncation, Landweber iteration for sparse-view CT (slow: it usually stops at
    ``iterations`` with a residual of a few 0.1 % to a few %), and 1-D back-projection along z for
    ``thick-slice`` (``sr`` then has ``f``× the slices of ``lr``; see the module docstring and
    :mod:`medsr.safeguards.operators`). Iterations stop once the largest residual is below
    ``tol`` × the LR data range (default 0.1 %) or after ``iterations``.

    Args:
        sr: the super-resolved image (``lr`` upscaled in-plane; through z for ``thick-slice``).
        lr: the measured image.
        degradation: the assumed measurement (``None``/``"auto"`` → the modality's default:
            CT ``ct-detector``, MR ``kspace``, CR/DX ``radiograph``, others ``bicubic``; or
            ``ultrasound``, ``ct-sparse-view``, ``thick-slice``, ...).
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
        after, and ``converged``: whether every plane reached ``tol`` before clipping).
    """
    import torch

    meas, f = _measurement(sr, lr, degradation, scale, params)
    through = meas.through_plane
    original = sr
    sr, lr, m_sr, _ = _without_padding(sr, lr, f, through)
    rng = max(_data_range(lr), 1e-12)
    src, meas_planes = _planes(sr, through), _planes(lr, through)
    out = np.empty_like(src)
    iters, before, after, converged = 0, 0.0, 0.0, True
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
            converged = converged and bool(info["converged"])
            out[k : k + batch_size] = xp[:, 0].numpy()
    arr = _unplanes(out, sr, through).reshape(sr.array.shape)
    if m_sr is not None:  # padding kept exact
        arr = np.where(m_sr, original.array, arr)
    sr = original
    if meas.kind == "kspace":
        method = "k-space replacement of the measured magnitude"
    elif meas.kind == "ct-sparse-view":
        method = f"Landweber iterative back-projection ({kernel} kernel)"
    elif through:
        method = f"1-D iterative back-projection along z ({kernel} kernel)"
    else:
        method = f"iterative back-projection ({kernel} kernel)"
    record = {
        "degradation": meas.as_dict(),
        "method": method,
        "iterations": iters,
        "residual_max_before": round(before, 6),
        "residual_max_after": round(after, 6),
        "converged": converged,
        "tol": tol,
    }
    meta = {**sr.meta, "consistency": record}
    where = " through-plane" if through else ""
    step_text = (
        f"data consistency: {record['method']} with {meas.describe()} x{f}{where}, "
        f"{iters} iterations"
    )
    return sr.replace(array=arr, meta=meta, history=(*sr.history, step_text))


# ====================================================================== settings and warning rule
#: ``on`` projects, ``off`` only measures, ``auto`` projects when the physics is known (stated
#: with ``--degradation`` or read from the header), measures otherwise
CONSISTENCY_CHOICES = ("auto", "on", "off")
#: ``--consistency`` default of every front end (:mod:`medsr.pipeline`)
CONSISTENCY_DEFAULT = "auto"
#: warn when p99 |D(SR) − input| exceeds this fraction of the input's data range ...
CONSISTENCY_THRESHOLD = 0.05
#: ... and this multiple of the same percentile for bicubic interpolation of the input
CONSISTENCY_RELATIVE = 1.5


class ConsistencyWarning(UserWarning):
    """The upscaled image, degraded again, disagrees with the measured input."""


def consistency_setting(consistency: str | bool) -> str:
    """``"auto"``, ``"on"`` or ``"off"`` from a setting (booleans accepted); anything else is an error."""
    if isinstance(consistency, bool):
        return "on" if consistency else "off"
    s = str(consistency).strip().lower()
    if s not in CONSISTENCY_CHOICES:
        raise InvalidParameterError(
            f"consistency must be 'auto', 'on' or 'off', got {consistency!r}"
        )
    return s


def consistency_exceeded(
    p99_rel: float,
    bicubic_p99_rel: float | None,
    threshold: float = CONSISTENCY_THRESHOLD,
    relative: float | None = CONSISTENCY_RELATIVE,
) -> bool:
    """The warning rule: p99 error above ``threshold`` (of the input range) and, when
    ``relative``, above ``relative`` × bicubic interpolation's p99 error on the same input."""
    if p99_rel <= threshold:
        return False
    if relative and bicubic_p99_rel is not None:
        return p99_rel > relative * bicubic_p99_rel
    return True
