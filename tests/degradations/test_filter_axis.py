"""filter_axis (weighted shifted views) gives exactly what a 1-channel conv1d gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medsr.degradations._common import (
    _reflect_index,
    _symmetric_window,
    filter_axis,
    profile_weights,
)


def _conv1d_reference(x, axis, factor, profile, width):
    """The previous implementation: gather with reflection, then conv1d over the rows."""
    ax = axis % x.ndim
    n = x.shape[ax]
    n_out = n // factor
    weights, first = profile_weights(profile, float(width), factor)
    if factor == 1 and len(weights) == 1:
        return x
    k = len(weights)
    idx = torch.as_tensor(_reflect_index(np.arange(first, first + (n_out - 1) * factor + k), n))
    xm = x.movedim(ax, -1)
    flat = xm.reshape(-1, 1, n).index_select(-1, idx)
    kernel = torch.as_tensor(weights, dtype=x.dtype).view(1, 1, k)
    out = torch.nn.functional.conv1d(flat, kernel, stride=factor)
    return out.reshape(*xm.shape[:-1], n_out).movedim(-1, ax)


@pytest.mark.parametrize("shape", [(2, 1, 24, 30), (1, 3, 17, 12)])
@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize(
    ("profile", "width"), [("gaussian", 1.0), ("gaussian", 2.3), ("box", 3.0), ("gaussian", 0.0)]
)
def test_matches_conv1d(shape, axis, factor, profile, width):
    torch.manual_seed(0)
    x = torch.rand(shape) * 4000 - 1000
    if x.shape[axis] % factor:
        x = x.narrow(axis, 0, x.shape[axis] // factor * factor)
    got = filter_axis(x, axis, factor, profile=profile, width=width)
    ref = _conv1d_reference(x, axis, factor, profile, width)
    assert got.shape == ref.shape
    assert torch.equal(got, ref)


def test_gradients_flow():
    x = torch.rand(1, 1, 8, 10, requires_grad=True)
    filter_axis(x, -1, 2, width=1.0).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 40),
    start=st.integers(-90, 40),
    length=st.integers(1, 120),
    axis=st.sampled_from([-1, -2]),
)
def test_symmetric_window_is_the_reflected_gather(n, start, length, axis):
    """The slices-and-flips window equals the gather with symmetric reflection it replaced,
    one reflection or many (the gather fallback), at either end, along either axis."""
    shape = [2, n, 5] if axis == -2 else [2, 5, n]
    x = torch.arange(float(np.prod(shape))).reshape(shape)
    ax = axis % x.ndim
    idx = torch.as_tensor(_reflect_index(np.arange(start, start + length), n))
    assert torch.equal(_symmetric_window(x, ax, start, start + length), x.index_select(ax, idx))


def test_tiny_planes_take_the_gather():
    """A blur wider than the plane (padding beyond one reflection) still matches the reference."""
    x = torch.rand(1, 1, 3, 4) * 100
    for axis in (-1, -2):
        got = filter_axis(x, axis, 1, profile="gaussian", width=2.3)
        assert torch.equal(got, _conv1d_reference(x, axis, 1, "gaussian", 2.3))
