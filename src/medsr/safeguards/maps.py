"""Per-voxel trust maps: test-time-augmentation uncertainty, summaries, writing beside outputs.

* :func:`uncertainty_map` — the per-pixel standard deviation of the model's output over the 8
  symmetries of the square (identity, 3 rotations by 90°, and the 4 flipped versions: the
  dihedral group D4; "self-ensemble" in B. Lim et al., EDSR, CVPRW 2017; as an uncertainty
  estimate: G. Wang et al., "Aleatoric uncertainty estimation with test-time augmentation for
  medical image segmentation", Neurocomputing 338:34, 2019). A model that truly sees anatomy
  gives the same answer whichever way the image is turned; where the answers differ, the detail
  is the network's guess. For stochastic models (diffusion, MC dropout) the variance of repeated
  samples is added (``samples``/``sampler`` hook; slice interpolation with the ``fast-ddpm``
  diffusion model draws :data:`medsr.interpolation.core.DIFFUSION_SAMPLES` = 4 by default,
  :func:`medsr.interpolation.core.interpolation_uncertainty`). Classical interpolators are
  equivariant, so their map is ~0. Other operations than :func:`medsr.upscale` (slice
  interpolation) pass their own ``runner`` and the symmetries that keep their geometry.
* :func:`summarize_map` — a JSON-able summary (mean, 99th percentile, max in the image's units,
  fraction of voxels above a threshold).
* :func:`write_maps` — NIfTI (volumes) or PNG (2-D) with sidecars, and a derived DICOM series
  per map when the image came from DICOM, plus ``summary.json``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError, NoDataStoredWarning
from medsr.image import MedImage
from medsr.inference.ensemble import (
    DIHEDRAL,
    as_ensemble,
    dihedral,
    dihedral_inverse,
    ensemble_mean,
    ensemble_text,
    run_turned,
    transforms_text,
)
from medsr.io.padding import mean_over_held, nan_mask, nonfinite_mask, padding_mask

__all__ = [
    "DIHEDRAL",
    "MAP_DESCRIPTIONS",
    "dihedral",
    "dihedral_inverse",
    "map_no_data",
    "summarize_map",
    "uncertainty_map",
    "write_map_series",
    "write_maps",
]

MAP_DESCRIPTIONS = {
    "consistency": "consistency error map |degrade(SR) - measured|",
    "uncertainty": "uncertainty map (std over test-time augmentations and stochastic samples)",
    "error_bound": (
        "error bound map (about 90 % of voxels' error below it: k * sqrt(uncertainty^2 + "
        "noise^2), k calibrated on the input one scale down)"
    ),
}
#: what a map's pixel values are (its derivation record and NIfTI description say so, with units)
MAP_VALUES = {
    "consistency": "absolute error",
    "uncertainty": "standard deviation",
    "error_bound": "expected absolute error bound (90 % of voxels)",
}
#: how a map's DICOM series says what it is (medsr.io.dicom.derived): a value of Image Type naming
#: it; for the enhanced IODs, whose Image Type has 4 values, its Derived Pixel Contrast (Value 4,
#: PS3.3 C.8.16.1.4); and the operation as a derivation code (DCM, CID 7203 Image Derivation)
MAP_DICOM = {
    "consistency": {
        "image_type": "CONSISTENCY MAP",
        "contrast": "SUBTRACTION",
        "code": ("113062", "DCM", "Pixel by pixel subtraction"),
    },
    "uncertainty": {
        "image_type": "UNCERTAINTY MAP",
        "contrast": "STD_DEVIATION",
        "code": ("113061", "DCM", "Standard Deviation"),
    },
    # a multiple of a combined standard deviation (the spread and the input's noise)
    "error_bound": {
        "image_type": "ERROR BOUND MAP",
        "contrast": "STD_DEVIATION",
        "code": ("113061", "DCM", "Standard Deviation"),
    },
}


def _round(v: float, digits: int = 6) -> float:
    v = float(v)
    if not np.isfinite(v) or v == 0:
        return 0.0 if not np.isfinite(v) else v
    return float(f"{v:.{digits}g}")


def summarize_map(
    values: np.ndarray,
    *,
    data_range: float,
    threshold_rel: float,
    units: str = "a.u.",
) -> dict[str, Any]:
    """Mean, 99th percentile, max (image units), threshold and fraction of voxels above it.

    ``threshold = threshold_rel × data_range``; every ``*_rel`` entry is relative to
    ``data_range`` so numbers compare across modalities.
    """
    v = np.asarray(values)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.all():
        v = v[finite]
    rng = max(float(data_range), 1e-12)
    thr = float(threshold_rel) * rng
    if v.size == 0:
        v = np.zeros(1)
    # float32 maps are summarised as they are (float64 sums): no volume-sized float64 copy
    p99 = float(np.percentile(v, 99))
    mean, vmax = float(v.mean(dtype=np.float64)), float(v.max())
    return {
        "mean": _round(mean),
        "p99": _round(p99),
        "max": _round(vmax),
        "mean_rel": _round(mean / rng),
        "p99_rel": _round(p99 / rng),
        "max_rel": _round(vmax / rng),
        "threshold": _round(thr),
        "threshold_rel": float(threshold_rel),
        "frac_above": _round(np.count_nonzero(v > np.float64(thr)) / v.size),
        "units": units,
        "data_range": _round(rng),
    }


#: uncertainty voxels counted as "uncertain" above this fraction of the input's data range
UNCERTAINTY_THRESHOLD = 0.02


# ====================================================================== uncertainty (TTA)
def tta_statistics(
    image: MedImage,
    scale: int | None = None,
    model: Any = None,
    *,
    tta: bool = True,
    samples: int = 0,
    sampler: Callable[[MedImage], MedImage] | None = None,
    stochastic: bool = False,
    runner: Callable[[MedImage], MedImage] | None = None,
    transforms: Sequence[tuple[int, bool]] | None = None,
    ensemble: bool = False,
    spread: bool = True,
    **upscale_kwargs: Any,
) -> tuple[MedImage, np.ndarray | None, dict[str, Any]]:
    """Run the model under test-time augmentation; return (identity output, std map, info).

    The identity output is exactly ``medsr.upscale(image, scale, model, **upscale_kwargs)``
    (or ``runner(image)``). The std map is ``(Z, Y, X)`` on the output grid (mean over colour
    channels), combining the TTA spread and, when ``samples > 0``, the spread of ``samples``
    stochastic draws (from ``sampler(image)``, or repeated ``upscale``/``runner`` calls with
    fresh random seeds when ``stochastic`` — e.g. a diffusion model whose card says
    ``"stochastic": true``): ``std = sqrt(var_tta + var_samples)``. ``None`` when neither is
    requested. An image over time (``channels="time"``): ``(T, Z, Y, X)``, each time point's
    own spread (that of the time point run on its own). ``info`` records the method, the number of transforms and, for draws,
    ``samples`` and ``sample_std_mean``/``sample_std_max`` (image units).

    Args:
        runner: the operation to test instead of ``upscale(·, scale, model, **upscale_kwargs)``
            (e.g. slice interpolation); it must commute with the ``transforms``.
        transforms: the ``(k, flip)`` elements of :data:`DIHEDRAL` to average over (default
            all 8; the identity is always included).
        ensemble: return the mean of the transformed outputs (the *self-ensemble*) in place of
            the identity output (with ``tta``); its step and ``meta["derivation"]["ensemble"]``
            say so. The std map is then the spread of the outputs averaged.
        spread: ``False`` when only the ensemble is wanted (no std map; ``None`` is returned
            for it): the outputs are then summed in float32 into the first one, so the run holds
            two outputs at a time, not a float64 mean and spread beside them.
    """
    import torch

    if runner is None:
        from medsr.inference.planes import PlaneUpscaler

        loaded = (
            model
            if isinstance(model, PlaneUpscaler)
            else PlaneUpscaler(model, scale or 2, **upscale_kwargs)
        )

        def runner(im: MedImage) -> MedImage:  # one loaded network for all 8 transforms
            return loaded.upscale(im)

    chosen = list(DIHEDRAL if transforms is None else transforms)
    if (0, False) not in chosen:
        chosen.insert(0, (0, False))
    for t in chosen:
        if t not in DIHEDRAL:
            raise InvalidParameterError(f"{t!r} is not one of the 8 (rotation, flip) transforms")
    transforms = chosen if tta else [(0, False)]
    if ensemble and tta and len(transforms) > 1 and not spread and not samples:
        return (
            ensemble_mean(image, runner, transforms),
            None,
            {"method": "none", "transforms": 1, "ensemble": ensemble_text(transforms)},
        )
    mean = m2 = None
    identity: MedImage | None = None
    for n, (k, flip) in enumerate(transforms, start=1):
        if (k, flip) == (0, False):
            out = runner(image)
            identity = out
            arr = out.array.astype(np.float64)
        else:
            arr = run_turned(image, runner, k, flip).astype(np.float64)
        if mean is None:
            mean, m2 = arr.copy(), np.zeros_like(arr)
        else:  # Welford: no stack of 8 outputs in memory
            delta = arr - mean
            mean += delta / n
            m2 += delta * (arr - mean)
    assert identity is not None and m2 is not None
    what = transforms_text(transforms)
    info: dict[str, Any] = {
        "method": f"test-time augmentation: {len(transforms)} {what}" if tta else "none",
        "transforms": len(transforms),
    }
    var = m2 / len(transforms) if tta else None
    if ensemble and tta and len(transforms) > 1:
        identity = as_ensemble(identity, mean.astype(np.float32), transforms)
        info["ensemble"] = ensemble_text(transforms)

    draw = sampler
    if samples > 0 and draw is None and stochastic:
        draw = runner

    if samples > 0 and draw is not None:
        s_mean = s_m2 = None
        for n in range(1, int(samples) + 1):
            torch.manual_seed(1000 + n)
            arr = np.asarray(draw(image).array, dtype=np.float64)
            if s_mean is None:
                s_mean, s_m2 = arr.copy(), np.zeros_like(arr)
            else:
                delta = arr - s_mean
                s_mean += delta / n
                s_m2 += delta * (arr - s_mean)
        assert s_m2 is not None
        s_var = s_m2 / max(int(samples) - 1, 1)
        info["samples"] = int(samples)
        info["sample_std_mean"] = _round(np.sqrt(s_var).mean())
        info["sample_std_max"] = _round(np.sqrt(s_var).max())
        var = s_var if var is None else var + s_var
    elif samples > 0:
        info["samples"] = 0
        info["samples_skipped"] = "deterministic model (no sampler given)"
    if var is None:
        return identity, None, info
    std = np.sqrt(var).astype(np.float32)
    if image.channels == "RGB":  # over the channels that hold data at each voxel (mean_over_held)
        std = mean_over_held(std, padding_mask(identity))
    return identity, std, info


def uncertainty_map(
    image: MedImage,
    scale: int,
    model: Any = None,
    *,
    samples: int = 0,
    sampler: Callable[[MedImage], MedImage] | None = None,
    stochastic: bool = False,
    **upscale_kwargs: Any,
) -> np.ndarray:
    """Per-pixel std ``(Z, Y, X)`` of the upscaled image over the 8 dihedral TTA transforms
    (+ stochastic sample variance; see :func:`tta_statistics`), in the image's units."""
    _, std, _ = tta_statistics(
        image, scale, model, tta=True, samples=samples, sampler=sampler, stochastic=stochastic,
        **upscale_kwargs,
    )  # fmt: skip
    assert std is not None
    return std


# ====================================================================== writing
def _gray_like(like: MedImage) -> MedImage:
    if like.channels:
        return like.replace(array=like.array[0], channels=None)
    return like


def _held_nowhere(image: MedImage) -> np.ndarray | None:
    """``(Z, Y, X)``: where ``image``'s source held NaN (:func:`nonfinite_mask`) — for a colour
    image or a series, in none of its channels or frames (its map holds their mean over those
    that hold data: :func:`medsr.io.padding.mean_over_held`)."""
    mask = nonfinite_mask(image)
    if mask is not None and image.channels:
        mask = mask.all(axis=0)
    return mask


def map_no_data(
    shape: tuple[int, ...], like: MedImage, measured: MedImage | None = None
) -> np.ndarray | None:
    """Where a map of ``shape`` ``(Z, Y, X)`` beside ``like`` (the output) holds no data, or None
    (a map ``(T, Z, Y, X)`` of an image over time: that of each time point on its grid):

    * on ``like``'s grid, or on ``measured``'s (the input the output was made from: a map on the
      input grid, such as ``consistency_map(..., grid="lr")``), that image's record;
    * on a grid ``like``'s is a whole in-plane multiple of (a map on the input grid of an in-plane
      upscale, ``measured`` not given), ``like``'s record reduced by whole blocks: a pixel is no
      data where its whole block is — the inverse of :func:`medsr.io.padding.block_mask`, the rule
      that made the output's record (exact for every in-plane output);
    * else None (a through-plane output's coarser map needs ``measured``: its record keeps an
      output slice only where the input slices on both sides held none)."""
    shape = tuple(int(n) for n in shape)
    if len(shape) == 4:  # an image over time's map: each time point's own record
        for image in (like, measured):
            if image is not None and image.channels == "time" and image.array.shape == shape:
                return nonfinite_mask(image)
        return None
    for image in (like, measured):
        if image is not None and tuple(image.spatial_shape) == shape:
            return _held_nowhere(image)
    mask = _held_nowhere(like)
    if mask is None or len(shape) != 3 or mask.shape[0] != shape[0] or min(shape) < 1:
        return None
    (z, hs, ws), (h, w) = mask.shape, shape[1:]
    if hs % h or ws % w or hs // h != ws // w or hs == h:
        return None
    reduced = mask.reshape(z, h, hs // h, w, ws // w).all(axis=(2, 4))
    return reduced if reduced.any() else None


def _map_image(
    name: str, arr: np.ndarray, like: MedImage, dicom: bool, source: MedImage | None = None
) -> MedImage:
    """A MedImage for a map on the grid of ``like`` (or a grid the shapes imply: that of
    ``source``, the input, when given)."""
    base = _gray_like(like)
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    unmapped = None  # NaN: e.g. a time point whose error bound could not be calibrated
    if not np.isfinite(a).all():
        unmapped = ~np.isfinite(a)
        a = np.where(unmapped, np.float32(0), a)
    # an image over time's map: one per time point, (T, Z, Y, X) on its grid or its input's
    over_time = a.ndim == 4 and any(
        im is not None and im.channels == "time" and a.shape == im.array.shape
        for im in (like, source)
    )
    if over_time:
        a3 = a[0]
        on_source = source is not None and a.shape == source.array.shape
    else:
        a3 = a
        on_source = source is not None and a.shape == tuple(source.spatial_shape)
    if not over_time and not on_source and (a.ndim != 3 or a.shape[0] != base.spatial_shape[0]):
        raise InvalidParameterError(
            f"map {name!r} has shape {a.shape}; expected (Z, Y, X) with Z={base.spatial_shape[0]}"
            + (f" or {like.array.shape} (T, Z, Y, X)" if like.channels == "time" else "")
        )
    if on_source and a3.shape != base.spatial_shape:  # the input's grid (through-plane too)
        geo = _gray_like(source) if source is not None else base
    else:
        geo = base if a3.shape == base.spatial_shape else base.resampled(a3)
    key = name.removesuffix("_lr")
    what = MAP_DESCRIPTIONS.get(key, f"{name} map")
    # what its values are, in which units: a map of HU errors is not a CT (nor any) image
    values = f"{MAP_VALUES.get(key, 'map values')} in {like.units or 'a.u.'}"
    measured = " ".join(("a measured", *([like.modality] if like.modality else []), "image"))
    derivation = {
        **(like.meta.get("derivation") or {}),
        "method": f"{what}; pixel values: {values}; a trust map, not {measured}",
        "map": key,
    }
    for k in ("summary", "safeguards"):
        derivation.pop(k, None)
    if dicom:
        from medsr.io.dicom.write import first_time_point

        # a map of each time point of a series over time (KEY:all) is one series over time,
        # as the image itself (each time point's headers, times included); a map made from all
        # of them at once is headed by the first time point without the times that name it
        header = like if over_time else first_time_point(like)
        meta = {
            k: v
            for k, v in header.meta.items()
            if k not in ("maps", "safeguards", "provenance", "consistency", "window")
        }
        meta["pixel_encoding"] = "rescaled"
        hi = float(np.percentile(a, 99.5)) if a.size else 1.0
        hi = hi if hi > 0 else float(a.max()) or 1.0
        meta["datasets"] = [_windowed(ds, hi) for ds in header.meta.get("datasets") or []]
        meta["window"] = (hi / 2.0, hi)
        # its own SeriesNumber beside the output's (source + 1000): a viewer's list tells them apart
        known = list(MAP_DESCRIPTIONS)
        meta["series_number_offset"] = 1001 + (known.index(key) if key in known else len(known))
        # labelled as a map (Image Type, derivation code, Rescale Type not HU): medsr.io.dicom
        label = re.sub(r"[^A-Z0-9 _]", "_", key.upper())[:12].strip() or "TRUST"
        meta["map"] = MAP_DICOM.get(
            key,
            {"image_type": f"{label} MAP", "contrast": label, "code": None},
        )
    else:
        meta = {"format": "map"}
        # no trust where there is no data: NaN where the output is (medsr.io.padding.with_nan;
        # a colour or 4-D output's map where none of its channels holds data), and a map on the
        # input grid where the input is (map_no_data)
        nonfinite = map_no_data(a.shape, like, source)
        if nonfinite is not None and nonfinite.shape == a.shape:
            meta["nonfinite_mask"] = nonfinite
    meta["derivation"] = derivation
    if unmapped is not None:
        recorded = meta.get("nonfinite_mask")
        meta["nonfinite_mask"] = unmapped if recorded is None else (unmapped | recorded)
    return MedImage(
        array=a,
        spacing=geo.spacing,
        affine=geo.affine,
        modality=like.modality,
        units=like.units,
        channels="time" if over_time else None,
        meta=meta,
        history=(*like.history, what),
    )


def _windowed(ds: Any, hi: float) -> Any:
    """A copy of a DICOM template whose display window fits a map (0 … ``hi``)."""
    from medsr.io.dicom.derived import copy_sharing_raw, set_display_window

    out = copy_sharing_raw(ds)
    set_display_window(out, hi / 2.0, hi)
    return out


def write_maps(
    maps: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    like: MedImage,
    *,
    summary: Mapping[str, Any] | None = None,
    dicom: bool | None = None,
    overwrite: bool = False,
    measured: MedImage | None = None,
) -> dict[str, list[Path]]:
    """Write each map beside an output: ``<name>.png`` (2-D) or ``<name>.nii.gz`` (volumes),
    each with its JSON sidecar, and ``<name>_dicom/`` (a derived DICOM series) when ``like``
    came from DICOM; ``summary.json`` when ``summary`` is given.

    Args:
        maps: name → ``(Z, Y, X)`` array on the grid of ``like`` (or on a coarser grid of the
            same field of view, e.g. the LR grid: the geometry follows from the shapes); for
            an image over time (``channels="time"``) also ``(T, Z, Y, X)``, one map per time
            point: a 4-D NIfTI, and a DICOM series over time as the image's own.
        out_dir: folder (created).
        like: the upscaled image the maps belong to (geometry, modality, units, DICOM headers).
        summary: the JSON summary (``upscale_with_safeguards``) to write as ``summary.json``.
        dicom: write DICOM series (default: when ``like`` came from DICOM).
        overwrite: replace existing files.
        measured: the input ``like`` was made from: a map on its grid (a through-plane
            output's too) gets its geometry and is NaN where it held no data
            (:func:`map_no_data`; without it, a map on the input grid of an in-plane upscale is
            so too, from ``like``'s record).

    Returns:
        ``{name: [paths written]}`` (``"summary"`` → ``[summary.json]``).
    """
    from medsr.io import save_image
    from medsr.io._atomic import atomic_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from_dicom = like.meta.get("format") == "dicom" and bool(like.meta.get("datasets"))
    want_dicom = from_dicom if dicom is None else bool(dicom) and from_dicom
    written: dict[str, list[Path]] = {}
    no_data_pngs: list[str] = []
    for name, arr in maps.items():
        if not str(name).replace("_", "").replace("-", "").isalnum():
            raise InvalidParameterError(f"map name {name!r} must be letters, digits, - or _")
        img = _map_image(str(name), arr, like, dicom=False, source=measured)
        suffix = ".png" if img.spatial_shape[0] == 1 and not img.channels else ".nii.gz"
        # a PNG map's no data (the writer's NoDataStoredWarning): said once for all, below
        paths = [
            save_image(img, out / f"{name}{suffix}", overwrite=overwrite, no_data_warning=False)
        ]
        if suffix == ".png" and nan_mask(img) is not None:
            no_data_pngs.append(paths[0].name)
        if want_dicom:
            label = str(name).replace("_", " ")
            paths.append(
                _write_map_series(
                    str(name), arr, like, out / f"{name}_dicom", f" [medsr {label} map]", overwrite
                )
            )
        written[str(name)] = paths
    if no_data_pngs:
        warnings.warn(
            f"maps in '{out}': PNG cannot store 'no data' (NaN): where the image holds none, "
            f"{', '.join(no_data_pngs)} store a value no pixel of the map holds, below all of "
            "them (each sidecar's stored_as.no_data names it)",
            NoDataStoredWarning,
            stacklevel=2,
        )
    if summary is not None:
        target = out / "summary.json"
        with atomic_file(target, overwrite=overwrite) as tmp:
            tmp.write_text(
                json.dumps(summary, indent=2, default=_jsonable) + "\n", encoding="utf-8"
            )
        written["summary"] = [target]
    return written


def _write_map_series(
    name: str, arr: np.ndarray, like: MedImage, target: Path, suffix: str, overwrite: bool
) -> Path:
    from medsr.io import save_image

    dimg = _map_image(name, arr, like, dicom=True)
    return save_image(dimg, target, overwrite=overwrite, series_description_suffix=suffix)


def write_map_series(
    maps: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    like: MedImage,
    *,
    description_suffix: Callable[[str], str] | None = None,
) -> dict[str, Path]:
    """Only the derived DICOM series of :func:`write_maps` (the PACS bridge stores them beside
    the derived series): ``<out_dir>/<name>_dicom/`` per map, for ``like`` read from DICOM.

    ``description_suffix``: map name → the SeriesDescription suffix (default
    ``" [medsr error bound map]"``, as :func:`write_maps` writes it). Returns ``{name: folder}``.
    """
    if not (like.meta.get("format") == "dicom" and like.meta.get("datasets")):
        raise InvalidParameterError("map series need an image read from DICOM")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, arr in maps.items():
        name = str(name)
        if not name.replace("_", "").replace("-", "").isalnum():
            raise InvalidParameterError(f"map name {name!r} must be letters, digits, - or _")
        suffix = (
            description_suffix(name)
            if description_suffix is not None
            else f" [medsr {name.replace('_', ' ')} map]"
        )
        written[name] = _write_map_series(name, arr, like, out / f"{name}_dicom", suffix, False)
    return written


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
