"""Writing an evaluation's report: ``metrics.csv``, ``summary.json``, ``report.md`` and
``report.html`` (tables of the summary, per image, fidelity to the input, skipped inputs, figures)."""

from __future__ import annotations

import csv
import html
import json
import math
from typing import Any

from medsr.metrics import band_sigma
from medsr.reports.results import BAND_METRICS, MAP_METRICS, EvaluationResult
from medsr.reports.stats import summarise

THROUGH_PLANE_NOTE = (
    " Through-plane: each reference volume is made thick-slice (×{f} along z) and reconstructed"
    " back to its own slices; the first and last {f} slices (extrapolated by every method) are"
    " excluded too, and the in-plane metrics are those of the axial slices."
)


def write_report(result: EvaluationResult) -> None:
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(result)
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(result)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    (out / "report.md").write_text(_markdown(result, summary))
    (out / "report.html").write_text(_html(result, summary), encoding="utf-8")


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


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _digits(metric: str) -> int:
    return 4 if metric.startswith(("ssim", "ms_ssim", "nrmse")) else 2


def _n_of(n: int, n_images: int) -> str:
    """`` (n=k)`` after a mean over fewer images than the run has (MS-SSIM needs 176 px and no
    no-data mask, ``_3d`` metrics need volumes): a column never reads as a mean over all."""
    return f" (n={n})" if n != n_images else ""


def _fmt_g(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _fmt_band(x: float | None) -> str:
    """3 significant digits, trailing zeros kept (56.0, not 56)."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:#.3g}"


def _no_mean(entry: dict[str, Any] | None) -> str:
    """The cell of a metric without a mean: ``mixed units`` where the images' units differ
    (HU beside a.u.: each image's value is in the per-image tables and metrics.csv), else n/a."""
    if entry and entry.get("mixed_units"):
        return "mixed units (" + ", ".join(entry["mixed_units"]) + ")"
    return "n/a"


def _mean_sd(entry: dict[str, Any], metric: str) -> str:
    """``mean ± sd`` of a summary entry: band errors with 3 significant digits (their scale is the
    image's units: 0.0123 on a 0–1 image, 12.3 HU on a CT), the rest with fixed decimals."""
    if metric in BAND_METRICS:
        return f"{_fmt_band(entry['mean'])} ± {_fmt_band(entry['sd'])}"
    d = _digits(metric)
    return f"{_fmt(entry['mean'], d)} ± {_fmt(entry['sd'], d)}"


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
                    _mean_sd(e[m], m) + _n_of(e[m]["n"], summary["n_images"])
                    if e[m]["n"]
                    else _no_mean(e[m])
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
            cells.append(
                f"{_fmt_g(v['mean'])} ± {_fmt_g(v['sd'])}" if v and v["n"] else _no_mean(v)
            )
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


#: said when some reference holds no data
NO_DATA_NOTE = (
    " Pixels that hold no data — DICOM padding, a CT's fill outside the reconstruction circle, "
    "NaN — in the reference, or in the degraded input (the degradation makes the fill again at "
    "the lower resolution, as a scanner does, and every model keeps it exact), are not scored: "
    "the `scored` column gives the share of each image that is."
)


def _n_images(n: int) -> str:
    return (
        f"{n} reference image{'' if n == 1 else 's'} (the unit of every mean ± sd and confidence "
        "interval: a 2-D image, a volume or a DICOM series counts once, its slices are not "
        "independent samples)"
    )


def _per_image(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """The per-image PSNR table: a ``scored`` column (the share of each reference's pixels the
    scores count) when some image holds no data (padding, a CT's fill: left out)."""
    scored = any(r.scored < 1.0 for r in result.images)
    notes = any(r.notes for r in result.images)
    head = [
        "image",
        "modality",
        "degradation",
        "shape (z×y×x)",
        "data range",
        *(["scored"] if scored else []),
        *(["as scored"] if notes else []),
        *result.models,
    ]
    body = [
        [
            r.name,
            r.modality,
            r.degradation,
            "×".join(str(n) for n in r.shape),
            _fmt_range(r.data_range),
            *([f"{r.scored:.0%}"] if scored else []),
            *(["; ".join(r.notes) or "as read"] if notes else []),
            *[_fmt(r.metrics[m]["psnr"]) for m in result.models],
        ]
        for r in result.images
    ]
    return head, body


def _per_image_bands(result: EvaluationResult) -> tuple[list[str], list[list[str]]] | None:
    """The per-image low / high band error table (``None`` when not measured: through-plane)."""
    if not any(
        BAND_METRICS[0] in r.metrics.get(m, {}) for r in result.images for m in result.models
    ):
        return None
    head = ["image", "units", *result.models]
    body = [
        [
            r.name,
            r.units or "n/a",
            *[
                " / ".join(_fmt_band(r.metrics[m].get(b, math.nan)) for b in BAND_METRICS)
                for m in result.models
            ],
        ]
        for r in result.images
    ]
    return head, body


#: what the per-image band table holds (formatted with the scale)
BANDS_NOTE = (
    "Low-band / high-band error RMS, in each image's units: the error SR − reference low-passed "
    "with a Gaussian of σ = 2·scale = {sigma:g} output px, and the rest, over the scored pixels "
    "(slices averaged). A model that moves what the input measured (brightness, contrast, coarse "
    "shapes) raises the low band; one that turns noise into texture raises the high band."
)


def _fmt_range(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _reproduce(result: EvaluationResult, summary: dict[str, Any]) -> list[str]:
    """The lines of the Reproducibility section: software, machine, device, degradation and
    its seed, every model's identity and arithmetic, and how the metrics were defined."""
    rep = summary.get("reproduce") or {}
    lines = []
    if rep.get("medsr_version"):
        lines.append(
            f"medsr {rep['medsr_version']}, torch {rep['torch_version']}, NumPy "
            f"{rep['numpy_version']}, Python {rep['python_version']} on {rep['platform']}; "
            f"device {rep['device']}"
        )
    params = ", ".join(f"{k}={v}" for k, v in sorted(result.params.items())) or "defaults"
    kinds = ", ".join(sorted({r.degradation for r in result.images}))
    degraded = f"degradation {result.degradation} ({kinds}) ×{result.scale}, parameters: {params}"
    if "seed" in rep:
        degraded += f"; noise seed {rep['seed']} (the same degraded inputs on every run)"
    if rep.get("max_slices") is not None:
        degraded += f"; at most {rep['max_slices']} slices per volume (max_slices)"
    lines.append(degraded)
    if rep.get("modality"):
        lines.append(
            f"modality {rep['modality']} stated for the references whose format carries none "
            "(--modality; a DICOM keeps its header's)"
        )
    for model, record in (rep.get("models") or {}).items():
        parts = [str(record.get("model_checksum") or "no weights checksum recorded")]
        if record.get("method"):
            parts.append(str(record["method"]))
        if record.get("model") and record["model"] != model:
            parts.append(f"model {record['model']}")
        if record.get("model_version"):
            parts.append(f"version {record['model_version']}")
        if record.get("precision"):
            parts.append(f"precision {record['precision']}")
        if record.get("low_band"):
            lb = record["low_band"]
            parts.append(f"low-band guard over {lb.get('base')} (cutoff {lb.get('cutoff')})")
        lines.append(f"model {model}: " + ", ".join(parts))
    for what, text in (rep.get("metrics") or {}).items():
        lines.append(f"{what.replace('_', ' ')}: {text}")
    return lines


def _markdown(result: EvaluationResult, summary: dict[str, Any]) -> str:
    head, body, mhead, mbody = _tables(result, summary)

    def row(cells: list[str]) -> str:  # a "|" inside a cell (|D(SR) − LR|) would split it
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    def table(h: list[str], b: list[list[str]]) -> str:
        return "\n".join([row(h), "|" + "---|" * len(h), *(row(r) for r in b)])

    parts = [
        f"# medsr evaluation — ×{result.scale}, degradation `{result.degradation}`",
        "",
        f"{_n_images(summary['n_images'])}; metrics in each image's own units with its data range (max − min of the evaluated reference, in the per-image table), "
        f"{result.scale}-pixel border excluded; 2-D metrics averaged over slices, `_3d` per volume. "
        f"Gains are paired differences against {result.baseline} with a 95 % Student-t confidence interval."
        + (THROUGH_PLANE_NOTE.format(f=result.scale) if result.baseline != "bicubic" else "")
        + (NO_DATA_NOTE if any(r.scored < 1.0 for r in result.images) else ""),
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
        table(*_per_image(result)),
        "",
    ]
    bands = _per_image_bands(result)
    if bands is not None:
        note = BANDS_NOTE.format(sigma=band_sigma(result.scale))
        parts += ["## Per image (low / high band error)", "", note, "", table(*bands), ""]
    fidelity = _fidelity(result, summary)
    if fidelity is not None:
        note, fhead, fbody = fidelity
        parts += ["## Fidelity to the input", "", note, "", table(fhead, fbody), ""]
    if result.skipped:
        parts += ["## Skipped", "", *[f"- `{n}`: {r}" for n, r in result.skipped], ""]
    parts += ["## Reproducibility", "", *[f"- {line}" for line in _reproduce(result, summary)], ""]
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

    per_image = table(*_per_image(result))
    bands = _per_image_bands(result)
    if bands is not None:
        per_image += (
            '<h2>Per image (low / high band error)</h2><p class="note">'
            + html.escape(BANDS_NOTE.format(sigma=band_sigma(result.scale)))
            + "</p>"
            + table(*bands)
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
    reproduce = "".join(f"<li>{html.escape(line)}</li>" for line in _reproduce(result, summary))
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
<p class="note">{html.escape(_n_images(summary["n_images"]))}; metrics in each image's own units with its data range (max − min of the evaluated reference, in the per-image table),
{result.scale}-pixel border excluded; 2-D metrics averaged over slices, <code>_3d</code> per volume. Gains are paired
differences against {html.escape(result.baseline)} with a 95 % Student-t confidence interval.
{html.escape(THROUGH_PLANE_NOTE.format(f=result.scale)) if result.baseline != "bicubic" else ""}</p>
<h2>All images (mean ± sd)</h2>{table(head, body)}
<h2>Per modality</h2>{table(mhead, mbody)}
<h2>Per image (PSNR dB)</h2>{per_image}
{fid_html}
{skipped}
<h2>Reproducibility</h2><ul class="note">{reproduce}</ul>
<h2>Figures</h2>{figs}
</body></html>
"""
