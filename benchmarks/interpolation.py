"""Slice-interpolation benchmark (issue 8): short CPU training of the three models + report.

Volume-wise split of the development corpus: train on S0_10slices, anatomical and example4d
(both frames), hold out aniso_vox and emri_small. Each network trains for ``--steps`` steps on
``--patch``² triplet patches along all three axes through the one Lightning trainer (the recipes
``configs/interp-*.yaml``, ``task: slice-interpolation``, shrunk to the sizes below) and is
exported with its card; then the held-out volumes are made thick-slice ×``--factor`` along z and
reconstructed by CNN, GAN, Fast-DDPM (10 steps), linear and cubic on the one through-plane grid
(``medsr evaluate --interpolation``: :func:`medsr.reports.interpolation.evaluate_interpolation`,
report by :mod:`medsr.reports`).

Writes ``<results>/interpolation.{json,md}`` and the full report under
``<results>/interpolation.report/``; ``--ship`` copies the CNN to the shipped weights
(``src/medsr/weights/interp-cnn.safetensors``; then run ``scripts/write_cards.py --only
interp-cnn`` and update the tensor digest in ``tests/interpolation/test_shipped_card.py``).

    .venv/bin/python benchmarks/interpolation.py --steps 1200
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
LABELS = {
    "interp-cnn": "CNN (interp-cnn)",
    "interp-gan": "GAN (interp-gan)",
    "fast-ddpm": "Fast-DDPM (10 steps)",
}


def recipe(name: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """``configs/<name>.yaml`` with the benchmark's sizes."""
    from medsr.training.config import load_config

    stem = "interp-fast-ddpm" if name == "fast-ddpm" else name
    d = load_config(ROOT / "configs" / f"{stem}.yaml").to_dict()
    d["model"]["kwargs"] = MODELS[name]
    d["data"].update(patch_size=args.patch, batch_size=args.batch, patches_per_epoch=100 * args.batch,
                     seed=args.seed)  # fmt: skip
    # manual optimisation (GAN): one batch = a discriminator and a generator step
    steps = args.steps * (2 if d.get("gan") else 1)
    d["trainer"].update(max_steps=steps, max_epochs=-1, seed=args.seed, progress_bar="none",
                        out_dir=str(out_dir))  # fmt: skip
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 avoids OpenMP thrashing on a shared CPU)",
    )
    p.add_argument(
        "--results", type=Path, default=ROOT / "benchmarks" / "results", help="where the results go"
    )
    p.add_argument(
        "--ship", action="store_true", help="copy the trained CNN to the shipped weights"
    )
    args = p.parse_args(argv)

    import torch

    from medsr.reports.interpolation import evaluate_interpolation
    from medsr.training import export, train
    from medsr.training.config import config_from_dict
    from medsr.training.data import resolve_corpus

    torch.set_num_threads(max(1, args.threads))
    res_dir = args.results
    work = res_dir / "interpolation.report"  # report.md/html, metrics.csv, figures
    work.mkdir(parents=True, exist_ok=True)
    wdir = Path(tempfile.mkdtemp(prefix="medsr-interp-"))  # runs and weights (not kept in the repo)
    weights: dict[str, str] = {}
    train_s: dict[str, float] = {}
    for name in MODELS:
        t0 = time.perf_counter()
        result = train(config_from_dict(recipe(name, args, wdir / name)))
        train_s[name] = round(time.perf_counter() - t0, 1)
        assert result.last_checkpoint is not None
        weights[name] = str(export(result.last_checkpoint, wdir / f"{name}.safetensors"))
    specs = {LABELS[n]: weights[n] for n in MODELS}
    specs.update(cubic="cubic")
    test = [resolve_corpus(t.removeprefix("corpus:")) for t in TEST]
    summary = evaluate_interpolation(
        test, specs, args.factor, work, samples=args.samples, seed=args.seed
    )
    result_json = {
        "benchmark": "slice interpolation", "factor": args.factor, "train_volumes": TRAIN, "test_volumes": TEST,
        "protocol": "held-out volumes made thick-slice along z (Gaussian, FWHM = factor thin slices), "
        "reconstructed on the one through-plane grid (cell-centred); factor end slices excluded",
        "steps": args.steps, "patch": args.patch, "batch": args.batch, "seed": args.seed, "samples": args.samples,
        "model_kwargs": MODELS, "train_seconds": train_s, "metrics": summary["models"],
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads (shared CPU)",
        "torch": torch.__version__, "python": sys.version.split()[0],
    }  # fmt: skip
    (res_dir / "interpolation.json").write_text(json.dumps(result_json, indent=2))
    lines = [
        f"# Slice interpolation ×{args.factor} (held-out: {', '.join(t.split(':')[1] for t in TEST)})", "",
        f"Trained {args.steps} steps each ({args.batch}×{args.patch}² triplets, all axes) on "
        f"{', '.join(t.split(':')[1] for t in TRAIN)}; CPU: {result_json['hardware']}. Held-out volumes made "
        f"thick-slice ×{args.factor} along z and reconstructed on their own grid; volume units, {args.factor} end "
        "slices excluded. Short CPU trainings: these numbers rank the pipeline, not the architectures.", "",
        "| model | PSNR (dB) | PSNR 3-D (dB) | SSIM | ΔPSNR vs linear | s / volume | train s |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    key = {v: k for k, v in LABELS.items()}
    for label, m in summary["models"].items():
        ts = train_s.get(key.get(label, ""), "")
        lines.append(
            f"| {label} | {m['psnr']['mean']:.2f} | {m['psnr_3d']['mean']:.2f} | {m['ssim']['mean']:.4f} | "
            f"{m['gain_psnr_vs_linear']['mean']:+.2f} | {m['seconds_per_image']:.2f} | {ts} |"
        )
    lines += [
        "",
        f"Figures and per-volume metrics: `{work.relative_to(ROOT) if work.is_relative_to(ROOT) else work}/`.",
        "",
    ]
    (res_dir / "interpolation.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.ship:
        dst = ROOT / "src" / "medsr" / "weights" / "interp-cnn.safetensors"
        shutil.copyfile(weights["interp-cnn"], dst)
        print(f"shipped {dst}: now run scripts/write_cards.py --only interp-cnn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
