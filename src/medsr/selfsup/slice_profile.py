"""Slice-profile estimation: how thick were the slices of a volume whose header does not say?

A thick-slice volume is the thin volume blurred along z by the slice profile and sampled every
``s_z`` mm, while each axial slice keeps its fine in-plane sampling. The anatomy's power
spectrum is roughly the same along every axis, so the spectrum along z should look like the
spectrum along an in-plane axis after *the same* acquisition: blur with the profile and sample
every ``s_z`` mm. :func:`estimate_slice_profile` simulates that acquisition on the axial planes
for a range of profile widths and keeps the one whose spectrum's shape (normalised at low
frequencies, compared in log power over 0.3–0.95 of the z Nyquist frequency) matches the z
spectrum best. It is the idea of ESPRESO — S. Han et al., "Slice profile estimation from 2D
MRI acquisition using generative adversarial networks", ISBI 2021 — without the GAN: in-plane
and through-plane spectra compared directly.

Accuracy measured on the validation volumes (Colin27 T1 and the InVesalius head CT made thick
with known profiles, ×2 and ×4): Gaussian widths of 0.5–1.5 × the spacing come back within
0.1–0.3 of the spacing (biased low on the T1 brain, whose in-plane spectrum holds more fine
detail than its z spectrum); box profiles of width ≈ the spacing on MR can come back far too
thin (0.3). The profile *shape* (Gaussian vs box) is not identifiable this way and is taken
from the modality (MR: Gaussian excitation, CT: box detector binning) unless given. That is why
``--consistency auto`` does not project onto an estimated profile.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medsr.image import MedImage
from medsr.slice_grid import slice_spacing

__all__ = ["default_profile", "estimate_slice_profile"]

#: widths tried, in units of the slice spacing
CANDIDATES = tuple(np.round(np.arange(0.3, 2.01, 0.1), 2))
#: frequency band compared, as fractions of the z Nyquist frequency
BAND = (0.3, 0.95)
#: band the spectra are normalised on (low frequencies, unaffected by the profile's shape)
NORM_BAND = (0.05, 0.2)


def default_profile(image: MedImage) -> str:
    """The slice-profile shape of the modality: ``box`` for CT (detector-row binning),
    ``gaussian`` otherwise (MR selective excitation)."""
    return "box" if (image.modality or "").upper() == "CT" else "gaussian"


def _spectrum(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean power spectrum along ``axis`` (mean removed per line, Hann window)."""
    x = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    x = x - x.mean(axis=1, keepdims=True)
    w = np.hanning(x.shape[1]).astype(np.float32)
    p = np.abs(np.fft.rfft(x * w, axis=1)) ** 2
    return p.mean(axis=0) + 1e-12


def _shape(power: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(normalised frequency in [0, 1] of Nyquist, log power normalised on the low band)."""
    freq = np.arange(power.size) / (n / 2.0)
    lo = (freq >= NORM_BAND[0]) & (freq <= NORM_BAND[1])
    ref = power[lo].mean() if lo.any() else power[1]
    return freq, np.log(power / ref)


def estimate_slice_profile(image: MedImage, profile: str | None = None) -> dict[str, Any]:
    """Estimate the slice-profile width of a thick-slice volume from its own spectra.

    Args:
        image: a volume (``Z ≥ 8`` slices) whose slice spacing is coarser than its pixels.
        profile: ``gaussian`` (width = FWHM) or ``box`` (full width); default by modality
            (:func:`default_profile`).

    Returns:
        ``{"thickness_mm", "profile", "source": "estimated", "relative": width / spacing,
        "residual": RMS log-spectrum mismatch}``; ``thickness_mm`` is ``None`` when the volume is
        too small or not anisotropic enough to tell (``source: "spacing"`` is then the fallback
        the caller should use).
    """
    from medsr.degradations import thick_slice

    shape = profile or default_profile(image)
    _, sy, sx = image.spacing
    sz = slice_spacing(image)  # between the slices' planes (a tilted stack's step is longer)
    pixel = min(sy, sx)
    f = round(sz / pixel)
    cf = image.channel_first().astype(np.float32).mean(axis=0)  # (Z, Y, X)
    z, h, w = cf.shape
    if f < 2 or z < 8 or min(h, w) < 4 * f:
        return {"thickness_mm": None, "profile": shape, "source": "spacing", "relative": None}
    finite = np.isfinite(cf)
    if not finite.all():
        cf = np.where(finite, cf, float(np.nanmean(cf)))
    # the z spectrum, averaged over every (y, x) column
    fz, pz = _shape(_spectrum(cf, 0), z)
    # in-plane lines, both axes, simulated through the acquisition for each candidate width
    planes = torch.from_numpy(np.ascontiguousarray(cf))[:, None]  # (Z, 1, Y, X)
    band = (fz >= BAND[0]) & (fz <= BAND[1])
    best: tuple[float, float] | None = None
    with torch.no_grad():
        for rel in CANDIDATES:
            err = 0.0
            for axis, px in ((-2, sy), (-1, sx)):
                thin = thick_slice(planes, f, profile=shape, thickness=rel * sz / px, axis=axis)
                lines = thin.numpy()[:, 0]
                n = lines.shape[axis]
                fi, pi = _shape(_spectrum(lines, lines.ndim + axis), n)
                err += float(np.mean((np.interp(fz[band], fi, pi) - pz[band]) ** 2))
            if best is None or err < best[1]:
                best = (float(rel), err)
    assert best is not None
    rel, err = best
    return {
        "thickness_mm": round(rel * sz, 4),
        "profile": shape,
        "source": "estimated",
        "relative": rel,
        "residual": round(float(np.sqrt(err / 2.0)), 4),
    }
