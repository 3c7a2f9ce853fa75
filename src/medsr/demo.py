"""``medsr demo``: upscale bundled corpus CT, MR, radiograph and ultrasound images and write a
before/after page.

Two things are shown for each case:

1. **Real use**: the corpus DICOM file itself is upscaled ×s with each model and written back
   as a *derived DICOM series* (what a user would do with their own data).
2. **Honest check**: the centre of the same slice (up to 512² pixels) is degraded ×s (the modality's physics: antialiased bicubic
   for CT, k-space truncation for MR), upscaled back and compared with the original, so the
   page shows measured PSNR/SSIM against the truth — not just nicer-looking pixels.

Both run the one pipeline of ``medsr upscale`` (:func:`medsr.pipeline.upscale_with_safeguards`:
low-band guard, padding mask, detail self-check), so the page shows what a user gets.

The data ship in ``pydicom`` / ``pydicom-data`` (see shared/data/CORPUS.md); nothing is
downloaded.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsr.image import MedImage
from medsr.io import load_image, save_image
from medsr.reports.render import default_window, plane, save_png, window_to_uint8

# (label, corpus files in order of preference, degradation for the honest check)
# CT, MR and US are the shipped models' validation images (never trained on); the corpus has a
# single radiograph, so the CR case is an image the models were trained on (the page says so).
DEMO_CASES = (
    ("CT", ("CT_small.dcm",), "bicubic"),
    ("MR", ("MR_small.dcm",), "kspace"),
    ("CR", ("RG3_UNCR.dcm",), "bicubic"),
    ("US", ("gdcm-US-ALOKA-16.dcm",), "bicubic"),
)
CLASSICAL_DEMO = ("bicubic", "lanczos")
#: the honest check runs on the centre of the original, at most this many pixels a side (every
#: shipped model runs on it; the full radiograph would make the slowest baselines take minutes)
CHECK_MAX_SIDE = 512
CLASSICAL_CHECK = ("nearest", "bicubic", "lanczos", "kspace")


def demo_models(scale: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Models for the real-use row (the default when shipped) and the honest check (every shipped general model joins)."""
    from medsr.models.resolver import default_model_name, list_pretrained

    default = default_model_name(scale)
    # the defaults of one physics (default-x2-kspace: MR k-space data) are not general models:
    # benchmarks/faithful.py measures them on what they are for
    shipped = [
        m.name
        for m in list_pretrained(kind="in-plane")
        if m.scale == scale and m.low_band_base == "bicubic"
    ]
    demo = ("bicubic", default) if default != "bicubic" else CLASSICAL_DEMO
    return demo, (*CLASSICAL_CHECK, *shipped)


def _training_files(models: tuple[str, ...]) -> set[str] | None:
    """Training files of the trained model in ``models`` (None when only classical ones)."""
    from medsr.models.resolver import list_pretrained

    shipped = {m.name: m for m in list_pretrained()}
    for m in models:
        if m in shipped:
            return set(shipped[m].card.get("training_data", {}).get("train_files", []))
    return None


def corpus_file(*names: str) -> Path:
    """First of ``names`` found in the installed corpus packages."""
    from pydicom.data import get_testdata_file

    for name in names:
        found = get_testdata_file(name)
        if found:
            return Path(found)
    raise FileNotFoundError(f"none of {names} is installed (pip install pydicom-data)")


@dataclass
class CaseResult:
    label: str
    source: str
    info: dict
    outputs: dict[str, str] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    degradation: str = ""
    seen: bool | None = None  # the file is among the default model's training files


def _centre_crop_box(shape: tuple[int, int], frac: float = 0.22) -> tuple[slice, slice]:
    h, w = shape
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def _figure(
    out: Path,
    name: str,
    image: MedImage,
    window: tuple[float, float],
    size: tuple[int, int],
    crop: bool,
) -> str:
    arr = plane(image)
    if crop:
        sy, sx = _centre_crop_box(arr.shape[-2:])
        arr = arr[..., sy, sx]
    save_png(out / "figures" / f"{name}.png", window_to_uint8(arr, window), size=size)
    return f"figures/{name}.png"


def run_demo(out_dir: str | Path = "demo_out", scale: int = 2) -> Path:
    """Run the demo into ``out_dir``; return the path of ``index.html``."""
    from medsr.degradations import degrade_image
    from medsr.metrics import compute_metrics, data_range_for
    from medsr.pipeline import upscale_with_safeguards

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    demo_set, check_set = demo_models(scale)
    trained_on = _training_files(demo_set)
    for label, names, degradation in DEMO_CASES:
        try:
            src = corpus_file(*names)
        except FileNotFoundError:
            continue  # pydicom-data not installed: CT_small / MR_small from pydicom still run
        hr = load_image(src, luminance=True)
        case = CaseResult(
            label=label,
            source=src.name,
            info=hr.summary(),
            degradation=degradation,
            seen=(src.name in trained_on) if trained_on is not None else None,
        )
        window = default_window(hr)
        h, w = hr.spatial_shape[1:]
        disp_w = min(w * scale, 768)
        disp = (disp_w, round(disp_w * h / w))
        crop_disp = (384, round(384 * h / w))

        # 1. real use: upscale the file itself, write a derived DICOM series
        case.figures["input"] = _figure(out, f"{label}_input", hr, window, disp, crop=False)
        case.figures["input_crop"] = _figure(
            out, f"{label}_input_crop", hr, window, crop_disp, crop=True
        )
        for model in demo_set:  # as `medsr upscale` runs it: the one pipeline, safeguards included
            sr, _ = upscale_with_safeguards(hr, scale, model, maps=False, tta=False, warn=False)
            target = out / f"{label.lower()}_{model}_x{scale}"
            save_image(sr, target, overwrite=True)
            case.outputs[model] = target.name
            case.figures[model] = _figure(out, f"{label}_{model}", sr, window, disp, crop=False)
            case.figures[f"{model}_crop"] = _figure(
                out, f"{label}_{model}_crop", sr, window, crop_disp, crop=True
            )

        # 2. honest check: degrade, upscale back, compare with the original
        region = _check_region(hr, scale)
        lr = degrade_image(region, degradation, scale)
        ref = region.replace(
            array=region.array[..., : lr.spatial_shape[1] * scale, : lr.spatial_shape[2] * scale]
        )
        data_range = data_range_for(ref)
        case.figures["check_lr"] = _figure(
            out, f"{label}_check_lr", lr, window, crop_disp, crop=True
        )
        case.figures["check_hr"] = _figure(
            out, f"{label}_check_hr", ref, window, crop_disp, crop=True
        )
        for model in check_set:
            t0 = time.perf_counter()
            sr, summary = upscale_with_safeguards(
                lr, scale, model, maps=False, tta=False, warn=False, clip=False
            )
            seconds = time.perf_counter() - t0
            m = compute_metrics(sr.array, ref.array, data_range=data_range, crop=scale)
            case.metrics.append(
                {
                    "model": model,
                    **{k: float(v) for k, v in m.items()},
                    "seconds": seconds,
                    "self_check": _self_check_words(summary.get("self_check")),
                }
            )
            case.figures[f"check_{model}"] = _figure(
                out, f"{label}_check_{model}", sr, window, crop_disp, crop=True
            )
        results.append(case)

    (out / "summary.json").write_text(
        json.dumps(
            [
                {
                    "case": r.label,
                    "source": r.source,
                    "degradation": r.degradation,
                    "metrics": r.metrics,
                }
                for r in results
            ],
            indent=2,
        )
    )
    page = out / "index.html"
    page.write_text(_page(results, scale, demo_set), encoding="utf-8")
    return page


def _self_check_words(check: dict | None) -> str:
    """What the pipeline's detail self-checks did to a model's output, in words for the table:
    the check one scale down, then the full-scale one (``full_scale``), each scaling a detail
    that does not hold up back towards a classical peer (a gain of 0 returns the peer's image:
    the same numbers as the peer's row)."""
    if not check or not check.get("checked"):
        return "—"  # a classical interpolator, or nothing to check
    parts = []
    for label, step in (("one scale down", check), ("full scale", check.get("full_scale"))):
        if not step or not step.get("checked") or not step.get("applied"):
            continue
        gain = float(step.get("gain", 1.0))
        if gain >= 1.0:
            continue
        peer = html.escape(str(step.get("over") or "bicubic"))
        parts.append(
            f"{label}: dropped, {peer}'s image"
            if gain <= 0.0
            else f"{label}: ×{gain:.2f} over {peer}"
        )
    return "; ".join(parts) if parts else "detail kept"


def _check_region(image: MedImage, scale: int) -> MedImage:
    """The centre of ``image``, at most :data:`CHECK_MAX_SIDE` pixels a side (a multiple of
    ``scale``), for the honest check."""
    h, w = image.spatial_shape[1:]
    ch, cw = (min(n, CHECK_MAX_SIDE) // scale * scale for n in (h, w))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return image.replace(array=np.ascontiguousarray(image.array[..., y0 : y0 + ch, x0 : x0 + cw]))


def _img(src: str, caption: str) -> str:
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _seen_badge(seen: bool | None) -> str:
    if seen is None:
        return ""
    if seen:
        return ' <span class="badge seen">seen in training (the corpus has one image of this modality)</span>'
    return ' <span class="badge">validation image: never seen in training</span>'


def _page(results: list[CaseResult], scale: int, demo_set: tuple[str, ...]) -> str:
    from medsr import __version__

    trained = [m for m in demo_set if m not in CLASSICAL_CHECK]
    real_use = (
        f"real-use row: bicubic and the shipped default <b>{html.escape(', '.join(trained))}</b>"
        if trained
        else "real-use row: classical upscalers (no trained default is installed)"
    )
    sections = []
    for r in results:
        info = r.info
        rows = "".join(
            f"<tr><td>{html.escape(m['model'])}</td><td>{m['psnr']:.2f}</td><td>{m['ssim']:.4f}</td>"
            f"<td>{m['mae']:.2f}</td><td>{m['seconds'] * 1000:.0f}</td>"
            f'<td class="words">{m.get("self_check", "—")}</td></tr>'
            for m in r.metrics
        )
        best = max(r.metrics, key=lambda m: m["psnr"])["model"]
        outputs = ", ".join(f"<code>{html.escape(v)}/</code>" for v in r.outputs.values())
        sections.append(
            f"""
<section>
  <h2>{html.escape(r.label)} — <code>{html.escape(r.source)}</code>{_seen_badge(r.seen)}</h2>
  <p class="meta">{html.escape(str(info["modality"]))} · {info["shape_zyx"][1]}×{info["shape_zyx"][2]} px ·
  spacing {info["spacing_mm_zyx"][1]:.3g}×{info["spacing_mm_zyx"][2]:.3g} mm · {html.escape(info["units"])}
  · written as derived DICOM series: {outputs}</p>
  <h3>Before / after (×{scale}, centre crop, same window)</h3>
  <div class="row">{_img(r.figures["input_crop"], "input (pixels enlarged)")}
  {"".join(_img(r.figures[f"{m}_crop"], f"{m} ×{scale}") for m in r.outputs)}</div>
  <h3>Honest check: original (centre, up to {CHECK_MAX_SIDE}² pixels) degraded ×{scale} ({html.escape(r.degradation)}), upscaled back, compared with the original</h3>
  <div class="row">{_img(r.figures["check_lr"], f"degraded input (1/{scale} size)")}
  {"".join(_img(r.figures["check_" + m["model"]], m["model"]) for m in r.metrics)}
  {_img(r.figures["check_hr"], "original (truth)")}</div>
  <table><thead><tr><th>model</th><th>PSNR (dB)</th><th>SSIM</th><th>MAE ({html.escape(info["units"])})</th><th>time (ms)</th><th class="words" title="medsr's detail self-checks: the model's added detail is checked on the input one scale down (where the truth is known) and against the input at full scale, and scaled back towards a classical peer where it does not hold up">self-check</th></tr></thead>
  <tbody>{rows}</tbody></table>
  <p class="note">Best PSNR here: <b>{html.escape(best)}</b>. Metrics in the image's own units, data range of the original,
  {scale}-pixel border excluded. Self-check: medsr checks each model's added detail on the input one scale down and at full scale, and
  scales it back towards a classical peer where it does not hold up, so a model can return the peer's numbers exactly.</p>
</section>"""
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsr demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto; max-width: 1500px; padding: 24px; color: #1d2433; background: #f6f7f9; }}
h1 {{ margin: 0 0 4px; }} h2 {{ margin-top: 0; }} h3 {{ font-size: 15px; color: #44506a; margin: 18px 0 8px; }}
section {{ background: #fff; border-radius: 10px; padding: 18px 22px; margin: 18px 0; box-shadow: 0 1px 3px rgba(0,0,0,.08); }}
.row {{ display: flex; gap: 10px; flex-wrap: wrap; }}
figure {{ margin: 0; }} figure img {{ width: 168px; height: auto; display: block; border-radius: 4px; background: #000; image-rendering: pixelated; }}
figcaption {{ font-size: 12px; color: #44506a; text-align: center; margin-top: 4px; }}
table {{ border-collapse: collapse; margin-top: 12px; font-size: 14px; }}
th, td {{ padding: 5px 12px; border-bottom: 1px solid #e3e6ec; text-align: right; }} th:first-child, td:first-child, td.words, th.words {{ text-align: left; }}
.meta, .note {{ color: #44506a; font-size: 13px; }}
.badge {{ font-size: 12px; font-weight: 500; background: #e3f1e6; color: #1e5b2c; border-radius: 10px; padding: 2px 9px; vertical-align: middle; }}
.badge.seen {{ background: #fbeed5; color: #7a4b00; }} code {{ font-size: 12px; }}
</style></head><body>
<h1>medsr demo</h1>
<p class="meta">medsr {__version__} · {real_use}; honest check: every shipped general model for this scale (the MR k-space defaults are measured by benchmarks/faithful.py) · every output is labelled as derived
(DICOM ImageType DERIVED\\SECONDARY, DerivationDescription) · no patient identifiers on this page.</p>
{"".join(sections)}
</body></html>
"""
