"""Overshoot guard: a learned output stays near the range its input measured around each pixel.

A network that sharpens can push a small bright or dark finding beyond anything the input
showed there: a 2-px lesion at ×2 came out of ``default-x2`` with 1.39× its true contrast
(``benchmarks/fidelity.py``, consistency off), which a reader would take for a real, brighter
finding. The low-band guard (:mod:`medsr.models.lowband`) cannot stop it: the exaggeration lives
in the high band.

**Rule.** Each output pixel is clamped to the range of the input's ``3 × 3`` LR neighbourhood
around the LR pixel it lies in, widened by ``margin`` × that range on each side::

    lo = min₃ₓ₃(x) − margin·(max₃ₓ₃(x) − min₃ₓ₃(x)),   hi = max₃ₓ₃(x) + margin·(…)
    out = clamp(pred, lo↑, hi↑)        (↑: each LR value over its s × s output block)

Where the input is flat the range is small and so is what the network may add (noise is not
turned into texture beyond it); at an edge the range spans both sides, so a sharp edge passes
untouched; a small finding keeps the contrast the neighbourhood measured plus the margin.
It is a per-pixel clamp with bounds that scale and shift with the input, so the affine-intensity
equivariance of the networks holds (``a·x + b`` with ``a < 0`` swaps ``lo`` and ``hi``
consistently).

**Where it runs** (:meth:`medsr.inference.planes.PlaneUpscaler.forward_tensor`): on the
network's output with its low-band drift taken out, then the exact low-band projection
(:mod:`medsr.models.lowband`) makes the output's low band the base's. Clamping the raw output
would cut a network whose low band drifts (a bare network; an offset of the whole output) into
nearest-neighbour blocks — every flat region clipped to its LR value — before the projection
could remove the drift (``vdsr-x2`` on a seen CT: −0.5 dB against bicubic with the projection
first, −7.2 dB with the clamp first). Until session 21 the drift was taken out by a first exact
projection (two in all); since then by :func:`low_band_drift`, a cheap estimate on the input grid
that shifts the bounds (``lo + d``, ``hi + d``: the clamp of ``pred − d↑`` with ``d↑`` added back),
and one exact projection follows: ~3 ms less a 512² → 1024² plane (2 Xeon cores), the same
outputs to within 0.01 dB on the leave-one-source-out sets (``benchmarks/faithful.py``). The
bounds hold up to the smooth low-band part of what the clamp removed. Models trained through
k-space data consistency keep the two exact projections (their measured-band step runs
between them).

**Measured** (session 8, ``default-x2``, the 10 leave-one-source-out validation images, ×2
bicubic, the pipeline with the physics unknown): mean gain over bicubic +2.22 dB without the
guard, +2.26 with it (the head CT +4.59 → +5.24: the overshoot at the edge of its field of view
is gone; the ultrasound 4.93 → 4.77); margins 0 / 0.1 / 0.25 applied after the whole pipeline
cost 0.29 / 0.09 / 0.03 dB (a strict clamp cuts real detail). The largest contrast ratio of the
lesion test (consistency off) 1.39 → 1.31 (limit 1.35). At ×4 it did not change the lesion
test's sham (a structure of ``MR_small`` exaggerated inside its neighbourhood's range); running
the network on planes at least as large as its training patches did
(:attr:`medsr.models.resolver.LoadedModel.min_plane`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_MARGIN",
    "NEIGHBOURHOOD",
    "clamp_to_local_range",
    "local_range",
    "low_band_drift",
]

#: the clamp's widening, as a fraction of the neighbourhood's range on each side
DEFAULT_MARGIN = 0.25
#: the LR neighbourhood (pixels per side) whose range bounds an output pixel
NEIGHBOURHOOD = 3


def _window(x: torch.Tensor, size: int, op: Any) -> torch.Tensor:
    """``op`` (max or min) over the ``size × size`` window around each pixel of ``(…, H, W)``;
    the border is replicated, which adds no value the window did not have. Separable, by shifted
    slices: ~20× faster on the CPU than ``max_pool2d`` with stride 1."""
    r = size // 2
    if not r:
        return x
    p = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    rows = p[..., 0:h, :]
    for k in range(1, size):
        rows = op(rows, p[..., k : k + h, :])
    out = rows[..., 0:w]
    for k in range(1, size):
        out = op(out, rows[..., k : k + w])
    return out


def local_range(
    lr: torch.Tensor, margin: float = DEFAULT_MARGIN, size: int = NEIGHBOURHOOD
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` on the input grid of ``lr`` ``(N, C, H, W)``: the ``size × size``
    neighbourhood's min and max (the image border does not count), widened by ``margin`` × their
    difference on each side."""
    x = lr.float()
    hi = _window(x, size, torch.maximum)
    lo = _window(x, size, torch.minimum)
    if margin:
        span = (hi - lo).mul_(margin)
        hi, lo = hi.add_(span), lo.sub_(span)
    return lo, hi


def clamp_to_local_range(
    pred: torch.Tensor,
    lr: torch.Tensor,
    scale: int,
    margin: float = DEFAULT_MARGIN,
    size: int = NEIGHBOURHOOD,
    shift: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``pred`` ``(N, C, H·s, W·s)`` clamped to :func:`local_range` of its input ``lr`` — each LR
    pixel's bounds over its ``s × s`` output block (fp32; both in the input's units or both in the
    model's). ``shift`` (the input's shape) moves both bounds: clamping ``pred − shift↑`` and
    adding ``shift↑`` back, in one pass (:func:`low_band_drift`). ``out``: a contiguous fp32
    tensor of ``pred``'s shape to write into (``pred`` itself clamps it in place)."""
    n, c, h, w = lr.shape
    s = int(scale)
    if tuple(pred.shape) != (n, c, h * s, w * s):
        raise ValueError(f"prediction {tuple(pred.shape)} is not ×{s} of {tuple(lr.shape)}")
    lo, hi = local_range(lr, margin, size)
    if shift is not None:  # not in place: with a 1-pixel window lo and hi are lr itself
        lo, hi = lo + shift, hi + shift
    # each output row of an LR row's block against that row's bounds, repeated along x (the
    # inner axis contiguous: 1.6× faster on the CPU than broadcasting over (h, s, w, s) blocks)
    lo = lo[..., None].expand(n, c, h, w, s).reshape(n, c, h, 1, w * s)
    hi = hi[..., None].expand(n, c, h, w, s).reshape(n, c, h, 1, w * s)
    blocks = pred.float().reshape(n, c, h, s, w * s)
    if out is None:
        return torch.clamp(blocks, min=lo, max=hi).reshape(n, c, h * s, w * s)
    if out.shape != pred.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError("out must be a contiguous fp32 tensor of the prediction's shape")
    torch.clamp(blocks, min=lo, max=hi, out=out.view(n, c, h, s, w * s))
    return out


def _block_sum(x: torch.Tensor, s: int) -> torch.Tensor:
    """The sum of each ``s × s`` block of ``(…, H·s, W·s)``, by strided adds (5× faster on the
    CPU than ``avg_pool2d``); in fp32 whatever ``x``'s dtype: a bf16/fp16 ``x`` is converted
    (exactly) on its first read, never summed in its own precision."""
    if x.dtype == torch.float32:
        rows = x[..., 0::s, :] + x[..., 1::s, :] if s > 1 else x.clone()
    else:
        rows = x[..., 0::s, :].float()
        if s > 1:
            rows.add_(x[..., 1::s, :])
    for k in range(2, s):
        rows.add_(x[..., k::s, :])
    out = rows[..., 0::s] + rows[..., 1::s] if s > 1 else rows
    for k in range(2, s):
        out.add_(rows[..., k::s])
    return out


def low_band_drift(pred: torch.Tensor, base: torch.Tensor | None, scale: int) -> torch.Tensor:
    """How far ``pred`` ``(N, C, H·s, W·s)`` departs from ``base`` in its smooth, low band — a
    cheap estimate on the *input* grid ``(N, C, H, W)``: the mean of ``pred − base`` over each
    ``s × s`` output block, smoothed by the ``[1, 2, 1] / 4`` binomial along each axis (border
    replicated). Its response is 1 at zero frequency, about 0.45 at the low band's cutoff (half
    the input's Nyquist frequency) and 0 at the input's Nyquist frequency. It only shifts the
    clamp's bounds (:func:`clamp_to_local_range`'s ``shift``): the exact low band is made the
    base's afterwards (:mod:`medsr.models.lowband`). ``base=None``: ``pred`` is the difference
    itself (a residual network's detail over its base, in any float dtype: one block mean
    instead of two). fp32; no output-sized temporary."""
    s = int(scale)
    m = _block_sum(pred, s) if base is None else _block_sum(pred, s).sub_(_block_sum(base, s))
    m = m.mul_(1 / s**2)
    p = F.pad(m, (1, 1, 1, 1), mode="replicate")
    h, w = m.shape[-2:]
    rows = (p[..., 0:h, :] + p[..., 2 : h + 2, :]).add_(p[..., 1 : h + 1, :], alpha=2)
    return (rows[..., 0:w] + rows[..., 2 : w + 2]).add_(rows[..., 1 : w + 1], alpha=2).mul_(1 / 16)
