"""Low-band fidelity by construction: what the input measured, the output keeps.

A super-resolver should add only what the low-resolution input could not carry. Its *low band*
— the coarse brightness, contrast and shapes the input measured well — must stay the input's.
A network that shifts it (a darker MR, a brighter radiograph, a smooth bias under noise) changes
what the scanner measured, whatever its mean PSNR.

**Definition.** On the output grid (``N = s·n`` pixels along an axis for an input of ``n``), the
low band is the span of the first ``K = floor(cutoff · n)`` orthonormal DCT-II basis vectors
along each axis (a separable, square band): spatial frequencies below ``cutoff`` × the input's
Nyquist frequency (default ``cutoff`` = 0.5: half the input's Nyquist; at ×2 that is 0.125
cycles per output pixel). The DCT (mirror-symmetric extension) is used rather than the FFT so
that image borders do not wrap around.

**Projection.** :func:`project_low_band` replaces the low band of a prediction by that of a
*base* interpolation of the input (bicubic by default; zero-filled k-space for k-space data)::

    out = pred − P(pred − base),   P = B_y B_yᵀ (·) B_x B_xᵀ,   B = first K DCT-II vectors

``P`` is an orthogonal projection (``P² = P``), so ``P(out) = P(base)`` exactly: the output's
low band *is* the base interpolator's, and the output's low-band error equals the base's. It is
linear, so the affine-intensity equivariance of the networks (scale the input by ``a``, shift it
by ``b``: the output does the same) is untouched.

**Cost.** ``P`` is one analysis (``Bᵀ·``) and one synthesis (``B·``) per axis. Small axes use the
basis matrices (two matrix products per axis, what training's patches get). An axis of at least
:data:`FFT_MIN_LENGTH` output samples whose length is even and has no prime factor above
:data:`FFT_MAX_PRIME` (every ×2/×4 output of a 512² CT or MR plane, 480×640 ultrasound, 1900²
radiograph) uses the FFT instead (Makhoul's
single-FFT DCT-II, J. Makhoul, *A fast cosine transform in one and two dimensions*, IEEE TASSP
1980: reorder the samples even-then-odd-reversed, one real FFT, a twiddle per coefficient; the
synthesis is its transpose, one inverse real FFT of the ``K`` coefficients). Both are the same
linear map to within float rounding (≤ 1e-6 of the input's magnitude in fp32); on a 1024² ×2
output plane (2 CPU cores) the projection takes 3.0–3.5 ms against 7.1 ms with the matrices
(``_fft_axis`` records the measurement behind the rule).

:class:`LowBandGuard` wraps any network with it; training (``model.low_band`` in a config) and
inference (:class:`medsr.inference.planes.PlaneUpscaler`) use the same wrapper, and the model
card records the setting.

**The whole measured band, for k-space data.** :class:`KSpaceConsistencyGuard` goes further for
MR k-space truncation: the output agrees with the whole central k-space block the input measured
(:func:`keep_measured_kspace`, the data-consistency step the pipeline's ``--degradation kspace``
projection makes). ``model.data_consistency: kspace`` trains through it, and the card tells
inference to run the model through it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DATA_CONSISTENCY_KINDS",
    "DEFAULT_CUTOFF",
    "KSpaceConsistencyGuard",
    "LowBandGuard",
    "dct_basis",
    "keep_low_band",
    "keep_measured_kspace",
    "low_band",
    "low_band_size",
    "project_low_band",
]

#: low band = spatial frequencies below this fraction of the input's Nyquist frequency
DEFAULT_CUTOFF = 0.5


def low_band_size(n_out: int, scale: int, cutoff: float = DEFAULT_CUTOFF) -> int:
    """Number of DCT vectors kept along an output axis of ``n_out`` pixels (input ``n_out/scale``)."""
    n_in = n_out / float(scale)
    return max(1, min(n_out, math.floor(cutoff * n_in + 1e-9)))


@lru_cache(maxsize=64)
def _basis_np(n: int, k: int) -> np.ndarray:
    """``(n, k)`` orthonormal DCT-II basis vectors of lowest frequency (float64)."""
    i = np.arange(n, dtype=np.float64)[:, None]
    f = np.arange(k, dtype=np.float64)[None, :]
    b = np.cos(np.pi * (i + 0.5) * f / n) * math.sqrt(2.0 / n)
    b[:, 0] = 1.0 / math.sqrt(n)
    return b


def dct_basis(
    n: int, k: int, *, device: Any = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(n, k)`` torch tensor of the first ``k`` orthonormal DCT-II vectors of length ``n``
    (cached per size, device and dtype: do not modify it in place)."""
    return _basis_torch(int(n), int(k), torch.device(device), dtype)


@lru_cache(maxsize=64)
def _basis_torch(n: int, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor: training may use it after inference did
        return torch.as_tensor(_basis_np(n, k), dtype=dtype, device=device)


#: an axis goes through the FFT from this many output samples (the matrices are faster below)
FFT_MIN_LENGTH = 384
#: ... when its length has no prime factor above this (larger ones use slower FFT algorithms)
FFT_MAX_PRIME = 31


@lru_cache(maxsize=256)
def _fft_axis(n: int, k: int) -> bool:
    """Whether the DCT of an axis of ``n`` samples keeping ``k`` goes through the FFT.

    Measured per axis on 1,024 rows (2 AMD EPYC cores, fp32, analysis / synthesis with
    ``k = n/4``): matrices against FFT 0.19 / 0.23 ms at n = 256, 0.40 / 0.36 at 384, 0.67 / 0.42
    at 512, 2.6 / 0.81 at 1,024, 11 / 1.8 at 2,048; 40 / 6.8 at 3,800 (prime factor 19); about
    equal at 1,598 (47) and 802 (401). Requires an even ``n`` and ``k ≤ n/2`` (the synthesis
    below relies on both); every ×2/×4 output axis is even and keeps ``n/4`` or ``n/8``.
    """
    if n < FFT_MIN_LENGTH or n % 2 or 2 * k > n:
        return False
    m, largest, d = n, 1, 2
    while d * d <= m:
        while m % d == 0:
            largest, m = d, m // d
        d += 1
    return max(largest, m) <= FFT_MAX_PRIME


@lru_cache(maxsize=64)
def _twiddles(
    n: int, k: int, synthesis: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The ``k`` complex factors of :func:`_analysis` / :func:`_synthesis` (orthonormal scaling
    included), for a real ``dtype``."""
    f = torch.arange(k, dtype=torch.float64)
    norm = torch.full((k,), math.sqrt(2.0 / n), dtype=torch.float64)
    norm[0] = 1.0 / math.sqrt(n)
    angle = math.pi * f / (2 * n)
    if (
        synthesis
    ):  # the inverse real FFT divides by n and sees each coefficient twice (but the first)
        norm = norm * (n / 2.0)
        norm[0] *= 2.0
    else:
        angle = -angle
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    with torch.inference_mode(False):  # usable by training after inference, as the bases
        return torch.polar(norm, angle).to(device=device, dtype=complex_dtype)


def _analysis(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x @ B``: the first ``k`` orthonormal DCT-II coefficients along the last axis."""
    n = x.shape[-1]
    if not _fft_axis(n, k):
        return x @ dct_basis(n, k, device=x.device, dtype=x.dtype)
    v = torch.cat((x[..., 0::2], x[..., 1::2].flip(-1)), -1)  # even samples, then odd reversed
    spectrum = torch.fft.rfft(v, dim=-1)[..., :k]
    return (spectrum * _twiddles(n, k, False, x.device, x.dtype)).real


def _synthesis(a: torch.Tensor, n: int) -> torch.Tensor:
    """``a @ Bᵀ``: ``n`` samples along the last axis from its first ``k`` DCT-II coefficients."""
    k = a.shape[-1]
    if not _fft_axis(n, k):
        return a @ dct_basis(n, k, device=a.device, dtype=a.dtype).T
    v = _synthesis_reordered(a, n)
    half = n // 2  # samples 0, 2, 4… are v's first half, samples 1, 3, 5… its second, reversed
    return torch.stack((v[..., :half], v[..., half:].flip(-1)), -1).flatten(-2)


def _synthesis_reordered(a: torch.Tensor, n: int) -> torch.Tensor:
    """:func:`_synthesis` through the FFT, its samples left in the FFT's order: the even ones,
    then the odd ones reversed."""
    k = a.shape[-1]
    # irfft pads the k coefficients with zeros to n/2 + 1: no mirrored term reaches them (k ≤ n/2);
    # contiguous first: a transposed ``a`` would make the product and the FFT strided (slower)
    return torch.fft.irfft(a.contiguous() * _twiddles(n, k, True, a.device, a.dtype), n=n, dim=-1)


def low_band(x: torch.Tensor, scale: int, cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """``P(x)``: the low band of ``(..., H, W)`` on an output grid of a ×``scale`` upscale."""
    h, w = x.shape[-2:]
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    ky, kx = low_band_size(h, scale, cutoff), low_band_size(w, scale, cutoff)
    xf = x.to(dtype)
    if not (_fft_axis(h, ky) or _fft_axis(w, kx)):  # small planes (training's patches): matrices
        by = dct_basis(h, ky, device=x.device, dtype=dtype)
        bx = dct_basis(w, kx, device=x.device, dtype=dtype)
        coeff = by.T @ xf @ bx  # (..., Ky, Kx)
        return by @ coeff @ bx.T
    coeff = _analysis(_analysis(xf, kx).transpose(-1, -2), ky)  # (..., Kx, Ky)
    return _synthesis(_synthesis(coeff, h).transpose(-1, -2), w)


def _subtract_low_band_(
    target: torch.Tensor, x: torch.Tensor, scale: int, cutoff: float
) -> torch.Tensor:
    """``target −= P(x)`` in place (both ``(..., H, W)``, fp32 or fp64): the same numbers as
    ``target − low_band(x)``, without the interleaved copy of the last synthesis — its even and
    odd samples are subtracted where they belong."""
    h, w = x.shape[-2:]
    ky, kx = low_band_size(h, scale, cutoff), low_band_size(w, scale, cutoff)
    if not _fft_axis(w, kx):
        return target.sub_(low_band(x, scale, cutoff))
    coeff = _analysis(_analysis(x, kx).transpose(-1, -2), ky)  # (..., Kx, Ky)
    v = _synthesis_reordered(_synthesis(coeff, h).transpose(-1, -2), w)
    half = w // 2
    target[..., 0::2].sub_(v[..., :half])
    target[..., 1::2].sub_(v[..., half:].flip(-1))
    return target


def project_low_band(
    pred: torch.Tensor,
    base: torch.Tensor,
    scale: int,
    cutoff: float = DEFAULT_CUTOFF,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``pred − P(pred − base)``: ``pred`` with its low band replaced by ``base``'s (see the module).

    ``out``: a contiguous fp32 tensor of ``pred``'s shape to write into (``pred`` itself
    projects it in place: one output-sized pass and temporary fewer on the FFT path); the same
    numbers as without it.
    """
    if pred.shape != base.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and base {tuple(base.shape)} differ in shape"
        )
    work = torch.promote_types(torch.promote_types(pred.dtype, base.dtype), torch.float32)
    p, b = pred.to(work), base.to(work)
    if out is None:
        return (p - low_band(p - b, scale, cutoff)).to(pred.dtype)
    if out.shape != pred.shape or out.dtype != work or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {work} tensor of the prediction's shape")
    diff = p - b
    if out.data_ptr() != p.data_ptr():
        out.copy_(p)
    return _subtract_low_band_(out, diff, scale, cutoff)


def keep_low_band(
    pred: torch.Tensor, x: torch.Tensor, base: nn.Module, scale: int, cutoff: float = DEFAULT_CUTOFF
) -> torch.Tensor:
    """A network's prediction ``pred`` for input ``x`` with its low band replaced by that of
    ``base(x)`` — in fp32 whatever autocast the network ran under (the projection is what keeps
    the input's values; it must not lose them to bf16)."""
    with torch.autocast(x.device.type, enabled=False):
        return project_low_band(pred.float(), base(x.float().contiguous()), scale, cutoff)


class LowBandGuard(nn.Module):
    """``net`` whose output keeps the low band of ``base`` (an interpolator of the same scale).

    ``forward(x) = project_low_band(net(x), base(x), scale, cutoff)``. ``base`` is a module with
    the upscaler interface (``medsr.models.classical``: ``bicubic`` by default, ``kspace`` for
    k-space data). The weights are the wrapped network's: save and load ``guard.net``.
    """

    learned = True

    def __init__(self, net: nn.Module, base: nn.Module, scale: int, cutoff: float = DEFAULT_CUTOFF):
        super().__init__()
        if not 0.0 < float(cutoff) <= 1.0:
            raise ValueError(
                f"low-band cutoff must be in (0, 1] of the input's Nyquist frequency, got {cutoff}"
            )
        self.net = net
        self.base = base
        self.scale = int(scale)
        self.cutoff = float(cutoff)
        self.in_channels = int(getattr(net, "in_channels", 1))
        self.out_channels = int(getattr(net, "out_channels", self.in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keep_low_band(self.net(x), x, self.base, self.scale, self.cutoff)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, cutoff={self.cutoff}"


# ---------------------------------------------------------------------- the whole measured band
#: kinds of data consistency a network can be trained and run through (``model.data_consistency``)
DATA_CONSISTENCY_KINDS = ("kspace",)


def keep_measured_kspace(pred: torch.Tensor, x: torch.Tensor, scale: int) -> torch.Tensor:
    """``pred`` made to agree with the k-space block that ``x`` measured: one data-consistency
    step (:func:`medsr.degradations.kspace.magnitude_step`, no window, cell grid), the
    projection :meth:`medsr.safeguards.operators.Measurement.project` makes for ``kspace``.

    The step of deep MR reconstruction, for magnitude data: the truncation of ``pred`` gets the
    measured magnitude. Where the low-band guard keeps half the measured band
    (a DCT band), this keeps all of it, in the DFT the scanner measured: a network trained through
    it learns only what the acquisition did not measure. Scale changes of ``(pred, x)`` commute
    with it, and so do shifts for odd sizes (an even size's unpaired Nyquist bin makes the
    magnitude nonlinear). In fp32 (complex64) whatever autocast is active.
    """
    from medsr.degradations.kspace import magnitude_step

    with torch.autocast(pred.device.type, enabled=False):
        work = torch.promote_types(torch.promote_types(pred.dtype, x.dtype), torch.float32)
        return magnitude_step(pred.to(work), x.to(work), scale).to(pred.dtype)


class KSpaceConsistencyGuard(nn.Module):
    """``net`` whose output keeps the whole k-space block its input measured
    (:func:`keep_measured_kspace`): ``model.data_consistency: kspace`` in training, and the card's
    ``data_consistency`` at inference (:class:`medsr.inference.planes.PlaneUpscaler`)."""

    learned = True

    def __init__(self, net: nn.Module, scale: int):
        super().__init__()
        self.net = net
        self.scale = int(scale)
        self.in_channels = int(getattr(net, "in_channels", 1))
        self.out_channels = int(getattr(net, "out_channels", self.in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keep_measured_kspace(self.net(x), x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, kind=kspace"
