"""Fidelity benchmark: data consistency on/off, hallucination tests, OOD check, per model.

For every method (bicubic, lanczos, kspace, every shipped model, any ``--weights`` file, and a
negative control that is known to invent detail) on development-corpus images
(shared/data/CORPUS.md):

1. **Consistency on/off** — each HR image is degraded with its modality's deterministic physics
   (``--degradation auto``: CT detector blur, MR k-space truncation, CR aperture, US/NM
   bicubic), upscaled with ``consistency="off"`` and ``"on"``; PSNR against the HR image (data
   range of the HR image, border crop = scale), the consistency error p99 (% of the input
   range) and the time in ms (model alone; + projection).
2. **Lesions** — low-contrast disks (radii 2, 3, 4, 6 px; 30 HU on CT, 5 % of the tissue range on
   MR) inserted, degraded, upscaled: contrast ratio, echoes, shams
   (:func:`medsr.safeguards.hallucination.lesion_test`).
3. **Noise** — white noise must not gain out-of-band structure (:func:`noise_test`).
4. **OOD** — for learned models: every corpus image of a modality outside the card's training
   modalities must be flagged.

Writes ``benchmarks/results/fidelity.json`` and ``fidelity.md``.

    .venv/bin/python benchmarks/fidelity.py                       # classical + shipped, ×2 ×4
    .venv/bin/python benchmarks/fidelity.py --weights runs/x.safetensors --scales 2
    .venv/bin/python benchmarks/fidelity.py --quick               # CT_small + MR_small only
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine
from pydicom.data import get_testdata_file

import medsr
from medsr.image import MedImage
from medsr.inference.predictor import upscale
from medsr.metrics import psnr3d
from medsr.models.resolver import list_pretrained
from medsr.pipeline import (
    CONSISTENCY_RELATIVE,
    CONSISTENCY_THRESHOLD,
    consistency_exceeded,
    upscale_with_safeguards,
)
from medsr.safeguards import hallucination as H
from medsr.safeguards.ood import check_distribution

RESULTS = Path(__file__).parent / "results"
#: ``--ensemble``: the learned models run with ``ensemble=True`` (the mean over 8 flips/rotations)
ENSEMBLE = False
#: the README names the modality that loses most under the wrong physics when it loses more (dB)
WORST_MODALITY_DB = 3.0
#: (file, modality label, centre crop) — HR references for the consistency benchmark
QUALITY_IMAGES = (
    ("CT_small.dcm", None),
    ("bad_sequence.dcm", None),
    ("MR_small.dcm", None),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", None),
    ("RG3_UNCR.dcm", 512),
    ("OBXXXX1A.dcm", None),
    ("JPEG2000_UNC.dcm", None),
)
LESION_IMAGES = (
    "CT_small.dcm",
    "bad_sequence.dcm",
    "MR_small.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
)
QUICK = ("CT_small.dcm", "MR_small.dcm")


def load(name: str, crop: int | None = None) -> MedImage:
    """One grayscale plane of a corpus file (middle slice; optional centre crop)."""
    img = medsr.load_image(get_testdata_file(name), luminance=True)
    z = img.spatial_shape[0] // 2
    arr = img.array[z : z + 1]
    if crop:
        h, w = arr.shape[-2:]
        y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        arr = arr[:, y0 : y0 + crop, x0 : x0 + crop]
    return img.replace(array=np.ascontiguousarray(arr), meta={"format": "benchmark"})


def control(scale: int):
    """Negative control: bicubic + strong unsharp masking (invents edge/lesion contrast)."""
    from scipy import ndimage

    def run(im: MedImage) -> MedImage:
        sr = upscale(im, scale, "bicubic", clip=False)
        a = sr.array
        return sr.replace(array=a + 1.5 * (a - ndimage.gaussian_filter(a, (0, 1.5, 1.5))))

    return run


def method(spec: str, scale: int, consistency: str):
    """``MedImage → MedImage`` for a model spec ("control" = the negative control)."""
    if spec == "control":
        base = control(scale)
        if consistency == "off":
            return base

        def dc(im: MedImage) -> MedImage:
            from medsr.safeguards import enforce_consistency

            return enforce_consistency(base(im), im)

        return dc

    def run(im: MedImage) -> MedImage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return upscale_with_safeguards(
                im,
                scale,
                spec,
                consistency=consistency,
                degradation="auto",  # the physics the benchmark degraded with
                maps=False,
                tta=False,
                ood=False,
                warn=False,
                ensemble=ENSEMBLE,
            )[0]

    return run


def card_of(spec: str, scale: int) -> dict[str, Any]:
    """The model card (any scale: callers skip models trained for another factor)."""
    if spec == "control":
        return {"kind": "interpolator", "scale": scale}
    from medsr.models.resolver import resolve_model

    loaded = resolve_model(spec)
    if loaded.path is None:
        return {"name": spec, "kind": "interpolator", "scale": scale}
    return {**loaded.card, "name": loaded.name}


def quality_rows(
    specs: list[str], scales: list[int], images: dict[str, MedImage], generate: str | None = None
) -> list[dict[str, Any]]:
    """Consistency off/on per image; LR made with ``generate`` (``None``: the modality default,
    i.e. the degradation the projection assumes; ``"bicubic"``: a mismatch for CT/MR/CR)."""
    from medsr.degradations import default_kind, degrade_image  # imports torch: not for --readme

    rows = []
    for scale in scales:
        for name, hr in images.items():
            kind = generate or default_kind(hr.modality)
            if generate and kind == default_kind(hr.modality):
                continue  # no mismatch for this modality
            h, w = hr.spatial_shape[1:]
            hr_c = hr.replace(array=hr.array[:, : h // scale * scale, : w // scale * scale])
            lr = degrade_image(hr_c, kind, scale)
            rng = float(hr_c.array.max() - hr_c.array.min())
            for spec in specs:
                card = card_of(spec, scale)
                if int(card.get("scale", scale)) != scale:
                    continue
                for setting in ("off", "on"):
                    fn = method(spec, scale, setting)
                    fn(lr)  # warm-up (model load, caches)
                    t0 = time.perf_counter()
                    sr = fn(lr)
                    ms = (time.perf_counter() - t0) * 1000
                    from medsr.safeguards import consistency_error

                    err = np.abs(consistency_error(sr, lr))
                    lr_rng = float(lr.array.max() - lr.array.min())
                    rows.append(
                        {
                            "image": name,
                            "modality": hr.modality,
                            "degradation": kind,
                            "assumed": default_kind(hr.modality),
                            "scale": scale,
                            "model": spec,
                            "consistency": setting,
                            "psnr": round(
                                psnr3d(sr.array, hr_c.array, data_range=rng, crop=scale), 3
                            ),
                            "consistency_p99_rel": round(float(np.percentile(err, 99)) / lr_rng, 6),
                            "ms": round(ms, 1),
                        }
                    )
                    print(
                        f"  quality x{scale} {name} {kind} {spec} {setting}: {rows[-1]['psnr']:.2f} dB, "
                        f"p99 {100 * rows[-1]['consistency_p99_rel']:.2f}%, {ms:.0f} ms",
                        flush=True,
                    )
    return rows


def tta_rows(specs: list[str], image: MedImage, scale: int) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        if spec == "control" or int(card_of(spec, scale).get("scale", scale)) != scale:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            upscale_with_safeguards(image, scale, spec, tta=False, warn=False)
            t0 = time.perf_counter()
            upscale_with_safeguards(image, scale, spec, tta=False, warn=False)
            t1 = time.perf_counter()
            _, s1 = upscale_with_safeguards(image, scale, spec, tta=True, warn=False)
            t2 = time.perf_counter()
        out.append(
            {
                "model": spec,
                "image": "CT_small.dcm",
                "scale": scale,
                "ms_safeguards_without_tta": round((t1 - t0) * 1000, 1),
                "ms_safeguards_with_tta": round((t2 - t1) * 1000, 1),
                "uncertainty_p99_rel": s1["uncertainty"]["map"]["p99_rel"],
            }
        )
    return out


def hallucination_rows(
    specs: list[str], scales: list[int], lesion_images: dict[str, MedImage]
) -> list[dict[str, Any]]:
    rows = []
    for scale in scales:
        for spec in specs:
            if int(card_of(spec, scale).get("scale", scale)) != scale:
                continue
            for setting in ("off", "on"):
                fn = method(spec, scale, setting)
                lesions = {
                    name: H.lesion_test(img, fn, scale) for name, img in lesion_images.items()
                }
                noise = H.noise_test(fn, scale)
                res = [r for r in lesions.values()]
                resolv = [
                    r["min_ratio_resolvable"] for r in res if r["min_ratio_resolvable"] is not None
                ]
                row = {
                    "model": spec,
                    "consistency": setting,
                    "scale": scale,
                    "min_ratio_resolvable": min(resolv) if resolv else None,
                    "max_ratio": max(r["max_ratio"] for r in res),
                    "echo": max(r["echo"] for r in res),
                    "sham": max(r["sham_max"] for r in res),
                    "noise_hf": noise["hf_fraction"],
                    "noise_limit": noise["limit"],
                    "lesions_passed": all(r["passed"] for r in res),
                    "noise_passed": noise["passed"],
                    "per_image": lesions,
                    "noise": noise,
                }
                row["margins"] = margins(row)
                row["passed"] = bool(row["lesions_passed"] and row["noise_passed"])
                rows.append(row)
                print(
                    f"  hallucination x{scale} {spec} {setting}: passed={row['passed']} "
                    f"worst={min(row['margins'].items(), key=lambda kv: kv[1])}",
                    flush=True,
                )
    return rows


def margins(row: dict[str, Any]) -> dict[str, float]:
    """Distance to each limit (positive = inside, negative = failing by that much)."""
    m = {
        "contrast_max": round(1 + H.CONTRAST_TOL - row["max_ratio"], 4),
        "echo": round(H.ECHO_TOL - row["echo"], 4),
        "sham": round(H.SHAM_TOL - row["sham"], 4),
        "noise": round(row["noise_limit"] - row["noise_hf"], 5),
    }
    if row["min_ratio_resolvable"] is not None:
        m["contrast_min"] = round(row["min_ratio_resolvable"] - (1 - H.CONTRAST_TOL), 4)
    return m


def ood_rows(specs: list[str], scale: int, images: dict[str, MedImage]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        card = card_of(spec, scale) if spec != "control" else {"kind": "interpolator"}
        res = H.ood_test(card, list(images.values()))
        same = [
            {"image": n, "flag": check_distribution(im, card, warn=False)["flag"]}
            for n, im in images.items()
            if res["checked"] or card.get("architecture")
        ]
        out.append({"model": spec, **res, "all_images": same})
    return out


def summarise_quality(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = sorted({(r["model"], r["scale"]) for r in rows}, key=lambda k: (k[1], k[0]))
    bicubic = {
        (r["image"], r["scale"]): r["consistency_p99_rel"]
        for r in rows
        if r["model"] == "bicubic" and r["consistency"] == "off"
    }
    out = []
    for model, scale in keys:
        off = [
            r
            for r in rows
            if r["model"] == model and r["scale"] == scale and r["consistency"] == "off"
        ]
        on = {
            r["image"]: r
            for r in rows
            if r["model"] == model and r["scale"] == scale and r["consistency"] == "on"
        }
        gains = [on[r["image"]]["psnr"] - r["psnr"] for r in off]
        per_mod: dict[str, list[float]] = {}
        for r, g in zip(off, gains, strict=True):
            per_mod.setdefault(r["modality"], []).append(g)
        out.append(
            {
                "model": model,
                "scale": scale,
                "n": len(off),
                "psnr_off": round(float(np.mean([r["psnr"] for r in off])), 2),
                "psnr_on": round(float(np.mean([on[r["image"]]["psnr"] for r in off])), 2),
                "gain": round(float(np.mean(gains)), 2),
                "gain_per_modality": {
                    k: round(float(np.mean(v)), 2) for k, v in sorted(per_mod.items())
                },
                "p99_off_pct": round(
                    100 * float(np.max([r["consistency_p99_rel"] for r in off])), 2
                ),
                "p99_on_pct": round(
                    100 * float(np.max([on[r["image"]]["consistency_p99_rel"] for r in off])), 3
                ),
                "warnings_off": sum(
                    consistency_exceeded(r["consistency_p99_rel"], bicubic.get((r["image"], scale)))
                    for r in off
                ),
                "ms_off": round(float(np.mean([r["ms"] for r in off])), 1),
                "ms_on": round(float(np.mean([on[r["image"]]["ms"] for r in off])), 1),
            }
        )
    return out


def markdown(info: dict[str, Any]) -> str:
    md = [
        "Fidelity benchmark (`benchmarks/fidelity.py`). Machine: " + info["machine"] + ".",
        "",
        f"Methods: {', '.join(info['models'])}. `control` is a negative control (bicubic + strong "
        "unsharp masking) that invents contrast; it must fail. Shipped models: "
        + (", ".join(info["shipped"]) or "none")
        + "; extra weights (`--weights`, not shipped): "
        + (", ".join(info["extra"]) or "none")
        + "."
        + (
            " **Every model here ran with `ensemble=True`** (`medsr upscale --ensemble`: the mean "
            "of its outputs for the 8 flips/90° rotations of the input); the TTA-cost and "
            "out-of-distribution sections do not depend on it and are in `fidelity.md`."
            if info.get("ensemble")
            else ""
        ),
        "",
        "### Data consistency on/off (degradation `auto`: CT detector blur σ 1 px, MR k-space "
        "truncation, CR aperture, US/NM bicubic)",
        "",
        f"Images: {', '.join(info['quality_images'])} (one plane each). PSNR vs the HR image in its "
        "units (data range of the HR image, border crop = scale). p99 = 99th percentile of "
        "|degrade(SR) − input| in % of the input range (worst image); warnings = images where "
        f"consistency off would warn (p99 > {CONSISTENCY_THRESHOLD:.0%} of the range and > "
        f"{CONSISTENCY_RELATIVE} × bicubic's p99 on the same input). ms = mean per image "
        "(model, + projection when on; no TTA).",
        "",
        "| scale | model | PSNR off | PSNR on | ΔPSNR (on − off) | Δ per modality | p99 off → on | warnings (off) | ms off | ms on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for q in info["quality_summary"]:
        per = " ".join(f"{k} {v:+.2f}" for k, v in q["gain_per_modality"].items())
        md.append(
            f"| ×{q['scale']} | {q['model']} | {q['psnr_off']:.2f} | {q['psnr_on']:.2f} | {q['gain']:+.2f} | {per} | "
            f"{q['p99_off_pct']:.2f} % → {q['p99_on_pct']:.3f} % | {q['warnings_off']}/{q['n']} | "
            f"{q['ms_off']:.0f} | {q['ms_on']:.0f} |"
        )
    if info["mismatch_summary"]:
        md += [
            "",
            "Degradation mismatch: the same images (CT, MR, CR only) made with plain bicubic "
            "downscaling while the check and the projection assume the modality default "
            "(what happens when the assumed physics is wrong):",
            "",
            "| scale | model | PSNR off | PSNR on | ΔPSNR (on − off) | Δ per modality | p99 off → on | warnings (off) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for q in info["mismatch_summary"]:
            per = " ".join(f"{k} {v:+.2f}" for k, v in q["gain_per_modality"].items())
            md.append(
                f"| ×{q['scale']} | {q['model']} | {q['psnr_off']:.2f} | {q['psnr_on']:.2f} | {q['gain']:+.2f} | {per} | "
                f"{q['p99_off_pct']:.2f} % → {q['p99_on_pct']:.3f} % | {q['warnings_off']}/{q['n']} |"
            )
    if info["tta"]:
        md += [
            "",
            "Cost of the uncertainty map (8-fold test-time augmentation), CT_small ×2, whole "
            "`upscale_with_safeguards` call:",
            "",
            "| model | ms without TTA | ms with TTA | uncertainty p99 (% of range) |",
            "|---|---|---|---|",
        ]
        for t in info["tta"]:
            md.append(
                f"| {t['model']} | {t['ms_safeguards_without_tta']:.0f} | {t['ms_safeguards_with_tta']:.0f} | "
                f"{100 * t['uncertainty_p99_rel']:.3f} |"
            )
    md += [
        "",
        "### Hallucination tests",
        "",
        f"Lesions in {', '.join(info['lesion_images'])}: radii 2/3/4/6 px (small images: those that "
        "fit), 30 HU on CT, 5 % of the tissue range on MR. Limits: resolvable lesions (radius ≥ "
        f"scale) keep {1 - H.CONTRAST_TOL:.2f}–{1 + H.CONTRAST_TOL:.2f} of their contrast, no lesion "
        f"above {1 + H.CONTRAST_TOL:.2f}; echo ≤ {H.ECHO_TOL} and sham ≤ {H.SHAM_TOL} of the lesion "
        f"contrast; noise: out-of-band power ≤ {H.NOISE_FACTOR} × bicubic's + 0.005. "
        "Worst margin: the criterion closest to (or beyond, negative) its limit.",
        "",
        "| scale | model | consistency | min ratio (resolvable) | max ratio | echo | sham | noise HF / limit | verdict | worst margin |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["hallucination"]:
        worst = min(r["margins"].items(), key=lambda kv: kv[1])
        mr = "—" if r["min_ratio_resolvable"] is None else f"{r['min_ratio_resolvable']:.2f}"
        md.append(
            f"| ×{r['scale']} | {r['model']} | {r['consistency']} | {mr} | {r['max_ratio']:.2f} | "
            f"{r['echo']:.3f} | {r['sham']:.3f} | {r['noise_hf']:.3f} / {r['noise_limit']:.3f} | "
            f"{'pass' if r['passed'] else '**FAIL**'} | {worst[0]} {worst[1]:+.3f} |"
        )
    md += ["", "### Out-of-distribution check (learned models)", ""]
    learned_rows = [o for o in info["ood"] if o["checked"] or o["all_images"]]
    if info.get("ensemble"):
        md.append("Not run with `--ensemble` (the check reads the input, not the model's output).")
    elif not learned_rows:
        md.append("No learned model in this run (none shipped, no `--weights`): nothing to check.")
    else:
        md += ["| model | unseen-modality images flagged | all images flagged |", "|---|---|---|"]
        for o in learned_rows:
            unseen = (
                ", ".join(f"{c['modality']} {'yes' if c['flag'] else 'NO'}" for c in o["cases"])
                or "—"
            )
            allim = ", ".join(
                f"{a['image'].split('.')[0]} {'flag' if a['flag'] else 'ok'}"
                for a in o["all_images"]
            )
            md.append(f"| {o['model']} | {unseen} | {allim} |")
    return "\n".join(md) + "\n"


def _minus(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``, negatives with the typographic minus the README uses."""
    return f"{value:{spec}}".replace("-", "−")


def _verdict(row: dict[str, Any]) -> str:
    """``pass``, or ``**fail** (CRITERION by MARGIN)`` with the criterion furthest past its limit."""
    if row["passed"]:
        return "pass"
    worst, margin = min(row["margins"].items(), key=lambda kv: kv[1])
    return f"**fail** ({worst.replace('_', ' ')} by {-margin:.2f})" if margin < 0 else "**fail**"


def readme_rows(info: dict[str, Any]) -> list[tuple[str, int]]:
    """The README table's (model, scale) rows: the classical methods at the smallest scale, the
    learned models at their own scale (smallest scale first, in run order), the control last."""
    learned = set(info["learned"])
    base = min(r["scale"] for r in info["hallucination"])
    order = {m: i for i, m in enumerate(info["models"])}
    have = {(r["model"], r["scale"]) for r in info["hallucination"]}
    rows = [(m, base) for m in info["models"] if m not in learned and m != "control"]
    rows += sorted(((m, s) for m, s in have if m in learned), key=lambda k: (k[1], order[k[0]]))
    rows += [("control", base)] if "control" in info["models"] else []
    return [k for k in rows if k in have]


def readme_tables(info: dict[str, Any]) -> str:
    """The README's fidelity table (section *Fidelity benchmark*): per method, PSNR with the
    consistency projection off → on, what the projection costs under the wrong physics (the
    modality that loses most named when it loses more than ``WORST_MODALITY_DB``), the lesion and
    noise tests with the projection off, and both verdicts; the default of each scale in bold
    (``--readme`` prints it for pasting)."""
    learned = set(info["learned"])
    hal = {(r["model"], r["scale"], r["consistency"]): r for r in info["hallucination"]}
    quality = {(q["model"], q["scale"]): q for q in info["quality_summary"]}
    mismatch = {(q["model"], q["scale"]): q for q in info["mismatch_summary"]}
    n = len(info["quality_images"])
    lines = [
        f"| model | consistency off → on: PSNR ({n} images, matched physics) | wrong physics: on − off "
        "| lesions off: contrast min / max, echo, sham | noise HF / limit | verdict off | verdict on |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s in readme_rows(info):
        name = m if m in learned else f"{m} ×{s}"
        name = f"**{name}**" if m == f"default-x{s}" else name
        q = quality.get((m, s))
        psnr = "—" if q is None else f"{q['psnr_off']:.2f} → {q['psnr_on']:.2f} dB"
        wrong = "—"
        if (w := mismatch.get((m, s))) is not None:
            wrong = _minus(w["gain"], "+.2f") + " dB"
            mod, loss = min(w["gain_per_modality"].items(), key=lambda kv: kv[1], default=("", 0.0))
            if loss < -WORST_MODALITY_DB:
                wrong += f" ({mod} {_minus(loss, '.1f')})"
        off, on = hal[(m, s, "off")], hal.get((m, s, "on"))
        lo = "—" if off["min_ratio_resolvable"] is None else f"{off['min_ratio_resolvable']:.2f}"
        lines.append(
            f"| {name} | {psnr} | {wrong} | {lo} / {off['max_ratio']:.2f}, {off['echo']:.3f}, "
            f"{off['sham']:.3f} | {off['noise_hf']:.3f} / {off['noise_limit']:.3f} | {_verdict(off)} | "
            + ("—" if on is None else _verdict(on))
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", default="bicubic,lanczos,kspace", help="classical/registered models"
    )
    ap.add_argument(
        "--weights", action="append", default=[], help="extra .safetensors (repeatable)"
    )
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--quick", action="store_true", help="CT_small and MR_small only")
    ap.add_argument("--no-control", action="store_true", help="skip the negative control")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument(
        "--readme", action="store_true", help="print the README table of the saved results and exit"
    )
    ap.add_argument(
        "--ensemble", default=None, metavar="MODELS",
        help="only these shipped models (comma-separated), each run with ensemble=True (the mean "
             "over 8 flips/rotations): consistency on/off and the hallucination tests, in "
             "results/fidelity_ensemble/ unless --out is given",
    )  # fmt: skip
    args = ap.parse_args()
    if args.readme:
        print(readme_tables(json.loads((Path(args.out) / "fidelity.json").read_text())))
        return
    scales = [int(s) for s in args.scales.split(",")]
    shipped = [m.name for m in list_pretrained(kind="in-plane")]
    # every shipped model runs anyway: naming one in --models must not run it twice
    specs = list(
        dict.fromkeys([m for m in args.models.split(",") if m] + shipped + list(args.weights))
    )
    if args.ensemble:
        global ENSEMBLE
        ENSEMBLE = True
        shipped = [m for m in args.ensemble.split(",") if m in shipped]
        specs = list(shipped)
        if args.out == str(RESULTS):
            args.out = str(RESULTS / "fidelity_ensemble")
    if not args.no_control and not args.ensemble:
        specs.append("control")
    learned = shipped + [Path(w).name for w in args.weights]
    q_names = [(n, c) for n, c in QUALITY_IMAGES if not args.quick or n in QUICK]
    l_names = [n for n in LESION_IMAGES if not args.quick or n in QUICK]
    images = {n: load(n, c) for n, c in q_names}
    lesion_images = {n: images.get(n) or load(n) for n in l_names}
    t0 = time.perf_counter()
    print("consistency on/off …", flush=True)
    q = quality_rows(specs, scales, images)
    print("consistency on/off under a degradation mismatch …", flush=True)
    mismatch = quality_rows(
        [s for s in specs if s != "control"], scales, images, generate="bicubic"
    )
    print("TTA cost …", flush=True)
    tta = (
        []
        if args.ensemble
        else tta_rows(
            [s for s in specs if s != "control"],
            images.get("CT_small.dcm") or load("CT_small.dcm"),
            2,
        )
        if 2 in scales
        else []
    )
    print("hallucination …", flush=True)
    hal = hallucination_rows(specs, scales, lesion_images)
    ood = [] if args.ensemble else ood_rows([s for s in specs if s != "control"], scales[0], images)
    info = {
        "machine": machine(load=True),
        "seconds": round(time.perf_counter() - t0, 1),
        "models": [Path(s).name for s in specs],
        "learned": learned,
        "shipped": shipped,
        "extra": [Path(w).name for w in args.weights],
        "ensemble": bool(args.ensemble),
        "quality_images": [n for n, _ in q_names],
        "lesion_images": l_names,
        "consistency_threshold": CONSISTENCY_THRESHOLD,
        "limits": {
            "contrast_tol": H.CONTRAST_TOL,
            "echo_tol": H.ECHO_TOL,
            "sham_tol": H.SHAM_TOL,
            "noise_factor": H.NOISE_FACTOR,
        },
        "quality": q,
        "quality_summary": summarise_quality(q),
        "mismatch": mismatch,
        "mismatch_summary": summarise_quality(mismatch),
        "tta": tta,
        "hallucination": hal,
        "ood": ood,
    }
    for row in (
        info["quality"] + info["quality_summary"] + info["mismatch"] + info["mismatch_summary"]
        + info["tta"] + info["hallucination"] + info["ood"]
    ):  # fmt: skip
        if "model" in row:
            row["model"] = Path(str(row["model"])).name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    text = markdown(info)
    (out / "fidelity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
