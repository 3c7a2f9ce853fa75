"""Quality benchmark: every shipped model + classical upscalers on the validation split.

`medsr evaluate` on whole corpus images, ×2 and ×4, with plain antialiased bicubic degradation
and with each modality's physics (``auto``: CT detector blur, MR k-space truncation, CR detector
+ quantum noise, US lateral blur, NM blur + Poisson). Metrics are in each image's own units.

Two image sets (shared/data/CORPUS.md only):

* ``validation`` — the recipes' ``val_files`` (configs/default-x2.yaml): never seen in training.
  This is the headline.
* ``validation-mr`` — the MR validation images degraded by k-space truncation only, where
  zero-filled k-space interpolation (``kspace``) is the baseline to beat.
* ``seen`` — the training images; CR and NM have a single patient in the corpus, so their only
  numbers come from images the networks were trained on. Reported apart and labelled as such.

For the default model the data-consistency projection (``--consistency on``) is measured too:
its PSNR/SSIM effect and its extra time.

Writes ``benchmarks/results/quality_{set}_x{scale}_{degradation}[_consistency]/`` (the full
evaluation report of the last run for that key: with ``--merge`` it holds only that run's
models; not committed) and ``benchmarks/results/quality.json`` + ``quality.md`` (every model).

    .venv/bin/python benchmarks/quality.py                       # everything shipped, ×2 and ×4
    .venv/bin/python benchmarks/quality.py --scales 2 --sets validation --no-consistency
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from _machine import machine

from medsr.models.resolver import list_pretrained
from medsr.reports.evaluate import evaluate, paired_gain

#: the recipes' validation files (configs/default-x2.yaml ``val_files``): never trained on
VALIDATION = ("CT_small.dcm", "MR_small.dcm", "aniso_vox.nii.gz", "gdcm-US-ALOKA-16.dcm")
#: training images (configs/default-x2.yaml ``files``); the only CR and NM images of the corpus
SEEN = (
    "bad_sequence.dcm",
    "explicit_VR-UN.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "emri_small.dcm",
    "RG3_UNCR.dcm",
    "OBXXXX1A.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "JPEG2000_UNC.dcm",
)
#: MR validation images, degraded in k-space (central k-space kept): where zero-filled k-space
#: interpolation is the baseline to beat
MR_KSPACE = ("MR_small.dcm", "aniso_vox.nii.gz")
SETS = {"validation": VALIDATION, "seen": SEEN, "validation-mr": MR_KSPACE}
CLASSICAL = ("bicubic", "lanczos", "kspace")
RESULTS = Path(__file__).parent / "results"


def shipped_models(scale: int) -> list[str]:
    """Shipped weights for ``scale`` (named ``*-x{scale}``), default first."""
    names = [m.name for m in list_pretrained(kind="in-plane") if m.scale == scale]
    return sorted(names, key=lambda n: (not n.startswith("default"), not n.startswith("fast"), n))


def modality_of(image: str, modality: str) -> str:
    """NIfTI files carry no modality: use the corpus's (MR)."""
    from medsr.training.data import CORPUS_FILES  # imports torch: not for --readme

    return CORPUS_FILES.get(image) or modality


def paired_stats(gains: list[float]) -> dict:
    """Mean paired gain and its 95 % Student-t CI (``medsr.reports.evaluate.paired_gain``)."""
    mean, lo, hi = paired_gain(np.asarray(gains), np.zeros(len(gains)))
    sd = float(np.std(gains, ddof=1)) if len(gains) > 1 else math.nan
    return {"mean": mean, "sd": sd, "n": len(gains), "ci95": [lo, hi]}


def summarise(out: Path) -> dict:
    """Per model: mean PSNR/SSIM/time, paired gain vs bicubic overall and per modality."""
    per: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    mods: dict[str, str] = {}
    with (out / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row["metric"] in ("psnr", "ssim", "seconds"):
                per[(row["image"], row["model"])][row["metric"]] = float(row["value"])
                mods[row["image"]] = modality_of(row["image"], row["modality"])
    images = sorted(mods)
    models = list(dict.fromkeys(m for _, m in per))
    res: dict[str, dict] = {}
    for m in models:
        have = [i for i in images if (i, m) in per and (i, "bicubic") in per]
        gains = [per[(i, m)]["psnr"] - per[(i, "bicubic")]["psnr"] for i in have]
        dssim = [per[(i, m)]["ssim"] - per[(i, "bicubic")]["ssim"] for i in have]
        by_mod: dict[str, list[float]] = defaultdict(list)
        for i, g in zip(have, gains, strict=True):
            by_mod[mods[i]].append(g)
        res[m] = {
            "psnr": sum(per[(i, m)]["psnr"] for i in have) / len(have),
            "ssim": sum(per[(i, m)]["ssim"] for i in have) / len(have),
            "seconds": sum(per[(i, m)].get("seconds", 0.0) for i in have),
            "gain_psnr_vs_bicubic": paired_stats(gains),
            "gain_ssim_vs_bicubic": sum(dssim) / len(dssim),
            "gain_psnr_per_modality": {k: sum(v) / len(v) for k, v in sorted(by_mod.items())},
            "gain_psnr_per_image": dict(zip(have, gains, strict=True)),
            "n": len(have),
        }
    return res


def run(
    files: list[Path],
    models: list[str],
    scale: int,
    degradation: str,
    out: Path,
    max_slices: int,
    consistency: str | None,
) -> tuple[dict, float]:
    t0 = time.perf_counter()
    # maps (TTA uncertainty) are benchmarked by benchmarks/fidelity.py; here only quality and time
    evaluate(
        files,
        models=models,
        scale=scale,
        degradation=degradation,
        out_dir=out,
        max_slices=max_slices,
        progress=False,
        maps=False,
        consistency=consistency or "off",
    )
    return summarise(out), time.perf_counter() - t0


def fmt_gain(g: dict) -> str:
    lo, hi = g["ci95"]
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else ""
    return f"{g['mean']:+.2f}{ci}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", default="", help="comma list; default: classical + every shipped model"
    )
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--degradations", default="bicubic,auto")
    ap.add_argument("--sets", default="validation,validation-mr,seen")
    ap.add_argument("--max-slices", type=int, default=4)
    ap.add_argument(
        "--no-consistency", action="store_true", help="skip the consistency on/off runs"
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="add these models to benchmarks/results/quality.json instead of replacing it",
    )
    ap.add_argument(
        "--readme", action="store_true", help="print the README table of the saved results and exit"
    )
    args = ap.parse_args()
    if args.readme:
        print(readme_tables(json.loads((RESULTS / "quality.json").read_text())))
        return
    from medsr.training.data import resolve_corpus  # imports torch: not for --readme

    old = json.loads((RESULTS / "quality.json").read_text()) if args.merge else {}
    results: dict[str, dict] = old.get("results", {}) if "sets" in old else {}
    for set_name in args.sets.split(","):
        files = [resolve_corpus(n) for n in SETS[set_name]]
        for scale in (int(s) for s in args.scales.split(",")):
            shipped = shipped_models(scale)
            models = [m for m in args.models.split(",") if m] or [*CLASSICAL, *shipped]
            degradations = (
                ["kspace"] if set_name == "validation-mr" else args.degradations.split(",")
            )
            for degradation in degradations:
                runs = [(None, models)]
                default = [m for m in models if m.startswith("default-")]
                if not args.no_consistency and set_name == "validation" and default:
                    runs.append(("on", ["bicubic", *default]))
                for consistency, ms in runs:
                    key = f"{set_name}_x{scale}_{degradation}" + (
                        f"_consistency-{consistency}" if consistency else ""
                    )
                    summary, seconds = run(
                        files,
                        ms,
                        scale,
                        degradation,
                        RESULTS / f"quality_{key}",
                        args.max_slices,
                        consistency,
                    )
                    entry = results.setdefault(key, {"models": {}})
                    entry.update(
                        {
                            "set": set_name,
                            "scale": scale,
                            "degradation": degradation,
                            "consistency": consistency or "off",
                            "files": [f.name for f in files],
                        }
                    )
                    entry["seconds"] = entry.get("seconds", 0.0) + seconds
                    entry["models"].update(summary)
                    print(
                        key,
                        {
                            m: round(e["gain_psnr_vs_bicubic"]["mean"], 2)
                            for m, e in summary.items()
                        },
                        flush=True,
                    )
    info = {
        "machine": machine(load=True),
        "sets": {k: list(v) for k, v in SETS.items()},
        "results": results,
    }
    (RESULTS / "quality.json").write_text(json.dumps(info, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(info) + "\n")
    print(markdown(info))


def markdown(info: dict) -> str:
    head = [
        "set",
        "scale",
        "degradation",
        "model",
        "PSNR (dB)",
        "SSIM",
        "ΔPSNR vs bicubic [95 % CI]",
        "ΔPSNR per modality",
        "time (s)",
        "n",
    ]
    md = [
        f"Quality of every shipped model on whole corpus images (metrics in each image's own units; "
        "`validation` = never trained on; `validation-mr` = its MR images degraded in k-space; `seen` = "
        "training images, the only CR/NM ones; `+ consistency` rows: every output, bicubic's included, "
        f"projected onto its input, gains against bicubic + consistency). Machine: {info['machine']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for key, res in info["results"].items():
        on = res["consistency"] == "on"
        off = info["results"].get(key.removesuffix("_consistency-on"), {}).get("models", {})
        order = sorted(res["models"], key=lambda m: (m != "bicubic", m not in CLASSICAL, m))
        for m in order:
            e = res["models"][m]
            label = m
            if on:  # gains are against bicubic + consistency; say what the projection itself does
                label = f"{m} + consistency"
                if m in off:
                    label += (
                        f" (vs off: {e['psnr'] - off[m]['psnr']:+.2f} dB, "
                        f"{e['seconds'] - off[m]['seconds']:+.1f} s)"
                    )
            md.append(
                "| "
                + " | ".join(
                    [
                        res["set"],
                        f"×{res['scale']}",
                        res["degradation"],
                        label,
                        f"{e['psnr']:.2f}",
                        f"{e['ssim']:.4f}",
                        "—" if m == "bicubic" else fmt_gain(e["gain_psnr_vs_bicubic"]),
                        ""
                        if m == "bicubic"
                        else " ".join(
                            f"{k} {v:+.2f}" for k, v in e["gain_psnr_per_modality"].items()
                        ),
                        f"{e['seconds']:.1f}",
                        str(e["n"]),
                    ]
                )
                + " |"
            )
    return "\n".join(md)


#: the README's sets: the headline sets (both scales interleaved), then the seen images
README_SETS = ("validation", "validation-mr", "seen")
#: the degradations the README shows for the seen images (the physics-degraded ones: quality.md only)
README_SEEN = ("bicubic",)


def readme_order(models: list[str]) -> list[str]:
    """The README's row order: the classical methods, the other learned models by name, then
    ``fast-*``, then ``default-*`` last."""

    def key(m: str) -> tuple[int, int, str]:
        if m in CLASSICAL:
            return (0, CLASSICAL.index(m), m)
        return (1, 2 if m.startswith("default") else 1 if m.startswith("fast") else 0, m)

    return sorted(models, key=key)


def readme_tables(info: dict) -> str:
    """The README's quality table (section *Quality*): per set, scale and degradation (the seen
    images with plain bicubic only) every model's PSNR, SSIM and paired gain over bicubic, the
    default of the scale in bold, then the default with ``--consistency on`` against off
    (``--readme`` prints it for pasting)."""
    head = [
        "images",
        "scale",
        "degradation",
        "model",
        "PSNR (dB)",
        "SSIM",
        "ΔPSNR vs bicubic [95 % CI]",
        "per modality",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---:|---:|---|---|"]
    runs = [
        r
        for r in info["results"].values()
        if r["consistency"] == "off"
        and r["set"] in README_SETS
        and (r["set"] != "seen" or r["degradation"] in README_SEEN)
    ]
    runs.sort(key=lambda r: (r["set"] == "seen", r["scale"], README_SETS.index(r["set"])))  # stable
    for res in runs:
        key = f"{res['set']}_x{res['scale']}_{res['degradation']}"
        default = f"default-x{res['scale']}"
        group = [res["set"], f"×{res['scale']}", res["degradation"]]
        for m in readme_order(list(res["models"])):
            e = res["models"][m]
            gain = "—" if m == "bicubic" else fmt_gain(e["gain_psnr_vs_bicubic"])
            per = (
                ""
                if m == "bicubic"
                else " ".join(f"{k} {v:+.2f}" for k, v in e["gain_psnr_per_modality"].items())
            )
            name, gain = (f"**{m}**", f"**{gain}**") if m == default else (m, gain)
            lines.append(
                "| "
                + " | ".join([*group, name, f"{e['psnr']:.2f}", f"{e['ssim']:.4f}", gain, per])
                + " |"
            )
            group = ["", "", ""]
        on = info["results"].get(f"{key}_consistency-on", {}).get("models", {})
        if default in on and default in res["models"]:
            e = on[default]
            lines.append(
                "| "
                + " | ".join(
                    [
                        *group,
                        f"{default} + `--consistency on`",
                        f"{e['psnr']:.2f}",
                        f"{e['ssim']:.4f}",
                        f"{e['psnr'] - res['models'][default]['psnr']:+.2f} vs off",
                        "",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
