"""Slice interpolation: normalisation, baselines, model loading and the output grid.

:func:`interpolate_slices` super-resolves a volume ×``factor`` along one axis onto medsr's one
through-plane grid (:mod:`medsr.slice_grid`: cell-centred, same field of view, ``f·N`` slices,
geometry from :meth:`MedImage.resampled`) — the grid ``medsr upscale --through-plane`` uses.
The ``linear``/``cubic`` baselines are that grid's resampler (identical to
:func:`medsr.selfsup.interpolate_z`); a slice interpolator (:mod:`medsr.models.slice`: it
predicts the slice half-way between two) inserts midpoints ``log2(2f)`` times and the
cell-centred slices are every other one of those (:func:`medsr.slice_grid.nested_midpoint_index`),
so no resampling blurs what the network predicted.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsr.degradations import check_seed, offset_seed
from medsr.errors import InvalidParameterError, MedSRWarning
from medsr.image import MedImage
from medsr.io.padding import carry_nonfinite, fill_no_data, no_data_mask
from medsr.slice_grid import (
    check_frames_are_slices,
    factor_slices,
    keep_no_data,
    nested_midpoint_index,
    no_data_kept,
    on_grid,
    resize_axis,
)

AXES = {"z": 0, "y": 1, "x": 2}
BASELINES = ("linear", "cubic")
#: stochastic draws (seeds ``seed + 1000·k``) whose variance a diffusion interpolator's
#: (``fast-ddpm``) uncertainty map includes by default (:func:`interpolation_uncertainty`)
DIFFUSION_SAMPLES = 4
#: how a refused ``seed`` is named (:func:`medsr.degradations.check_seed`: 0 … 2**64 − 1)
SEED_NAME = "a sampling seed"
#: an interpolated volume's error bound is calibrated on the volume one scale down
#: (:func:`calibrate_interpolation_bound`), which needs at least this many slices there
BOUND_MIN_SLICES = 3
#: the candidate spreads of an interpolated volume's error bound (:func:`bound_spread`)
BOUND_SPREADS = ("tta", "linear", "slices")
#: the spread the bound uses (chosen in ``benchmarks/trust_maps.py --sets interpolate``)
BOUND_SPREAD = "slices"
_SPREAD_TEXT = {
    "tta": "the uncertainty map (test-time augmentation / sampling spread)",
    "linear": "|output - linear interpolation|",
    "slices": "|difference of the two measured slices around each output slice|",
}
#: per-volume normalisation used by every interpolator (recorded in the model card)
DEFAULT_NORMALIZATION: dict[str, Any] = {"kind": "percentile-per-volume", "low": 0.5, "high": 99.5}


def axis_index(axis: str | int) -> int:
    """Array axis (0 = z, 1 = y, 2 = x) of a slice axis given as ``z``/``y``/``x`` or 0/1/2."""
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES[axis.lower()]
    if isinstance(axis, (int, np.integer)) and int(axis) in (0, 1, 2):
        return int(axis)
    raise InvalidParameterError(f"axis must be z, y or x, got {axis!r}")


def check_factor(factor: int) -> int:
    if factor not in (2, 4):
        raise InvalidParameterError(f"factor must be 2 or 4, got {factor!r}")
    return int(factor)


# ------------------------------------------------------------------ normalisation
def volume_range(array: np.ndarray, spec: dict[str, Any] | None = None) -> tuple[float, float]:
    """``(lo, hi)`` of the per-volume percentile normalisation ``spec``."""
    spec = spec or DEFAULT_NORMALIZATION
    if spec.get("kind") != "percentile-per-volume":
        raise InvalidParameterError(f"unknown interpolation normalisation {spec.get('kind')!r}")
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [float(spec["low"]), float(spec["high"])])
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


# ------------------------------------------------------------------ midpoint predictors
# A predictor maps the slice-axis-first normalised stack (N, H, W) to the (N − 1, H, W) slices
# half-way between consecutive slices.
Predictor = Callable[[np.ndarray], np.ndarray]


def _network_midpoints(
    model: Any, vol: np.ndarray, *, samples: int, seed: int, batch: int = 8
) -> np.ndarray:
    import torch

    dev = next(model.parameters()).device
    sample = getattr(model, "sample", None)  # diffusion: seeded sampling
    out = []
    with torch.no_grad():
        for s in range(0, vol.shape[0] - 1, batch):
            e = min(s + batch, vol.shape[0] - 1)
            cond = (
                torch.from_numpy(np.stack([vol[s:e], vol[s + 1 : e + 1]], axis=1)).float().to(dev)
            )
            if sample is not None:
                pred = sample(cond, seed=offset_seed(seed, s), samples=samples)
            else:
                pred = model(cond)
            out.append(pred[:, 0].float().cpu().numpy())
    return np.concatenate(out, 0) if out else vol[:0]


def insert_once(vol: np.ndarray, predict: Predictor) -> np.ndarray:
    """``(N, H, W)`` → ``(2N − 1, H, W)``: the input at even indices, predictions between."""
    mids = predict(vol)
    out = np.empty((2 * vol.shape[0] - 1, *vol.shape[1:]), dtype=np.float32)
    out[0::2] = vol
    out[1::2] = mids
    return out


# ------------------------------------------------------------------ models
def resolve_model(
    model: Any, device: str = "cpu", *, allow_untrained: bool = False
) -> tuple[Any, dict[str, Any]]:
    """``(network or baseline name, card)`` for a baseline name, registered name, file or module.

    A registered name loads the shipped weights (``medsr/weights/NAME.safetensors``, through
    :func:`medsr.models.resolver.resolve_model`);
    without them it is refused unless ``allow_untrained`` (random weights invent anatomy)."""
    from medsr.inference.device import resolve_device

    if isinstance(model, (str, os.PathLike)) and str(model) in BASELINES:
        return str(model), {"architecture": str(model), "normalization": DEFAULT_NORMALIZATION}
    device = str(resolve_device(device))  # "auto" → CUDA when available, else the CPU
    if not isinstance(model, (str, os.PathLike)):
        card = getattr(model, "card", None) or {
            "architecture": getattr(model, "registry_name", type(model).__name__)
        }
        return model.to(device).eval(), card
    text = str(model)
    from medsr.errors import MedSRError
    from medsr.models.resolver import resolve_model as resolve_any

    try:  # shipped weights (medsr/weights/, with the other models) or a weights file
        loaded = resolve_any(text, kinds=("slice-interpolator",), device=device)
    except MedSRError:
        loaded = None
        if text.endswith(".safetensors") or Path(text).is_file():
            raise
    if loaded is not None:
        net = loaded.net.to(device).eval()
        return net, loaded.card
    from medsr.models.registry import create_model, get_model_class

    cls = get_model_class(text)
    if getattr(cls, "kind", None) != "slice-interpolator":
        raise InvalidParameterError(
            f"{text!r} is not a slice interpolator; use linear, cubic, interp-cnn, interp-gan, fast-ddpm or a .safetensors file"
        )
    if not allow_untrained:
        raise InvalidParameterError(
            f"no trained weights are shipped for {text!r}; train one (medsr train "
            "configs/interp-*.yaml, then medsr export) and pass the .safetensors file"
        )
    net = create_model(text).to(device).eval()
    card = {
        "architecture": text,
        "kwargs": {},
        "normalization": DEFAULT_NORMALIZATION,
        "trained": False,
    }
    net.card = card
    return net, card


def interpolate_slices(
    image: MedImage,
    model: Any = "linear",
    factor: int = 2,
    *,
    axis: str | int = "z",
    samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
    timing: dict[str, float] | None = None,
) -> MedImage:
    """``image`` ×``factor`` along ``axis`` on the one through-plane grid (:mod:`medsr.slice_grid`).

    ``N`` slices of spacing ``s`` become ``f·N`` slices of spacing ``s/f`` covering the same
    field of view (cell-centred, as ``medsr upscale --through-plane``); for an even factor no
    output slice lies on an input slice.

    ``model``: ``linear``/``cubic`` (the grid's resampler, identical to
    :func:`medsr.selfsup.interpolate_z`), a shipped interpolator (``interp-cnn``), a registered
    interpolator name (refused without weights), a ``.safetensors`` file written by
    ``medsr export`` from a ``task: slice-interpolation`` run, or a network. A network predicts
    midpoints: it inserts them ``log2(2f)`` times (×2: two passes, ×4: three) and the output is
    every other slice of that stack; the ``f/2`` slices beyond each end repeat the end slices.
    Intensities are normalised per volume as the model card says and returned in the input's
    units. ``samples``/``seed`` apply to ``fast-ddpm``. ``timing``, if given, receives
    ``seconds`` and ``slices_predicted``. No data (DICOM padding, a CT's fill outside the scan
    circle, a NIfTI's NaN: :func:`medsr.io.padding.no_data_mask`) is read as the darkest
    measured value by every model and kept exact where both input slices around an output slice
    hold none (:func:`medsr.slice_grid.keep_no_data`); a NaN is NaN there again when written.

    An image over time (``channels="time"``, ``(T, Z, Y, X)``: a cine or dynamic series read
    with ``series_uid="KEY:all"``, a 4-D NIfTI) is interpolated time point by time point, never
    across time: each time point exactly as it is read and interpolated on its own (its no data,
    fill value, normalisation and seeds its own: :func:`_interpolate_volume`), returned as one
    image over time ``(T, Z', Y, X)`` on the one grid (written as one derived DICOM series over
    time, or a 4-D NIfTI).
    """
    factor = check_factor(factor)
    seed = check_seed(seed, SEED_NAME)
    a = axis_index(axis)
    over_time = image.channels == "time"  # a cine, a dynamic series, a 4-D NIfTI
    if image.channels and not over_time:
        raise InvalidParameterError("slice interpolation needs a grayscale volume (not colour)")
    if a == 0:
        check_frames_are_slices(image, "slice interpolation along z")
    n_in = image.spatial_shape[a]
    if n_in < 2:
        raise InvalidParameterError(
            f"need at least 2 slices along {'zyx'[a]} to interpolate, got {n_in}"
        )
    net, card = resolve_model(model, device)
    t0 = time.perf_counter()
    # no data (DICOM padding, a CT's fill outside the scan circle, NaN): read as the darkest
    # measured value, never as signal (nor in the normalisation), kept exact below; an image
    # over time: each time point's own (medsr.io.padding.no_data_fill), as read on its own
    work, no_data, _ = fill_no_data(image)
    filled, source = work.channel_first(), image.channel_first()
    masks = None if no_data is None else (no_data if over_time else no_data[None])
    outs, predicted = [], 0
    for t in range(filled.shape[0]):  # one volume, or each time point on its own
        out_t, predicted_t = _interpolate_volume(
            filled[t], None if masks is None else masks[t], source[t], net, card, factor, a,
            samples=samples, seed=seed,
        )  # fmt: skip
        outs.append(out_t)
        predicted += predicted_t
    out = np.stack(outs) if over_time else outs[0]
    if timing is not None:
        timing["seconds"] = time.perf_counter() - t0
        timing["slices_predicted"] = predicted
    name = card.get("name") or card.get("architecture")
    res = on_grid(image, out, step=f"slice interpolation x{factor} along {'zyx'[a]} ({name})")
    res = carry_nonfinite(image, res, axis=a)  # the input's NaN where no data was kept above
    meta = dict(res.meta)
    meta["derivation"] = {
        "method": "slice interpolation",
        "model": name,
        "scale": factor,
        "axes": f"through-plane ({'zyx'[a]})",
        "model_version": card.get("version"),
    }
    return res.replace(meta=meta)


def _interpolate_volume(
    filled: np.ndarray,
    no_data: np.ndarray | None,
    source: np.ndarray,
    net: Any,
    card: dict[str, Any],
    factor: int,
    a: int,
    *,
    samples: int,
    seed: int,
) -> tuple[np.ndarray, int]:
    """One volume ``(Z, Y, X)`` ×``factor`` along axis ``a`` (:func:`interpolate_slices`):
    ``filled``, its array with no data read as the darkest measured value; ``no_data``, where
    (or ``None``); ``source``, its array as read, whose values the no data keeps. Returns the
    output array (float32, input units) and how many slices were predicted. A baseline
    (``net`` a name) is the grid's resampler; a network is normalised to this volume's range
    (``card["normalization"]``) and inserts midpoints ``log2(2f)`` times."""
    import torch

    n_in = filled.shape[a]
    n_out = factor_slices(n_in, factor)
    if isinstance(net, str):  # a baseline: the grid's own resampler, in the input's units
        x = torch.from_numpy(np.ascontiguousarray(filled, dtype=np.float32))
        out = resize_axis(x, a, n_out, net).numpy()
        predicted = n_out
    else:
        spec = card.get("normalization") or DEFAULT_NORMALIZATION
        lo, hi = volume_range(filled, spec)
        vol = np.moveaxis(filled, a, 0)
        vol = ((vol - lo) / (hi - lo)).astype(np.float32)
        passes = (2 * factor).bit_length() - 1
        for k in range(passes):

            def predict(v: np.ndarray, k: int = k) -> np.ndarray:
                return _network_midpoints(
                    net, v, samples=samples, seed=offset_seed(seed, 100_003 * k)
                )

            vol = insert_once(vol, predict)
        predicted = vol.shape[0] - n_in
        vol = vol[nested_midpoint_index(n_in, factor)]
        out = np.ascontiguousarray(np.moveaxis(vol * (hi - lo) + lo, 0, a), dtype=np.float32)
    if no_data is not None:
        keep_no_data(out, source, no_data, axis=a)
    return out, predicted


def _check_one_volume(image: MedImage) -> None:
    """Refuse an image over time where a map of one volume is asked for
    (:func:`interpolation_uncertainty`, :func:`calibrate_interpolation_bound`): every map
    medsr writes is one ``(Z, Y, X)`` volume, and a mean over the time points would bound
    no time point's error."""
    if image.channels == "time":
        t, z = image.array.shape[:2]
        raise InvalidParameterError(
            f"the uncertainty map and error bound of slice interpolation (medsr interpolate "
            f"--maps) are made for one volume; this is an image over time ({t} time points of "
            f"{z} slices): interpolate it without --maps, or read one time point (--series "
            "KEY:N, or a 3-D file) for its maps"
        )


def interpolation_uncertainty(
    image: MedImage,
    model: Any = "linear",
    factor: int = 2,
    *,
    axis: str | int = "z",
    samples: int | None = None,
    seed: int = 0,
    output_samples: int = 1,
    tta: bool = True,
    device: str = "cpu",
    uncertainty_threshold: float | None = None,
    error_bound: bool = True,
    spread: str = BOUND_SPREAD,
) -> tuple[MedImage, np.ndarray | None, dict[str, Any]]:
    """Interpolate and measure how far the output slices can be trusted.

    Returns ``(result, std, summary)``. ``result`` is exactly
    ``interpolate_slices(image, model, factor, axis=axis, samples=output_samples, seed=seed)``
    (its array; with ``error_bound`` its ``meta["maps"]`` holds the bound).
    ``std`` is the per-voxel standard deviation on its grid (``(Z, Y, X)``, image units),
    ``sqrt(var_tta + var_samples)``
    (:func:`medsr.safeguards.maps.tta_statistics`):

    * test-time augmentation over the symmetries that keep the slice axis: the 8 in-plane
      flips/90° rotations for ``z``, the 4 flips (including the one that reverses the slice
      order) for ``y``/``x``; off with ``tta=False``;
    * for stochastic models (``fast-ddpm``: ``stochastic = True``), the variance of
      ``samples`` single draws with seeds ``seed + 1000·k``, ``k = 1 … samples`` — by default
      :data:`DIFFUSION_SAMPLES` (4); deterministic models (CNN, GAN, baselines) draw none
      (``samples`` given for them is recorded as skipped).

    ``summary`` (JSON-able, written as ``summary.json`` by ``medsr interpolate --maps``):
    ``model``, ``factor``, ``axis`` and ``uncertainty`` = the TTA/sampling record (``method``,
    ``transforms``, ``samples``, ``sample_std_mean``/``sample_std_max``) plus ``map``, the
    :func:`~medsr.safeguards.maps.summarize_map` of ``std`` over the output slices, relative to
    the input's data range (threshold: ``uncertainty_threshold``, default that of
    ``medsr upscale --maps``, 2 %); both over the voxels that hold data when some hold none
    (:func:`medsr.io.padding.no_data_mask`: the output keeps those exact, so their spread is 0,
    and ``over`` says how many). Cost: one interpolation per transform and per draw.

    With ``error_bound`` (the default), ``result.meta["maps"]["error_bound"]`` is the error
    bound (:func:`interpolation_error_bound`: per voxel the value about 90 % of the errors
    stay below, calibrated on the volume made thick once more and interpolated back; ``spread``
    one of :data:`BOUND_SPREADS`) and ``summary["error_bound"]`` its record — or, when it
    cannot be calibrated (too few slices), why; no map then. Cost: one more interpolation of
    ``N / f`` slices (per transform and draw for the ``tta`` spread); that run time is
    ``summary["timing_ms"]["error_bound"]`` (ms), apart from the record, so the same input and
    settings give the same record.

    An image over time (``channels="time"``) is refused (:func:`_check_one_volume`): every map
    is one volume; interpolate it with :func:`interpolate_slices`, or one time point for its
    maps.
    """
    from medsr.safeguards.maps import DIHEDRAL, summarize_map, tta_statistics

    _check_one_volume(image)
    factor = check_factor(factor)
    seed = check_seed(seed, SEED_NAME)
    a = axis_index(axis)
    if samples is not None and (int(samples) != samples or samples < 0):
        raise InvalidParameterError(f"samples must be a whole number ≥ 0, got {samples!r}")
    net, card = resolve_model(model, device)
    stochastic = bool(getattr(net, "stochastic", False))
    n_draws = (DIFFUSION_SAMPLES if stochastic else 0) if samples is None else int(samples)

    def runner(im: MedImage) -> MedImage:
        return interpolate_slices(
            im, net, factor, axis=a, samples=output_samples, seed=seed, device=device
        )

    draws = iter(range(1, n_draws + 1))

    def sampler(im: MedImage) -> MedImage:
        k = next(draws)
        return interpolate_slices(
            im, net, factor, axis=a, samples=1, seed=offset_seed(seed, 1000 * k), device=device
        )

    # rotations by 90° swap y and x: only z keeps its slice axis under all 8
    keep = list(DIHEDRAL) if a == 0 else [(k, flip) for k, flip in DIHEDRAL if k % 2 == 0]
    result, std, info = tta_statistics(
        image,
        tta=tta,
        samples=n_draws,
        sampler=sampler if stochastic else None,
        stochastic=stochastic,
        runner=runner,
        transforms=keep,
    )
    if uncertainty_threshold is None:
        from medsr.safeguards.maps import UNCERTAINTY_THRESHOLD

        uncertainty_threshold = UNCERTAINTY_THRESHOLD
    unc: dict[str, Any] = {**info, "stochastic": stochastic}
    if std is not None:
        # over the voxels that hold data, as every summary of medsr's maps: the no-data voxels
        # (a CT's fill, a NIfTI's NaN) are kept exact, so their spread of 0 is nothing measured,
        # and a CT's fill at -3024 HU would widen the range every *_rel entry is relative to
        no_data = no_data_mask(image)
        pad = None if no_data is None else no_data[0]
        held_in = np.isfinite(image.array) if pad is None else ~pad
        measured = image.array[held_in]
        rng = float(measured.max() - measured.min()) if measured.size else 1.0
        kept = None if pad is None else no_data_kept(pad, std.shape[a], a)
        unc["map"] = summarize_map(
            std if kept is None else std[~kept],
            data_range=max(rng, 1e-12),
            threshold_rel=uncertainty_threshold,
            units=image.units,
        )
        unc["map"]["over"] = (
            "output slices"
            if kept is None
            else f"output slices, the {int(kept.size - kept.sum())} voxels that hold data"
        )
    summary: dict[str, Any] = {
        "model": card.get("name") or card.get("architecture"),
        "factor": factor,
        "axis": "zyx"[a],
        "seed": seed,
        "uncertainty": unc,
    }
    if error_bound:
        if spread not in BOUND_SPREADS:
            raise InvalidParameterError(
                f"unknown spread {spread!r} (one of {', '.join(BOUND_SPREADS)})"
            )
        if spread == "tta" and std is None:
            raise InvalidParameterError("the tta spread of the error bound needs tta or samples")
        t0 = time.perf_counter()
        bound, summary["error_bound"] = interpolation_error_bound(
            image, result, net, factor, axis=a, std=std, spread=spread, seed=seed,
            samples=samples, output_samples=output_samples, device=device,
            threshold=uncertainty_threshold,
        )  # fmt: skip
        # its run time apart from the record (as every summary's ``timing_ms``): the same
        # input and settings give the same error_bound record
        summary["timing_ms"] = {"error_bound": round((time.perf_counter() - t0) * 1000, 1)}
        if bound is not None:
            maps = {**(result.meta.get("maps") or {}), "error_bound": bound}
            result = result.replace(meta={**result.meta, "maps": maps})
    return result, std, summary


# ------------------------------------------------------------------ error bound
def bound_spread(
    image: MedImage,
    result: MedImage,
    kind: str = BOUND_SPREAD,
    *,
    axis: str | int = "z",
    std: np.ndarray | None = None,
) -> np.ndarray:
    """The per-voxel spread (shaped like ``result.array``, float32, input units) that an
    interpolated volume's error bound scales (:func:`calibrate_interpolation_bound`): ``tta``
    — the uncertainty map ``std`` (:func:`interpolation_uncertainty`; 0 for the baselines,
    which commute with every flip and rotation); ``linear`` — ``|result − linear
    interpolation|`` on the same grid, how far the output departs from the plainest estimate;
    ``slices`` — ``|x[k+1] − x[k]|`` of the two measured slices around each output slice, how
    much the volume changes there. No data is read as the darkest measured value."""
    import torch

    a = axis_index(axis)
    n_out = result.spatial_shape[a]
    if kind == "tta":
        if std is None:
            raise InvalidParameterError("the tta spread needs the uncertainty map")
        return np.asarray(std, np.float32)
    filled = fill_no_data(image)[0].array.astype(np.float32, copy=False)
    if kind == "linear":
        lin = resize_axis(torch.from_numpy(np.ascontiguousarray(filled)), a, n_out, "linear")
        return np.abs(np.nan_to_num(result.array - lin.numpy())).astype(np.float32)
    if kind == "slices":
        from medsr.slice_grid import neighbour_step

        return neighbour_step(filled, n_out, a)
    raise InvalidParameterError(f"unknown spread {kind!r} (one of {', '.join(BOUND_SPREADS)})")


def _slice_noise(array: np.ndarray, a: int, valid: np.ndarray | None = None) -> np.ndarray:
    """The noise of each slice along axis ``a`` (:func:`medsr.safeguards.error_bound.noise_sigma`
    of the planes across it): ``(N,)``."""
    from medsr.safeguards.error_bound import image_noise

    planes = np.moveaxis(np.asarray(array), a, 0)[None]
    ok = None if valid is None else np.moveaxis(np.asarray(valid, bool), a, 0)[None]
    return image_noise(planes, ok)


def _spread_run(
    image: MedImage,
    net: Any,
    factor: int,
    a: int,
    *,
    spread: str,
    seed: int,
    samples: int | None,
    output_samples: int,
    device: str,
) -> tuple[MedImage, np.ndarray]:
    """``(interpolated image, its spread)`` as the output's run has them."""
    std = None
    if spread == "tta":
        res, std, _ = interpolation_uncertainty(
            image, net, factor, axis=a, samples=samples, seed=seed,
            output_samples=output_samples, device=device, error_bound=False,
        )  # fmt: skip
        if std is None:
            std = np.zeros(res.array.shape, np.float32)
    else:
        res = interpolate_slices(
            image, net, factor, axis=a, samples=output_samples, seed=seed, device=device
        )
    return res, bound_spread(image, res, spread, axis=a, std=std)


def calibrate_interpolation_bound(
    image: MedImage,
    model: Any = "linear",
    factor: int = 2,
    *,
    axis: str | int = "z",
    spread: str = BOUND_SPREAD,
    seed: int = 0,
    samples: int | None = None,
    output_samples: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """The factor ``k`` of an interpolated volume's error bound
    (:mod:`medsr.safeguards.error_bound`), measured where the truth is known: the input made
    thick once more along the slice axis — ``N // f`` slices, a Gaussian profile of FWHM ``f``
    input slices (``medsr evaluate --interpolation``'s protocol; the last ``N mod f`` slices
    left out) — interpolated back ×``f`` by the same model with the same settings, which lands
    on the input's own slices (the cell-centred grid: :mod:`medsr.slice_grid`), and compared
    with them. ``k`` is the :data:`~medsr.safeguards.error_bound.COVERAGE` quantile of
    ``|error| / √(spread² + noise²)`` there (``spread``: :func:`bound_spread` of that run;
    ``noise``: the noise of the thick slices, :func:`medsr.safeguards.error_bound.noise_sigma`,
    each slice that of its nearest one), ``f`` slices at each end and no data left out.
    (Keeping every other slice instead cannot be compared: on the cell-centred grid no output
    slice of an even factor lies on a measured slice.) ``{"calibrated": False, "reason":
    ...}`` when fewer than :data:`BOUND_MIN_SLICES` slices are left one scale down."""
    from medsr.degradations.thick_slice import thicken
    from medsr.safeguards.error_bound import calibration_record
    from medsr.slice_grid import nearest_slices

    _check_one_volume(image)
    factor = check_factor(factor)
    a = axis_index(axis)
    net, _ = resolve_model(model, device)
    n = image.spatial_shape[a]
    n_low = n // factor
    if n_low < BOUND_MIN_SLICES:
        return {
            "calibrated": False,
            "reason": f"too few slices for a calibration one scale down ({n} slices along "
            f"{'zyx'[a]} made {factor}x thicker leave {n_low}; at least {BOUND_MIN_SLICES} "
            "needed)",
        }
    filled, no_data, _ = fill_no_data(image)
    n_top = n_low * factor
    first = (slice(None),) * a + (slice(0, n_top),)  # the first n_top slices along the axis
    vol = np.ascontiguousarray(filled.array[first], np.float32)
    pad = None if no_data is None else no_data[first]
    # a thick slice holds no data where any slice under its profile holds none (valid_low)
    low, valid_low = thicken(vol, n_low, profile="gaussian", thickness=1.0, axis=a, no_data=pad)
    top = filled.replace(array=vol, meta={})
    lower = top.resampled(low)
    with warnings.catch_warnings():  # the volume's warnings were given once already
        warnings.simplefilter("ignore", MedSRWarning)
        sr, std = _spread_run(
            lower, net, factor, a, spread=spread, seed=seed, samples=samples,
            output_samples=output_samples, device=device,
        )  # fmt: skip
    if sr.spatial_shape[a] != n_top:  # cannot happen with the grid rule; never compare misaligned
        return {"calibrated": False, "reason": "the calibration did not return to the slices"}
    error = np.moveaxis(np.abs(sr.array - top.array), a, 0)
    keep = np.zeros(error.shape, dtype=bool)
    keep[factor : n_top - factor] = True
    if pad is not None:
        keep &= ~np.moveaxis(pad, a, 0)
    noise = _slice_noise(lower.array, a, valid_low)[nearest_slices(n_low, n_top)]
    return calibration_record(
        error, np.moveaxis(std, a, 0), noise, keep,
        reason="no voxel to calibrate on one scale down",
        spread=_SPREAD_TEXT[spread],
        calibration={
            "degradation": f"thick-slice along {'zyx'[a]}, gaussian profile FWHM {factor} slices",
            "slices": f"{n_low} made {n_top}",
            "voxels": int(keep.sum()),
        },
    )  # fmt: skip


def interpolation_error_bound(
    image: MedImage,
    result: MedImage,
    model: Any = "linear",
    factor: int = 2,
    *,
    axis: str | int = "z",
    std: np.ndarray | None = None,
    spread: str = BOUND_SPREAD,
    seed: int = 0,
    samples: int | None = None,
    output_samples: int = 1,
    device: str = "cpu",
    threshold: float | None = None,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ``error_bound`` map of ``result`` (:func:`interpolate_slices` of ``image`` with
    these settings; ``std`` its uncertainty map, for the ``tta`` spread) and its summary:
    per voxel ``k · √(spread² + noise²)`` (:func:`calibrate_interpolation_bound`; ``noise``:
    each output slice that of its nearest input slice), the value that about 90 % of the
    voxels' errors stay below; ``(None, why)`` when it cannot be calibrated. The voxels the
    output kept exact (no data: :func:`medsr.slice_grid.no_data_kept`) get 0 and the summary
    is over the rest, relative to the input's range there. (No output slice lies on a measured
    slice for an even factor: every output voxel is an estimate.)"""
    from medsr.io.padding import no_data_mask
    from medsr.safeguards.error_bound import bound_summary, error_bound
    from medsr.safeguards.maps import UNCERTAINTY_THRESHOLD
    from medsr.slice_grid import nearest_slices

    a = axis_index(axis)
    info = calibrate_interpolation_bound(
        image, model, factor, axis=a, spread=spread, seed=seed, samples=samples,
        output_samples=output_samples, device=device,
    )  # fmt: skip
    if not info.get("calibrated"):
        return None, info
    n, n_out = image.spatial_shape[a], result.spatial_shape[a]
    pad = no_data_mask(image)
    pad = None if pad is None else pad[0]
    noise = _slice_noise(image.array, a, None if pad is None else ~pad)
    width = bound_spread(image, result, spread, axis=a, std=std)
    bound = np.ascontiguousarray(
        np.moveaxis(
            error_bound(np.moveaxis(width, a, 0), noise[nearest_slices(n, n_out)], info["factor"]),
            0,
            a,
        )
    )
    none = None if pad is None else no_data_kept(pad, n_out, a)
    held = image.array[~pad] if pad is not None else image.array[np.isfinite(image.array)]
    rng = max(float(held.max() - held.min()), 1e-12) if held.size else 1.0
    return bound, bound_summary(
        info, bound, noise, none, rng,
        UNCERTAINTY_THRESHOLD if threshold is None else threshold, image.units,
    )  # fmt: skip
