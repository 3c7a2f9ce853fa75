"""Slice-interpolation benchmark (issue 8): short CPU training of the three models + report.

Volume-wise split of the development corpus: train on S0_10slices, anatomical and example4d
(both frames), hold out aniso_vox and emri_small. Each network trains for ``--steps`` steps on
32² triplet patches along all three axes; then every other (×2) slice along z of the held-out
volumes is dropped and re-inserted by CNN, GAN, Fast-DDPM (10 steps), linear and cubic.

Writes benchmarks/results/interpolation.{json,md}, the full report under
benchmarks/results/interpolation.report/ and (``--ship``) the CNN weights shipped for
``medsr interpolate``: src/medsr/interpolation/weights/interp-cnn.safetensors.

    .venv/bin/python benchmarks/interpolation.py --steps 300 --ship
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["corpus:S0_10slices.nii.gz", "corpus:anatomical.nii", "corpus:example4d.nii.gz"]
TEST = ["corpus:aniso_vox.nii.gz", "corpus:emri_small.dcm"]
MODELS = {
    "interp-cnn": {"num_features": 32, "num_blocks": 5},
    "interp-gan": {"num_features": 32, "num_blocks": 8},
    "fast-ddpm": {"channels": [16, 32, 32], "norm_num_groups": 8},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP thrashing on a shared CPU)")
    p.add_argument("--ship", action="store_true", help="copy the trained CNN to the shipped weights")
    args = p.parse_args(argv)

    import torch

    from medsr.interpolation.evaluate import evaluate_interpolation
    from medsr.interpolation.train import train_interpolator

    torch.set_num_threads(max(1, args.threads))
    res_dir = ROOT / "benchmarks" / "results"
    work = res_dir / "interpolation.report"  # report.md/html, metrics.csv, figures
    work.mkdir(parents=True, exist_ok=True)
    wdir = Path(tempfile.mkdtemp(prefix="medsr-interp-"))  # trained weights (not kept in the repo)
    weights: dict[str, str] = {}
    train_s: dict[str, float] = {}
    for name, kw in MODELS.items():
        t0 = time.perf_counter()
        path = train_interpolator(name, TRAIN, args.steps, patch=args.patch, batch_size=args.batch, seed=args.seed,
                                  out=wdir / f"{name}.safetensors", model_kwargs=kw, log_every=max(1, args.steps // 4))
        train_s[name] = round(time.perf_counter() - t0, 1)
        weights[name] = str(path)
    specs = {"CNN (interp-cnn)": weights["interp-cnn"], "GAN (interp-gan)": weights["interp-gan"],
             "Fast-DDPM (10 steps)": weights["fast-ddpm"], "linear": "linear", "cubic": "cubic"}
    summary = evaluate_interpolation(TEST, specs, args.factor, work, samples=args.samples, seed=args.seed)
    result = {
        "benchmark": "slice interpolation", "factor": args.factor, "train_volumes": TRAIN, "test_volumes": TEST,
        "steps": args.steps, "patch": args.patch, "batch": args.batch, "seed": args.seed, "samples": args.samples,
        "model_kwargs": MODELS, "train_seconds": train_s, "metrics": summary["models"],
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads (shared CPU)",
        "torch": torch.__version__, "python": sys.version.split()[0],
    }
    (res_dir / "interpolation.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Slice interpolation ×{args.factor} (held-out: {', '.join(t.split(':')[1] for t in TEST)})", "",
        f"Trained {args.steps} steps each ({args.batch}×{args.patch}² triplets, all axes) on "
        f"{', '.join(t.split(':')[1] for t in TRAIN)}; CPU: {result['hardware']}. Metrics on the re-inserted "
        "slices only, volume units. Short CPU trainings: these numbers rank the pipeline, not the architectures.", "",
        "| model | MSE | MAE | PSNR (dB) | SSIM | ms / slice | train s |", "|---|---|---|---|---|---|---|",
    ]
    key = {"CNN (interp-cnn)": "interp-cnn", "GAN (interp-gan)": "interp-gan", "Fast-DDPM (10 steps)": "fast-ddpm"}
    for label, m in summary["models"].items():
        ts = train_s.get(key.get(label, ""), "")
        lines.append(f"| {label} | {m['mse']:.1f} | {m['mae']:.2f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ms_per_slice']:.2f} | {ts} |")
    lines += ["", "Figures and per-volume metrics: `benchmarks/results/interpolation.report/`.", ""]
    (res_dir / "interpolation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.ship:
        dst = ROOT / "src" / "medsr" / "interpolation" / "weights" / "interp-cnn.safetensors"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights["interp-cnn"], dst)
        print(f"shipped {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
