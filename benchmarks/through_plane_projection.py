"""Through-plane data consistency on the written grid: where the projection onto the measured
slices is made, measured on volumes never trained on.

``medsr upscale --through-plane`` runs the prior at ×2 or ×4 along z and resamples (cubic) to
the output grid; with a known slice profile it projects the output onto the measured slices.
Two orders are compared, every other step the same (the prior alone, no adaptation; the clip to
the input's range last):

* ``before resampling`` (medsr before session 26): an iterative back-projection
  (:class:`medsr.safeguards.operators.Measurement` ``thick-slice``, band-limited kernel) on the
  network's ``f·Z`` grid, then the cubic resampling to the output grid;
* ``on the written grid`` (now, :func:`medsr.selfsup.through_plane._project_thick_slice`): the
  resampling first, then the exact projection ``x + U (W U)⁻¹ (y − W x)`` on that grid.

Volumes and protocols as ``benchmarks/through_plane.py`` (mricron ``ch2``, ``ch2better``, the
InVesalius head CT; a centred slab of at most 24 thick slices, 192-px crop), thick by ×2, ×3 and
×4 — ×3 runs the ×4 network and resamples 4·Z → 3·Z, where the two orders differ most — and
reconstructed on the reference grid. Columns: 3-D PSNR against the thin truth (``f`` slices at
each end excluded) and the p99 of ``|thick-slice(output) − input|`` of what is written
(:func:`medsr.pipeline.through_plane_error`), in each volume's units.

    python benchmarks/through_plane_projection.py      # ~10 min on 2 CPU cores

Writes ``benchmarks/results/through_plane_projection.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

RESULTS = Path(__file__).resolve().parent / "results"


def _before_resampling(thick, profile: str, t_mm: float, n_out: int):
    """medsr's order before session 26: the prior on the f·Z grid, an iterative back-projection
    there, then the cubic resampling to ``n_out`` slices and the clip."""
    import torch

    from medsr.safeguards.operators import resolve_measurement
    from medsr.selfsup import through_plane_upscale
    from medsr.selfsup.through_plane import network_factor
    from medsr.slice_grid import resize_axis

    z = thick.spatial_shape[0]
    f = network_factor(n_out / z)
    raw = through_plane_upscale(  # f·Z slices, no projection, no clip
        thick, target_spacing=thick.spacing[0] / f, slice_thickness=t_mm, profile=profile,
        consistency="off", clip=False, progress=False,
    )  # fmt: skip
    meas = resolve_measurement(
        "thick-slice", f, profile=profile, thickness=t_mm / thick.spacing[0] * f, axis=-2
    )
    x = torch.from_numpy(raw.array)[None].permute(0, 3, 1, 2).contiguous()  # (1, X, fZ, Y)
    y = torch.from_numpy(thick.array)[None].permute(0, 3, 1, 2).contiguous()
    projected, _ = meas.project(x, y)
    vol = projected.permute(0, 2, 3, 1).contiguous()  # (1, fZ, Y, X)
    out = resize_axis(vol, 1, n_out, "cubic")[0].numpy()
    np.clip(out, float(thick.array.min()), float(thick.array.max()), out=out)
    return out


def run(max_slices: int, crop: int) -> dict:
    from through_plane import _volumes

    from medsr.degradations import degrade_image
    from medsr.metrics import data_range_for, psnr3d
    from medsr.pipeline import through_plane_error
    from medsr.selfsup import through_plane_upscale

    rows = []
    for name, img in _volumes(crop):
        for f in (2, 3, 4):
            profile = "box" if img.modality == "CT" else "gaussian"
            z = min(img.spatial_shape[0] // f, max_slices) * f
            z0 = (img.spatial_shape[0] - z) // 2
            ref = img.replace(array=np.ascontiguousarray(img.array[z0 : z0 + z]))
            thick = degrade_image(ref, "thick-slice", f, generator=0, profile=profile, thickness=f)
            t_mm = f * ref.spacing[0]
            prof = {"slice_thickness_mm": t_mm, "profile": profile}
            now = through_plane_upscale(
                thick, target_spacing=ref.spacing[0], slice_thickness=t_mm, profile=profile,
                consistency="on", progress=False,
            ).array  # fmt: skip
            before = _before_resampling(thick, profile, t_mm, z)
            dr = data_range_for(ref)
            row = {"volume": name, "factor": f, "profile": f"{profile}, width = spacing"}
            for label, arr in (("before resampling", before), ("on the written grid", now)):
                out = ref.replace(array=arr)
                err = np.abs(through_plane_error(thick, out, prof))
                row[label] = {
                    "psnr_3d": round(psnr3d(arr[f:-f], ref.array[f:-f], dr), 3),
                    "consistency_p99": round(float(np.percentile(err, 99)), 4),
                }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return {"machine": machine(load=True), "max_slices": max_slices, "crop": crop, "rows": rows}


def markdown(info: dict) -> str:
    lines = [
        "# Through-plane projection: before the resampling vs on the written grid",
        "",
        f"Machine: {info['machine']}. The prior alone (no adaptation), the slice profile told; "
        f"at most {info['max_slices']} thick slices, {info['crop']}-px crop. 3-D PSNR (dB) against "
        "the thin truth and p99 of |thick-slice(output) − input| of the written output, in each "
        "volume's units (see benchmarks/through_plane_projection.py).",
        "",
        "| volume | × | profile | PSNR before | PSNR now | change | p99 error before | p99 error now |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in info["rows"]:
        a, b = r["before resampling"], r["on the written grid"]
        lines.append(
            f"| {r['volume']} | {r['factor']} | {r['profile']} | {a['psnr_3d']:.2f} | "
            f"{b['psnr_3d']:.2f} | {b['psnr_3d'] - a['psnr_3d']:+.2f} | "
            f"{a['consistency_p99']:.3g} | {b['consistency_p99']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-slices", type=int, default=24, help="thick slices per volume at most")
    ap.add_argument("--crop", type=int, default=192, help="in-plane centre crop (px)")
    ap.add_argument("--out", default=str(RESULTS / "through_plane_projection"), help="output stem")
    args = ap.parse_args()
    info = run(args.max_slices, args.crop)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
