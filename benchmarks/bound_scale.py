"""Why the slice error bounds over-cover, and whether two calibration scales fix it.

``medsr upscale --through-plane --maps`` and ``medsr interpolate --maps`` calibrate the bound's
``k`` one scale down along the slice axis (the input made thick once more,
:func:`medsr.degradations.thick_slice.thicken`, and brought back by the same path). Against the
truth (``benchmarks/trust_maps.py --sets through-plane`` / ``--sets interpolate``) the bound
covers 95–97 % of the voxels, not 90 %. This diagnosis measures, per run:

* ``k₁`` — the calibrated ``k`` (one scale down, as shipped);
* ``k₀`` — the ``k`` the truth asks for: the 90 % quantile of ``|error| / √(spread² + noise²)``
  at the output's own scale (an oracle; the same spread and noise as the bound);
* ``k₀ (no noise)`` — the same without the noise term;
* ``k₂`` — ``k`` calibrated two scales down (the path run on the volume made thick twice),
  where the volume keeps 3 slices there;
* the coverage and RMS error / RMS bound of ``k₁`` and of the two-scale power-law extrapolation
  ``k₁²/k₂`` (``k`` a power of the slice spacing).

On volumes the trust-maps benchmark does not judge: pydeface's T1 average (a 96-px centre
crop) and Cranium with an in-plane crop disjoint from the benchmark's centred one; ×2 and ×4,
the through-plane benchmark's protocols, 16 and 32 thick slices (through-plane) or 16
(interpolate: linear, cubic, interp-cnn ×2).

    .venv/bin/python benchmarks/bound_scale.py     # ~10 min on 2 cores

Writes ``benchmarks/results/bound_scale.json`` and ``bound_scale.md``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

from medsr.degradations import degrade_image
from medsr.degradations.thick_slice import thicken
from medsr.image import MedImage
from medsr.safeguards.error_bound import calibration_factor, image_noise
from medsr.slice_grid import nearest_slices

RESULTS = Path(__file__).parent / "results"


def _volumes() -> list[tuple[str, MedImage]]:
    from medsr.io import load_image
    from medsr.training.corpus import cache_path, load_inv3

    t1 = load_image(cache_path("pydeface/mean_reg2mean.nii.gz")).replace(modality="MR")
    _, h, w = t1.spatial_shape
    y, x = (h - 96) // 2, (w - 96) // 2
    ct = load_inv3(cache_path("invesalius/Cranium.inv3")).replace(modality="CT")
    return [
        ("pydeface T1 average, centre 96 px", t1.replace(
            array=np.ascontiguousarray(t1.array[:, y : y + 96, x : x + 96]))),
        ("Cranium CT, off-centre crop", ct.replace(
            array=np.ascontiguousarray(ct.array[:, 40:136, 0:80]))),
    ]  # fmt: skip


def _slab(img: MedImage, f: int, n: int) -> MedImage:
    z = min(img.spatial_shape[0] // f, n) * f
    z0 = (img.spatial_shape[0] - z) // 2
    return img.replace(array=np.ascontiguousarray(img.array[z0 : z0 + z]))


def _protocols(modality: str, f: int) -> list[tuple[str, dict[str, Any]]]:
    if modality == "CT":
        return [("box, width = spacing", {"profile": "box", "thickness": f})]
    return [("Gaussian, FWHM = spacing", {"profile": "gaussian", "thickness": f}),
            ("every f-th slice kept", {"profile": "box", "thickness": 1})]  # fmt: skip


def _scores(err: np.ndarray, spread: np.ndarray, noise: np.ndarray, keep: np.ndarray,
            k1: float | None, k2: float | None) -> dict[str, Any]:  # fmt: skip
    s = np.hypot(spread, noise[:, None, None])[keep]
    e = err[keep]

    def cov(k: float | None) -> float | None:
        return None if k is None else round(float(np.mean(e <= k * s)), 4)

    def rms(k: float | None) -> float | None:
        return (
            None if k is None else round(float(np.sqrt(np.mean(e**2) / np.mean((k * s) ** 2))), 4)
        )

    k0 = calibration_factor(err, spread, noise, keep)
    k0n = calibration_factor(err, spread, 0 * noise, keep)
    ext = None if not (k1 and k2) else k1 * k1 / k2
    r = {"k1": k1, "k0": k0, "k0_no_noise": k0n, "k2": k2, "k_ext": ext,
         "cov_k1": cov(k1), "rms_k1": rms(k1), "cov_k0": cov(k0), "rms_k0": rms(k0),
         "cov_ext": cov(ext), "rms_ext": rms(ext)}  # fmt: skip
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def _bare(sr: MedImage, summary: dict[str, Any]) -> MedImage:
    """The output before its provenance record (whose consistency is a label)."""
    d = {**sr.meta["derivation"], "consistency": summary["consistency"]}
    return sr.replace(meta={**sr.meta, "derivation": d})


def through_plane(ref: MedImage, f: int, params: dict[str, Any]) -> dict[str, Any]:
    from medsr.pipeline import (
        calibrate_through_plane_bound,
        through_plane_spread,
        upscale_through_plane,
    )

    thick = degrade_image(ref, "thick-slice", f, generator=0, **params)
    told = {"slice_thickness": float(params["thickness"]) * ref.spacing[0],
            "profile": params["profile"], "progress": False}  # fmt: skip
    sr, s = upscale_through_plane(thick, target_spacing=ref.spacing[0], device="cpu", **told)
    sr = _bare(sr, s)
    n, z = ref.spatial_shape[0], thick.spatial_shape[0]
    err = np.abs(sr.array.astype(np.float64) - ref.array)
    keep = np.zeros(err.shape, bool)
    keep[f : n - f] = True
    k1 = calibrate_through_plane_bound(thick, sr, prior="auto", device="cpu", **told).get("factor")
    k2 = None
    if z // f >= 3:  # two scales down: the calibration of the volume made thick once more
        low, _ = thicken(thick.array, z // f, profile=params["profile"],
                         thickness=float(params["thickness"]) / f)  # fmt: skip
        lower = thick.replace(meta={}).resampled(low)
        told2 = {**told, "slice_thickness": told["slice_thickness"] * f}
        sr2, s2 = upscale_through_plane(lower, target_spacing=thick.spacing[0], device="cpu",
                                        **told2)  # fmt: skip
        k2 = calibrate_through_plane_bound(
            lower, _bare(sr2, s2), prior="auto", device="cpu", **told2
        ).get("factor")
    noise = image_noise(thick.channel_first())[nearest_slices(z, n)]
    return _scores(err, through_plane_spread(thick, sr), noise, keep, k1, k2)


def interpolate(ref: MedImage, f: int, params: dict[str, Any], model: str) -> dict[str, Any]:
    from medsr.interpolation.core import (
        _slice_noise,
        bound_spread,
        calibrate_interpolation_bound,
        interpolation_uncertainty,
        resolve_model,
    )

    thick = degrade_image(ref, "thick-slice", f, generator=0, **params)
    net, _ = resolve_model(model, "cpu")
    out, std, _ = interpolation_uncertainty(thick, net, f, error_bound=False)
    n, z = ref.spatial_shape[0], thick.spatial_shape[0]
    err = np.abs(out.array.astype(np.float64) - ref.array)
    keep = np.zeros(err.shape, bool)
    keep[f : n - f] = True
    k1 = calibrate_interpolation_bound(thick, net, f).get("factor")
    k2 = None
    if z // f >= 3:  # two scales down, as the calibration makes the volume thick once more
        top = np.ascontiguousarray(thick.array[: z // f * f])
        low, _ = thicken(top, z // f, profile="gaussian", thickness=1.0)
        k2 = calibrate_interpolation_bound(
            thick.replace(array=top, meta={}).resampled(low), net, f
        ).get("factor")
    noise = _slice_noise(thick.array, 0)[nearest_slices(z, n)]
    return _scores(err, bound_spread(thick, out, axis=0, std=std), noise, keep, k1, k2)


def markdown(info: dict[str, Any]) -> str:
    lines = [
        "# Why the slice error bounds over-cover (one scale down vs the output's scale)",
        "",
        f"Machine: {info['machine']}. Generated by `benchmarks/bound_scale.py` (its docstring "
        "says what each column is). Volumes the trust-maps benchmark does not judge. "
        "cov: |err| ≤ bound over the voxels but the `f` slices at each end; rms: RMS err / "
        "RMS bound; ext: the two-scale extrapolation k₁²/k₂ (none where the volume keeps "
        "fewer than 3 slices two scales down).",
        "",
        "| set | volume | run | k₁ | k₀ (truth) | k₀ no noise | k₂ | cov k₁ | cov k₀ | cov ext "
        "| rms k₁ | rms k₀ | rms ext |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def v(x: Any, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    for r in info["rows"]:
        lines.append(
            f"| {r['set']} | {r['volume']} | {r['run']} | {v(r['k1'], '.2f')} | "
            f"{v(r['k0'], '.2f')} | {v(r['k0_no_noise'], '.2f')} | {v(r['k2'], '.2f')} | "
            f"{v(r['cov_k1'], '.0%')} | {v(r['cov_k0'], '.0%')} | {v(r['cov_ext'], '.0%')} | "
            f"{v(r['rms_k1'], '.2f')} | {v(r['rms_k0'], '.2f')} | {v(r['rms_ext'], '.2f')} |"
        )
    lines += ["", "Means (min–max) per set and scale:", "",
              "| set | runs | k₁ / k₀ | cov k₁ | cov ext (runs with k₂) | rms k₁ | rms k₀ | rms ext |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in info["rows"]:
        groups.setdefault(f"{r['set']} ×{r['scale']}", []).append(r)

    def span(xs: list[float], fmt: str) -> str:
        if not xs:
            return "—"
        return f"{format(np.mean(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"

    for g, rs in groups.items():
        ext = [r for r in rs if r["cov_ext"] is not None]
        lines.append(
            f"| {g} | {len(rs)} | {span([r['k1'] / r['k0'] for r in rs], '.2f')} | "
            f"{span([r['cov_k1'] for r in rs], '.0%')} | "
            f"{span([r['cov_ext'] for r in ext], '.0%')} ({len(ext)}) | "
            f"{span([r['rms_k1'] for r in rs], '.2f')} | {span([r['rms_k0'] for r in rs], '.2f')} | "
            f"{span([r['rms_ext'] for r in ext], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    warnings.simplefilter("ignore")
    rows: list[dict[str, Any]] = []
    for name, img in _volumes():
        for f in (2, 4):
            for n in (16, 32):
                ref = _slab(img, f, n)
                for proto, params in _protocols(img.modality, f):
                    r = through_plane(ref, f, params)
                    rows.append({"set": "through-plane", "volume": name, "scale": f,
                                 "run": f"×{f}, {n} thick slices, {proto}", **r})  # fmt: skip
                    print(rows[-1], flush=True)
        ref = _slab(img, 2, 16)
        for proto, params in _protocols(img.modality, 2):
            for model in ("linear", "cubic", "interp-cnn"):
                r = interpolate(ref, 2, params, model)
                rows.append({"set": "interpolate", "volume": name, "scale": 2,
                             "run": f"×2, 16 thick slices, {proto}, {model}", **r})  # fmt: skip
                print(rows[-1], flush=True)
    info = {"machine": machine(load=True), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bound_scale.json").write_text(json.dumps(info, indent=1) + "\n")
    (RESULTS / "bound_scale.md").write_text(markdown(info))
    print(markdown(info))


if __name__ == "__main__":
    main()
