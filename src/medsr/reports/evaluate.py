"""``medsr evaluate``: degrade reference images, upscale them back, measure, and report.

For every high-resolution reference (a file or every image under a folder) and every model:

1. the reference is cropped to a multiple of the scale and degraded with the chosen physics
   (``--degradation``; ``auto`` picks the modality's default), deterministically (fixed seed);
2. each model upscales the degraded image back;
3. PSNR, SSIM, MS-SSIM, MSE, MAE and NRMSE are computed in the reference's own units with the
   reference's data range and a ``scale``-pixel border excluded: per slice (2-D, averaged) and, for
   volumes, per volume (3-D, ``*_3d`` metrics).

Outputs in ``--out``: ``metrics.csv`` (one row per image × model × metric), ``summary.json``,
``report.md`` and ``report.html`` (mean ± sd per model, the paired gain over bicubic with a 95 %
confidence interval, per-modality rows) and ``figures/`` (LR | bicubic | models | HR, zoomed
region of interest, |error| maps; sagittal and coronal reformats for volumes).
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
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "mse": False, "mae": False, "nrmse": False}
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


@dataclass
class EvaluationResult:
    scale: int
    models: list[str]
    images: list[ImageResult]
    skipped: list[tuple[str, str]]
    out_dir: Path
    degradation: str
    params: dict[str, Any]

    def values(self, model: str, metric: str, modality: str | None = None) -> np.ndarray:
        return np.array(
            [
                r.metrics[model][metric]
                for r in self.images
                if metric in r.metrics.get(model, {}) and (modality is None or r.modality == modality)
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
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
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
) -> EvaluationResult:
    """Evaluate ``models`` on the references in ``data``; write the report into ``out_dir``."""
    from medsr.degradations import degrade_image
    from medsr.inference.predictor import SCALES, upscale
    from medsr.metrics import compute_metrics, data_range_for

    if scale not in SCALES:
        raise InvalidParameterError(f"scale must be one of {SCALES}")
    models = list(dict.fromkeys(["bicubic", *models]))  # bicubic is always the reference baseline
    params = dict(params or {})
    files = discover_inputs(data)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results: list[ImageResult] = []
    skipped: list[tuple[str, str]] = []

    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]evaluate"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
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
            res = ImageResult(name=name, modality=ref.modality, shape=ref.spatial_shape, degradation=kind)
            data_range = data_range_for(ref)
            outputs: dict[str, MedImage] = {}
            for model in models:
                t0 = time.perf_counter()
                sr = upscale(lr, scale=scale, model=model, device=device, clip=False)
                res.seconds[model] = time.perf_counter() - t0
                outputs[model] = sr
                m = compute_metrics(sr.array, ref.array, data_range=data_range, crop=scale, per="slice")
                if ref.is_volume:
                    with warnings.catch_warnings():  # short volumes: 3-D SSIM pools 2-D maps (documented)
                        warnings.simplefilter("ignore", UserWarning)
                        m3 = compute_metrics(sr.array, ref.array, data_range=data_range, crop=scale, per="volume")
                    m.update({f"{k}_3d": v for k, v in m3.items()})
                res.metrics[model] = {k: float(v) for k, v in m.items()}
            if figures:
                from medsr.reports.figures import comparison_figure, reformat_figure

                stem = _safe(name)
                res.figures.append(comparison_figure(out / "figures" / f"{stem}.png", ref, lr, outputs, scale))
                if ref.spatial_shape[0] >= 4:
                    res.figures.append(reformat_figure(out / "figures" / f"{stem}_reformats.png", ref, outputs))
            results.append(res)
            bar.advance(task)
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped[:5])
        raise EmptyInputError(f"no image could be evaluated ({reasons})")
    result = EvaluationResult(scale, models, results, skipped, out, degradation, params)
    write_report(result)
    return result


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
                rows.append({"image": r.name, "modality": r.modality, "degradation": r.degradation,
                             "scale": result.scale, "model": model, "metric": metric, "value": value})
            rows.append({"image": r.name, "modality": r.modality, "degradation": r.degradation,
                         "scale": result.scale, "model": model, "metric": "seconds", "value": r.seconds[model]})
    return rows


def summarise(result: EvaluationResult) -> dict[str, Any]:
    """Mean ± sd per model and metric, paired gains over bicubic, per-modality means."""
    metrics = [m for m in METRICS_2D if any(m in r.metrics.get("bicubic", {}) for r in result.images)]
    metrics += [f"{m}_3d" for m in ("psnr", "ssim") if any(f"{m}_3d" in r.metrics.get("bicubic", {}) for r in result.images)]
    summary: dict[str, Any] = {"scale": result.scale, "degradation": result.degradation, "params": result.params,
                               "n_images": len(result.images), "models": {}, "per_modality": {},
                               "skipped": [{"image": n, "reason": r} for n, r in result.skipped]}
    for model in result.models:
        entry: dict[str, Any] = {}
        for metric in metrics:
            v = result.values(model, metric)
            v = v[np.isfinite(v)]
            entry[metric] = {"mean": float(v.mean()) if v.size else math.nan,
                             "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan, "n": int(v.size)}
        for metric in ("psnr", "ssim"):
            mean, lo, hi = paired_gain(result.values(model, metric), result.values("bicubic", metric))
            entry[f"gain_{metric}_vs_bicubic"] = {"mean": mean, "ci95": [lo, hi]}
        entry["seconds_per_image"] = float(np.mean([r.seconds[model] for r in result.images]))
        summary["models"][model] = entry
    for modality in sorted({r.modality for r in result.images}):
        summary["per_modality"][modality] = {
            model: {
                "n": int(result.values(model, "psnr", modality).size),
                "psnr": float(np.nanmean(result.values(model, "psnr", modality))),
                "ssim": float(np.nanmean(result.values(model, "ssim", modality))),
                "gain_psnr_vs_bicubic": paired_gain(result.values(model, "psnr", modality),
                                                    result.values("bicubic", "psnr", modality))[0],
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


def _tables(result: EvaluationResult, summary: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    any_model = next(iter(summary["models"].values()))
    metrics = [m for m in any_model if not m.startswith(("gain_", "seconds"))]
    head = ["model", *metrics, "ΔPSNR vs bicubic [95 % CI]", "ΔSSIM vs bicubic", "s / image"]
    body = []
    for model, e in summary["models"].items():
        g, gs = e["gain_psnr_vs_bicubic"], e["gain_ssim_vs_bicubic"]
        ci = f"{_fmt(g['mean'])} [{_fmt(g['ci95'][0])}, {_fmt(g['ci95'][1])}]"
        body.append([model, *[f"{_fmt(e[m]['mean'], _digits(m))} ± {_fmt(e[m]['sd'], _digits(m))}" for m in metrics],
                     ci, _fmt(gs["mean"], 4), _fmt(e["seconds_per_image"], 3)])
    mod_head = ["modality", "model", "n", "PSNR", "SSIM", "ΔPSNR vs bicubic"]
    mod_body = [[mod, model, str(v["n"]), _fmt(v["psnr"]), _fmt(v["ssim"], 4), _fmt(v["gain_psnr_vs_bicubic"])]
                for mod, per in summary["per_modality"].items() for model, v in per.items()]
    return head, body, mod_head, mod_body


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
        "Gains are paired differences against bicubic with a 95 % Student-t confidence interval.",
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
        table(["image", "modality", "degradation", *result.models],
              [[r.name, r.modality, r.degradation, *[_fmt(r.metrics[m]["psnr"]) for m in result.models]] for r in result.images]),
        "",
    ]
    if result.skipped:
        parts += ["## Skipped", "", *[f"- `{n}`: {r}" for n, r in result.skipped], ""]
    parts += ["## Figures", ""] + [f"![{f}]({f})" for r in result.images for f in r.figures]
    return "\n".join(parts) + "\n"


def _html(result: EvaluationResult, summary: dict[str, Any]) -> str:
    head, body, mhead, mbody = _tables(result, summary)

    def table(h: list[str], b: list[list[str]]) -> str:
        th = "".join(f"<th>{html.escape(x)}</th>" for x in h)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>" for r in b)
        return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'

    per_image = table(["image", "modality", "degradation", *result.models],
                      [[r.name, r.modality, r.degradation, *[_fmt(r.metrics[m]["psnr"]) for m in result.models]]
                       for r in result.images])
    figs = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(f)}"><figcaption>{html.escape(f)}</figcaption></figure>'
                   for r in result.images for f in r.figures)
    skipped = ""
    if result.skipped:
        skipped = "<h2>Skipped</h2><ul>" + "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(r)}</li>" for n, r in result.skipped) + "</ul>"
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
<p class="note">{summary['n_images']} reference images; metrics in each image's own units with its data range,
{result.scale}-pixel border excluded; 2-D metrics averaged over slices, <code>_3d</code> per volume. Gains are paired
differences against bicubic with a 95 % Student-t confidence interval.</p>
<h2>All images (mean ± sd)</h2>{table(head, body)}
<h2>Per modality</h2>{table(mhead, mbody)}
<h2>Per image (PSNR dB)</h2>{per_image}
{skipped}
<h2>Figures</h2>{figs}
</body></html>
"""
