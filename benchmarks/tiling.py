"""Tiled inference of large planes: what the tile rule costs, per model and input.

Planes wider or taller than the tile run tile by tile (:func:`medsr.inference.tiling.tiled_forward`).
A network that declares how far it looks (RLFN with its fixed-spread attention: ``reach``, 57 LR
px for the fast models, 111 for the defaults) gets that reach as each tile's halo, so tiles
reproduce a whole-image pass. With 512-px tiles such an overlap is most of each tile; the rule
now (:func:`~medsr.inference.tiling.tile_size_for`) widens a tile to at least 4× its overlap.
This times both rules on the corpus' large planes — the 1760² radiograph (RG3_UNCR.dcm) and the
600×800 ultrasound (OBXXXX1A.dcm, BT.601 luma) — with
``medsr.pipeline.upscale_with_safeguards`` (no maps, no test-time augmentation: what
``medsr upscale`` runs), interleaved, with the process's peak memory at the end.

    python benchmarks/tiling.py [--models default-x2,fast-x2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
INPUTS = {"radiograph 1760²": ("RG3_UNCR.dcm", False), "ultrasound 600×800": ("OBXXXX1A.dcm", True)}
#: the tile rules compared: the one shipped, and 512-px tiles whatever the reach (session 7 before)
RULES = ("tiles ≥ 4× overlap (now)", "512-px tiles")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="default-x2,fast-x2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "tiling"), help="output stem (.json, .md)")
    args = ap.parse_args()
    from pydicom.data import get_testdata_file

    import medsr
    import medsr.inference.tiling as tiling
    from medsr.inference.planes import PlaneUpscaler
    from medsr.pipeline import upscale_with_safeguards

    now = tiling.MIN_TILE_PER_OVERLAP
    images = {
        k: medsr.load_image(get_testdata_file(f), luminance=lum) for k, (f, lum) in INPUTS.items()
    }
    rows = []
    for model in args.models.split(","):
        up = PlaneUpscaler(model, 2, device="cpu")
        for label, img in images.items():
            times: dict[str, list[float]] = {r: [] for r in RULES}
            for _ in range(args.repeats):
                for rule in RULES:
                    tiling.MIN_TILE_PER_OVERLAP = now if rule == RULES[0] else 0
                    t = time.perf_counter()
                    upscale_with_safeguards(img, model=up, scale=2, maps=False, tta=False)
                    times[rule].append(round(time.perf_counter() - t, 2))
            tiling.MIN_TILE_PER_OVERLAP = now
            rows.append(
                {
                    "model": model,
                    "input": label,
                    "halo": up.halo,
                    "tile": up.tile_size,
                    "seconds": times,
                }
            )
            print(rows[-1], flush=True)
    info = {
        "machine": machine(load=True),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rows": rows,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    md = [
        f"Tiled inference (`benchmarks/tiling.py`). Machine: {info['machine']}. "
        "`upscale_with_safeguards`, no maps, seconds per run (interleaved); peak memory of the "
        f"whole process {info['peak_rss_gb']:.2f} GB.",
        "",
        "| model | input | halo (LR px) | tile now | " + " | ".join(RULES) + " |",
        "|---|---|---:|---:|" + "---:|" * len(RULES),
    ]
    for r in rows:
        cells = [" / ".join(f"{v:.1f}" for v in r["seconds"][rule]) + " s" for rule in RULES]
        md.append(
            f"| {r['model']} | {r['input']} | {r['halo']} | {r['tile']} | "
            + " | ".join(cells)
            + " |"
        )
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
