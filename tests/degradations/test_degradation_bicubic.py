"""Bicubic downscaling and the self-supervision pyramid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.degradations import RandomBicubic, bicubic_downscale, downscale_pyramid
from medsr.errors import InvalidParameterError


@pytest.mark.parametrize(
    "shape,f,expected", [((64, 66), 2, (32, 33)), ((65, 64), 3, (21, 21)), ((64, 64), 1, (64, 64))]
)
def test_output_size_is_floor(shape, f, expected):
    x = torch.rand(2, 3, *shape)
    assert bicubic_downscale(x, f).shape == (2, 3, *expected)


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_constant_stays_constant(sigma):
    x = torch.full((1, 1, 48, 40), 0.37)
    y = bicubic_downscale(x, 4, blur_sigma=sigma)
    torch.testing.assert_close(y, torch.full((1, 1, 12, 10), 0.37))


@pytest.mark.parametrize("f", [2, 3, 4])
def test_cell_centred_grid(f):
    # a linear ramp is reproduced exactly in the interior: LR pixel j sits at HR f·j + (f−1)/2
    x = torch.arange(48, dtype=torch.float32).repeat(1, 1, 48, 1)
    y = bicubic_downscale(x, f)[0, 0, 5]
    j = torch.arange(y.shape[-1], dtype=torch.float32)
    torch.testing.assert_close(y[2:-2], (f * j + (f - 1) / 2)[2:-2], atol=1e-4, rtol=0)


def test_blur_reduces_detail(shapes):
    sharp = bicubic_downscale(shapes, 2)
    blurred = bicubic_downscale(shapes, 2, blur_sigma=2.0)
    assert blurred.diff(dim=-1).abs().mean() < 0.8 * sharp.diff(dim=-1).abs().mean()


def test_rejects_bad_input():
    with pytest.raises(InvalidParameterError):
        bicubic_downscale(torch.rand(1, 64, 64), 2)
    with pytest.raises(InvalidParameterError):
        bicubic_downscale(torch.rand(1, 1, 64, 64), 0)
    with pytest.raises(InvalidParameterError):
        bicubic_downscale(torch.rand(1, 1, 3, 64), 4)


def test_pyramid_levels():
    x = torch.rand(1, 1, 70, 66)
    levels = downscale_pyramid(x, scale=2, levels=2)
    assert [tuple(t.shape[-2:]) for t in levels] == [(68, 64), (34, 32), (17, 16)]
    torch.testing.assert_close(levels[0], x[..., :68, :64])
    c = downscale_pyramid(torch.ones(1, 1, 32, 32), 2, 3)
    assert all(torch.allclose(t, torch.ones_like(t)) for t in c)


def test_random_wrapper_deterministic_and_per_sample(shapes):
    deg = RandomBicubic(2, blur_sigma=(0.0, 2.0))
    a = deg(shapes, generator=3)
    params_a = deg.last_params
    b = deg(shapes, generator=3)
    torch.testing.assert_close(a, b)
    assert len(params_a) == shapes.shape[0]
    assert len({p["blur_sigma"] for p in params_a}) == shapes.shape[0]
    c = deg(shapes, generator=4)
    assert not torch.allclose(a, c)
    # each item equals the deterministic function with its own sampled parameters
    for i, p in enumerate(params_a):
        ref = bicubic_downscale(shapes[i : i + 1], 2, **p)
        torch.testing.assert_close(a[i : i + 1], ref)


def test_fixed_wrapper_equals_function(shapes):
    np.testing.assert_allclose(
        RandomBicubic(3, blur_sigma=1.0)(shapes).numpy(),
        bicubic_downscale(shapes, 3, blur_sigma=1.0).numpy(),
    )
