"""Insert slices between the acquired ones: geometry, normalisation, baselines, model loading.

Inserting one slice between each pair of ``N`` slices gives ``2N − 1`` slices on a grid whose
first and last slice centres are those of the input (the acquired slices keep their world
positions); ×4 is two ×2 passes (``4N − 3`` slices). :func:`inserted_geometry` is the one place
that geometry is computed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage

AXES = {"z": 0, "y": 1, "x": 2}
BASELINES = ("linear", "cubic")
#: stochastic draws (seeds ``seed + 1000·k``) whose variance a diffusion interpolator's
#: (``fast-ddpm``) uncertainty map includes by default (:func:`interpolation_uncertainty`)
DIFFUSION_SAMPLES = 4
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


def inserted_geometry(
    image: MedImage,
    array: np.ndarray,
    axis: str | int = "z",
    factor: int = 2,
    step: str | None = None,
) -> MedImage:
    """``image`` with ``array`` = the input with ``factor − 1`` slices inserted between each pair.

    Along ``axis``: ``N`` slices → ``(N − 1)·factor + 1``; spacing and that affine column are
    divided by ``factor`` and the origin is unchanged, so voxel ``k·factor`` of the result sits at
    the world position of voxel ``k`` of the input. (``MedImage.resampled`` is cell-centred —
    same field of view, ``N·f`` slices — which is the wrong model for inserting slices.)
    """
    a = axis_index(axis)
    arr = np.asarray(array, dtype=np.float32)
    n_old = image.spatial_shape[a]
    expected = list(image.spatial_shape)
    expected[a] = (n_old - 1) * factor + 1
    if tuple(arr.shape[-3:]) != tuple(expected) or arr.ndim != image.array.ndim:
        raise ValueError(f"expected an array of shape {tuple(expected)}, got {arr.shape}")
    affine = image.affine.copy()
    col = 2 - a  # affine columns are (x, y, z) = array axes (2, 1, 0)
    affine[:3, col] = affine[:3, col] / factor
    spacing = list(image.spacing)
    spacing[a] = spacing[a] / factor
    history = image.history if step is None else (*image.history, step)
    return image.replace(array=arr, spacing=tuple(spacing), affine=affine, history=history)


def subsampled(
    image: MedImage, axis: str | int = "z", factor: int = 2
) -> tuple[MedImage, MedImage]:
    """``(reference, sparse)``: the first ``m·factor + 1`` slices along ``axis`` and every
    ``factor``-th of them, with the geometry of the kept slices (the inverse of
    :func:`inserted_geometry`, used by the evaluation: drop slices, re-insert, compare)."""
    a = axis_index(axis)
    n = image.spatial_shape[a]
    m = (n - 1) // factor
    if m < 1:
        raise InvalidParameterError(f"need at least {factor + 1} slices along {'zyx'[a]}, got {n}")
    ref = image.replace(array=np.take(image.array, np.arange(m * factor + 1), axis=a))
    affine = image.affine.copy()
    affine[:3, 2 - a] = affine[:3, 2 - a] * factor
    spacing = list(image.spacing)
    spacing[a] = spacing[a] * factor
    sparse = image.replace(
        array=np.take(ref.array, np.arange(0, m * factor + 1, factor), axis=a),
        spacing=tuple(spacing),
        affine=affine,
    )
    return ref, sparse


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
# A predictor maps (prev, next) stacks (M, H, W) — plus, for cubic, the outer neighbours — to the
# (M, H, W) slices between them. They work on the slice-axis-first normalised volume.
Predictor = Callable[[np.ndarray], np.ndarray]


def _midpoints_linear(vol: np.ndarray) -> np.ndarray:
    return 0.5 * (vol[:-1] + vol[1:])


def _midpoints_cubic(vol: np.ndarray) -> np.ndarray:
    """Keys cubic (a = −0.75, as ``torch``'s bicubic) at the half-way points, edges replicated."""
    n = vol.shape[0]
    if n < 2:
        return vol[:0]
    a = -0.75
    w_in = (a + 2) / 8 - (a + 3) / 4 + 1  # kernel at |x| = 0.5
    w_out = a * (1.5**3) - 5 * a * (1.5**2) + 8 * a * 1.5 - 4 * a  # kernel at |x| = 1.5
    idx = np.arange(n - 1)
    prev2 = vol[np.clip(idx - 1, 0, n - 1)]
    next2 = vol[np.clip(idx + 2, 0, n - 1)]
    return w_out * (prev2 + next2) + w_in * (vol[:-1] + vol[1:])


def _network_midpoints(
    model: Any, vol: np.ndarray, *, samples: int, seed: int, batch: int = 8
) -> np.ndarray:
    import torch

    from medsr.interpolation.models import FastDDPMInterpolator

    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, vol.shape[0] - 1, batch):
            e = min(s + batch, vol.shape[0] - 1)
            cond = (
                torch.from_numpy(np.stack([vol[s:e], vol[s + 1 : e + 1]], axis=1)).float().to(dev)
            )
            if isinstance(model, FastDDPMInterpolator):
                pred = model.sample(cond, seed=seed + s, samples=samples)
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

    A registered name loads the shipped weights (``interpolation/weights/NAME.safetensors``);
    without them it is refused unless ``allow_untrained`` (random weights invent anatomy)."""
    from medsr.interpolation import models as _models  # noqa: F401  (registers the interpolators)

    if not isinstance(model, (str, os.PathLike)):
        card = getattr(model, "card", None) or {
            "architecture": getattr(model, "registry_name", type(model).__name__)
        }
        return model.to(device).eval(), card
    text = str(model)
    if text in BASELINES:
        return text, {"architecture": text, "normalization": DEFAULT_NORMALIZATION}
    path = Path(text)
    if text.endswith(".safetensors") or path.is_file():
        from medsr.models.weights import load_model

        net, card = load_model(path, device=device)
        if getattr(net, "kind", None) != "slice-interpolator":
            raise InvalidParameterError(
                f"'{path.name}' holds a {card.get('architecture')!r} model, not a slice interpolator"
            )
        net.card = card
        return net, card
    shipped = Path(__file__).parent / "weights" / f"{text}.safetensors"
    if shipped.is_file():
        return resolve_model(shipped, device)
    from medsr.models.registry import create_model, get_model_class

    cls = get_model_class(text)
    if getattr(cls, "kind", None) != "slice-interpolator":
        raise InvalidParameterError(
            f"{text!r} is not a slice interpolator; use linear, cubic, interp-cnn, interp-gan, fast-ddpm or a .safetensors file"
        )
    if not allow_untrained:
        raise InvalidParameterError(
            f"no trained weights are shipped for {text!r}; train one with "
            "medsr.interpolation.train_interpolator and pass the .safetensors file"
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
    """Insert ``factor − 1`` slices between each pair of slices of ``image`` along ``axis``.

    ``model``: ``linear``/``cubic`` (baselines), a registered interpolator name (untrained
    unless shipped weights exist), a ``.safetensors`` file from :func:`train_interpolator`, or a
    network. ×4 is two ×2 passes. Intensities are normalised per volume as the model card says
    and returned in the input's units. ``samples``/``seed`` apply to ``fast-ddpm``.
    ``timing``, if given, receives ``seconds`` and ``slices_predicted``.
    """
    factor = check_factor(factor)
    a = axis_index(axis)
    if image.channels:
        raise InvalidParameterError(
            "slice interpolation needs a grayscale volume (not colour or 4-D)"
        )
    if image.spatial_shape[a] < 2:
        raise InvalidParameterError(
            f"need at least 2 slices along {'zyx'[a]} to interpolate, got {image.spatial_shape[a]}"
        )
    net, card = resolve_model(model, device)
    spec = card.get("normalization") or DEFAULT_NORMALIZATION
    lo, hi = volume_range(image.array, spec)
    vol = np.moveaxis(image.array, a, 0)
    vol = ((vol - lo) / (hi - lo)).astype(np.float32)
    if net == "linear":
        predict: Predictor = _midpoints_linear
    elif net == "cubic":
        predict = _midpoints_cubic
    else:

        def predict(v: np.ndarray) -> np.ndarray:
            return _network_midpoints(net, v, samples=samples, seed=seed)

    t0 = time.perf_counter()
    n0 = vol.shape[0]
    for _ in range(factor.bit_length() - 1):
        vol = insert_once(vol, predict)
    if timing is not None:
        timing["seconds"] = time.perf_counter() - t0
        timing["slices_predicted"] = vol.shape[0] - n0
    out = np.moveaxis(vol * (hi - lo) + lo, 0, a)
    name = card.get("name") or card.get("architecture")
    res = inserted_geometry(
        image, out, a, factor, step=f"slice interpolation x{factor} along {'zyx'[a]} ({name})"
    )
    meta = dict(res.meta)
    meta["derivation"] = {
        "method": "slice interpolation",
        "model": name,
        "scale": factor,
        "axes": f"through-plane ({'zyx'[a]})",
        "model_version": card.get("version"),
    }
    return res.replace(meta=meta)


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
) -> tuple[MedImage, np.ndarray | None, dict[str, Any]]:
    """Insert slices and measure how far the inserted slices can be trusted.

    Returns ``(result, std, summary)``. ``result`` is exactly
    ``interpolate_slices(image, model, factor, axis=axis, samples=output_samples, seed=seed)``.
    ``std`` is the per-voxel standard deviation on its grid (``(Z, Y, X)``, image units; 0 on
    the acquired slices), ``sqrt(var_tta + var_samples)``
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
    :func:`~medsr.safeguards.maps.summarize_map` of ``std`` over the inserted slices, relative to
    the input's data range (threshold: ``uncertainty_threshold``, default that of
    ``medsr upscale --maps``, 2 %). Cost: one interpolation per transform and per draw.
    """
    from medsr.safeguards.maps import DIHEDRAL, summarize_map, tta_statistics

    factor = check_factor(factor)
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
            im, net, factor, axis=a, samples=1, seed=seed + 1000 * k, device=device
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
        from medsr.inference.safeguards import UNCERTAINTY_THRESHOLD

        uncertainty_threshold = UNCERTAINTY_THRESHOLD
    unc: dict[str, Any] = {**info, "stochastic": stochastic}
    if std is not None:
        inserted = np.moveaxis(std, a, 0)
        inserted = np.delete(inserted, np.arange(0, inserted.shape[0], factor), axis=0)
        finite = image.array[np.isfinite(image.array)]
        rng = float(finite.max() - finite.min()) if finite.size else 1.0
        unc["map"] = summarize_map(
            inserted,
            data_range=max(rng, 1e-12),
            threshold_rel=uncertainty_threshold,
            units=image.units,
        )
        unc["map"]["over"] = "inserted slices"
    summary = {
        "model": card.get("name") or card.get("architecture"),
        "factor": factor,
        "axis": "zyx"[a],
        "seed": seed,
        "uncertainty": unc,
    }
    return result, std, summary
