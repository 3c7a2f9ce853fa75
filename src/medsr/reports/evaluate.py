"""``medsr evaluate``: degrade reference images, upscale them back, measure, and report.

For every high-resolution reference (a file or every image under a folder) and every model:

1. the reference is cropped to a multiple of the scale and degraded with the chosen physics
   (``--degradation``; ``auto`` picks the modality's default), deterministically (fixed seed);
2. each model upscales the degraded image back;
3. PSNR, SSIM, MS-SSIM, MSE, MAE and NRMSE are computed in the reference's own units with the
   reference's data range and a ``scale``-pixel border excluded: per slice (2-D, averaged) and, for
   volumes, per volume (3-D, ``*_3d`` metrics).

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

Outputs in ``--out``: ``metrics.csv`` (one row per image × model × metric), ``summary.json``,
``report.md`` and ``report.html`` (mean ± sd per model, the paired gain over bicubic with a 95 %
confidence interval, per-modality rows, fidelity to the input) and ``figures/`` (LR | bicubic |
models | HR, zoomed region of interest, |error| maps, consistency-error and uncertainty maps;
sagittal and coronal reformats for volumes).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import EmptyInputError, InvalidParameterError, MedSRError
from medsr.image import MedImage
from medsr.io import load_image, to_luminance

METRICS_2D = ("psnr", "ssim", "ms_ssim", "mse", "mae", "nrmse")
#: fidelity to the input (``maps=True``): consistency error |D(SR) − LR| and TTA uncertainty
MAP_METRICS = ("consistency_mae", "consistency_max", "uncertainty_mean")
HIGHER_IS_BETTER = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "mse": False,
    "mae": False,
    "nrmse": False,
    "consistency_mae": False,
    "consistency_max": False,
    "uncertainty_mean": False,
}
IMAGE_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz", ".png", ".tif", ".tiff", ".npy", ".ima")


@dataclass
class ImageResult:
    name: str
    modality: str
    shape: tuple[int, int, int]
    degradation: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model → metric → value
    seconds: dict[str, float] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    map_seconds: dict[str, float] = field(default_factory=dict)  # model → time to measure the maps
    consistency_degradation: str = ""  # the D of |D(SR) − LR| (Measurement.describe())


@dataclass
class EvaluationResult:
    scale: int
    models: list[str]
    images: list[ImageResult]
    skipped: list[tuple[str, str]]
    out_dir: Path
    degradation: str
    params: dict[str, Any]
    baseline: str = "bicubic"  # the method gains are measured against (linear-z through-plane)
    consistency: str = "off"  # data-consistency projection of every output (on/off)
    maps: bool = False  # consistency-error and uncertainty maps measured

    def values(self, model: str, metric: str, modality: str | None = None) -> np.ndarray:
        return np.array(
            [
                r.metrics[model][metric]
                for r in self.images
                if metric in r.metrics.get(model, {})
                and (modality is None or r.modality == modality)
            ],
            dtype=float,
        )


def discover_inputs(data: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files given directly, plus every image file (or DICOM series folder) under given folders."""
    found: list[Path] = []
    for entry in data:
        p = Path(entry)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)
            )
            found.extend(files)
        else:
            from medsr.errors import InputNotFoundError

            raise InputNotFoundError(f"evaluation data '{p}' does not exist")
    if not found:
        raise EmptyInputError("no images found in the evaluation data")
    return found


def paired_gain(model_values: np.ndarray, base_values: np.ndarray) -> tuple[float, float, float]:
    """Mean paired difference and its 95 % Student-t confidence interval (nan when n < 2)."""
    d = np.asarray(model_values, float) - np.asarray(base_values, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def _reference(image: MedImage, scale: int) -> MedImage:
    """Grayscale reference cropped to a multiple of ``scale`` in-plane."""
    img = to_luminance(image) if image.is_color else image
    if img.channels == "time":
        img = img.replace(array=img.array[0], channels=None)
    _, h, w = img.spatial_shape
    hh, ww = h - h % scale, w - w % scale
    if hh < 4 * scale or ww < 4 * scale:
        raise InvalidParameterError(f"image is too small ({h}×{w}) to evaluate at ×{scale}")
    return img.replace(array=np.ascontiguousarray(img.array[:, :hh, :ww]))


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
    """
    from medsr.inference.safeguards import consistency_setting

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
        )
    from medsr.degradations import degrade_image
    from medsr.inference.predictor import SCALES, upscale
    from medsr.metrics import data_range_for
    from medsr.safeguards import enforce_consistency

    if scale not in SCALES:
        raise InvalidParameterError(f"scale must be one of {SCALES}")
    models = list(dict.fromkeys(["bicubic", *models]))  # bicubic is always the reference baseline
    params = dict(params or {})
    files = discover_inputs(data)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results: list[ImageResult] = []
    skipped: list[tuple[str, str]] = []
    loaded: dict[str, Any] = {}  # model → PlaneUpscaler shared by the TTA runs

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
        task = bar.add_task("", total=len(files))
        for path in files:
            name = _display_name(path, files)
            bar.update(task, description=name)
            try:
                image = load_image(path)
                ref = _reference(image, scale)
                if ref.spatial_shape[0] > max_slices:  # evaluate a centred slab of a long volume
                    z0 = (ref.spatial_shape[0] - max_slices) // 2
                    ref = ref.replace(array=ref.array[z0 : z0 + max_slices])
                kind = _degradation_for(degradation, ref.modality)
                lr = degrade_image(ref, kind, scale, generator=0, **params)
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
            res = ImageResult(
                name=name, modality=ref.modality, shape=ref.spatial_shape, degradation=kind
            )
            data_range = data_range_for(ref)
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
                m = _slice_and_volume_metrics(
                    sr.array, ref.array, data_range, scale, volume=ref.is_volume
                )
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

                stem = _safe(name)
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
    )
    write_report(result)
    return result


def _slice_and_volume_metrics(
    pred: np.ndarray, truth: np.ndarray, data_range: float, crop: int, *, volume: bool
) -> dict[str, float]:
    """Per-slice metrics, plus the per-volume ones as ``<name>_3d`` when ``volume``."""
    from medsr.metrics import compute_metrics

    m = compute_metrics(pred, truth, data_range=data_range, crop=crop, per="slice")
    if volume:
        with warnings.catch_warnings():  # short volumes: 3-D SSIM pools 2-D maps (documented)
            warnings.simplefilter("ignore", UserWarning)
            m3 = compute_metrics(pred, truth, data_range=data_range, crop=crop, per="volume")
        m.update({f"{k}_3d": v for k, v in m3.items()})
    return m


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


def _display_name(path: Path, files: list[Path]) -> str:
    if len({f.name for f in files}) == len(files):
        return path.name
    common = Path(os.path.commonpath([str(f) for f in files]))
    return str(path.relative_to(common)) if path != common else path.name


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------- writing the report
def _rows(result: EvaluationResult) -> list[dict[str, Any]]:
    rows = []
    for r in result.images:
        for model, metrics in r.metrics.items():
            for metric, value in metrics.items():
                rows.append(
                    {
                        "image": r.name,
                        "modality": r.modality,
                        "degradation": r.degradation,
                        "scale": result.scale,
                        "model": model,
                        "metric": metric,
                        "value": value,
                    }
                )
            rows.append(
                {
                    "image": r.name,
                    "modality": r.modality,
                    "degradation": r.degradation,
                    "scale": result.scale,
                    "model": model,
                    "metric": "seconds",
                    "value": r.seconds[model],
                }
            )
            if model in r.map_seconds:
                rows.append(
                    {
                        "image": r.name,
                        "modality": r.modality,
                        "degradation": r.degradation,
                        "scale": result.scale,
                        "model": model,
                        "metric": "maps_seconds",
                        "value": r.map_seconds[model],
                    }
                )
    return rows


def summarise(result: EvaluationResult) -> dict[str, Any]:
    """Mean ± sd per model and metric, paired gains over the baseline (bicubic), per-modality means."""
    base = result.baseline
    metrics = [m for m in METRICS_2D if any(m in r.metrics.get(base, {}) for r in result.images)]
    metrics += [
        f"{m}_3d"
        for m in ("psnr", "ssim")
        if any(f"{m}_3d" in r.metrics.get(base, {}) for r in result.images)
    ]
    metrics += [
        m
        for m in MAP_METRICS
        if any(m in r.metrics.get(mod, {}) for r in result.images for mod in result.models)
    ]
    summary: dict[str, Any] = {
        "scale": result.scale,
        "degradation": result.degradation,
        "params": result.params,
        "baseline": base,
        "consistency": result.consistency,
        "maps": result.maps,
        "n_images": len(result.images),
        "models": {},
        "per_modality": {},
        "skipped": [{"image": n, "reason": r} for n, r in result.skipped],
    }
    if result.maps:
        summary["consistency_degradation"] = {
            r.name: r.consistency_degradation for r in result.images
        }
    for model in result.models:
        entry: dict[str, Any] = {}
        for metric in metrics:
            v = result.values(model, metric)
            v = v[np.isfinite(v)]
            entry[metric] = {
                "mean": float(v.mean()) if v.size else math.nan,
                "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                "n": int(v.size),
            }
        for metric in ("psnr", "ssim", "psnr_3d", "ssim_3d"):
            if metric.endswith("_3d") and metric not in metrics:
                continue
            mean, lo, hi = paired_gain(result.values(model, metric), result.values(base, metric))
            entry[f"gain_{metric}_vs_{base}"] = {"mean": mean, "ci95": [lo, hi]}
        entry["seconds_per_image"] = float(np.mean([r.seconds[model] for r in result.images]))
        map_s = [r.map_seconds[model] for r in result.images if model in r.map_seconds]
        if map_s:
            entry["maps_seconds_per_image"] = float(np.mean(map_s))
        summary["models"][model] = entry
    for modality in sorted({r.modality for r in result.images}):
        summary["per_modality"][modality] = {
            model: {
                "n": int(result.values(model, "psnr", modality).size),
                "psnr": float(np.nanmean(result.values(model, "psnr", modality))),
                "ssim": float(np.nanmean(result.values(model, "ssim", modality))),
                f"gain_psnr_vs_{base}": paired_gain(
                    result.values(model, "psnr", modality), result.values(base, "psnr", modality)
                )[0],
            }
            for model in result.models
        }
    return summary


def write_report(result: EvaluationResult) -> None:
    out = result.out_dir
    rows = _rows(result)
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(result)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    (out / "report.md").write_text(_markdown(result, summary))
    (out / "report.html").write_text(_html(result, summary), encoding="utf-8")


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _digits(metric: str) -> int:
    return 4 if metric.startswith(("ssim", "ms_ssim", "nrmse")) else 2


def _fmt_g(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _tables(
    result: EvaluationResult, summary: dict[str, Any]
) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    any_model = next(iter(summary["models"].values()))
    metrics = [
        m
        for m in any_model
        if not m.startswith(("gain_", "seconds", "maps_")) and m not in MAP_METRICS
    ]
    base = result.baseline
    head = ["model", *metrics, f"ΔPSNR vs {base} [95 % CI]", f"ΔSSIM vs {base}", "s / image"]
    body = []
    for model, e in summary["models"].items():
        g, gs = e[f"gain_psnr_vs_{base}"], e[f"gain_ssim_vs_{base}"]
        ci = f"{_fmt(g['mean'])} [{_fmt(g['ci95'][0])}, {_fmt(g['ci95'][1])}]"
        body.append(
            [
                model,
                *[
                    f"{_fmt(e[m]['mean'], _digits(m))} ± {_fmt(e[m]['sd'], _digits(m))}"
                    for m in metrics
                ],
                ci,
                _fmt(gs["mean"], 4),
                _fmt(e["seconds_per_image"], 3),
            ]
        )
    mod_head = ["modality", "model", "n", "PSNR", "SSIM", f"ΔPSNR vs {base}"]
    mod_body = [
        [
            mod,
            model,
            str(v["n"]),
            _fmt(v["psnr"]),
            _fmt(v["ssim"], 4),
            _fmt(v[f"gain_psnr_vs_{base}"]),
        ]
        for mod, per in summary["per_modality"].items()
        for model, v in per.items()
    ]
    return head, body, mod_head, mod_body


def _fidelity(
    result: EvaluationResult, summary: dict[str, Any]
) -> tuple[str, list[str], list[list[str]]] | None:
    """Note, head and rows of the fidelity-to-the-input table (``None`` without maps)."""
    if not result.maps:
        return None
    head = [
        "model",
        "mean |D(SR) − LR|",
        "max |D(SR) − LR|",
        "TTA uncertainty (mean std)",
        "maps s / image",
    ]
    body = []
    for model, e in summary["models"].items():
        cells = [model]
        for m in MAP_METRICS:
            v = e.get(m)
            cells.append(f"{_fmt_g(v['mean'])} ± {_fmt_g(v['sd'])}" if v and v["n"] else "n/a")
        cells.append(_fmt(e.get("maps_seconds_per_image", math.nan), 3))
        body.append(cells)
    ds = ", ".join(sorted({r.consistency_degradation for r in result.images}))
    projected = (
        (
            "on: every output was first projected onto the measured input (data consistency), "
            "so its error is what the projection leaves"
        )
        if result.consistency == "on"
        else "off"
    )
    note = (
        f"How far each output contradicts its own input: the consistency error |D(SR) − LR| (D, the assumed "
        f"degradation: {ds}) on the input grid, and the spread of the model's output over 8 flips/90° "
        f"rotations of the input (test-time augmentation; on the figure slice of volumes). Values in each "
        f"image's own units, mean ± sd over images. Consistency projection {projected}."
    )
    return note, head, body


def _markdown(result: EvaluationResult, summary: dict[str, Any]) -> str:
    head, body, mhead, mbody = _tables(result, summary)

    def table(h: list[str], b: list[list[str]]) -> str:
        lines = ["| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
        lines += ["| " + " | ".join(r) + " |" for r in b]
        return "\n".join(lines)

    parts = [
        f"# medsr evaluation — ×{result.scale}, degradation `{result.degradation}`",
        "",
        f"{summary['n_images']} reference images; metrics in each image's own units with its data range, "
        f"{result.scale}-pixel border excluded; 2-D metrics averaged over slices, `_3d` per volume. "
        f"Gains are paired differences against {result.baseline} with a 95 % Student-t confidence interval."
        + (_THROUGH_PLANE_NOTE.format(f=result.scale) if result.baseline != "bicubic" else ""),
        "",
        "## All images (mean ± sd)",
        "",
        table(head, body),
        "",
        "## Per modality",
        "",
        table(mhead, mbody),
        "",
        "## Per image (PSNR dB)",
        "",
        table(
            ["image", "modality", "degradation", *result.models],
            [
                [
                    r.name,
                    r.modality,
                    r.degradation,
                    *[_fmt(r.metrics[m]["psnr"]) for m in result.models],
                ]
                for r in result.images
            ],
        ),
        "",
    ]
    fidelity = _fidelity(result, summary)
    if fidelity is not None:
        note, fhead, fbody = fidelity
        parts += ["## Fidelity to the input", "", note, "", table(fhead, fbody), ""]
    if result.skipped:
        parts += ["## Skipped", "", *[f"- `{n}`: {r}" for n, r in result.skipped], ""]
    parts += ["## Figures", ""] + [f"![{f}]({f})" for r in result.images for f in r.figures]
    return "\n".join(parts) + "\n"


def _html(result: EvaluationResult, summary: dict[str, Any]) -> str:
    head, body, mhead, mbody = _tables(result, summary)

    def table(h: list[str], b: list[list[str]]) -> str:
        th = "".join(f"<th>{html.escape(x)}</th>" for x in h)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in b
        )
        return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'

    per_image = table(
        ["image", "modality", "degradation", *result.models],
        [
            [
                r.name,
                r.modality,
                r.degradation,
                *[_fmt(r.metrics[m]["psnr"]) for m in result.models],
            ]
            for r in result.images
        ],
    )
    figs = "".join(
        f'<figure><img src="{html.escape(f)}" alt="{html.escape(f)}"><figcaption>{html.escape(f)}</figcaption></figure>'
        for r in result.images
        for f in r.figures
    )
    fidelity = _fidelity(result, summary)
    fid_html = ""
    if fidelity is not None:
        note, fhead, fbody = fidelity
        fid_html = f'<h2>Fidelity to the input</h2><p class="note">{html.escape(note)}</p>{table(fhead, fbody)}'

    skipped = ""
    if result.skipped:
        skipped = (
            "<h2>Skipped</h2><ul>"
            + "".join(
                f"<li><code>{html.escape(n)}</code>: {html.escape(r)}</li>"
                for n, r in result.skipped
            )
            + "</ul>"
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>medsr evaluation ×{result.scale}</title><style>
body {{ font-family: system-ui, sans-serif; max-width: 1400px; margin: 0 auto; padding: 24px; color: #1d2433; }}
table {{ border-collapse: collapse; margin: 8px 0 20px; font-size: 13px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #e3e6ec; text-align: right; white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }} th {{ background: #f1f3f7; }}
figure {{ margin: 12px 0; }} figure img {{ max-width: 100%; }} figcaption {{ font-size: 12px; color: #555; }}
.note {{ color: #44506a; font-size: 13px; }} .scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>medsr evaluation — ×{result.scale}, degradation <code>{html.escape(result.degradation)}</code></h1>
<p class="note">{summary["n_images"]} reference images; metrics in each image's own units with its data range,
{result.scale}-pixel border excluded; 2-D metrics averaged over slices, <code>_3d</code> per volume. Gains are paired
differences against {html.escape(result.baseline)} with a 95 % Student-t confidence interval.
{html.escape(_THROUGH_PLANE_NOTE.format(f=result.scale)) if result.baseline != "bicubic" else ""}</p>
<h2>All images (mean ± sd)</h2>{table(head, body)}
<h2>Per modality</h2>{table(mhead, mbody)}
<h2>Per image (PSNR dB)</h2>{per_image}
{fid_html}
{skipped}
<h2>Figures</h2>{figs}
</body></html>
"""


# --------------------------------------------------------------------------- zero-shot and through-plane
_THROUGH_PLANE_NOTE = (
    " Through-plane: each reference volume is made thick-slice (×{f} along z) and reconstructed"
    " back to its own slices; the first and last {f} slices (extrapolated by every method) are"
    " excluded too, and the in-plane metrics are those of the axial slices."
)
#: through-plane methods of ``evaluate_through_plane`` and the in-plane names that map onto them
THROUGH_PLANE_METHODS = ("linear-z", "cubic-z", "zero-shot")
_THROUGH_PLANE_ALIASES = {"linear": "linear-z", "bicubic": "cubic-z", "cubic": "cubic-z"}
_ZERO_SHOT_DEFAULTS: dict[str, Any] = {"budget_s": 30.0, "progress": False}


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

    opts = {**_ZERO_SHOT_DEFAULTS, **(options or {})}
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


def evaluate_through_plane(
    data: Sequence[str | os.PathLike[str]],
    *,
    models: Sequence[str] = THROUGH_PLANE_METHODS,
    scale: int = 4,
    params: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "evaluation",
    max_slices: int = 16,
    device: str = "auto",
    progress: bool = True,
    figures: bool = True,
    zero_shot: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Through-plane evaluation: thick-slice degradation along z, reconstruction, 3-D metrics.

    Each reference volume is cropped to a multiple of ``scale`` slices (a centred slab of at most
    ``max_slices × scale`` slices, so the thick volume has at most ``max_slices``), degraded with
    :func:`medsr.degradations.thick_slice` (``params``: ``profile``, ``thickness`` in thin slices)
    and reconstructed on the reference grid by every method: ``linear-z`` (the baseline gains are
    measured against), ``cubic-z`` and ``zero-shot`` (:func:`medsr.selfsup.through_plane_upscale`,
    told the slice profile and thickness; options from ``zero_shot``, default a 30 s budget).
    In-plane names map onto them (``linear`` → ``linear-z``, ``bicubic`` → ``cubic-z``); other
    in-plane models do not apply and are listed as skipped. Metrics exclude ``scale`` slices at
    each end and a ``scale``-pixel in-plane border; figures show sagittal/coronal reformats.
    """
    from medsr.degradations import degrade_image
    from medsr.degradations._common import check_scale
    from medsr.metrics import data_range_for
    from medsr.selfsup import interpolate_z, through_plane_upscale

    f = check_scale(scale)
    if f < 2:
        raise InvalidParameterError("through-plane evaluation needs a scale of at least 2")
    params = dict(params or {})
    skipped: list[tuple[str, str]] = []
    methods = ["linear-z"]
    for name in models:
        key = _THROUGH_PLANE_ALIASES.get(str(name).lower(), str(name).lower())
        if key in THROUGH_PLANE_METHODS:
            methods.append(key)
        else:
            skipped.append(
                (
                    f"model {name}",
                    "in-plane model: not applicable to through-plane (thick-slice) evaluation; "
                    f"through-plane methods are {', '.join(THROUGH_PLANE_METHODS)}",
                )
            )
    methods = list(dict.fromkeys(methods))
    files = discover_inputs(data)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results: list[ImageResult] = []
    zs = {**_ZERO_SHOT_DEFAULTS, **(zero_shot or {})}
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]evaluate (through-plane)"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=len(files))
        for path in files:
            name = _display_name(path, files)
            bar.update(task, description=name)
            try:
                ref = _reference(load_image(path), 1)
                z = ref.spatial_shape[0] // f * f
                if z < 2 * f:
                    raise InvalidParameterError(
                        f"a volume of {ref.spatial_shape[0]} slice(s) is too short for ×{f} through-plane evaluation"
                    )
                z0 = (ref.spatial_shape[0] - min(z, max_slices * f)) // 2
                z = min(z, max_slices * f)
                ref = ref.replace(array=np.ascontiguousarray(ref.array[z0 : z0 + z]))
                lr = degrade_image(ref, "thick-slice", f, generator=0, **params)
            except MedSRError as exc:
                skipped.append((name, str(exc)))
                bar.advance(task)
                continue
            res = ImageResult(
                name=name, modality=ref.modality, shape=ref.spatial_shape, degradation="thick-slice"
            )
            data_range = data_range_for(ref)
            thickness_mm = float(params.get("thickness") or f) * ref.spacing[0]
            outputs: dict[str, MedImage] = {}
            for method in methods:
                t0 = time.perf_counter()
                try:
                    if method == "zero-shot":
                        sr = through_plane_upscale(
                            lr,
                            target_spacing=ref.spacing[0],
                            slice_thickness=thickness_mm,
                            profile=params.get("profile", "gaussian"),
                            device=device,
                            clip=False,
                            **zs,
                        )
                    else:
                        sr = interpolate_z(lr, n_slices=z, mode=method.removesuffix("-z"))
                except MedSRError as exc:
                    skipped.append((f"{name} / {method}", str(exc)))
                    continue
                res.seconds[method] = time.perf_counter() - t0
                if sr.spatial_shape != ref.spatial_shape:
                    raise InvalidParameterError(
                        f"{method} returned {sr.spatial_shape}, expected {ref.spatial_shape}"
                    )
                outputs[method] = sr
                keep = slice(f, z - f) if z - 2 * f >= 3 else slice(0, z)
                pred, truth = sr.array[keep], ref.array[keep]
                m = _slice_and_volume_metrics(pred, truth, data_range, f, volume=True)
                res.metrics[method] = {k: float(v) for k, v in m.items()}
            if "linear-z" not in res.metrics:
                skipped.append((name, "the linear-z baseline could not be computed"))
                bar.advance(task)
                continue
            if figures:
                from medsr.reports.figures import reformat_figure

                panels = {f"thick ×{f} (input)": lr, **outputs}
                res.figures.append(
                    reformat_figure(out / "figures" / f"{_safe(name)}_reformats.png", ref, panels)
                )
            results.append(res)
            bar.advance(task)
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise EmptyInputError(f"no volume could be evaluated through-plane ({reasons})")
    present = [m for m in methods if all(m in r.metrics for r in results)]
    for r in results:  # a method that failed on one volume is reported for none (paired tables)
        r.metrics = {m: v for m, v in r.metrics.items() if m in present}
        r.seconds = {m: v for m, v in r.seconds.items() if m in present}
    result = EvaluationResult(
        f, present, results, skipped, out, "thick-slice", params, baseline="linear-z"
    )
    write_report(result)
    return result
