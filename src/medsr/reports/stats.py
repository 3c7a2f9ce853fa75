"""The numbers of an evaluation: per-image metrics (per slice and per volume), paired gains over the
baseline with a 95 % Student-t confidence interval, and the summary (mean ± sd, per modality).

The sample is the image (a 2-D file, a volume, a DICOM series): per-slice metrics are averaged
within a volume before any statistic, so ``n`` counts images and the interval does not treat the
correlated slices of one patient as independent samples."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from medsr.reports.reproduce import metric_definitions
from medsr.reports.results import BAND_METRICS, MAP_METRICS, METRICS_2D, EvaluationResult

#: metrics in each image's own units (HU, a.u., 8-bit values): a mean over images is one only
#: when they share their units (PSNR, SSIM and NRMSE are unitless)
UNIT_METRICS = ("mse", "mae", *BAND_METRICS, *MAP_METRICS)


def slice_and_volume_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    data_range: float,
    crop: int,
    *,
    volume: bool,
    mask: np.ndarray | None = None,
    band_sigma: float | None = None,
) -> dict[str, float]:
    """Per-slice metrics, plus the per-volume ones as ``<name>_3d`` when ``volume``; ``mask``:
    the pixels scored (None: all); ``band_sigma``: also the low-band and high-band error RMS
    (:data:`BAND_METRICS`, :func:`medsr.metrics.band_rms2d` with that σ), averaged over slices."""
    from medsr.metrics import band_rms2d, compute_metrics

    m = compute_metrics(pred, truth, data_range=data_range, crop=crop, per="slice", mask=mask)
    if band_sigma is not None:
        bands = band_rms2d(pred, truth, sigma=band_sigma, crop=crop, mask=mask)
        for name, per_slice in zip(BAND_METRICS, bands, strict=True):
            ok = np.isfinite(per_slice)  # a slice with no scored pixel has none
            m[name] = float(per_slice[ok].mean()) if ok.any() else math.nan
    if volume:
        with warnings.catch_warnings():  # short volumes: 3-D SSIM pools 2-D maps (documented)
            warnings.simplefilter("ignore", UserWarning)
            m3 = compute_metrics(
                pred, truth, data_range=data_range, crop=crop, per="volume", mask=mask
            )
        m.update({f"{k}_3d": v for k, v in m3.items()})
    return m


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


def summarise(result: EvaluationResult) -> dict[str, Any]:
    """Mean ± sd per model and metric, paired gains over the baseline (bicubic), per-modality means."""
    base = result.baseline
    metrics = [
        m
        for m in (*METRICS_2D, *BAND_METRICS)
        if any(m in r.metrics.get(base, {}) for r in result.images)
    ]
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
    summary["images"] = [
        {
            "image": r.name,
            "modality": r.modality,
            "units": r.units,
            "shape": list(r.shape),
            "data_range": r.data_range,
            "scored": r.scored,
            "notes": r.notes,
        }
        for r in result.images
    ]
    summary["reproduce"] = {
        **result.run,
        "metrics": metric_definitions(result.scale, through_plane=result.baseline != "bicubic"),
    }
    if any(r.scored < 1.0 for r in result.images):  # no data left out of the scores
        summary["scored"] = {r.name: r.scored for r in result.images}
    if result.maps:
        summary["consistency_degradation"] = {
            r.name: r.consistency_degradation for r in result.images
        }
    units = sorted({str(r.units or "a.u.") for r in result.images})
    for model in result.models:
        entry: dict[str, Any] = {}
        for metric in metrics:
            if metric in UNIT_METRICS and len(units) > 1:
                # 12 HU and 12 a.u. are no two samples of one quantity: no mean across them
                entry[metric] = {"mean": math.nan, "sd": math.nan, "n": 0, "mixed_units": units}
                continue
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
