"""The banded blur-then-downscale (:mod:`medsr.degradations._banded`) gives the chain's values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medsr.degradations import bicubic_downscale, radiograph
from medsr.degradations._banded import _apply_rows, _chain, axis_operator, blur_downscale
from medsr.safeguards.consistency import resolve_measurement


def _chain_2d(x: torch.Tensor, f: int, sigma: tuple[float, float], resample: str) -> torch.Tensor:
    """The step-by-step chain in float64: blur each axis by its σ, then reduce."""
    from medsr.degradations._common import block_mean, crop_to_multiple, filter_axis

    y = crop_to_multiple(x.double(), f, (-2, -1))
    for axis, s in ((-2, sigma[0]), (-1, sigma[1])):
        if s > 0:
            y = filter_axis(y, axis, 1, profile="gaussian", width=s)
    if resample == "mean":
        return block_mean(y, f, (-2, -1))
    return bicubic_downscale(y, f)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    f=st.sampled_from([2, 3, 4]),
    h=st.integers(8, 300),
    w=st.integers(8, 300),
    sy=st.sampled_from([0.0, 0.4, 1.0, 2.5]),
    sx=st.sampled_from([0.0, 0.5, 1.25, 3.0]),
    resample=st.sampled_from(["bicubic", "mean"]),
    magnitude=st.sampled_from([1.0, 1000.0, 30000.0]),
    seed=st.integers(0, 2**16),
)
def test_the_banded_operator_is_the_chain(f, h, w, sy, sx, resample, magnitude, seed):
    if h < 2 * f or w < 2 * f:
        return
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 1, h, w, generator=g) * 2 - 1) * magnitude
    got = blur_downscale(x, f, (sy, sx), resample)
    ref = _chain_2d(x, f, (sy, sx), resample)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=4e-7 * magnitude)


@pytest.mark.parametrize(
    ("n", "f", "sigma", "resample"),
    [(1024, 2, 1.0, "bicubic"), (1280, 4, 1.0, "bicubic"), (960, 2, 0.5, "mean"), (1000, 4, 2.5, "bicubic"),
     (302, 2, 4.0, "bicubic"), (16, 2, 1.0, "bicubic"), (30, 3, 0.0, "mean")],
)  # fmt: skip
def test_the_probe_gives_the_whole_axis_matrix(n, f, sigma, resample):
    """Built from a short identity, the operator is the chain's matrix on the whole axis."""
    full = _chain(torch.eye(n, dtype=torch.float64)[None, None], f, sigma, resample)[0, 0].T
    op = axis_operator(n, f, sigma, resample)
    got = _apply_rows(torch.eye(n, dtype=torch.float32)[None, None], op)[0, 0]
    torch.testing.assert_close(got.double(), full, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("kind", "params"),
    [("ct-detector", {}), ("bicubic", {"blur_sigma": 0.7}), ("radiograph", {}), ("ultrasound", {}),
     ("ultrasound", {"axis": -2})],
)  # fmt: skip
@pytest.mark.parametrize("f", [2, 4])
@pytest.mark.parametrize("shape", [(96, 136), (97, 131)])  # the second not a multiple of f
def test_measurements_take_it_with_the_same_values(kind, params, f, shape):
    meas = resolve_measurement({"kind": kind, "params": params}, f)
    assert meas.params == {**meas.params, **params}  # the parameters are the ones asked for
    taken: list[bool] = []
    real = meas._banded
    object.__setattr__(meas, "_banded", lambda *a, **k: taken.append(True) or real(*a, **k))
    x = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(f)) * 3000 - 1000
    fast = meas.forward(x)
    # the banded path is taken, but where the lateral axis has something to crop (ultrasound)
    assert taken == (
        [] if kind == "ultrasound" and shape[int(params.get("axis", -1))] % f else [True]
    )
    chain = meas.forward(x.double())  # float64: the step-by-step chain
    torch.testing.assert_close(fast.double(), chain, rtol=0, atol=3000 * 4e-7)
    # and the chain written out by hand, for the kinds that are one function
    if kind == "ct-detector":
        torch.testing.assert_close(fast, bicubic_downscale(x, f, blur_sigma=1.0), rtol=0, atol=3e-3)
    if kind == "radiograph":
        torch.testing.assert_close(fast, radiograph(x, f, sigma=0.5), rtol=0, atol=3e-3)


def test_tensors_that_need_gradients_take_the_chain():
    meas = resolve_measurement("ct-detector", 2)
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    meas.forward(x).sum().backward()  # the chain, differentiable
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="gradients"):
        blur_downscale(x, 2, (1.0, 1.0))


@pytest.mark.parametrize("probe", [16, 24, 32, 48])
def test_a_probe_too_short_falls_back_to_the_whole_axis(probe):
    """A probe whose middle row its borders still reach would give a wrong pattern: such a probe
    is not used (the whole axis's identity is), whatever its length."""
    from medsr.degradations._banded import _operator

    full = _operator(1024, 2, 1.0, "bicubic", 1024)
    op = _operator(1024, 2, 1.0, "bicubic", probe)
    assert (op.first, op.stop, op.offset, op.tail_start, op.weights) == (
        full.first,
        full.stop,
        full.offset,
        full.tail_start,
        full.weights,
    )
    assert torch.equal(op.head, full.head) and torch.equal(op.tail, full.tail)
