"""The overshoot guard (medsr.models.range_guard): bounds, equivariance, what it leaves alone,
and what it changes for the shipped models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from medsr.image import MedImage
from medsr.models.lowband import low_band
from medsr.models.range_guard import (
    DEFAULT_MARGIN,
    clamp_to_local_range,
    local_range,
    low_band_drift,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _neighbourhood_bounds(lr: np.ndarray, y: int, x: int, s: int, margin: float):
    """Reference: the 3×3 LR neighbourhood of the LR pixel output (y, x) lies in."""
    i, j = y // s, x // s
    win = lr[max(0, i - 1) : i + 2, max(0, j - 1) : j + 2]
    lo, hi = float(win.min()), float(win.max())
    return lo - margin * (hi - lo), hi + margin * (hi - lo)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(3, 14), st.integers(3, 14)),
    scale=st.sampled_from([2, 3, 4]),
    margin=st.sampled_from([0.0, 0.1, DEFAULT_MARGIN, 1.0]),
    span=st.sampled_from([1.0, 4095.0, 60000.0]),
    offset=st.sampled_from([0.0, -1024.0, -30000.0]),
)
def test_every_pixel_within_its_neighbourhood_range(seed, shape, scale, margin, span, offset):
    rng = np.random.default_rng(seed)
    lr = (offset + span * rng.uniform(size=shape)).astype(np.float64)
    h, w = shape
    pred = offset + span * rng.normal(0.5, 1.0, size=(h * scale, w * scale))
    out = clamp_to_local_range(
        torch.from_numpy(pred)[None, None], torch.from_numpy(lr)[None, None], scale, margin
    )[0, 0].numpy()
    for y, x in zip(rng.integers(0, h * scale, 40), rng.integers(0, w * scale, 40), strict=True):
        lo, hi = _neighbourhood_bounds(lr, int(y), int(x), scale, margin)
        tol = 1e-6 * (span + abs(offset))  # fp32 bounds
        assert lo - tol <= out[y, x] <= hi + tol
        # a value inside the bounds is untouched; one outside lands on the nearer bound
        expect = min(max(pred[y, x], lo), hi)
        assert abs(out[y, x] - expect) <= tol


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    a=st.sampled_from([1e-3, 12.0, -1.0, -250.0]),
    b=st.sampled_from([0.0, -3000.0, 1024.0]),
)
def test_affine_intensity_equivariance(seed, a, b):
    """Bounds scale and shift with the input (a < 0 swaps them), so the clamp commutes with
    x → a·x + b."""
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(1, 1, 9, 11, generator=g, dtype=torch.float64)
    pred = torch.randn(1, 1, 18, 22, generator=g, dtype=torch.float64)
    one = clamp_to_local_range(pred, lr, 2).double()
    two = clamp_to_local_range(a * pred + b, a * lr + b, 2).double()
    torch.testing.assert_close(two, a * one + b, atol=1e-5 * (abs(a) + abs(b)), rtol=0)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    scale=st.sampled_from([2, 3, 4]),
)
def test_shifted_bounds_clamp_the_prediction_less_its_drift(seed, shape, scale):
    """``shift`` d: the clamp of ``pred − d↑`` with ``d↑`` added back, in one pass."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    lr = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64)
    pred = torch.randn(2, 1, h * scale, w * scale, generator=g, dtype=torch.float64)
    d = torch.randn(2, 1, h, w, generator=g, dtype=torch.float64)
    up = d.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    one = clamp_to_local_range(pred, lr, scale, shift=d.float())
    two = clamp_to_local_range(pred - up, lr, scale) + up
    torch.testing.assert_close(one.double(), two.double(), atol=1e-5, rtol=0)
    # in place (``out`` = the prediction itself): the same numbers
    inplace = pred.float()
    assert clamp_to_local_range(inplace, lr, scale, shift=d.float(), out=inplace) is inplace
    assert torch.equal(inplace, one)
    with pytest.raises(ValueError, match="out must be"):
        clamp_to_local_range(pred, lr, scale, out=pred[..., ::2, :])


def test_shifted_bounds_leave_the_input_alone():
    """With a 1-pixel window and no margin the bounds are the input itself: shifting them must
    not write into it."""
    lr = torch.rand(1, 1, 4, 4)
    keep = lr.clone()
    out = clamp_to_local_range(
        torch.rand(1, 1, 8, 8), lr, 2, 0.0, size=1, shift=torch.ones_like(lr)
    )
    assert torch.equal(lr, keep)
    up = (keep + 1).repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(out, up)  # every value pinned to its shifted LR value


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    scale=st.sampled_from([2, 3, 4]),
    a=st.sampled_from([1e-3, 1.0, -7.0, 3000.0]),
    b=st.sampled_from([0.0, -1024.0, 30000.0]),
)
def test_low_band_drift(seed, shape, scale, a, b):
    """On the input grid: the mean of ``pred − base`` over each output block, smoothed by the
    ``[1, 2, 1] / 4`` binomial (float64 reference); linear in the difference and blind to a
    shift of both (the guarded output's affine-intensity equivariance); zero where the
    prediction is the base; a constant offset found exactly; the finest pattern of the input
    grid ignored."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    base = b + a * torch.rand(1, 1, h * scale, w * scale, generator=g, dtype=torch.float64)
    diff = a * torch.randn(1, 1, h * scale, w * scale, generator=g, dtype=torch.float64)
    drift = low_band_drift(base + diff, base, scale)
    assert drift.shape == (1, 1, h, w) and drift.dtype == torch.float32
    fn = torch.nn.functional
    m = fn.pad(fn.avg_pool2d(diff, scale), (1, 1, 1, 1), "replicate")
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64) / 4
    ref = fn.conv2d(m, (k[:, None] * k[None, :])[None, None])
    tol = 1e-6 * (abs(a) + abs(b)) * scale**2
    torch.testing.assert_close(drift.double(), ref, atol=tol, rtol=0)
    # the difference itself (a residual network's detail), in fp32 or bf16 — a bf16 detail is
    # summed in fp32, exactly as its fp32 conversion is
    torch.testing.assert_close(
        low_band_drift(diff.float(), None, scale).double(), ref, atol=tol, rtol=0
    )
    half = diff.bfloat16()
    assert torch.equal(low_band_drift(half, None, scale), low_band_drift(half.float(), None, scale))
    assert float(low_band_drift(base, base, scale).abs().max()) <= tol
    torch.testing.assert_close(
        low_band_drift(base + 5.0 * a, base, scale).double(),
        torch.full((1, 1, h, w), 5.0 * a, dtype=torch.float64), atol=tol, rtol=0,
    )  # fmt: skip
    # the finest pattern of the input grid (±1 over alternate s × s blocks) is not drift
    yy, xx = torch.meshgrid(torch.arange(h * scale), torch.arange(w * scale), indexing="ij")
    checker = ((yy // scale + xx // scale) % 2 * 2 - 1).double()[None, None]
    inner = low_band_drift(base + a * checker, base, scale)[..., 1:-1, 1:-1]
    assert inner.numel() == 0 or float(inner.abs().max()) <= tol


def test_edges_and_flat_regions():
    """A sharp step passes untouched (its neighbourhood spans both sides); in a flat region the
    network may add nothing (range 0); a bright dot is kept within its neighbourhood's range
    plus the margin."""
    lr = torch.zeros(1, 1, 8, 8)
    lr[..., 4:] = 100.0
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 100.0
    torch.testing.assert_close(clamp_to_local_range(step, lr, 2), step)
    flat = torch.full((1, 1, 8, 8), 7.0)
    noisy = 7.0 + torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(clamp_to_local_range(noisy, flat, 2), torch.full_like(noisy, 7.0))
    dot_lr = torch.zeros(1, 1, 8, 8)
    dot_lr[..., 4, 4] = 40.0
    dot = torch.zeros(1, 1, 16, 16)
    dot[..., 8:10, 8:10] = 90.0  # a network exaggerating it
    out = clamp_to_local_range(dot, dot_lr, 2, 0.25)
    assert float(out.max()) == pytest.approx(50.0)  # 40 + 0.25 × 40
    lo, hi = local_range(dot_lr, 0.25)
    assert lo.shape == hi.shape == dot_lr.shape
    assert float(hi[..., 3, 3]) == 50.0 and float(lo[..., 3, 3]) == -10.0  # 40 in its window
    assert float(hi[..., 0, 0]) == float(lo[..., 0, 0]) == 0.0  # a flat window
    with pytest.raises(ValueError, match="×2"):
        clamp_to_local_range(dot[..., :15], dot_lr, 2)


def test_shipped_models_apply_it_and_keep_the_low_band():
    """On by default for learned models (recorded in the derivation), off on request; the
    low band stays the base's (the guard runs before the low-band projection)."""
    from medsr.inference.planes import PlaneUpscaler

    rng = np.random.default_rng(3)
    arr = np.zeros((1, 24, 24), np.float32)
    arr[0, 6:18, 6:18] = 1000.0
    arr += rng.normal(0, 30, arr.shape).astype(np.float32)
    img = MedImage(arr, modality="CT", units="HU")
    on = PlaneUpscaler("default-x2", 2).upscale(img)
    off = PlaneUpscaler("default-x2", 2, range_guard=False).upscale(img)
    assert on.meta["derivation"]["overshoot_guard"] == {
        "neighbourhood": 3,
        "margin": DEFAULT_MARGIN,
    }
    assert "overshoot_guard" not in off.meta["derivation"]
    assert "overshoot_guard" not in PlaneUpscaler("bicubic", 2).upscale(img).meta["derivation"]
    assert not np.array_equal(on.array, off.array)
    base = medsr.upscale(img, 2, "bicubic", clip=False).array[0]
    raw = medsr.upscale(img, 2, "default-x2", clip=False).array[0]
    band = lambda a: low_band(torch.from_numpy(np.asarray(a, np.float64)), 2).numpy()  # noqa: E731
    assert np.abs(band(raw) - band(base)).max() <= 2e-5 * 1000
    with pytest.raises(medsr.MedSRError, match="margin"):
        PlaneUpscaler("default-x2", 2, range_guard=-0.5)


def test_a_network_that_shifts_the_low_band_is_not_cut_into_blocks(monkeypatch):
    """The clamp is judged with the network's low-band drift taken out, then the low band is
    projected: a network whose output is offset — a bare network's low-band drift — loses the
    offset to the projection, not its detail to the clamp (clamping the raw output would flatten
    every flat region to its LR value: nearest-neighbour blocks). A pure offset gives exactly
    what clamping the exactly projected output does (the two-projection order before session 21),
    detail on top of it nearly so."""
    from medsr.inference.planes import PlaneUpscaler
    from medsr.models.classical import Bicubic
    from medsr.models.lowband import project_low_band

    up = PlaneUpscaler("fast-x2", 2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 24, 24, generator=g).cumsum(-1).cumsum(-2) / 100  # smooth
    base = Bicubic(2)(x)
    detail = 0.01 * torch.randn(base.shape, generator=g)

    def exact(out):  # the earlier order: project, clamp, project again
        return project_low_band(clamp_to_local_range(project_low_band(out, base, 2), x, 2), base, 2)

    for extra, tol in ((torch.zeros_like(detail), 1e-5), (detail, 0.5 * 0.01)):
        # fast-x2 is a residual over bicubic: (prediction, its detail over the base), offset
        monkeypatch.setattr(
            up, "_network", lambda t, tiled, e=extra: (base + e + 0.3, e + 0.3, base)
        )
        with torch.inference_mode():
            pred, _ = up.forward_tensor(x, need_base=True)
        torch.testing.assert_close(pred, exact(base + extra), atol=tol, rtol=0)
        from medsr.models.lowband import low_band

        torch.testing.assert_close(low_band(pred, 2), low_band(base, 2), atol=1e-5, rtol=0)
    # the detail survives where the neighbourhood allows it: far from nearest-neighbour blocks
    blocks = x.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert float((pred - blocks).abs().mean()) > 0.5 * float((base - blocks).abs().mean())
