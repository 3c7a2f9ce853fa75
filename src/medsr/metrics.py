"""Image-quality metrics in the output's units: PSNR, SSIM, MS-SSIM, MSE, MAE, NRMSE.

Conventions (DESIGN.md, "Metrics"):

* **Units.** Metrics are computed on the arrays as given, i.e. in the output's units (HU for CT,
  stored values for MR, grey levels for rasters). Nothing is normalised behind your back.
* **data_range is explicit.** :func:`psnr2d`/:func:`psnr3d`, :func:`ssim2d`/:func:`ssim3d` and
  :func:`ms_ssim2d` take a required ``data_range`` (leaving it out is a ``TypeError``; ``None``,
  zero, negative or non-finite values raise :class:`~medsr.errors.InvalidParameterError`).
  :func:`data_range_for` computes the usual choice (max − min of the *reference*) so every method
  compared on the same reference gets the same range.
* **2-D vs 3-D are named apart.** ``*2d`` functions treat every slice ``z`` of a ``(Z, Y, X)``
  volume as an image and return one value per slice (``np.ndarray`` of shape ``(Z,)``);
  ``*3d`` functions pool the whole volume and return one ``float``. For MSE/MAE without a mask the
  mean of the per-slice values equals the volume value; for PSNR, SSIM and NRMSE it does not.
* **Border crop.** ``crop`` pixels are removed from each in-plane side (Y and X, never Z) of both
  images and of the mask *before* anything is computed, so an error confined to the border never
  changes the metric. Use ``crop=scale`` for super-resolution (the usual convention).
* **Masks.** ``mask`` is a boolean array of the spatial shape ``(Z, Y, X)`` (or ``(Y, X)``, applied
  to every slice); metrics are pooled over the voxels inside the mask only. :func:`body_mask`
  builds the usual mask per modality. A slice whose mask is empty gets ``NaN`` from the ``*2d``
  functions; an empty mask for a ``*3d`` function raises ``InvalidParameterError``.
* **Inputs.** ``np.ndarray`` of shape ``(Y, X)``, ``(Z, Y, X)`` or ``(C, Z, Y, X)``, or
  :class:`~medsr.image.MedImage`. Everything is converted to float64 internally. Colour (or any
  leading channel axis, e.g. NIfTI time frames) is averaged over channels the way scikit-image
  does it: error-based metrics (MSE, MAE, PSNR, NRMSE) pool the errors of all channels (which is
  the mean over channels of the MSE/MAE); SSIM and MS-SSIM are computed per channel and the
  values averaged (``structural_similarity(..., channel_axis=0)``). Non-finite inputs are refused.

Definitions (cross-checked against scikit-image in ``tests/test_metrics.py``):

* ``MSE = mean((pred − ref)²)``, ``MAE = mean(|pred − ref|)``.
* ``PSNR = 10·log10(data_range² / MSE)`` dB (``skimage.metrics.peak_signal_noise_ratio``).
  Identical images give ``MSE = 0`` and ``PSNR = inf`` (no warning). The per-slice mean of
  :func:`psnr2d` is therefore ``inf`` as soon as one slice is reproduced exactly — crop or mask
  such slices (e.g. all-air CT slices) away if that is not what you want.
* ``NRMSE = sqrt(MSE) / denom`` with ``denom`` from the *reference* only, exactly like
  ``skimage.metrics.normalized_root_mse(ref, pred, normalization=...)``: ``"euclidean"``
  (default, ``sqrt(mean(ref²))``), ``"min-max"`` (``max(ref) − min(ref)``) or ``"mean"``
  (``mean(ref)``). The Euclidean and mean forms depend on the intensity offset (HU vs HU + 1024,
  and a negative mean gives a negative NRMSE, as in scikit-image); ``"min-max"`` does not and is the
  better choice for CT. ``0/0`` gives ``NaN``, ``x/0`` gives ``inf``.
* ``SSIM`` (Wang et al. 2004, IEEE TIP 13:600) with a Gaussian window, σ = 1.5 px truncated to
  11 taps, K1 = 0.01, K2 = 0.03 and population (co)variances: the map equals
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=..., full=True)``. The score is the mean of the map over the *valid* region (5 px
  away from every edge, after ``crop``), intersected with the mask — exactly scikit-image's score
  when there is no mask. Images must be at least 11 px wide and high after the crop.
  :func:`ssim3d` uses a 3-D Gaussian window (σ = 1.5 voxels on every axis — in voxels, not mm,
  whatever the slice spacing) and the 3-D valid region; it equals scikit-image's 3-D
  ``structural_similarity``. A volume with fewer than 11 slices has no 3-D valid region: there
  :func:`ssim3d` falls back to the 2-D SSIM maps pooled over all valid voxels of all slices (a
  ``UserWarning`` says so when ``Z > 1``).
* ``MS-SSIM`` (Wang, Simoncelli & Bovik 2003) over 5 scales with the weights
  ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``: contrast-structure terms at scales 1–4 and the full
  SSIM at scale 5, each averaged over its valid region, clamped at 0 (ReLU, as TensorFlow's and
  pytorch-msssim's implementations do, so negative terms cannot yield NaN), 2×2 mean pooling
  between scales (an odd last row/column is dropped). Needs ``min(Y, X) ≥ 11·2^(scales−1)``
  (176 px for 5 scales) after the crop; smaller images raise ``InvalidParameterError`` rather than
  silently changing the number of scales — pass fewer ``betas`` explicitly if you need them.
  MS-SSIM has no masked form (pooling mixes pixels inside and outside the mask): passing a mask
  raises ``InvalidParameterError``.
* **Low-band and high-band error** (:func:`band_rms2d`, DESIGN.md "Data"): per slice, the error
  ``pred − ref`` is set to 0 on the pixels not scored (outside ``mask``, the ``crop`` border), then
  low-passed in-plane with a Gaussian of σ = ``sigma`` px (:func:`band_sigma`: 2·scale output px
  for super-resolution; ``scipy.ndimage.gaussian_filter``, reflected edges, truncated at 4 σ):
  ``low_band_rms`` = RMS of the low-passed error, ``high_band_rms`` = RMS of the rest (error −
  low-pass), both over the scored pixels, in the images' units. A model that moves what the input
  measured (brightness, contrast, coarse shapes) raises the first; one that turns noise into
  texture, the second. Unlike the other metrics, the border is not cut off before filtering
  (its error is zeroed instead), so the low-pass near the border sees the same grid as inside.

Implementation note — why not ``torchmetrics.functional`` here. DESIGN.md picks torchmetrics for
metrics; its SSIM/MS-SSIM were evaluated and are used in the tests as a second oracle, but they are
not called at run time because (torchmetrics 1.9, torch 2.x, CPU, float64): (1) its dense 11×11
(11×11×11 in 3-D) convolution takes ~2 s and ~1.5 GB per 512×512 slice, and a 64×96×80 volume
asks for 26 GB in 3-D, while the separable filter below takes ~25 ms per slice; (2) its SSIM score
averages the map *including* the reflect-padded 5-px border, so it differs from scikit-image and
from Wang's reference (we use the valid region, which agrees with scikit-image to 1e-12);
(3) its MS-SSIM averages the last scale's SSIM over the padded border too (contrast terms are taken
over the valid region), a mixed convention. The SSIM *map* here is identical to torchmetrics' map
inside the valid region (checked in the tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from medsr.errors import InvalidParameterError
from medsr.image import MedImage

__all__ = [
    "BAND_SIGMA_PER_SCALE",
    "MS_SSIM_BETAS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WIN",
    "band_rms2d",
    "band_sigma",
    "body_mask",
    "compute_metrics",
    "data_range_for",
    "mae2d",
    "mae3d",
    "ms_ssim2d",
    "mse2d",
    "mse3d",
    "nrmse2d",
    "nrmse3d",
    "psnr2d",
    "psnr3d",
    "ssim2d",
    "ssim3d",
    "ssim_map2d",
]

#: Standard deviation (pixels) of the SSIM Gaussian window.
SSIM_SIGMA = 1.5
#: SSIM window size: the Gaussian truncated at 3.5 σ (as scikit-image and Wang et al. do).
SSIM_WIN = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # 11
#: SSIM stabilising constants (C1 = (K1·L)², C2 = (K2·L)²).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: MS-SSIM scale weights (Wang, Simoncelli & Bovik 2003).
MS_SSIM_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: σ of the low-pass that splits an error into its low and high band, in output pixels per unit
#: of the scale factor (σ = 4 px at ×2: the measure of issue 20 and ``benchmarks/faithful.py``)
BAND_SIGMA_PER_SCALE = 2.0

_PAD = (SSIM_WIN - 1) // 2  # 5: border of the SSIM map that the window does not fully cover
_CHUNK_ELEMENTS = 1 << 21  # voxels per processing chunk (bounds memory on big volumes)
_HU_AIR = -1024.0

ArrayOrImage = np.ndarray | MedImage
Normalization = Literal["euclidean", "min-max", "mean"]


def _gaussian_taps() -> np.ndarray:
    x = np.arange(-_PAD, _PAD + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


_TAPS = _gaussian_taps()


# ---------------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------------
def _to_cf64(x: ArrayOrImage, name: str) -> np.ndarray:
    """``(C, Z, Y, X)`` float64 view/copy of an array or MedImage."""
    if isinstance(x, MedImage):
        arr = x.channel_first()
    else:
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = arr[None, None]
        elif arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim != 4:
            raise InvalidParameterError(
                f"{name} must be an image of shape (Y, X), (Z, Y, X) or (C, Z, Y, X); "
                f"got shape {arr.shape}"
            )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidParameterError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InvalidParameterError(f"{name} is complex-valued; compute metrics on magnitudes")
    arr = arr.astype(np.float64, copy=False)
    if arr.size == 0:
        raise InvalidParameterError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise InvalidParameterError(f"{name} contains NaN or infinite values")
    return arr


def _check_data_range(data_range: object) -> float:
    if data_range is None:
        raise InvalidParameterError(
            "data_range is required (e.g. data_range=medsr.metrics.data_range_for(reference)); "
            "it is never guessed"
        )
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.number)):
        raise InvalidParameterError(f"data_range must be a number, got {data_range!r}")
    value = float(data_range)
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"data_range must be a positive finite number, got {value}")
    return value


def _check_crop(crop: object, shape_yx: tuple[int, int]) -> int:
    if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 0:
        raise InvalidParameterError(f"crop must be a non-negative integer, got {crop!r}")
    crop = int(crop)
    if 2 * crop >= min(shape_yx):
        raise InvalidParameterError(
            f"crop={crop} removes the whole image (in-plane size {shape_yx[0]}×{shape_yx[1]})"
        )
    return crop


def _to_mask(mask: object, spatial: tuple[int, int, int]) -> np.ndarray:
    """Boolean ``(Z, Y, X)`` mask (a ``(Y, X)`` mask is repeated over slices)."""
    if isinstance(mask, MedImage):
        arr = mask.channel_first()
        arr = (arr != 0).any(axis=0)
    else:
        arr = np.asarray(mask)
        if arr.dtype != np.bool_:
            if not np.issubdtype(arr.dtype, np.number):
                raise InvalidParameterError(f"mask must be boolean, got dtype {arr.dtype}")
            arr = arr != 0
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (spatial[0], *arr.shape))
    if arr.shape != spatial:
        raise InvalidParameterError(
            f"mask shape {arr.shape} does not match the image's spatial shape {spatial}"
        )
    return arr


@dataclass(frozen=True)
class _Pair:
    pred: np.ndarray  # (C, Z, Y, X) float64, cropped
    ref: np.ndarray  # (C, Z, Y, X) float64, cropped
    mask: np.ndarray | None  # (Z, Y, X) bool, cropped

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.pred.shape  # type: ignore[return-value]


def _shape(x: ArrayOrImage) -> tuple[int, ...]:
    return tuple(x.array.shape) if isinstance(x, MedImage) else tuple(np.shape(x))


def _same_grid(pred: ArrayOrImage, ref: ArrayOrImage) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ref`` as ``(C, Z, Y, X)`` float64, or a clear error when their grids differ."""
    p = _to_cf64(pred, "prediction")
    r = _to_cf64(ref, "reference")
    if p.shape != r.shape:
        raise InvalidParameterError(
            f"the prediction (shape {_shape(pred)}) and the reference (shape {_shape(ref)}) are "
            "not on the same grid; metrics compare images voxel by voxel"
        )
    return p, r


def _prepare(pred: ArrayOrImage, ref: ArrayOrImage, crop: int, mask: object) -> _Pair:
    p, r = _same_grid(pred, ref)
    spatial = p.shape[1:]
    c = _check_crop(crop, spatial[1:])
    m = None if mask is None else _to_mask(mask, spatial)
    if c:
        sl = (Ellipsis, slice(c, spatial[1] - c), slice(c, spatial[2] - c))
        p, r = p[sl], r[sl]
        m = None if m is None else m[sl]
    return _Pair(p, r, m)


def _chunks(n: int, step: int) -> Iterator[slice]:
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _slices_per_chunk(c: int, y: int, x: int, minimum: int = 1) -> int:
    return max(minimum, _CHUNK_ELEMENTS // max(1, c * y * x))


# ---------------------------------------------------------------------------------------------
# pixel-wise statistics (MSE, MAE, PSNR, NRMSE)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PixelStats:
    """Per-slice sums over the (masked) voxels of all channels."""

    n: np.ndarray  # number of values
    sse: np.ndarray  # sum of squared errors
    sae: np.ndarray  # sum of absolute errors
    ref_sum: np.ndarray
    ref_sq: np.ndarray
    ref_min: np.ndarray  # +inf where the slice is empty
    ref_max: np.ndarray  # -inf where the slice is empty


def _pixel_stats(pair: _Pair) -> _PixelStats:
    c, z, y, x = pair.shape
    out = {k: np.zeros(z) for k in ("n", "sse", "sae", "ref_sum", "ref_sq")}
    out["ref_min"] = np.full(z, np.inf)
    out["ref_max"] = np.full(z, -np.inf)
    for sl in _chunks(z, _slices_per_chunk(c, y, x)):
        p, r = pair.pred[:, sl], pair.ref[:, sl]
        d = p - r
        if pair.mask is None:
            w = None
            out["n"][sl] = c * y * x
        else:
            w = np.broadcast_to(pair.mask[sl], p.shape)
            out["n"][sl] = c * pair.mask[sl].sum(axis=(1, 2))

        def total(v: np.ndarray, w: np.ndarray | None = w) -> np.ndarray:
            return (v if w is None else np.where(w, v, 0.0)).sum(axis=(0, 2, 3))

        out["sse"][sl] = total(d * d)
        out["sae"][sl] = total(np.abs(d))
        out["ref_sum"][sl] = total(r)
        out["ref_sq"][sl] = total(r * r)
        lo = r if w is None else np.where(w, r, np.inf)
        hi = r if w is None else np.where(w, r, -np.inf)
        out["ref_min"][sl] = lo.min(axis=(0, 2, 3))
        out["ref_max"][sl] = hi.max(axis=(0, 2, 3))
    return _PixelStats(**out)


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(num, den)


def _psnr_from_mse(mse: np.ndarray, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _nrmse_from(
    sse: np.ndarray,
    n: np.ndarray,
    ref_sum: np.ndarray,
    ref_sq: np.ndarray,
    ref_min: np.ndarray,
    ref_max: np.ndarray,
    normalization: str,
) -> np.ndarray:
    norm = str(normalization).lower()
    if norm == "euclidean":
        denom = np.sqrt(_div(ref_sq, n))
    elif norm == "min-max":
        denom = ref_max - ref_min
    elif norm == "mean":
        denom = _div(ref_sum, n)
    else:
        raise InvalidParameterError(
            f"normalization must be 'euclidean', 'min-max' or 'mean', got {normalization!r}"
        )
    return _div(np.sqrt(_div(sse, n)), denom)


def _volume_stats(s: _PixelStats) -> _PixelStats:
    """Pool per-slice sums into a single 'slice' (shape ``(1,)``)."""
    n = s.n.sum()
    if n == 0:
        raise InvalidParameterError("the mask is empty (after the border crop): nothing to measure")
    return _PixelStats(
        n=np.array([n]),
        sse=np.array([s.sse.sum()]),
        sae=np.array([s.sae.sum()]),
        ref_sum=np.array([s.ref_sum.sum()]),
        ref_sq=np.array([s.ref_sq.sum()]),
        ref_min=np.array([s.ref_min.min()]),
        ref_max=np.array([s.ref_max.max()]),
    )


def _pixel_metrics(s: _PixelStats, data_range: float | None, normalization: str) -> dict:
    mse = _div(s.sse, s.n)
    out = {
        "mse": mse,
        "mae": _div(s.sae, s.n),
        "nrmse": _nrmse_from(s.sse, s.n, s.ref_sum, s.ref_sq, s.ref_min, s.ref_max, normalization),
    }
    if data_range is not None:
        out["psnr"] = np.where(s.n > 0, _psnr_from_mse(mse, data_range), np.nan)
    return out


def mse2d(pred: ArrayOrImage, ref: ArrayOrImage, crop: int = 0, mask: object = None) -> np.ndarray:
    """Mean squared error of every slice, shape ``(Z,)`` (``NaN`` where the mask is empty)."""
    return _pixel_metrics(_pixel_stats(_prepare(pred, ref, crop, mask)), None, "euclidean")["mse"]


def mse3d(pred: ArrayOrImage, ref: ArrayOrImage, crop: int = 0, mask: object = None) -> float:
    """Mean squared error over the whole (masked, cropped) volume."""
    s = _volume_stats(_pixel_stats(_prepare(pred, ref, crop, mask)))
    return float(_pixel_metrics(s, None, "euclidean")["mse"][0])


def mae2d(pred: ArrayOrImage, ref: ArrayOrImage, crop: int = 0, mask: object = None) -> np.ndarray:
    """Mean absolute error of every slice, shape ``(Z,)`` (``NaN`` where the mask is empty)."""
    return _pixel_metrics(_pixel_stats(_prepare(pred, ref, crop, mask)), None, "euclidean")["mae"]


def mae3d(pred: ArrayOrImage, ref: ArrayOrImage, crop: int = 0, mask: object = None) -> float:
    """Mean absolute error over the whole (masked, cropped) volume."""
    s = _volume_stats(_pixel_stats(_prepare(pred, ref, crop, mask)))
    return float(_pixel_metrics(s, None, "euclidean")["mae"][0])


def nrmse2d(
    pred: ArrayOrImage,
    ref: ArrayOrImage,
    crop: int = 0,
    mask: object = None,
    normalization: Normalization = "euclidean",
) -> np.ndarray:
    """Normalised RMSE of every slice, shape ``(Z,)``; the denominator comes from ``ref``.

    Same as ``skimage.metrics.normalized_root_mse(ref_slice, pred_slice, normalization=...)``
    (note scikit-image's argument order: reference first).
    """
    s = _pixel_stats(_prepare(pred, ref, crop, mask))
    return _pixel_metrics(s, None, normalization)["nrmse"]


def nrmse3d(
    pred: ArrayOrImage,
    ref: ArrayOrImage,
    crop: int = 0,
    mask: object = None,
    normalization: Normalization = "euclidean",
) -> float:
    """Normalised RMSE over the whole (masked, cropped) volume; denominator from ``ref``."""
    s = _volume_stats(_pixel_stats(_prepare(pred, ref, crop, mask)))
    return float(_pixel_metrics(s, None, normalization)["nrmse"][0])


def psnr2d(
    pred: ArrayOrImage, ref: ArrayOrImage, data_range: float, crop: int = 0, mask: object = None
) -> np.ndarray:
    """PSNR (dB) of every slice, shape ``(Z,)``: ``inf`` for an exact slice, ``NaN`` if masked out."""
    dr = _check_data_range(data_range)
    return _pixel_metrics(_pixel_stats(_prepare(pred, ref, crop, mask)), dr, "euclidean")["psnr"]


def psnr3d(
    pred: ArrayOrImage, ref: ArrayOrImage, data_range: float, crop: int = 0, mask: object = None
) -> float:
    """PSNR (dB) of the whole volume from the pooled MSE (``inf`` if identical)."""
    dr = _check_data_range(data_range)
    s = _volume_stats(_pixel_stats(_prepare(pred, ref, crop, mask)))
    return float(_pixel_metrics(s, dr, "euclidean")["psnr"][0])


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------
def _gauss(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    for ax in axes:
        x = ndimage.correlate1d(x, _TAPS, axis=ax, mode="reflect")
    return x


def _ssim_terms(
    p: np.ndarray, r: np.ndarray, data_range: float, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM map, contrast-structure map) with scikit-image's formula and 'reflect' borders."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ux = _gauss(p, axes)
    uy = _gauss(r, axes)
    uxx = _gauss(p * p, axes)
    uyy = _gauss(r * r, axes)
    uxy = _gauss(p * r, axes)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    a2 = 2.0 * vxy + c2
    b2 = vx + vy + c2
    cs = a2 / b2
    ssim = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1) * cs
    return ssim, cs


def _check_ssim_size(y: int, x: int, what: str = "SSIM") -> None:
    if min(y, x) < SSIM_WIN:
        raise InvalidParameterError(
            f"{what} needs images of at least {SSIM_WIN}×{SSIM_WIN} pixels (after the border "
            f"crop); got {y}×{x}"
        )


def _interior(a: np.ndarray, ndim: int) -> np.ndarray:
    """Valid region: drop ``_PAD`` samples at both ends of the last ``ndim`` axes."""
    sl = (Ellipsis, *([slice(_PAD, -_PAD)] * ndim))
    return a[sl]


def _ssim2d_sums(pair: _Pair, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice sum of the channel-averaged SSIM map over valid ∩ mask, and the voxel count."""
    c, z, y, x = pair.shape
    _check_ssim_size(y, x)
    sums, counts = np.zeros(z), np.zeros(z)
    for sl in _chunks(z, _slices_per_chunk(c, y, x)):
        smap, _ = _ssim_terms(pair.pred[:, sl], pair.ref[:, sl], data_range, (-1, -2))
        smap = _interior(smap.mean(axis=0), 2)
        if pair.mask is None:
            sums[sl] = smap.sum(axis=(1, 2))
            counts[sl] = smap.shape[1] * smap.shape[2]
        else:
            m = _interior(pair.mask[sl], 2)
            sums[sl] = np.where(m, smap, 0.0).sum(axis=(1, 2))
            counts[sl] = m.sum(axis=(1, 2))
    return sums, counts


def ssim_map2d(
    pred: ArrayOrImage, ref: ArrayOrImage, data_range: float, crop: int = 0
) -> np.ndarray:
    """Full per-slice SSIM map ``(Z, Y − 2·crop, X − 2·crop)``, averaged over channels.

    Identical to scikit-image's ``full=True`` map (borders with 'reflect' padding); the
    :func:`ssim2d` score averages only its valid region (5 px in from every edge).
    """
    dr = _check_data_range(data_range)
    pair = _prepare(pred, ref, crop, None)
    c, z, y, x = pair.shape
    _check_ssim_size(y, x)
    out = np.empty((z, y, x))
    for sl in _chunks(z, _slices_per_chunk(c, y, x)):
        out[sl] = _ssim_terms(pair.pred[:, sl], pair.ref[:, sl], dr, (-1, -2))[0].mean(axis=0)
    return out


def ssim2d(
    pred: ArrayOrImage, ref: ArrayOrImage, data_range: float, crop: int = 0, mask: object = None
) -> np.ndarray:
    """SSIM of every slice, shape ``(Z,)``: mean of the 2-D SSIM map over its valid region ∩ mask.

    Equals ``skimage.metrics.structural_similarity(ref, pred, data_range=..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` per slice when there is no mask. ``NaN`` for a slice
    whose mask has no voxel in the valid region.
    """
    dr = _check_data_range(data_range)
    sums, counts = _ssim2d_sums(_prepare(pred, ref, crop, mask), dr)
    return _div(sums, counts)


def ssim3d(
    pred: ArrayOrImage, ref: ArrayOrImage, data_range: float, crop: int = 0, mask: object = None
) -> float:
    """SSIM of the volume with a 3-D Gaussian window (σ = 1.5 voxels, 11 taps per axis).

    Equals scikit-image's ``structural_similarity`` on the ``(Z, Y, X)`` arrays (same settings as
    :func:`ssim2d`) when there is no mask. With fewer than 11 slices there is no 3-D valid region,
    so the 2-D SSIM maps of all slices are pooled instead (``UserWarning`` when ``1 < Z < 11``).
    """
    dr = _check_data_range(data_range)
    pair = _prepare(pred, ref, crop, mask)
    c, z, y, x = pair.shape
    _check_ssim_size(y, x)
    if z < SSIM_WIN:
        if z > 1:
            warnings.warn(
                f"ssim3d: the volume has {z} slices, fewer than the {SSIM_WIN}-slice 3-D window; "
                "using the 2-D SSIM maps of all slices pooled over the volume instead",
                UserWarning,
                stacklevel=2,
            )
        sums, counts = _ssim2d_sums(pair, dr)
    else:
        # z-chunks of output slices [a, b) in the 3-D valid range [_PAD, z - _PAD), each computed
        # from input slices [a - _PAD, b + _PAD): exact, and memory stays bounded.
        step = _slices_per_chunk(c, y, x, minimum=4 * _PAD)
        sums, counts = [], []
        for out in _chunks(z - 2 * _PAD, step):
            a, b = out.start + _PAD, out.stop + _PAD
            src = slice(a - _PAD, b + _PAD)
            smap, _ = _ssim_terms(pair.pred[:, src], pair.ref[:, src], dr, (-1, -2, -3))
            smap = _interior(smap.mean(axis=0), 3)
            if pair.mask is None:
                sums.append(smap.sum())
                counts.append(smap.size)
            else:
                m = _interior(pair.mask[src], 3)
                sums.append(np.where(m, smap, 0.0).sum())
                counts.append(m.sum())
        sums, counts = np.asarray(sums), np.asarray(counts)
    if counts.sum() == 0:
        raise InvalidParameterError(
            f"the mask has no voxel at least {_PAD} voxels away from the (cropped) image border, "
            "where SSIM is defined"
        )
    return float(sums.sum() / counts.sum())


# ---------------------------------------------------------------------------------------------
# MS-SSIM
# ---------------------------------------------------------------------------------------------
def _ms_ssim_min_size(num_scales: int) -> int:
    return SSIM_WIN * 2 ** (num_scales - 1)


def _check_betas(betas: object) -> tuple[float, ...]:
    try:
        b = tuple(float(v) for v in betas)  # type: ignore[union-attr]
    except TypeError as exc:
        raise InvalidParameterError(f"betas must be a sequence of numbers, got {betas!r}") from exc
    if not b or not all(math.isfinite(v) and v >= 0 for v in b):
        raise InvalidParameterError(f"betas must be non-negative finite numbers, got {betas!r}")
    return b


def _ms_ssim_chunk(p: np.ndarray, r: np.ndarray, dr: float, betas: tuple[float, ...]) -> np.ndarray:
    """MS-SSIM of a ``(C, z, Y, X)`` chunk, returned per channel and slice ``(C, z)``."""
    result = np.ones(p.shape[:2])
    for level, beta in enumerate(betas):
        smap, cs = _ssim_terms(p, r, dr, (-1, -2))
        last = level == len(betas) - 1
        term = _interior(smap if last else cs, 2).mean(axis=(-1, -2))
        result *= np.maximum(term, 0.0) ** beta
        if not last:
            h, w = p.shape[-2] // 2, p.shape[-1] // 2
            shape = (*p.shape[:2], h, 2, w, 2)
            p = p[..., : 2 * h, : 2 * w].reshape(shape).mean(axis=(3, 5))
            r = r[..., : 2 * h, : 2 * w].reshape(shape).mean(axis=(3, 5))
    return result


def ms_ssim2d(
    pred: ArrayOrImage,
    ref: ArrayOrImage,
    data_range: float,
    crop: int = 0,
    mask: object = None,
    betas: tuple[float, ...] = MS_SSIM_BETAS,
) -> np.ndarray:
    """Multi-scale SSIM of every slice, shape ``(Z,)`` (see the module docstring).

    Raises:
        InvalidParameterError: the slices are smaller than ``11·2^(len(betas)−1)`` pixels
            (176 for the default 5 scales) after the crop, or a ``mask`` was given (MS-SSIM has
            no masked form; use :func:`ssim2d` with the mask).
    """
    dr = _check_data_range(data_range)
    b = _check_betas(betas)
    if mask is not None:
        raise InvalidParameterError(
            "MS-SSIM has no masked form (downsampling mixes pixels inside and outside the mask); "
            "use ssim2d with the mask, or crop"
        )
    pair = _prepare(pred, ref, crop, None)
    c, z, y, x = pair.shape
    need = _ms_ssim_min_size(len(b))
    if min(y, x) < need:
        raise InvalidParameterError(
            f"MS-SSIM with {len(b)} scales needs slices of at least {need}×{need} pixels after the "
            f"border crop; got {y}×{x}. Use ssim2d, or pass fewer betas (each scale halves the size)"
        )
    out = np.empty(z)
    for sl in _chunks(z, _slices_per_chunk(c, y, x)):
        out[sl] = _ms_ssim_chunk(pair.pred[:, sl], pair.ref[:, sl], dr, b).mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# low-band and high-band error
# ---------------------------------------------------------------------------------------------
def band_sigma(scale: int | float) -> float:
    """σ (output px) of the band split for a ×``scale`` super-resolution: 2·scale."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not scale > 0:
        raise InvalidParameterError(f"scale must be a positive number, got {scale!r}")
    return BAND_SIGMA_PER_SCALE * float(scale)


def band_rms2d(
    pred: ArrayOrImage,
    ref: ArrayOrImage,
    *,
    sigma: float,
    crop: int = 0,
    mask: object = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Low-band and high-band RMS of the error ``pred − ref`` per slice, in the images' units.

    The error is set to 0 where it is not scored (outside ``mask``, within ``crop`` px of an
    in-plane edge), low-passed per slice with a Gaussian of σ = ``sigma`` px (Y and X; reflected
    edges, truncated at 4 σ); the low band is that low-pass, the high band the error minus it.
    Returns ``(low, high)``: their RMS over each slice's scored pixels (channels pooled), arrays
    of shape ``(Z,)``, ``NaN`` for a slice with none. Use ``sigma=band_sigma(scale)``.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)):
        raise InvalidParameterError(f"sigma must be a number of pixels, got {sigma!r}")
    s = float(sigma)
    if not math.isfinite(s) or s <= 0:
        raise InvalidParameterError(f"sigma must be a positive number of pixels, got {sigma!r}")
    p, r = _same_grid(pred, ref)
    spatial = p.shape[1:]
    c = _check_crop(crop, spatial[1:])
    keep = np.ones(spatial, bool) if mask is None else _to_mask(mask, spatial).copy()
    if c:
        inner = np.zeros(spatial[1:], bool)
        inner[c:-c, c:-c] = True
        keep &= inner
    low_rms, high_rms = np.full(spatial[0], np.nan), np.full(spatial[0], np.nan)
    for k in range(spatial[0]):
        kk = keep[k]
        if not kk.any():
            continue
        err = np.where(kk, p[:, k] - r[:, k], 0.0)
        low = ndimage.gaussian_filter(err, (0, s, s), mode="reflect")
        high = err - low
        low_rms[k] = math.sqrt(float(np.mean(low[:, kk] ** 2)))
        high_rms[k] = math.sqrt(float(np.mean(high[:, kk] ** 2)))
    return low_rms, high_rms


# ---------------------------------------------------------------------------------------------
# data range and masks
# ---------------------------------------------------------------------------------------------
def data_range_for(reference: ArrayOrImage, modality: str | None = None) -> float:
    """The data range to pass to PSNR/SSIM: ``max(ref) − min(ref)`` of the *reference* image.

    Taken from the reference only, so every method evaluated against the same reference gets the
    same range, and in the reference's units.

    CT (``modality="CT"``, or a MedImage whose modality is CT): values below −1024 HU are treated
    as −1024 first. Scanners pad the region outside the reconstruction circle with −2048 or
    −3024 HU; counting that padding would inflate the range (and PSNR) by up to 2000 HU without
    any anatomy in it. The upper end is not clipped (dense bone, contrast, metal are real values).
    Papers sometimes use a fixed range (4096 for 12-bit CT) or a display window instead: state the
    choice in the report whichever you use.

    Raises:
        InvalidParameterError: the reference is constant (the range would be 0).
    """
    if modality is None and isinstance(reference, MedImage):
        modality = reference.modality
    arr = _to_cf64(reference, "reference")
    lo, hi = float(arr.min()), float(arr.max())
    if modality is not None and modality.upper() == "CT":
        lo = max(lo, _HU_AIR)
    rng = hi - lo
    if not rng > 0:
        raise InvalidParameterError(
            "the reference image is constant, so it has no data range; pass data_range explicitly"
        )
    return rng


def _largest_component(fg: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(fg)
    if n <= 1:
        return fg if n == 1 else np.zeros_like(fg)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def _clean_foreground(fg: np.ndarray, radius: int = 2) -> np.ndarray:
    """Per-slice closing (disk of ``radius``) and hole filling, then the largest 3-D component."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = (yy**2 + xx**2) <= radius**2
    padded = np.pad(fg, ((0, 0), (radius, radius), (radius, radius)))
    closed = ndimage.binary_closing(padded, structure=disk[None])[:, radius:-radius, radius:-radius]
    filled = np.stack([ndimage.binary_fill_holes(s) for s in closed])
    return _largest_component(filled)


def body_mask(image_array: ArrayOrImage, modality: str | None = None) -> np.ndarray:
    """Boolean mask of the anatomy (CT/MR), the image area (US) or everything (other modalities).

    * CT: ``HU > −500`` (soft tissue and bone, not air or lung), then the cleaning below.
    * MR: intensity above Otsu's threshold of the whole image, then the cleaning below.
    * US: the non-zero area (the scan sector), then the cleaning below.
    * anything else (CR, DX, MG, XA, NM, PT, OT, …): all ones.

    Cleaning, slice by slice in the (Y, X) plane: closing with a disk of radius 2 px, filling of
    enclosed holes (lungs, airways, anechoic regions inside the sector); then only the largest
    connected component of the volume is kept (drops the CT table, MR background speckles, US
    text overlays). The result may be empty (e.g. a CT slab of air).

    Args:
        image_array: ``(Y, X)``, ``(Z, Y, X)`` or ``(C, Z, Y, X)`` (channels are averaged), or a
            MedImage (whose modality is used when ``modality`` is not given). Axial slices are
            assumed for the per-slice steps.
        modality: DICOM modality code.

    Returns:
        Boolean array of the spatial shape of the input: ``(Y, X)`` for a 2-D array, otherwise
        ``(Z, Y, X)``.
    """
    if isinstance(image_array, MedImage):
        modality = modality or image_array.modality
        two_d = False
    else:
        two_d = np.ndim(image_array) == 2
    arr = _to_cf64(image_array, "image").mean(axis=0)
    mod = (modality or "OT").upper()
    if mod == "CT":
        fg = arr > -500.0
    elif mod == "MR":
        if arr.max() == arr.min():
            fg = np.ones(arr.shape, dtype=bool)
        else:
            from skimage.filters import threshold_otsu

            fg = arr > threshold_otsu(arr)
    elif mod == "US":
        fg = arr != 0
    else:
        fg = np.ones(arr.shape, dtype=bool)
    if mod in ("CT", "MR", "US"):
        fg = _clean_foreground(fg)
    return fg[0] if two_d else fg


# ---------------------------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------------------------
def compute_metrics(
    pred: ArrayOrImage,
    ref: ArrayOrImage,
    *,
    data_range: float,
    crop: int = 0,
    mask: object = None,
    per: Literal["slice", "volume"] = "slice",
    nrmse_normalization: Normalization = "euclidean",
) -> dict[str, float]:
    """All metrics at once: ``psnr``, ``ssim``, ``ms_ssim``, ``mse``, ``mae``, ``nrmse``.

    ``per="slice"``: the ``*2d`` metrics averaged over slices. Slices where a metric is undefined
    (``NaN``: empty mask, 0/0 NRMSE) are left out of that metric's mean; an exactly reproduced
    slice makes the mean PSNR ``inf``. ``per="volume"``: the ``*3d`` metrics.

    ``ms_ssim`` is ``NaN`` when MS-SSIM does not apply: ``per="volume"`` (no 3-D MS-SSIM: volumes
    rarely have the 176 slices five scales need), a mask was given, or the slices are smaller
    than 176×176 after the crop. The keys are always present so tables keep their columns.
    """
    dr = _check_data_range(data_range)
    if per not in ("slice", "volume"):
        raise InvalidParameterError(f"per must be 'slice' or 'volume', got {per!r}")
    pair = _prepare(pred, ref, crop, mask)
    stats = _pixel_stats(pair)
    if per == "volume":
        pix = _pixel_metrics(_volume_stats(stats), dr, nrmse_normalization)
        out = {k: float(v[0]) for k, v in pix.items()}
        out["ssim"] = ssim3d(pair.pred, pair.ref, dr, 0, pair.mask)
        out["ms_ssim"] = math.nan
    else:
        if stats.n.sum() == 0:
            raise InvalidParameterError("the mask is empty (after the border crop)")
        pix = _pixel_metrics(stats, dr, nrmse_normalization)
        sums, counts = _ssim2d_sums(pair, dr)
        pix["ssim"] = _div(sums, counts)
        y, x = pair.shape[-2:]
        if pair.mask is None and min(y, x) >= _ms_ssim_min_size(len(MS_SSIM_BETAS)):
            pix["ms_ssim"] = ms_ssim2d(pair.pred, pair.ref, dr)
        else:
            pix["ms_ssim"] = np.array([math.nan])
        out = {}
        for k, v in pix.items():
            v = np.asarray(v, dtype=np.float64)
            out[k] = float(np.nanmean(v)) if np.isfinite(v).any() or np.isinf(v).any() else math.nan
    order = ("psnr", "ssim", "ms_ssim", "mse", "mae", "nrmse")
    return {k: out[k] for k in order}
