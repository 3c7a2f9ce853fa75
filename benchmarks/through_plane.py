"""Through-plane benchmark: thick-slice volumes reconstructed along z, on volumes never trained on.

Every reference volume is degraded along z with :func:`medsr.degradations.thick_slice` and
reconstructed on the reference grid by each through-plane method of
:func:`medsr.reports.through_plane.evaluate_through_plane` (the same evaluator as
``medsr evaluate --degradation thick-slice``):

* ``linear-z``, ``cubic-z`` — interpolation along z (the grid's resampler);
* ``prior`` — the shipped through-plane prior ``tp-x2``/``tp-x4`` alone;
* ``prior+adapt`` — the prior adapted to each volume for ``--adapt`` steps (seeded);
* ``zero-shot`` — the same adaptation from cubic interpolation (SMORE-like, no prior);
* ``interp-cnn`` — the shipped slice interpolator (midpoints).

Validation volumes (neither trained on nor used to choose a checkpoint of the priors, see
``configs/tp-x2.yaml``): mricron ``ch2`` (Colin27 T1, 1 mm), ``ch2better`` (the same volunteer,
0.5 mm; an in-plane centre crop) and the InVesalius ``Cranium`` head CT (1.5 mm slices).
Protocols: MR — Gaussian slice profile of FWHM = the new slice spacing (2-D multi-slice
acquisition) and "every other slice removed" (×2: thickness one thin slice, box); CT — box
profile of full width = the new spacing (detector binning). The slice profile is told to the
learned methods (``--estimate`` lets them estimate it from the volume instead).

Metrics: PSNR/SSIM per axial slice (mean) and over the 3-D volume, in each volume's own units
and data range, ``f`` slices at each end and an ``f``-pixel border excluded.

    make corpus
    python benchmarks/through_plane.py                 # ~15-25 min on 2 CPU cores
    python benchmarks/through_plane.py --adapt 300 --figures
Writes ``benchmarks/results/through_plane.{json,md}`` (and reformat figures under
``benchmarks/results/through_plane/``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["linear-z", "cubic-z", "prior", "prior+adapt", "zero-shot", "interp-cnn"]


def _timing() -> dict[str, float]:
    """Seconds for the issue's size: a 256×256×120 volume (2 mm slices, 1 mm pixels) made
    isotropic (×2 along z) by the prior alone, end to end in the library (no file I/O)."""
    from medsr.image import MedImage, affine_from_spacing
    from medsr.selfsup import through_plane_upscale

    rng = np.random.default_rng(0)
    arr = rng.normal(500.0, 100.0, (120, 256, 256)).astype(np.float32)
    spacing = (2.0, 1.0, 1.0)
    vol = MedImage(arr, spacing=spacing, affine=affine_from_spacing(spacing), modality="MR")
    through_plane_upscale(
        vol.replace(array=arr[:8]), slice_thickness=2.0, progress=False
    )  # warm-up
    t0 = time.perf_counter()
    out = through_plane_upscale(vol, slice_thickness=2.0, progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "output_slices": out.spatial_shape[0]}


def doc_figure(path: Path, adapt: int, crop: int, max_slices: int) -> None:
    """Coronal reformats (×4 along z) of the MR and CT validation volumes, enlarged: truth, the
    thick input, cubic-z, the prior, the prior adapted for ``adapt`` steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsr.degradations import degrade_image
    from medsr.metrics import data_range_for, psnr3d
    from medsr.reports.render import default_window
    from medsr.selfsup import interpolate_z, through_plane_upscale

    f = 4
    vols = [v for v in _volumes(crop) if not v[0].startswith("ch2better")]
    fig, axes = plt.subplots(len(vols), 5, figsize=(15, 3.6 * len(vols)), squeeze=False)
    for i, (name, ref) in enumerate(vols):
        z = min(ref.spatial_shape[0] // f, max_slices) * f
        z0 = (ref.spatial_shape[0] - z) // 2
        ref = ref.replace(array=np.ascontiguousarray(ref.array[z0 : z0 + z]))
        profile = "box" if ref.modality == "CT" else "gaussian"
        lr = degrade_image(ref, "thick-slice", f, generator=0, profile=profile, thickness=f)
        told = {
            "slice_thickness": f * ref.spacing[0],
            "profile": profile,
            "clip": False,
            "progress": False,
        }
        panels = {
            "truth": ref,
            f"thick ×{f} (input)": lr,
            "cubic-z": interpolate_z(lr, n_slices=z, mode="cubic"),
            "prior": through_plane_upscale(lr, target_spacing=ref.spacing[0], **told),
            f"prior + adapt {adapt}": through_plane_upscale(
                lr, target_spacing=ref.spacing[0], adapt_steps=adapt, **told
            ),
        }
        centre, width = default_window(ref)
        rng = data_range_for(ref)
        keep = slice(f, z - f)
        for j, (title, img) in enumerate(panels.items()):
            _, h, w = img.spatial_shape
            sz, _, sx = img.spacing
            plane = img.array[:, h // 2, w // 6 : w - w // 6]
            ax = axes[i, j]
            ax.imshow(plane, cmap="gray", vmin=centre - width / 2, vmax=centre + width / 2,
                      aspect=sz / sx, interpolation="nearest")  # fmt: skip
            label = title
            if j >= 2:
                label += f"\n{psnr3d(img.array[keep], ref.array[keep], data_range=rng):.2f} dB"
            ax.set_title(label, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=10)
    fig.suptitle(
        f"Coronal reformats, ×{f} along z (volumes never trained on; 3-D PSNR)", fontsize=12
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _volumes(crop: int) -> list[tuple[str, object]]:
    """(name, MedImage) of the validation volumes, centre-cropped in-plane to ``crop`` px."""
    from medsr.io import load_image
    from medsr.training.corpus import cache_path, load_inv3

    out = []
    for name, rel, modality in (
        ("ch2 (MR T1, 1 mm)", "mricron/ch2.nii.gz", "MR"),
        ("ch2better (MR T1, 0.5 mm)", "mricron/ch2better.nii.gz", "MR"),
        ("Cranium (head CT, 1.5 mm)", "invesalius/Cranium.inv3", "CT"),
    ):
        path = cache_path(rel)
        img = load_inv3(path) if rel.endswith(".inv3") else load_image(path)
        img = img.replace(modality=modality)
        _, h, w = img.spatial_shape
        ch, cw = min(h, crop), min(w, crop)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        arr = np.ascontiguousarray(img.array[:, y0 : y0 + ch, x0 : x0 + cw])
        out.append((name, img.replace(array=arr)))
    return out


def _protocols(modality: str, f: int) -> list[tuple[str, dict[str, object]]]:
    if modality == "CT":
        return [("box, width = spacing", {"profile": "box", "thickness": f})]
    rows: list[tuple[str, dict[str, object]]] = [
        ("Gaussian, FWHM = spacing", {"profile": "gaussian", "thickness": f})
    ]
    rows.append(
        (
            "every other slice kept" if f == 2 else "every 4th slice kept",
            {"profile": "box", "thickness": 1},
        )
    )
    return rows


def run(args: argparse.Namespace) -> dict[str, object]:
    from medsr.io import save_image
    from medsr.reports.through_plane import evaluate_through_plane

    rows = []
    fig_dir = RESULTS / "through_plane"
    fig_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, img in _volumes(args.crop):
            stem = name.split(" ")[0]
            for f in args.scales:
                # a centred slab of max_slices thick slices (a multiple of f thin ones)
                z = min(img.spatial_shape[0] // f, args.max_slices) * f
                z0 = (img.spatial_shape[0] - z) // 2
                path = Path(tmp) / f"{stem}_x{f}.nii.gz"
                save_image(
                    img.replace(array=np.ascontiguousarray(img.array[z0 : z0 + z])),
                    path,
                    overwrite=True,
                )
                for proto, params in _protocols(img.modality, f):
                    out_dir = Path(tmp) / f"{stem}_x{f}_{params['profile']}{params['thickness']}"
                    t0 = time.perf_counter()
                    zs = {"adapt_steps": args.adapt, "progress": False}
                    res = evaluate_through_plane(
                        [path], models=args.methods, scale=f, params=dict(params),
                        out_dir=out_dir, max_slices=args.max_slices, device="cpu",
                        progress=False, figures=args.figures, zero_shot=zs,
                    )  # fmt: skip
                    for r in res.images:
                        rows.append(
                            {
                                "volume": name,
                                "modality": img.modality,
                                "scale": f,
                                "protocol": proto,
                                "shape": list(r.shape),
                                "metrics": {
                                    m: {
                                        k: round(v, 4)
                                        for k, v in vals.items()
                                        if k in ("psnr", "ssim", "psnr_3d", "ssim_3d")
                                    }
                                    for m, vals in r.metrics.items()
                                },
                                "seconds": {m: round(s, 2) for m, s in r.seconds.items()},
                            }
                        )
                        for fig in r.figures:
                            shutil.copy(
                                out_dir / fig,
                                fig_dir
                                / f"{stem}_x{f}_{params['profile']}{params['thickness']}.png",
                            )
                    for what, why in res.skipped:
                        print(f"skipped {what}: {why}", file=sys.stderr)
                    print(f"{name} ×{f} {proto}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    timing = _timing() if args.timing else None
    return {
        "machine": machine(load=True),
        "timing_256x256x120": timing,
        "adapt_steps": args.adapt,
        "max_slices": args.max_slices,
        "crop": args.crop,
        "rows": rows,
    }


def _psnr_cell(r: dict, m: str) -> str:
    v = r["metrics"].get(m, {}).get("psnr_3d")
    cub = r["metrics"].get("cubic-z", {}).get("psnr_3d")
    if v is None:
        return "—"
    if cub is None or m == "cubic-z":
        return f"{v:.2f}"
    return f"{v:.2f} ({v - cub:+.2f})"


def _slice_cell(r: dict, m: str) -> str:
    v = r["metrics"].get(m, {})
    return f"{v['psnr']:.2f} / {v['ssim_3d']:.4f}" if "psnr" in v and "ssim_3d" in v else "—"


def _seconds_cell(r: dict, m: str) -> str:
    return f"{r['seconds'][m]:.1f}" if m in r["seconds"] else "—"


def _table(
    title: str, rows: list, methods: list[str], cell: Callable[[dict, str], str]
) -> list[str]:
    """One Markdown section: a row per (volume, scale, protocol), a column per method."""
    lines = ["", f"## {title}", "", "| volume | × | protocol | " + " | ".join(methods) + " |"]
    lines.append("|---|---|---|" + "---|" * len(methods))
    for r in rows:
        cells = " | ".join(cell(r, m) for m in methods)
        lines.append(f"| {r['volume']} | {r['scale']} | {r['protocol']} | {cells} |")
    return lines


def markdown(info: dict[str, object]) -> str:
    rows = info["rows"]
    assert isinstance(rows, list)
    methods = [m for m in METHODS if any(m in r["metrics"] for r in rows)]
    lines = [
        "# Through-plane benchmark",
        "",
        f"Machine: {info['machine']}. Adaptation: {info['adapt_steps']} steps (seeded). "
        f"At most {info['max_slices']} thick slices per volume, in-plane centre crop "
        f"{info['crop']} px. Volumes never trained on (see benchmarks/through_plane.py).",
    ]
    lines += _table("3-D PSNR (dB), gain over cubic-z in brackets", rows, methods, _psnr_cell)
    lines += _table(
        "Per-slice PSNR (mean over axial slices, dB) and 3-D SSIM", rows, methods, _slice_cell
    )
    lines += _table("Seconds per volume", rows, methods, _seconds_cell)
    t = info.get("timing_256x256x120")
    if t:
        lines += [
            "",
            f"Prior alone on a 256×256×120 volume (2 mm → 1 mm, {t['output_slices']} slices): "
            f"**{t['seconds']:.1f} s** on this machine.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument(
        "--adapt", type=int, default=200, help="adaptation steps (prior+adapt, zero-shot)"
    )
    ap.add_argument("--max-slices", type=int, default=24, help="thick slices per volume at most")
    ap.add_argument("--crop", type=int, default=192, help="in-plane centre crop (px)")
    ap.add_argument("--figures", action="store_true", help="sagittal/coronal reformat figures")
    ap.add_argument(
        "--timing", action="store_true", help="also time the prior on a 256x256x120 volume"
    )
    ap.add_argument(
        "--out", default=str(RESULTS / "through_plane"), help="output stem (.json, .md)"
    )
    ap.add_argument(
        "--merge", nargs="+", help="combine the JSON of runs made side by side (e.g. one per scale)"
    )
    ap.add_argument("--doc-figure", help="only write the README's reformat figure to this PNG")
    args = ap.parse_args()
    if args.doc_figure:
        doc_figure(Path(args.doc_figure), args.adapt, args.crop, args.max_slices)
        return
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        info = {**parts[0], "rows": [r for p in parts for r in p["rows"]]}
        info["timing_256x256x120"] = next(
            (p["timing_256x256x120"] for p in parts if p.get("timing_256x256x120")), None
        )
    else:
        info = run(args)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
