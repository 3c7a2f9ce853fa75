"""``medsr evaluate --interpolation``: slice interpolators on held-out volumes, one report writer.

The protocol is the through-plane one of ``medsr evaluate --degradation thick-slice``
(:func:`medsr.reports.evaluate.evaluate_through_plane`) and the report is written by the same
writer (:func:`medsr.reports.evaluate.write_report`: ``metrics.csv``, ``summary.json``,
``report.md``, ``report.html``, ``figures/``), so slice interpolators, ``linear``/``cubic`` and
through-plane SR are measured and reported alike:

1. each reference volume (the slice axis moved to z; a multiple of ``factor`` slices) is made
   thick-slice ×``factor`` along z (:func:`medsr.degradations.thick_slice`, ``params``:
   ``profile``, ``thickness`` in thin slices; default Gaussian, FWHM = ``factor``, contiguous
   slabs), deterministically;
2. every model reconstructs it ×``factor`` on the one through-plane grid
   (:mod:`medsr.slice_grid`: cell-centred, the reference's own slices);
3. PSNR, SSIM, MS-SSIM, MSE, MAE, NRMSE in the volume's units with its data range, per slice
   (2-D, averaged) and per volume (``*_3d``), excluding ``factor`` slices at each end (filled by
   edge replication, not measured) and a ``factor``-pixel in-plane border; gains are paired
   differences against ``linear`` (always evaluated) with a 95 % Student-t interval. Pixels that
   hold no data in the reference or the thick input (a CT's fill, padding, NaN:
   :func:`medsr.reports.inputs.measured_pixels`) are not scored.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError, MedSRError
from medsr.image import MedImage
from medsr.interpolation.core import axis_index, check_factor, interpolate_slices, resolve_model
from medsr.modality import check_modality, set_modality

#: the method every gain is measured against (always evaluated)
BASELINE = "linear"


def _label(spec: Any) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return Path(str(spec)).name.removesuffix(".safetensors")
    return str(getattr(spec, "registry_name", type(spec).__name__))


def _volumes(
    items: Sequence[Any], skipped: list[tuple[str, str]], modality: str | None = None
) -> Iterator[tuple[str, MedImage]]:
    """``(name, grayscale 3-D volume)`` for MedImages, paths and discovered references
    (:func:`medsr.reports.inputs.discover_inputs`), read one at a time (a 4-D series: its first
    frame; colour: its luminance), with ``modality`` where the format carries none
    (:func:`medsr.modality.set_modality`); one that cannot be read is added to ``skipped``."""
    from medsr.io import load_image, to_luminance
    from medsr.reports.inputs import EvalInput

    for i, item in enumerate(items):
        if isinstance(item, MedImage):
            name, img = f"volume{i}", item
        else:
            name = item.name if isinstance(item, EvalInput) else Path(item).name
            try:
                img = item.load() if isinstance(item, EvalInput) else load_image(Path(item))
            except MedSRError as exc:
                skipped.append((name, str(exc)))
                continue
        img = set_modality(img, modality)
        if img.is_color:
            img = to_luminance(img)
        if img.channels == "time":
            img = img.replace(array=img.array[0], channels=None)
        yield name, img


def _slice_axis_first(img: MedImage, a: int) -> MedImage:
    """``img`` with array axis ``a`` as z (spacing permuted; geometry only for the figures)."""
    if a == 0:
        return img
    b, c = (k for k in range(3) if k != a)
    arr = np.ascontiguousarray(np.transpose(img.array, (a, b, c)))
    sp = img.spacing
    return MedImage(arr, spacing=(sp[a], sp[b], sp[c]), modality=img.modality, units=img.units)


def _metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    data_range: float,
    crop: int,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    from medsr.metrics import compute_metrics

    m = compute_metrics(pred, truth, data_range=data_range, crop=crop, per="slice", mask=mask)
    with warnings.catch_warnings():  # short volumes: 3-D SSIM pools 2-D maps (documented)
        warnings.simplefilter("ignore", UserWarning)
        m3 = compute_metrics(pred, truth, data_range=data_range, crop=crop, per="volume", mask=mask)
    m.update({f"{k}_3d": v for k, v in m3.items()})
    return {k: float(v) for k, v in m.items()}


def evaluate_interpolation(
    volumes: Sequence[Any],
    models: Mapping[str, Any] | Sequence[Any],
    factor: int = 2,
    out_dir: str | os.PathLike[str] = "interp-report",
    *,
    axis: str | int = "z",
    samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
    params: dict[str, Any] | None = None,
    figures: bool = True,
    modality: str | None = None,
) -> dict[str, Any]:
    """Compare slice interpolators on held-out ``volumes`` (MedImages, paths or the references
    of :func:`medsr.reports.inputs.discover_inputs`: a DICOM series is one volume).

    ``models``: ``{label: spec}`` or a list of specs (``linear``, ``cubic``, shipped or
    registered names, ``.safetensors`` files, networks); ``linear`` is added as the baseline.
    ``params``: thick-slice parameters (``profile``: ``gaussian``/``box``, ``thickness`` in thin
    slices). ``modality``: of volumes whose format carries none, as
    :func:`medsr.reports.evaluate.evaluate` takes it. Writes the report into ``out_dir`` (see the
    module docstring) and returns its ``summary.json`` content (per model: metric → mean/sd/n,
    ``gain_psnr_vs_linear``...).
    """
    from medsr.degradations import degrade_image
    from medsr.metrics import data_range_for
    from medsr.reports.evaluate import EvaluationResult, ImageResult, summarise, write_report
    from medsr.reports.inputs import measured_pixels
    from medsr.reports.reproduce import model_record, run_record
    from medsr.reports.results import SEED

    modality = check_modality(modality) if modality is not None else None
    f = check_factor(factor)
    a = axis_index(axis)
    params = dict(params or {})
    specs = dict(models) if isinstance(models, Mapping) else {_label(m): m for m in models}
    specs = {BASELINE: BASELINE, **{k: v for k, v in specs.items() if k != BASELINE}}
    from medsr.inference.device import resolve_device

    resolve_device(device)
    resolved = {k: resolve_model(v, device)[0] for k, v in specs.items()}
    out = Path(out_dir)  # created when the first figure or the report is written
    results: list[ImageResult] = []
    skipped: list[tuple[str, str]] = []
    records: dict[str, dict[str, Any]] = {}  # label → its identity (reproduce.model_record)
    for name, img in _volumes(volumes, skipped, modality):
        try:
            ref = _slice_axis_first(img, a)
            z = ref.spatial_shape[0] // f * f
            if z < 2 * f:
                raise InvalidParameterError(
                    f"{ref.spatial_shape[0]} slice(s) along {'zyx'[a]} are too few for ×{f}"
                )
            ref = ref.replace(array=np.ascontiguousarray(ref.array[:z]))
            lr = degrade_image(ref, "thick-slice", f, generator=SEED, **params)
        except MedSRError as exc:
            skipped.append((name, str(exc)))
            continue
        data_range = data_range_for(ref)
        keep = slice(f, z - f) if z - 2 * f >= 3 else slice(0, z)
        scored = measured_pixels(ref, lr, f, through_plane=True)  # no data is not scored
        mask = None if scored is None else scored[keep]
        res = ImageResult(
            name=name, modality=ref.modality, shape=ref.spatial_shape, degradation="thick-slice",
            data_range=data_range, units=ref.units,
            scored=1.0 if mask is None else round(float(mask.mean()), 4),
        )  # fmt: skip
        outputs: dict[str, MedImage] = {}
        try:
            for label, net in resolved.items():
                t0 = time.perf_counter()
                sr = interpolate_slices(lr, net, f, samples=samples, seed=seed, device=device)
                res.seconds[label] = time.perf_counter() - t0
                if sr.spatial_shape != ref.spatial_shape:
                    raise InvalidParameterError(
                        f"{label} returned {sr.spatial_shape}, expected {ref.spatial_shape}"
                    )
                outputs[label] = sr
                records.setdefault(label, model_record(sr))
                res.metrics[label] = _metrics(sr.array[keep], ref.array[keep], data_range, f, mask)
        except MedSRError as exc:  # e.g. slices too small for SSIM
            skipped.append((name, str(exc)))
            continue
        if figures:
            from medsr.reports.figures import reformat_figure

            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            panels = {f"thick ×{f} (input)": lr, **outputs}
            res.figures.append(
                reformat_figure(out / "figures" / f"{safe}_reformats.png", ref, panels)
            )
        results.append(res)
    if not results:
        from medsr.errors import EmptyInputError

        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise EmptyInputError(f"no volume could be evaluated for slice interpolation ({reasons})")
    params_out = {**params, "axis": "zyx"[a], "samples": samples, "seed": seed}
    result = EvaluationResult(
        f, list(specs), results, skipped, out, "thick-slice", params_out, baseline=BASELINE,
        run=run_record(device=device, seed=SEED, max_slices=None,
                       models={k: records.get(k, {}) for k in specs}, modality=modality),
    )  # fmt: skip
    write_report(result)
    return summarise(result)
