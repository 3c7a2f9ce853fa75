"""A fixed blur-then-downscale, applied as one banded operator per axis.

The forward models of the consistency checks (:class:`medsr.safeguards.operators.Measurement`:
``ct-detector``, ``bicubic`` with a pre-blur, ``radiograph`` without noise, ``ultrasound``) are
a Gaussian blur followed by a reduction by ``f`` (antialiased bicubic, or the mean of ``f × f``
blocks), separable along the two axes. Done as written, the blur visits every HR pixel once per
tap — eleven shifted passes per axis for σ = 1 HR px — before the reduction keeps a quarter of
what it made: 6.2 of the 8.2 ms that ``ct-detector`` took on a 1024² plane (2 Xeon cores).

Here the chain along an axis of ``n`` samples is one ``(n/f) × n`` matrix ``M``, made once per
(chain, length) by applying the chain itself (:func:`medsr.degradations.bicubic.bicubic_downscale`,
:func:`medsr.degradations._common.filter_axis`, :func:`~medsr.degradations._common.block_mean`)
to the identity in float64: the same borders (the blur's mirrored samples, the resampler's
renormalised weights) by construction. Its interior rows are one pattern of ``T`` weights
shifted by ``f`` (``T`` = 18 for σ = 1 at ×2); they run as ``T`` strided multiply-adds over the
output rows only, and the few border rows as a small matrix product. Along the second axis the
same after a transpose. 1024² → 512² with σ = 1: 2.5 ms; the values those of the chain to float
rounding (2.6e-7 of the largest value in fp32; ``tests/degradations/test_banded.py``).

Only for fixed chains applied to many planes (a measurement's ``σ``): each new length or σ
costs one chain on a short identity (~1 ms, :func:`axis_operator`), kept in a small cache.
Training's random degradations (a new σ per sample) keep the chains themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from medsr.degradations._common import block_mean, crop_to_multiple, filter_axis

__all__ = ["RESAMPLERS", "axis_operator", "blur_downscale"]

#: how the blurred samples are reduced by ``f``: antialiased bicubic, or the mean of each block
RESAMPLERS = ("bicubic", "mean")


@dataclass(frozen=True)
class _AxisOperator:
    """``(n/f) × n`` matrix of an axis, as its interior pattern and its border rows."""

    weights: tuple[float, ...]  # interior rows: out[j] = Σₜ weights[t] · x[f·j + offset + t]
    offset: int
    first: int  # interior rows first ≤ j < stop
    stop: int
    head: torch.Tensor  # rows [0, first) over input samples [0, head.shape[1])
    tail: torch.Tensor  # rows [stop, n/f) over input samples [tail_start, n)
    tail_start: int
    factor: int
    n: int


def _chain(eye: torch.Tensor, f: int, sigma: float, resample: str) -> torch.Tensor:
    """The chain along the last axis of ``eye`` ``(1, 1, n, n)`` (the other one untouched)."""
    x = filter_axis(eye, -1, 1, profile="gaussian", width=sigma) if sigma > 0 else eye
    if resample == "mean":
        return block_mean(x, f, (-1,))
    n = x.shape[-1]
    # antialiased bicubic on the last axis only: the rows keep their size (the kernel at the
    # sample positions themselves, weights 0, 1, 0: exact)
    return torch.nn.functional.interpolate(
        x, size=(x.shape[-2], n // f), mode="bicubic", antialias=True, align_corners=False
    )


def _rows_needed(f: int, sigma: float) -> int:
    """Output rows of a probe long enough to hold both borders and interior rows between them:
    a border row sees past the edge through the blur (4σ + ½ HR px) and the antialiased bicubic
    kernel (2f HR px) — or the block."""
    reach = 4.0 * sigma + 1.5 + 2 * f
    return 2 * (int(reach // f) + 2) + 8


@lru_cache(maxsize=16)
def axis_operator(n: int, f: int, sigma: float, resample: str = "bicubic") -> _AxisOperator:
    """The blur (σ in HR px, cell-integrated Gaussian, mirrored borders) then the ×``f``
    reduction ``resample`` along an axis of ``n`` samples (a multiple of ``f``), as a banded
    operator (cached).

    Made from the chain run on the identity of a probe of ``n₀ ≤ n`` samples (a multiple of
    ``f`` with a few interior rows, :func:`_rows_needed`): each output row's weights depend only
    on where it lies relative to the nearer border — the blur's mirror and the resampler's kernel
    centre ``f·(j + ½)`` are exact in float64 — so the probe's head and tail rows are ``n``'s, its
    interior pattern too (``tests/degradations/test_banded.py`` compares with the full identity).
    ~1 ms whatever ``n``, instead of a chain over an ``n × n`` identity (20 ms at n = 1,024)."""
    if resample not in RESAMPLERS:
        raise ValueError(f"resample must be one of {RESAMPLERS}, got {resample!r}")
    return _operator(n, f, float(sigma), resample, min(n, f * _rows_needed(f, float(sigma))))


def _operator(n: int, f: int, sigma: float, resample: str, probe: int) -> _AxisOperator:
    """:func:`axis_operator` from the chain on a ``probe``-sample identity."""
    eye = torch.eye(probe, dtype=torch.float64)[None, None]
    m = _chain(eye, f, float(sigma), resample)[0, 0].T  # (n₀/f, n₀): out = m @ x
    n_out = m.shape[0]
    nonzero = m != 0
    lo = nonzero.to(torch.int64).argmax(dim=1)
    hi = probe - 1 - nonzero.flip(1).to(torch.int64).argmax(dim=1)
    j = n_out // 2  # the pattern of a middle row; rows that repeat it exactly are the interior
    offset, size = int(lo[j]) - f * j, int(hi[j] - lo[j]) + 1
    pattern = m[j, lo[j] : lo[j] + size]
    interior = [
        k
        for k in range(n_out)
        if 0 <= f * k + offset and f * k + offset + size <= probe
        and not bool(nonzero[k, : f * k + offset].any())
        and not bool(nonzero[k, f * k + offset + size :].any())
        and torch.equal(m[k, f * k + offset : f * k + offset + size], pattern)
    ]  # fmt: skip
    one_run = bool(interior) and interior == list(range(interior[0], interior[-1] + 1))
    if probe < n and not (one_run and len(interior) >= 4):
        # the probe must hold rows that repeat the pattern on both sides of the middle one (a
        # middle row its borders reach would make a wrong pattern); not expected with
        # _rows_needed's margin: then the whole axis's identity
        return _operator(n, f, sigma, resample, n)
    if not one_run:
        first = stop = n_out  # a short axis: every row a border row
    else:
        first, stop = interior[0], interior[-1] + 1
    head_cols = int(hi[:first].max()) + 1 if first else 0
    tail_start = int(lo[stop:].min()) if stop < n_out else probe
    grow = n - probe  # the interior stretches; the tail moves by as much
    return _AxisOperator(
        weights=tuple(float(w) for w in pattern.to(torch.float32)),
        offset=offset,
        first=first,
        stop=stop + grow // f,
        head=m[:first, :head_cols].to(torch.float32).contiguous(),
        tail=m[stop:, tail_start:].to(torch.float32).contiguous(),
        tail_start=tail_start + grow,
        factor=f,
        n=n,
    )


def _apply_rows(x: torch.Tensor, op: _AxisOperator) -> torch.Tensor:
    """``op`` along axis −2 of ``x`` ``(…, n, W)`` → ``(…, n/f, W)`` (fp32)."""
    f, w = op.factor, op.weights
    n_out = op.n // f
    out = torch.empty((*x.shape[:-2], n_out, x.shape[-1]), dtype=x.dtype, device=x.device)
    count = op.stop - op.first
    if count:
        mid = out[..., op.first : op.stop, :]
        start = f * op.first + op.offset
        span = f * (count - 1) + 1
        torch.mul(x[..., start : start + span : f, :], w[0], out=mid)
        for t in range(1, len(w)):
            mid.add_(x[..., start + t : start + t + span : f, :], alpha=w[t])
    if op.first:
        head = op.head.to(x.device)
        out[..., : op.first, :] = head @ x[..., : head.shape[1], :]
    if op.stop < n_out:
        out[..., op.stop :, :] = op.tail.to(x.device) @ x[..., op.tail_start :, :]
    return out


def blur_downscale(
    x: torch.Tensor, f: int, sigma: tuple[float, float], resample: str = "bicubic"
) -> torch.Tensor:
    """``(N, C, H, W)`` fp32 blurred by ``sigma = (σ_y, σ_x)`` HR px (0: none on that axis) and
    reduced by ``f`` (cropped to a multiple of ``f`` first): the values of the same chain run
    step by step (to float rounding), as two banded passes. Not for tensors that need gradients
    (its passes write in place)."""
    if x.requires_grad:
        raise ValueError("blur_downscale is for measurements, not for tensors that need gradients")
    x = crop_to_multiple(x, f, (-2, -1))
    h, w = x.shape[-2:]
    rows = _apply_rows(x, axis_operator(int(h), int(f), float(sigma[0]), resample))
    cols = _apply_rows(
        rows.transpose(-1, -2).contiguous(),
        axis_operator(int(w), int(f), float(sigma[1]), resample),
    )
    return cols.transpose(-1, -2).contiguous()
