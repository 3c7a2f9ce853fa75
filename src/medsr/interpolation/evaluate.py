"""Comparison report for slice interpolation: drop slices of held-out volumes, re-insert, compare.

For each volume the first ``m·f + 1`` slices along the slice axis are the reference; every
``f``-th is kept, each model inserts the others, and MSE, MAE, PSNR and SSIM are computed on the
inserted slices only, in the volume's units, with ``data_range = max − min`` of the reference.
SSIM is the mean 2-D SSIM of the inserted slices (they are not contiguous, so no 3-D window).
"""

from __future__ import annotations

import csv
import html
import json
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsr.interpolation.core import (
    axis_index,
    check_factor,
    interpolate_slices,
    resolve_model,
    subsampled,
)

METRICS = ("mse", "mae", "psnr", "ssim", "ms_per_slice")


def _label(spec: Any) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return Path(str(spec)).name.removesuffix(".safetensors")
    return str(getattr(spec, "registry_name", type(spec).__name__))


def _figure(path: Path, ref: np.ndarray, spacing: tuple[float, float, float], outs: dict[str, np.ndarray], z_index: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(ref, [0.5, 99.5])
    err_max = max(float(np.percentile(np.abs(o - ref), 99.5)) for o in outs.values()) or 1.0
    sz, sy, _ = spacing
    rows = [("reference", ref, None), *((k, v, np.abs(v - ref)) for k, v in outs.items())]
    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.4 * len(rows)), squeeze=False)
    x_mid = ref.shape[2] // 2
    for i, (name, vol, err) in enumerate(rows):
        panels = [
            (vol[z_index], "gray", lo, hi, 1.0, f"{name}: axial z={z_index}"),
            (vol[:, :, x_mid], "gray", lo, hi, sz / sy, "sagittal"),
        ]
        if err is not None:
            panels += [(err[z_index], "magma", 0, err_max, 1.0, "|error| axial"), (err[:, :, x_mid], "magma", 0, err_max, sz / sy, "|error| sagittal")]
        for j in range(4):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(panels):
                img, cmap, vmin, vmax, aspect, title = panels[j]
                ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest",
                          origin="lower" if j % 2 else "upper")  # reformats: first slice at the bottom
                ax.set_title(title, fontsize=8)
            else:
                ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def evaluate_interpolation(
    volumes: Sequence[Any],
    models: Mapping[str, Any] | Sequence[Any],
    factor: int = 2,
    out_dir: str | os.PathLike[str] = "interp-report",
    *,
    axis: str | int = "z",
    samples: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Compare interpolators on held-out ``volumes`` (MedImages, paths or ``corpus:NAME``).

    ``models``: ``{label: spec}`` or a list of specs (``linear``, ``cubic``, registered names,
    ``.safetensors`` files, networks). Writes ``metrics.csv``, ``report.md``, ``report.html``,
    ``summary.json`` and ``figures/*.png`` (axial + sagittal of each reconstruction and its
    error) to ``out_dir`` and returns the summary (mean per model).
    """
    from medsr.interpolation.train import load_volumes
    from medsr.metrics import data_range_for, mae3d, mse3d, psnr3d, ssim2d

    factor = check_factor(factor)
    a = axis_index(axis)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = dict(models) if isinstance(models, Mapping) else {_label(m): m for m in models}
    resolved = {k: resolve_model(v, device)[0] for k, v in specs.items()}
    rows: list[dict[str, Any]] = []
    figures: list[tuple[str, str]] = []
    for name, img in load_volumes(volumes):
        try:
            ref, sparse = subsampled(img, a, factor)
        except Exception as exc:  # too few slices along the axis
            warnings.warn(f"skipping {name}: {exc}", stacklevel=2)
            continue
        dropped = np.array([i for i in range(ref.spatial_shape[a]) if i % factor])
        ref_d = np.moveaxis(np.take(ref.array, dropped, axis=a), a, 0)
        dr = data_range_for(ref_d, img.modality)
        recon: dict[str, np.ndarray] = {}
        for label, net in resolved.items():
            timing: dict[str, float] = {}
            res = interpolate_slices(sparse, net, factor, axis=a, samples=samples, seed=seed, device=device, timing=timing)
            recon[label] = res.array
            pred_d = np.moveaxis(np.take(res.array, dropped, axis=a), a, 0)
            try:
                ssim = float(np.nanmean(ssim2d(pred_d, ref_d, dr)))
            except Exception:  # slices smaller than the SSIM window
                ssim = float("nan")
            rows.append({
                "volume": name, "model": label, "slices_compared": len(dropped),
                "mse": mse3d(pred_d, ref_d), "mae": mae3d(pred_d, ref_d), "psnr": psnr3d(pred_d, ref_d, dr),
                "ssim": ssim, "ms_per_slice": 1000 * timing["seconds"] / max(1, timing["slices_predicted"]),
            })
        z_idx = int(dropped[len(dropped) // 2]) if a == 0 else ref.spatial_shape[0] // 2
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        figures.append((name, _figure(out / "figures" / f"{safe}.png", ref.array, ref.spacing, recon, z_idx)))
    summary: dict[str, Any] = {"factor": factor, "axis": "zyx"[a], "samples": samples, "seed": seed,
                               "volumes": sorted({r["volume"] for r in rows}), "hardware": f"{platform.machine()} CPU ({os.cpu_count()} cores)",
                               "models": {}}
    for label in specs:
        mine = [r for r in rows if r["model"] == label]
        summary["models"][label] = {m: float(np.nanmean([r[m] for r in mine])) if mine else float("nan") for m in METRICS}
    with open(out / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["volume", "model", "slices_compared", *METRICS])
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
    (out / "report.md").write_text(_markdown(summary, figures))
    (out / "report.html").write_text(_html(summary, figures))
    return summary


def _table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "MSE", "MAE", "PSNR (dB)", "SSIM", "ms / slice"]
    body = []
    for label, m in summary["models"].items():
        body.append([label, f"{m['mse']:.4g}", f"{m['mae']:.4g}", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}", f"{m['ms_per_slice']:.1f}"])
    return head, body


def _intro(summary: dict[str, Any]) -> str:
    f = summary["factor"]
    return (f"Every {f}{'nd' if f == 2 else 'th'} slice along {summary['axis']} of each held-out volume kept, the others "
            f"re-inserted by each model and compared with the truth on the inserted slices only (volume units, "
            f"data range = max − min of the reference; SSIM = mean 2-D SSIM). Volumes: {', '.join(summary['volumes'])}. "
            f"Hardware: {summary['hardware']}.")


def _markdown(summary: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    head, body = _table(summary)
    lines = [f"# Slice interpolation ×{summary['factor']}", "", _intro(summary), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines += ["", "Per-volume values: `metrics.csv`.", ""]
    for name, rel in figures:
        lines += [f"## {name}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines)


def _html(summary: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    head, body = _table(summary)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    figs = "".join(f"<h2>{html.escape(n)}</h2><img src='{html.escape(rel)}' alt='{html.escape(n)}'>" for n, rel in figures)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Slice interpolation</title></head><body>"
            f"<h1>Slice interpolation ×{summary['factor']}</h1><p>{html.escape(_intro(summary))}</p>"
            f"<table border='1'><tr>{th}</tr>{trs}</table>{figs}</body></html>")
