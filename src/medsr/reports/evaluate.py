"""``medsr evaluate``: degrade reference images, upscale them back, measure, and report.

For every high-resolution reference (a file or every image under a folder) and every model:

1. the reference is cropped to a multiple of the scale and degraded with the chosen physics
   (``--degradation``; ``auto`` picks the modality's default), deterministically (fixed seed);
2. each model upscales the degraded image back;
3. PSNR, SSIM, MS-SSIM, MSE, MAE and NRMSE are computed in the reference's own units with the
   reference's data range and a ``scale``-pixel border excluded: per slice (2-D, averaged) and, for
   volumes, per volume (3-D, ``*_3d`` metrics); so are the low-band and high-band error
   (``low_band_rms``, ``high_band_rms``: :func:`medsr.metrics.band_rms2d`, the RMS of the error
   low-passed with a Gaussian of σ = 2·scale output px and of the rest, per slice, averaged).

Fidelity to the input (``maps=True``, the default), through :mod:`medsr.safeguards` as
``medsr upscale --maps`` measures it, for every model (networks and interpolators alike):

* ``consistency_mae`` / ``consistency_max``: mean and max of the consistency error
  ``|D(SR) − LR|`` on the LR grid, in the image's units, where ``D`` is the evaluation's own
  degradation when it has a deterministic model in :mod:`medsr.safeguards.operators`
  (``bicubic``, ``ct-detector``, ``radiograph``, ``kspace``; noise not modelled), else the
  modality's default (as ``medsr upscale`` assumes);
* ``uncertainty_mean``: the mean per-pixel std of the model's output over the 8 flips/90°
  rotations (test-time augmentation, :func:`medsr.safeguards.maps.uncertainty_map`), computed on
  the figure slice only (the middle slice of a volume; the whole image in 2-D) to keep it cheap;
  not for ``zero-shot`` (which would have to be retrained per transform);
* ``maps_seconds``: what measuring both cost.

``consistency="on"`` projects every output onto ``{x : D(x) = LR}`` before it is measured (data
consistency, :func:`medsr.safeguards.enforce_consistency`, no clipping, as every evaluated output
is unclipped); ``seconds`` then includes the projection.

References (:func:`medsr.reports.inputs.discover_inputs`): a file named in ``data`` is one
image; under a folder every image file is one, except the DICOM files of one series, which are
one volume (read as :func:`medsr.io.load_image` reads a series folder). The image is the unit of
the statistics: a volume's 2-D metrics are averaged over its slices first, so mean ± sd and the
95 % interval of the paired gains are over images, never over the (correlated) slices of one
patient; with one image the sd and the interval are n/a. Options (model names, ``max_slices``,
``device``, the degradation) are checked before anything is read, and ``out_dir`` is only
created when the first figure or the report is written: a refused run leaves nothing behind.

Outputs in ``--out``: ``metrics.csv`` (one row per image × model × metric), ``summary.json``,
``report.md`` and ``report.html`` (mean ± sd per model, the paired gain over bicubic with a 95 %
confidence interval, per-modality rows, fidelity to the input) and ``figures/`` (LR | bicubic |
models | HR, zoomed region of interest, |error| maps, consistency-error and uncertainty maps;
sagittal and coronal reformats for volumes).

The pieces: :mod:`medsr.reports.results` (metric names, :class:`ImageResult`,
:class:`EvaluationResult`), :mod:`medsr.reports.inputs` (discovery, the reference crop),
:mod:`medsr.reports.stats` (metrics, paired gains, the summary), :mod:`medsr.reports.write`
(the report files) and :mod:`medsr.reports.through_plane` (the thick-slice loop); this module
is the in-plane loop and re-exports their public names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import EmptyInputError, InvalidParameterError, MedSRError
from medsr.image import MedImage
from medsr.modality import check_modality, set_modality
from medsr.reports.inputs import (
    IMAGE_SUFFIXES,
    EvalInput,
    check_options,
    discover_inputs,
    measured_pixels,
    reference_image,
    reference_notes,
    safe_name,
)
from medsr.reports.reproduce import model_record, run_record
from medsr.reports.results import (
    HIGHER_IS_BETTER,
    MAP_METRICS,
    METRICS_2D,
    SEED,
    EvaluationResult,
    ImageResult,
)
from medsr.reports.stats import paired_gain, slice_and_volume_metrics, summarise
from medsr.reports.through_plane import (
    THROUGH_PLANE_METHODS,
    ZERO_SHOT_DEFAULTS,
    evaluate_through_plane,
)
from medsr.reports.write import write_report

__all__ = [
    "HIGHER_IS_BETTER",
    "IMAGE_SUFFIXES",
    "MAP_METRICS",
    "METRICS_2D",
    "THROUGH_PLANE_METHODS",
    "EvalInput",
    "EvaluationResult",
    "ImageResult",
    "discover_inputs",
    "evaluate",
    "evaluate_through_plane",
    "measured_pixels",
    "paired_gain",
    "summarise",
    "write_report",
]


def evaluate(
    data: Sequence[str | os.PathLike[str]],
    *,
    models: Sequence[str] = ("bicubic", "lanczos"),
    scale: int = 2,
    degradation: str = "auto",
    params: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "evaluation",
    max_slices: int = 16,
    device: str = "auto",
    progress: bool = True,
    figures: bool = True,
    zero_shot: dict[str, Any] | None = None,
    maps: bool = True,
    consistency: str = "off",
    modality: str | None = None,
) -> EvaluationResult:
    """Evaluate ``models`` on the references in ``data``; write the report into ``out_dir``.

    ``"zero-shot"`` in ``models`` is in-plane zero-shot SR (:func:`medsr.selfsup.zero_shot_upscale`,
    options from ``zero_shot``, default a 30 s budget), told the evaluation's degradation.
    ``degradation="thick-slice"`` evaluates through-plane reconstruction instead (see
    :func:`evaluate_through_plane`; no maps, no consistency projection).

    ``maps``: measure each output's consistency error ``|D(SR) − LR|`` and its test-time
    augmentation uncertainty (metrics ``consistency_mae``, ``consistency_max``,
    ``uncertainty_mean``; figure rows); see the module docstring. ``consistency``: ``"on"``
    projects every output onto the measured input first (data consistency), ``"off"`` (default)
    leaves the model's output as it is; ``summary.json`` records the setting.

    ``modality``: the DICOM code (``CT``, ``MR``, ``DX``…) of references whose format carries
    none (NIfTI, PNG, TIFF, .npy), as ``medsr upscale --modality`` states it
    (:func:`medsr.modality.set_modality`: a DICOM keeps its header's; a CT whose values read as
    Hounsfield units gets units HU). It picks ``degradation="auto"``'s physics and the no-data
    rules that need it (a CT's fill outside the scan circle is not scored); ``summary.json``
    records it, and each image's modality and units.
    """
    from medsr.safeguards.consistency import consistency_setting

    modality = check_modality(modality) if modality is not None else None
    models = check_options(models, max_slices, device)
    setting = consistency_setting(consistency)
    if str(degradation).strip().lower() == "thick-slice":
        if setting == "on":
            raise InvalidParameterError(
                "data consistency (consistency on) applies to in-plane evaluation only"
            )
        return evaluate_through_plane(
            data,
            models=models,
            scale=scale,
            params=params,
            out_dir=out_dir,
            max_slices=max_slices,
            device=device,
            progress=progress,
            figures=figures,
            zero_shot=zero_shot,
            modality=modality,
        )
    from medsr.degradations import degrade_image
    from medsr.inference.predictor import upscale
    from medsr.metrics import band_sigma, data_range_for
    from medsr.models.resolver import check_scale, resolve_model
    from medsr.safeguards import enforce_consistency

    scale = check_scale(scale)
    # bicubic is always the reference baseline; an unknown or unfit model is an error before
    # anything is read; one model named twice (lanczos, LANCZOS; a file by two paths) runs once
    unique: dict[object, str] = {}
    for model in ["bicubic", *models]:
        if model.lower() == "zero-shot":
            unique.setdefault("zero-shot", "zero-shot")
            continue
        found = resolve_model(model, scale=scale, kinds=("in-plane", "classical"))
        key = found.path.resolve() if found.path is not None else found.name
        unique.setdefault(key, model)
    models = list(unique.values())
    if str(degradation).strip().lower() != "auto":
        from medsr.degradations import list_degradations

        if str(degradation).strip().lower() not in list_degradations():
            raise InvalidParameterError(
                f"unknown degradation {degradation!r}; choose auto or one of: "
                f"{', '.join(list_degradations())}"
            )
    params = dict(params or {})
    inputs = discover_inputs(data, out_dir=out_dir)
    out = Path(out_dir)  # created when the first figure or the report is written
    results: list[ImageResult] = []
    skipped: list[tuple[str, str]] = []
    loaded: dict[str, Any] = {}  # model → PlaneUpscaler shared by the TTA runs
    records: dict[str, dict[str, Any]] = {}  # model → its identity (reproduce.model_record)

    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]evaluate"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("", total=len(inputs))
        for item in inputs:
            name = item.name
            bar.update(task, description=name)
            try:
                image = set_modality(item.load(), modality)
                ref = reference_image(image, scale)
                z0 = 0
                if ref.spatial_shape[0] > max_slices:  # evaluate a centred slab of a long volume
                    z0 = (ref.spatial_shape[0] - max_slices) // 2
                    ref = ref.replace(array=ref.array[z0 : z0 + max_slices])
                kind = _degradation_for(degradation, ref.modality)
                lr = degrade_image(ref, kind, scale, generator=SEED, **params)
                z, h, w = ref.spatial_shape
                if lr.spatial_shape != (z, h // scale, w // scale):
                    raise InvalidParameterError(
                        f"degradation {kind!r} does not reduce both in-plane axes by {scale} "
                        f"({ref.spatial_shape} → {lr.spatial_shape}); in-plane models cannot be evaluated on it"
                    )
            except MedSRError as exc:
                skipped.append((name, str(exc)))
                bar.advance(task)
                continue
            scored = measured_pixels(ref, lr, scale)
            data_range = data_range_for(ref)
            res = ImageResult(
                name=name, modality=ref.modality, shape=ref.spatial_shape, degradation=kind,
                scored=1.0 if scored is None else round(float(scored.mean()), 4),
                data_range=data_range, notes=reference_notes(image, ref, z0), units=ref.units,
            )  # fmt: skip
            outputs: dict[str, MedImage] = {}
            panels: dict[str, dict[str, Any]] = {}
            meas = None
            if maps or setting == "on":
                meas = _consistency_measurement(kind, params, lr, scale)
                res.consistency_degradation = meas.describe()
            for model in models:
                t0 = time.perf_counter()
                if model == "zero-shot":
                    sr = _zero_shot_inplane(lr, scale, kind, params, device, zero_shot)
                else:
                    sr = upscale(lr, scale=scale, model=model, device=device, clip=False)
                if setting == "on":
                    sr = enforce_consistency(sr, lr, meas, scale, clip=False)
                res.seconds[model] = time.perf_counter() - t0
                outputs[model] = sr
                records.setdefault(model, model_record(sr))
                m = slice_and_volume_metrics(
                    sr.array, ref.array, data_range, scale, volume=ref.is_volume, mask=scored,
                    band_sigma=band_sigma(scale),
                )  # fmt: skip
                if maps:
                    t1 = time.perf_counter()
                    m_maps, panels[model] = _fidelity_maps(
                        sr, lr, meas, scale, model, loaded, device
                    )
                    m.update(m_maps)
                    res.map_seconds[model] = time.perf_counter() - t1
                res.metrics[model] = {k: float(v) for k, v in m.items()}
            if figures:
                from medsr.reports.figures import comparison_figure, reformat_figure

                stem = safe_name(name)
                res.figures.append(
                    comparison_figure(
                        out / "figures" / f"{stem}.png",
                        ref,
                        lr,
                        outputs,
                        scale,
                        maps=panels or None,
                    )
                )
                if ref.spatial_shape[0] >= 4:
                    res.figures.append(
                        reformat_figure(out / "figures" / f"{stem}_reformats.png", ref, outputs)
                    )
            results.append(res)
            bar.advance(task)
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise EmptyInputError(f"no image could be evaluated ({reasons})")
    result = EvaluationResult(
        scale,
        models,
        results,
        skipped,
        out,
        degradation,
        params,
        consistency=setting,
        maps=bool(maps),
        run=run_record(
            device=device, seed=SEED, max_slices=max_slices, models=records, modality=modality
        ),
    )
    write_report(result)
    return result


def _consistency_measurement(kind: str, params: dict[str, Any], lr: MedImage, scale: int) -> Any:
    """The ``D`` of the consistency error: the evaluation's degradation when it has a
    deterministic measurement model that maps this image's ×``scale`` grid onto ``lr``'s, else
    the modality default (what ``medsr upscale`` assumes)."""
    from medsr.safeguards import consistency_error, resolve_measurement

    try:
        meas = resolve_measurement(kind, scale, lr.modality, **params)
        one = lr.replace(array=np.ascontiguousarray(lr.array[:1]))
        trial = one.resampled(np.kron(one.array, np.ones((1, scale, scale), np.float32)))
        consistency_error(trial, one, meas, scale)  # shapes and kind fit an in-plane pair
        return meas
    except InvalidParameterError:
        return resolve_measurement("auto", scale, lr.modality)


def _fidelity_maps(
    sr: MedImage,
    lr: MedImage,
    meas: Any,
    scale: int,
    model: str,
    loaded: dict[str, Any],
    device: str,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Consistency error (whole image) and TTA uncertainty (figure slice) of one output: the
    metrics and the figure-slice maps (consistency on the LR grid, uncertainty on the SR grid)."""
    from medsr.inference.planes import PlaneUpscaler
    from medsr.safeguards import consistency_map, uncertainty_map

    k = lr.spatial_shape[0] // 2  # the figure slice (comparison_figure shows the middle one)
    cmap = consistency_map(sr, lr, meas, scale)
    metrics = {"consistency_mae": float(cmap.mean()), "consistency_max": float(cmap.max())}
    panel: dict[str, Any] = {"consistency": cmap[k], "uncertainty": None}
    if model != "zero-shot":
        if model not in loaded:
            loaded[model] = PlaneUpscaler(model, scale, device=device, clip=False)
        one = lr.replace(array=np.ascontiguousarray(lr.array[k : k + 1]))
        std = uncertainty_map(one, scale, loaded[model], clip=False)
        metrics["uncertainty_mean"] = float(std.mean())
        panel["uncertainty"] = std[0]
    return metrics, panel


def _degradation_for(kind: str, modality: str) -> str:
    if kind != "auto":
        return kind
    from medsr.degradations import default_kind

    return default_kind(modality)


def _zero_shot_inplane(
    lr: MedImage,
    scale: int,
    kind: str,
    params: dict[str, Any],
    device: str,
    options: dict[str, Any] | None,
) -> MedImage:
    """In-plane zero-shot SR of an evaluation input, assuming the evaluation's own degradation."""
    from medsr.selfsup import zero_shot_upscale

    opts = {**ZERO_SHOT_DEFAULTS, **(options or {})}
    if kind == "bicubic":
        opts.setdefault("degradation", "bicubic")
        opts.setdefault("blur_sigma", float(params.get("blur_sigma", 0.0)))
    else:
        opts.setdefault("degradation", kind)
        opts.setdefault("degradation_params", dict(params))
    try:
        return zero_shot_upscale(lr, scale, device=device, clip=False, **opts)
    except InvalidParameterError:
        if opts.get("degradation") == "bicubic":
            raise
        # a degradation that cannot build an in-plane pyramid: fall back to the default one
        opts.pop("degradation_params", None)
        opts["degradation"] = "bicubic"
        return zero_shot_upscale(lr, scale, device=device, clip=False, **opts)
