"""Quality benchmark: `medsr evaluate` on the development corpus (CT, MR, CR, US, NM).

Writes ``benchmarks/results/quality_x{scale}_{degradation}/`` (the full evaluation report:
metrics.csv, summary.json, report.md/html, figures) and a compact
``benchmarks/results/quality.json`` + ``quality.md`` table (mean PSNR/SSIM per model and
modality, paired gain over bicubic with 95 % CI) for the README.

    .venv/bin/python benchmarks/quality.py                      # classical models, ×2 and ×4
    .venv/bin/python benchmarks/quality.py --models bicubic,lanczos,kspace --scales 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine
from pydicom.data import get_testdata_file

from medsr.reports.evaluate import evaluate

#: corpus images used as high-resolution references (shared/data/CORPUS.md)
CORPUS = (
    "CT_small.dcm",
    "bad_sequence.dcm",
    "explicit_VR-UN.dcm",
    "MR_small.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "emri_small.dcm",
    "RG3_UNCR.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "OBXXXX1A.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "JPEG2000_UNC.dcm",
)
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="bicubic,lanczos,kspace,nearest")
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--degradations", default="bicubic,auto")
    ap.add_argument("--max-slices", type=int, default=4)
    args = ap.parse_args()
    files = [Path(p) for p in (get_testdata_file(n, download=False) for n in CORPUS) if p]
    models = [m for m in args.models.split(",") if m]
    rows, summaries = [], {}
    for degradation in args.degradations.split(","):
        for scale in (int(s) for s in args.scales.split(",")):
            out = RESULTS / f"quality_x{scale}_{degradation}"
            t0 = time.perf_counter()
            res = evaluate(files, models=models, scale=scale, degradation=degradation, out_dir=out,
                           max_slices=args.max_slices, progress=False)
            summary = json.loads((out / "summary.json").read_text())
            summary["seconds"] = time.perf_counter() - t0
            summaries[f"x{scale}_{degradation}"] = summary
            for model, e in summary["models"].items():
                g = e["gain_psnr_vs_bicubic"]
                rows.append([f"×{scale}", degradation, model, f"{e['psnr']['mean']:.2f}", f"{e['ssim']['mean']:.4f}",
                             f"{g['mean']:+.2f} [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}]" if model != "bicubic" else "—",
                             " ".join(f"{mod} {v[model]['gain_psnr_vs_bicubic']:+.2f}" for mod, v in summary["per_modality"].items())
                             if model != "bicubic" else "", str(len(res.images))])
    info = {"machine": machine(), "files": [f.name for f in files], "results": summaries}
    (RESULTS / "quality.json").write_text(json.dumps(info, indent=2) + "\n")
    head = ["scale", "degradation", "model", "PSNR (dB)", "SSIM", "ΔPSNR vs bicubic [95 % CI]", "ΔPSNR per modality", "n"]
    md = [f"Quality on the development corpus ({len(files)} images; metrics in each image's units). Machine: {info['machine']}.",
          "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    (RESULTS / "quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
