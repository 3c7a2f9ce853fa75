"""Hallucination tests: does an upscaler keep small low-contrast findings and invent none?

Three experiments, shared by ``benchmarks/fidelity.py`` and the test suite:

* **Lesions** (:func:`lesion_test`): small disks of known low contrast (several radii; e.g.
  30 HU on CT, 5 % of the tissue range on MR) are added to a high-resolution corpus image at
  positions in flat tissue; the image with and without them is degraded (the modality's
  physics, :func:`medsr.degradations.degrade_image`) and upscaled. The *difference* of the two
  outputs isolates what the upscaler did with each lesion:

  - ``ratio`` = measured contrast / inserted contrast, where contrast = mean inside
    (0.75·r) − mean of a ring (1.5 r … 2.5 r). A faithful method keeps resolvable lesions
    (radius ≥ ``scale`` HR pixels, i.e. ≥ 1 LR pixel) within ``1 ± CONTRAST_TOL`` and never
    exaggerates any lesion (ratio ≤ 1 + ``CONTRAST_TOL``).
  - ``echo`` = max |difference| away from every lesion (beyond 2.5 r + 2·scale) / contrast:
    a lesion must not make anything appear elsewhere (≤ ``ECHO_TOL``).
  - ``sham`` = at as many lesion-free sites in flat tissue, the disk-vs-ring contrast the output
    shows beyond both the truth's and bicubic interpolation's of the same measurement,
    ``(|c_SR| − max(|c_HR|, |c_bicubic|))⁺`` / inserted contrast: no lesion may appear where
    none was (≤ ``SHAM_TOL``). Losing the tissue's own texture, as every interpolator does, or
    showing what the measurement itself shows (e.g. k-space truncation ringing) is not counted.
* **Noise** (:func:`noise_test`): white Gaussian noise carries no structure; its upscale must not
  gain any. Measured as the fraction of the output's (non-DC) spectral power beyond the input's
  Nyquist band, compared with bicubic interpolation of the same input; fails above
  ``NOISE_FACTOR`` × bicubic's (+ 0.005).
* **OOD** (:func:`ood_test`): an image of a modality the model was not trained on must raise the
  out-of-distribution flag (:func:`medsr.safeguards.ood.check_distribution`).

Upscalers are given as a model spec for :func:`medsr.upscale` (name or weights file) or any
callable ``MedImage → MedImage``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError
from medsr.image import MedImage

__all__ = [
    "CONTRAST_TOL",
    "ECHO_TOL",
    "NOISE_FACTOR",
    "SHAM_TOL",
    "Lesion",
    "as_upscaler",
    "default_contrast",
    "disk",
    "insert_lesions",
    "lesion_contrast",
    "lesion_test",
    "noise_test",
    "ood_test",
    "place_lesions",
]

CONTRAST_TOL = 0.35
ECHO_TOL = 0.25
SHAM_TOL = 0.35
NOISE_FACTOR = 1.25

Upscaler = Callable[[MedImage], MedImage]


@dataclass(frozen=True)
class Lesion:
    """A disk centred at ``(y, x)`` (HR pixels) of ``radius`` pixels and ``contrast`` units."""

    y: float
    x: float
    radius: float
    contrast: float


def as_upscaler(model: Any, scale: int, **kwargs: Any) -> Upscaler:
    """A ``MedImage → MedImage`` function from a model spec or callable."""
    if callable(model) and not isinstance(model, str):
        return model
    from medsr.inference.predictor import upscale

    def run(image: MedImage) -> MedImage:
        return upscale(image, scale, model, **kwargs)

    return run


def disk(
    shape: tuple[int, int], y: float, x: float, radius: float, supersample: int = 4
) -> np.ndarray:
    """Area fraction of each pixel covered by the disk (anti-aliased, 0 … 1)."""
    h, w = shape
    s = supersample
    off = (np.arange(s) + 0.5) / s - 0.5
    yy = (np.arange(h)[:, None] + off[None, :]).reshape(-1)
    xx = (np.arange(w)[:, None] + off[None, :]).reshape(-1)
    inside = ((yy[:, None] - y) ** 2 + (xx[None, :] - x) ** 2) <= radius**2
    return inside.reshape(h, s, w, s).mean(axis=(1, 3)).astype(np.float32)


def _annulus_masks(
    shape: tuple[int, int], y: float, x: float, r: float
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy - y, xx - x)
    inner = d <= max(0.75 * r, 0.75)
    ring = (d >= 1.5 * r + 0.5) & (d <= 2.5 * r + 1.0)
    return inner, ring


def lesion_contrast(plane: np.ndarray, y: float, x: float, radius: float) -> float:
    """Mean inside ``0.75·radius`` minus mean over the ring ``1.5 r … 2.5 r`` (+ ½–1 px)."""
    inner, ring = _annulus_masks(plane.shape, y, x, radius)
    return float(plane[inner].mean() - plane[ring].mean())


def default_contrast(image: MedImage) -> float:
    """30 HU for CT; otherwise 5 % of the tissue intensity range (p99 − p1)."""
    if (image.modality or "").upper() == "CT" and image.units == "HU":
        return 30.0
    a = image.array[np.isfinite(image.array)]
    return 0.05 * float(np.percentile(a, 99) - np.percentile(a, 1)) if a.size else 1.0


def place_lesions(
    plane: np.ndarray,
    radii: Sequence[float],
    *,
    scale: int,
    count: int = 1,
    seed: int = 0,
    exclude: Sequence[tuple[float, float, float]] = (),
) -> list[tuple[float, float, float]]:
    """Centres ``(y, x, r)`` in flat tissue: low local variation, inside the foreground,
    away from the border and from each other (and from ``exclude``)."""
    from scipy import ndimage

    p = np.asarray(plane, dtype=np.float64)
    h, w = p.shape
    lo, hi = np.percentile(p, [1, 99])
    span = max(hi - lo, 1e-9)
    rng = np.random.default_rng(seed)
    placed: list[tuple[float, float, float]] = list(exclude)
    out: list[tuple[float, float, float]] = []
    for r in sorted(radii, reverse=True):
        size = int(2 * (2.5 * r + 1) + 1)
        mean = ndimage.uniform_filter(p, size)
        var = ndimage.uniform_filter(p * p, size) - mean**2
        local = np.sqrt(np.clip(var, 0, None)) / span
        fg = mean > lo + 0.15 * span  # inside the body / object, not background air
        margin = math.ceil(2.5 * r + 2 * scale + 2)
        ok = np.zeros_like(fg)
        ok[margin : h - margin, margin : w - margin] = True
        ok &= fg
        if not ok.any():
            ok[margin : h - margin, margin : w - margin] = True
        for _ in range(count):
            cand = np.argwhere(ok)
            if not len(cand):
                raise InvalidParameterError("the image is too small for the requested lesions")
            score = local[ok]
            # the flattest quarter of the admissible positions, centred on an LR pixel centre
            for pool in (cand[score <= np.percentile(score, 25)], cand):
                centres = (pool // scale) * scale + 0.5 * (scale - 1)
                free = np.ones(len(centres), bool)
                for a, b, rr in placed:
                    gap = 2.5 * (r + rr) + 2 * scale + 2
                    free &= np.hypot(centres[:, 0] - a, centres[:, 1] - b) >= gap
                if free.any():
                    break
            else:
                raise InvalidParameterError("no room left for another lesion in this image")
            yc, xc = (float(v) for v in centres[free][rng.integers(int(free.sum()))])
            placed.append((yc, xc, float(r)))
            out.append((yc, xc, float(r)))
    return out


def insert_lesions(image: MedImage, lesions: Sequence[Lesion], plane: int = 0) -> MedImage:
    """A copy of ``image`` with each lesion added (anti-aliased disk × contrast) to ``plane``."""
    arr = image.array.copy()
    target = arr[..., plane, :, :]
    for les in lesions:
        target += les.contrast * disk(target.shape, les.y, les.x, les.radius)
    return image.replace(array=arr).with_step(f"{len(lesions)} synthetic lesions added")


def _degrade(image: MedImage, degradation: str, scale: int) -> MedImage:
    from medsr.degradations import default_kind, degrade_image

    kind = default_kind(image.modality) if degradation in ("auto", "default", None) else degradation
    return degrade_image(image, kind, scale)


def lesion_test(
    hr: MedImage,
    upscaler: Any,
    scale: int,
    *,
    radii: Sequence[float] = (2, 3, 4, 6),
    contrast: float | None = None,
    degradation: str = "auto",
    plane: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Insert lesions into ``hr``, degrade, upscale; measure contrast kept, echoes and shams.

    Returns ``{"lesions": [{radius, contrast, measured, ratio, resolvable, ok}], "echo",
    "sham": [...], "sham_max", "contrast_ok", "echo_ok", "sham_ok", "passed", ...}``.
    """
    up = as_upscaler(upscaler, scale)
    if hr.channels:
        raise InvalidParameterError("the lesion test takes grayscale images")
    hr = hr.replace(array=hr.array[plane : plane + 1])
    c = float(contrast) if contrast is not None else default_contrast(hr)
    f = int(scale)
    h, w = hr.spatial_shape[1:]
    hr = hr.replace(array=hr.array[:, : h // f * f, : w // f * f])
    base = hr.array[0]
    wanted = sorted(float(r) for r in radii)
    skipped: list[float] = []
    while True:  # small images: drop the largest radii until every lesion and sham fits
        try:
            sites = place_lesions(base, wanted, scale=f, seed=seed)
            shams = place_lesions(base, wanted, scale=f, seed=seed + 1, exclude=sites)
            break
        except InvalidParameterError:
            if len(wanted) <= 1:
                raise
            skipped.append(wanted.pop())
    lesions = [Lesion(y, x, r, c) for y, x, r in sites]
    hr1 = insert_lesions(hr, lesions)
    lr0, lr1 = _degrade(hr, degradation, f), _degrade(hr1, degradation, f)
    sr0, sr1 = up(lr0).array[0].astype(np.float64), up(lr1).array[0].astype(np.float64)
    if sr0.shape != base.shape:
        raise InvalidParameterError(f"the upscaler returned {sr0.shape}, expected {base.shape}")
    diff = sr1 - sr0
    truth = hr1.array[0].astype(np.float64) - base
    rows = []
    for les in lesions:
        measured = lesion_contrast(diff, les.y, les.x, les.radius)
        true = lesion_contrast(truth, les.y, les.x, les.radius)
        ratio = measured / true if true else float("nan")
        resolvable = les.radius >= f
        ok = ratio <= 1 + CONTRAST_TOL and (not resolvable or ratio >= 1 - CONTRAST_TOL)
        rows.append(
            {
                "radius": les.radius,
                "contrast": round(true, 4),
                "measured": round(measured, 4),
                "ratio": round(ratio, 4),
                "resolvable": resolvable,
                "ok": bool(ok),
            }
        )
    yy, xx = np.mgrid[0 : base.shape[0], 0 : base.shape[1]]
    away = np.ones(base.shape, bool)
    for les in lesions:
        away &= np.hypot(yy - les.y, xx - les.x) > 2.5 * les.radius + 2 * f
    echo = float(np.abs(diff[away]).max() / abs(c)) if away.any() else 0.0
    hr0 = base.astype(np.float64)
    from medsr.inference.predictor import upscale

    bic0 = upscale(lr0, f, "bicubic").array[0].astype(np.float64)
    sham_rows = []
    for y, x, r in shams:
        # a lesion "appears" when the output shows more disk-vs-ring contrast than both the
        # truth and the plain interpolation of the measurement (losing the tissue's texture, as
        # any interpolator does, or showing what the measurement shows, is not an invention)
        c_sr, c_hr = lesion_contrast(sr0, y, x, r), lesion_contrast(hr0, y, x, r)
        c_bic = lesion_contrast(bic0, y, x, r)
        d = max(0.0, abs(c_sr) - max(abs(c_hr), abs(c_bic))) / abs(c)
        sham_rows.append({"radius": r, "deviation": round(d, 4), "contrast_sr": round(c_sr, 4)})
    sham_max = max((s["deviation"] for s in sham_rows), default=0.0)
    result = {
        "contrast_inserted": c,
        "units": hr.units,
        "degradation": degradation,
        "lesions": rows,
        "radii_skipped": skipped,
        "echo": round(echo, 4),
        "sham": sham_rows,
        "sham_max": round(sham_max, 4),
        "contrast_ok": all(r["ok"] for r in rows),
        "echo_ok": echo <= ECHO_TOL,
        "sham_ok": sham_max <= SHAM_TOL,
        "min_ratio_resolvable": min((r["ratio"] for r in rows if r["resolvable"]), default=None),
        "max_ratio": max(r["ratio"] for r in rows),
    }
    result["passed"] = bool(result["contrast_ok"] and result["echo_ok"] and result["sham_ok"])
    return result


def _hf_fraction(plane: np.ndarray, lr_shape: tuple[int, int]) -> float:
    """Share of non-DC spectral power outside the LR Nyquist band (centred frequencies)."""
    p = np.asarray(plane, dtype=np.float64)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(p - p.mean()))) ** 2
    h, w = p.shape
    ky = np.abs(np.arange(h) - h // 2)[:, None]
    kx = np.abs(np.arange(w) - w // 2)[None, :]
    outside = (ky > lr_shape[0] / 2) | (kx > lr_shape[1] / 2)
    total = spec.sum()
    return float(spec[outside].sum() / total) if total > 0 else 0.0


def noise_test(
    upscaler: Any,
    scale: int,
    *,
    size: int = 64,
    modality: str = "OT",
    mean: float = 100.0,
    std: float = 10.0,
    units: str = "a.u.",
    seed: int = 0,
) -> dict[str, Any]:
    """Upscale white Gaussian noise; compare its out-of-band power with bicubic interpolation.

    ``hf_fraction``: share of the output's non-DC power beyond the input's Nyquist band
    (0 for ideal band-limited interpolation; bicubic leaks some). Passes when ≤
    ``NOISE_FACTOR`` × bicubic's + 0.005. Also reports the lag-1 autocorrelation of the output
    minus bicubic (structure the model added).
    """
    from medsr.inference.predictor import upscale

    up = as_upscaler(upscaler, scale)
    rng = np.random.default_rng(seed)
    lr_arr = (mean + std * rng.standard_normal((1, size, size))).astype(np.float32)
    lr = MedImage(lr_arr, modality=modality, units=units)
    sr = up(lr).array[0]
    bic = upscale(lr, scale, "bicubic").array[0]
    hf = _hf_fraction(sr, (size, size))
    hf_bic = _hf_fraction(bic, (size, size))
    added = sr.astype(np.float64) - bic
    added -= added.mean()
    denom = float((added * added).mean())
    corr = float((added[:, 1:] * added[:, :-1]).mean() / denom) if denom > 0 else 0.0
    limit = NOISE_FACTOR * hf_bic + 0.005
    return {
        "hf_fraction": round(hf, 5),
        "hf_fraction_bicubic": round(hf_bic, 5),
        "limit": round(limit, 5),
        "added_rms_rel": round(math.sqrt(denom) / std, 4),
        "added_lag1_corr": round(corr, 4),
        "passed": bool(hf <= limit),
    }


def ood_test(card: dict[str, Any], images: Sequence[MedImage]) -> dict[str, Any]:
    """Check that every image of a modality outside the card's training modalities is flagged.

    Returns ``{"checked", "cases": [{modality, flag, reasons}], "passed"}`` (``checked`` False
    for classical interpolators or cards without training modalities).
    """
    from medsr.degradations.compose import modality_group
    from medsr.safeguards.ood import check_distribution, training_modalities

    trained = training_modalities(card)
    if card.get("kind") == "interpolator" or not card.get("architecture") or not trained:
        return {"checked": False, "cases": [], "passed": None}
    groups = {modality_group(t) for t in trained} | set(trained)
    cases = []
    for im in images:
        code = (im.modality or "OT").upper()
        if code in groups or modality_group(code) in groups:
            continue
        res = check_distribution(im, card, warn=False)
        cases.append({"modality": code, "flag": res["flag"], "reasons": res["reasons"]})
    return {
        "checked": bool(cases),
        "cases": cases,
        "passed": all(c["flag"] for c in cases) if cases else None,
    }
