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
by ``b``: the output does the same) is untouched; it costs two small matrix products per axis.

:class:`LowBandGuard` wraps any network with it; training (``model.low_band`` in a config) and
inference (:class:`medsr.inference.planes.PlaneUpscaler`) use the same wrapper, and the model
card records the setting.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_CUTOFF",
    "LowBandGuard",
    "dct_basis",
    "keep_low_band",
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


def dct_basis(n: int, k: int, *, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, k)`` torch tensor of the first ``k`` orthonormal DCT-II vectors of length ``n``
    (cached per size, device and dtype: do not modify it in place)."""
    return _basis_torch(int(n), int(k), torch.device(device), dtype)


@lru_cache(maxsize=64)
def _basis_torch(n: int, k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor: training may use it after inference did
        return torch.as_tensor(_basis_np(n, k), dtype=dtype, device=device)


def low_band(x: torch.Tensor, scale: int, cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """``P(x)``: the low band of ``(..., H, W)`` on an output grid of a ×``scale`` upscale."""
    h, w = x.shape[-2:]
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    by = dct_basis(h, low_band_size(h, scale, cutoff), device=x.device, dtype=dtype)
    bx = dct_basis(w, low_band_size(w, scale, cutoff), device=x.device, dtype=dtype)
    xf = x.to(dtype)
    coeff = by.T @ xf @ bx  # (..., Ky, Kx)
    return by @ coeff @ bx.T


def project_low_band(
    pred: torch.Tensor, base: torch.Tensor, scale: int, cutoff: float = DEFAULT_CUTOFF
) -> torch.Tensor:
    """``pred − P(pred − base)``: ``pred`` with its low band replaced by ``base``'s (see the module)."""
    if pred.shape != base.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and base {tuple(base.shape)} differ in shape")
    work = torch.promote_types(torch.promote_types(pred.dtype, base.dtype), torch.float32)
    p, b = pred.to(work), base.to(work)
    return (p - low_band(p - b, scale, cutoff)).to(pred.dtype)


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
            raise ValueError(f"low-band cutoff must be in (0, 1] of the input's Nyquist frequency, got {cutoff}")
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
