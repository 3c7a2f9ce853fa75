"""Write the report sections of every shipped model card from the benchmark results.

A model card says what a model is for and not for, how it did on images it never saw, per image
and per modality, what it gets wrong, the software, the training data's licences and the weights'
checksum (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019;
:data:`medsr.models.cards.REPORT_SECTIONS`). The shipped ``.safetensors`` files are pinned (their
checksums are), so these sections go into each file's JSON twin ``src/medsr/weights/<name>.json``
(the file's own card plus the sections); ``medsr models NAME`` joins the two.

Every number is read from ``benchmarks/results/*.json`` (faithful, faithful_x4, quality,
through_plane, precision, trust_maps): re-run a benchmark, then this, and the cards follow;
``tests/models/test_model_cards.py`` fails while a twin differs from what this writes.

    .venv/bin/python scripts/card_sections.py           # rewrite the JSON twins
    .venv/bin/python scripts/card_sections.py --check   # exit 1 when one would change
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from medsr.models.cards import RESEARCH_USE, weights_sha256
from medsr.models.pretrained import WEIGHTS_DIR, bundled_weights
from medsr.models.weights import read_card
from medsr.training.corpus import corpus_source

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLASSICAL = ("bicubic", "lanczos", "kspace")
FAITHFUL_PROTOCOL = (
    "leave-one-source-out validation images (other packages or patients than the training files), "
    "degraded by the set's degradation, upscaled and compared with the original in the image's units; "
    "a border of scale px and a CT's padding outside the reconstruction circle are not scored; low/high "
    "band: RMS of the error low-passed with a Gaussian (sigma 2 x scale output px) and of the rest"
)
#: quality.json names files; their modality (checked against its per-modality means)
QUALITY_MODALITY = {"CT_small.dcm": "CT", "MR_small.dcm": "MR", "aniso_vox.nii.gz": "MR",
                    "gdcm-US-ALOKA-16.dcm": "US"}  # fmt: skip
SEED_BASELINES = ("residual5", "srcnn", "vdsr")


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def _r(x: float | None, n: int = 3) -> float | None:
    return None if x is None else round(float(x), n)


def _per_modality(images: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mod in sorted({r["modality"] for r in images}):
        rows = [r for r in images if r["modality"] == mod and r.get("gain_db") is not None]
        if not rows:
            continue
        entry: dict[str, Any] = {
            "images": len(rows),
            "mean_gain_db": _r(statistics.fmean(r["gain_db"] for r in rows)),
            "worst_gain_db": _r(min(r["gain_db"] for r in rows)),
        }
        peers = [r["vs_best_peer_db"] for r in rows if r.get("vs_best_peer_db") is not None]
        if peers:
            entry["mean_vs_best_peer_db"] = _r(statistics.fmean(peers))
        out[mod] = entry
    return out


# ------------------------------------------------------------------ benchmarks/faithful.py
def _faithful_columns(bench: dict[str, Any], entry: dict[str, Any], name: str) -> list[str]:
    """The columns of a faithful.py set that ran the shipped model ``name``."""
    deg = entry["degradation"]
    cols = []
    for col in entry["models"]:
        if col in CLASSICAL or "(bare)" in col:
            continue
        if col == "default":  # no --degradation: the default of the scale
            who = bench["model"]
        elif col == "fast" or col == f"fast + --degradation {deg}":
            who = bench["fast"]
        elif col == f"default + --degradation {deg}":  # the default follows the stated physics
            who = entry.get("physics_default") or bench["model"]
        else:  # "fast-x2-kspace + --degradation kspace", "default-x2 (named) + --degradation kspace"
            who = col.split(" ")[0]
        if who == name:
            cols.append(col)
    return cols


def _run_as(col: str, name: str, scale: int) -> str:
    how = col.split(" + ", 1)[1] if " + " in col else ""
    named = col.split(" ")[0] == name or "(named)" in col or col.startswith("fast")
    return (
        f"medsr upscale --scale {scale}"
        + (f" --model {name}" if named else "")
        + (f" {how}" if how else "")
    )


def faithful_sets(name: str, scale: int) -> tuple[list[dict[str, Any]], str | None]:
    """Per-image rows of every faithful.py set/column that ran ``name``, and the source file."""
    file = "faithful.json" if scale == 2 else f"faithful_x{scale}.json"
    if not (RESULTS / file).is_file():
        return [], None
    bench = _load(file)
    out = []
    for entry in bench["sets"]:
        base = "kspace" if entry["degradation"] == "kspace" else "bicubic"
        peers = [c for c in CLASSICAL if c in entry["models"]]
        for col in _faithful_columns(bench, entry, name):
            images = []
            for row in entry["rows"]:
                m = row[col]
                best = max(peers, key=lambda c: row[c]["psnr"])
                images.append(
                    {
                        "image": row["label"],
                        "file": row["image"],
                        "modality": row["modality"],
                        "psnr_db": m["psnr"],
                        "ssim": m["ssim"],
                        "low_band_rms": m["low_band_rms"],
                        "high_band_rms": m["high_band_rms"],
                        "baseline_psnr_db": row[base]["psnr"],
                        "gain_db": _r(m["psnr"] - row[base]["psnr"]),
                        "best_peer": best,
                        "vs_best_peer_db": _r(m["psnr"] - row[best]["psnr"]),
                    }
                )
            out.append(
                {
                    "set": entry["set"],
                    "scale": entry["scale"],
                    "degradation": entry["degradation"],
                    "run_as": _run_as(col, name, scale),
                    "benchmark_column": col,
                    "baseline": base,
                    "images": images,
                    "per_modality": _per_modality(images),
                }
            )
    return out, f"benchmarks/results/{file.removesuffix('.json')}.md"


# ------------------------------------------------------------------ benchmarks/quality.py
def quality_sets(name: str, scale: int) -> list[dict[str, Any]]:
    q = _load("quality.json")
    out = []
    for deg in ("bicubic", "auto"):
        res = q["results"].get(f"validation_x{scale}_{deg}")
        if not res or name not in res["models"]:
            continue
        m = res["models"][name]
        images = [
            {"image": f, "file": f, "modality": QUALITY_MODALITY[f], "psnr_db": None, "ssim": None,
             "gain_db": _r(g)}
            for f, g in m["gain_psnr_per_image"].items()
        ]  # fmt: skip
        per = _per_modality(images)
        for mod, v in per.items():  # the modality map agrees with the benchmark's own means
            assert abs(v["mean_gain_db"] - m["gain_psnr_per_modality"][mod]) < 1e-3, (name, mod)
        out.append(
            {
                "set": "validation",
                "scale": scale,
                "degradation": deg,
                "run_as": f"medsr upscale --scale {scale} --model {name} --degradation {deg}",
                "baseline": "bicubic",
                "images": images,
                "per_modality": per,
                "mean_psnr_db": _r(m["psnr"]),
                "mean_ssim": _r(m["ssim"], 4),
            }
        )
    return out


# ------------------------------------------------------------ benchmarks/through_plane.py
def through_plane_sets(name: str, scales: tuple[int, ...], columns: dict[str, str],
                       baseline: str) -> list[dict[str, Any]]:  # fmt: skip
    tp = _load("through_plane.json")
    out = []
    for scale in scales:
        rows = [r for r in tp["rows"] if int(r["scale"]) == scale]
        for col, run_as in columns.items():
            images = [
                {
                    "image": f"{r['volume']} / {r['protocol']}",
                    "modality": r["modality"],
                    "psnr_db": r["metrics"][col]["psnr_3d"],
                    "ssim": r["metrics"][col]["ssim_3d"],
                    "baseline_psnr_db": r["metrics"][baseline]["psnr_3d"],
                    "gain_db": _r(r["metrics"][col]["psnr_3d"] - r["metrics"][baseline]["psnr_3d"]),
                }
                for r in rows
                if col in r["metrics"]
            ]
            if images:
                out.append(
                    {"set": "through-plane validation volumes", "scale": scale,
                     "degradation": "thick slices along z", "run_as": run_as.format(s=scale, **tp),
                     "benchmark_column": col, "baseline": baseline, "images": images,
                     "per_modality": _per_modality(images)}
                )  # fmt: skip
    return out


def validation_results(name: str, kind: str, scale: int) -> dict[str, Any]:
    family = name.split("-")[0]
    if kind == "through-plane":
        sets = through_plane_sets(
            name, (scale,),
            {"prior": "medsr upscale --through-plane --scale {s}",
             "prior+adapt": "medsr upscale --through-plane --scale {s} --adapt {adapt_steps}"},
            "cubic-z",
        )  # fmt: skip
        tp = _load("through_plane.json")
        return {
            "source": "benchmarks/through_plane.py",
            "report": "benchmarks/results/through_plane.md",
            "protocol": "volumes never trained on, made thick-slice along z, reconstructed on the reference "
            "grid; 3-D PSNR/SSIM in each volume's units, the end slices and a border excluded",
            "machine": tp.get("machine"),
            "sets": sets,
        }
    if kind == "slice-interpolator":
        sets = through_plane_sets(
            name, (2, 4), {"interp-cnn": "interp-cnn midpoints, x{s} along z (benchmarks/through_plane.py's interp-cnn)"},
            "linear-z",
        )  # fmt: skip
        return {
            "source": "benchmarks/through_plane.py",
            "report": "benchmarks/results/through_plane.md",
            "protocol": "volumes never trained on, made thick-slice along z (a slice profile, not the slice "
            "removal it was trained for), reconstructed on the reference grid; 3-D PSNR/SSIM",
            "machine": _load("through_plane.json").get("machine"),
            "sets": sets,
        }
    if family in SEED_BASELINES:
        q = _load("quality.json")
        return {
            "source": "benchmarks/quality.py",
            "report": "benchmarks/results/quality.md",
            "protocol": "the validation files (never trained on), degraded, upscaled; PSNR gain over bicubic "
            "per image in the image's units (quality.json records gains per image, PSNR/SSIM as means)",
            "machine": q.get("machine"),
            "sets": quality_sets(name, scale),
        }
    sets, source = faithful_sets(name, scale)
    bench = _load("faithful.json" if scale == 2 else f"faithful_x{scale}.json")
    return {
        "source": "benchmarks/faithful.py",
        "report": source,
        "protocol": FAITHFUL_PROTOCOL,
        "machine": bench.get("machine"),
        "sets": sets,
    }


# -------------------------------------------------------------------------- the words
def intended_use(name: str, kind: str, card: dict[str, Any]) -> str:
    s = card.get("scale")
    family = name.split("-")[0]
    if kind == "through-plane":
        what = (f"through-plane (slice-axis) x{s} upsampling of thick-slice CT and MR volumes "
                "(`medsr upscale --through-plane`)")  # fmt: skip
    elif kind == "slice-interpolator":
        what = "inserting the slice between two neighbours of an MR volume (`medsr interpolate`)"
    elif family in SEED_BASELINES:
        what = (f"comparison in benchmarks (a seed baseline of x{s} in-plane super-resolution); "
                "medsr's default models do better, so upscale images with them")  # fmt: skip
    elif (card.get("low_band") or {}).get("base") == "kspace":
        what = (f"x{s} in-plane super-resolution of MR images whose resolution was limited by k-space "
                "truncation, run with --degradation kspace")  # fmt: skip
    else:
        what = (f"x{s} in-plane super-resolution of grayscale CT, MR, radiograph (CR/DX), ultrasound "
                "and nuclear-medicine images like the development corpus's")  # fmt: skip
    return (
        f"{RESEARCH_USE} For imaging research on {what}: viewing or analysing a finer grid beside the "
        "acquired image, with medsr's safeguards on (consistency, uncertainty and error-bound maps "
        "with --maps). Decisions rest on the acquired images."
    )


def out_of_scope(kind: str, card: dict[str, Any], results: dict[str, Any]) -> list[str]:
    validated = sorted({r["modality"] for s in results["sets"] for r in s["images"]})
    trained = list((card.get("training_data") or {}).get("modalities") or [])
    n_images = len({r.get("file", r["image"]) for s in results["sets"] for r in s["images"]})
    out = [
        "Diagnosis, screening or any clinical decision on the upscaled image alone: it is a derived "
        "image, not a measurement (research use only; not a medical device).",
        f"Images unlike the development corpus (shared/data/CORPUS.md): other anatomy, scanners, "
        f"protocols, contrast or noise levels. It was validated on {n_images} images or volumes "
        f"({', '.join(validated)}) only; caveats lists where it lost to classical interpolation.",
        "Measurements finer than the input's resolution (sizes, HU or SUV of structures the input "
        "did not resolve): the added detail is an estimate.",
    ]
    unvalidated = [m for m in trained if m not in validated]
    if unvalidated:
        out.append(
            f"Modalities it was trained on but not validated on ({', '.join(unvalidated)}): "
            "their quality on unseen images is unmeasured."
        )
    if kind == "in-plane":
        if (card.get("low_band") or {}).get("base") == "kspace":
            out.append("CT, radiographs, ultrasound, or MR whose resolution was not limited by plain "
                       "k-space truncation: use the default of the scale.")  # fmt: skip
        else:
            out.append("Inputs degraded otherwise than trained for (training.degradation): motion, heavy "
                       "noise, sparse-view streaks, lossy compression.")  # fmt: skip
        out.append("Colour images as colour: the network sees one grayscale channel at a time.")
    return out


def caveats(name: str, results: dict[str, Any], digest: str) -> list[str]:
    out = []
    source = results["report"]
    for s in results["sets"]:
        below = [r for r in s["images"] if (r.get("vs_best_peer_db") or 0) < -0.1]
        if below:
            worst = min(below, key=lambda r: r["vs_best_peer_db"])
            out.append(
                f"{s['set']} (x{s['scale']}, {s['degradation']}), `{s['run_as']}`: {len(below)} of "
                f"{len(s['images'])} images more than 0.1 dB below the best classical interpolation; "
                f"worst {worst['image']} ({worst['modality']}), {worst['vs_best_peer_db']:+.2f} dB vs "
                f"{worst['best_peer']} ({source})."
            )
        lost = [
            r for r in s["images"] if r.get("vs_best_peer_db") is None and (r["gain_db"] or 0) < 0
        ]
        if lost:
            worst = min(lost, key=lambda r: r["gain_db"])
            out.append(
                f"{s['set']} (x{s['scale']}, {s['degradation']}), `{s['run_as']}`: below {s['baseline']} on "
                f"{len(lost)} of {len(s['images'])}; worst {worst['image']} ({worst['modality']}), "
                f"{worst['gain_db']:+.2f} dB ({source})."
            )
    tm = _load("trust_maps.json")
    for label in (name, f"{name} + --degradation kspace"):
        rows = [r for r in tm["rows"] if r["model"] == label and isinstance(r.get("error_bound"), dict)
                and r["error_bound"].get("within_1") is not None]  # fmt: skip
        if rows:
            cover = [r["error_bound"]["within_1"] for r in rows]
            worst = min(rows, key=lambda r: r["error_bound"]["within_1"])
            out.append(
                f"Error-bound map (--maps), `{label}`, x{tm['scale']}: the true error was within the bound "
                f"in {statistics.fmean(cover):.0%} of {tm['block']}-px blocks on average over {len(rows)} "
                f"{rows[0]['set']} images (calibrated for 90 %), {min(cover):.0%} on {worst['image']} "
                "(benchmarks/results/trust_maps.md)."
            )
    prec = _load("precision.json")
    for row in prec["rows"]:  # only a measurement of these very weights
        if row["checksum"] == f"sha256:{digest}" and len(row.get("auto_here") or []) > 1:
            out.append(
                f"Reduced precision: on {prec['machine'].split(' (')[0]} ({prec['device']}) --precision "
                f"auto runs {row['auto_here'][0]}: {row['auto_here'][1].removeprefix('auto: ')} "
                "(benchmarks/results/precision.md)."
            )
    return out


def software(card: dict[str, Any]) -> dict[str, str | None]:
    """medsr that exported the card; torch at training was not recorded (these cards predate
    medsr recording it; training.hardware names it where known, validation_results.machine
    names the torch the benchmarks ran)."""
    return {"medsr": card.get("version"), "torch": None}


def licences(card: dict[str, Any]) -> list[dict[str, Any]]:
    data = card.get("training_data") or {}
    groups: dict[tuple[str, str, str], list[str]] = {}
    for f in [*(data.get("train_files") or []), *(data.get("val_files") or [])]:
        src = corpus_source(f) or ("not in the development corpus", "unknown", "")
        groups.setdefault(src, []).append(f)
    return [
        {"package": p, "licence": lic, "stated_in": where, "files": files}
        for (p, lic, where), files in sorted(groups.items())
    ]


def kind_of(card: dict[str, Any]) -> str:
    """The resolver's kind of a shipped card (its ``kind``; the in-plane ones say
    ``super-resolution``), without importing the registry."""
    kind = str(card.get("kind") or "")
    return kind if kind in ("through-plane", "slice-interpolator") else "in-plane"


def sections(name: str, path: Path) -> dict[str, Any]:
    """The report sections of the shipped model ``name`` (weights file ``path``)."""
    card = read_card(path)
    kind = kind_of(card)
    scale = int(card.get("scale") or 2)
    digest = weights_sha256(path)
    results = validation_results(name, kind, scale)
    return {
        "intended_use": intended_use(name, kind, card),
        "out_of_scope": out_of_scope(kind, card, results),
        "validation_results": results,
        "caveats": caveats(name, results, digest),
        "software": software(card),
        "training_data_licences": licences(card),
        "weights_sha256": digest,
    }


def twin(name: str, path: Path) -> str:
    """The JSON twin's text: the file's card plus its report sections."""
    return json.dumps({**read_card(path), **sections(name, path)}, indent=2, sort_keys=True) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a twin differs"
    )
    ap.add_argument("--only", action="append", help="this shipped model only (repeatable)")
    args = ap.parse_args()
    stale = []
    for name, path in bundled_weights().items():
        if args.only and name not in args.only:
            continue
        text = twin(name, path)
        dst = WEIGHTS_DIR / f"{name}.json"
        if dst.is_file() and dst.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            dst.write_text(text)
            print(f"{name}: report sections written")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run scripts/card_sections.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
