"""Radiograph: detector PSF, aperture binning, Poisson quantum noise that scales with dose."""

from __future__ import annotations

import pytest
import torch

from medsr.degradations import RandomRadiograph, radiograph


def test_shape_and_noise_free_constant():
    c = torch.full((2, 1, 64, 66), 0.4)
    y = radiograph(c, 2, sigma=1.0)
    assert y.shape == (2, 1, 32, 33)
    torch.testing.assert_close(y, torch.full_like(y, 0.4))


def test_aperture_is_block_mean_without_psf():
    x = torch.rand(1, 1, 8, 8)
    y = radiograph(x, 2, sigma=0.0)
    torch.testing.assert_close(y, x.view(1, 1, 4, 2, 4, 2).mean(dim=(3, 5)))


def test_noise_variance_scales_inversely_with_dose():
    x = torch.full((4, 1, 128, 128), 0.5)
    var = {}
    for dose in (100.0, 1000.0, 10000.0):
        y = radiograph(x, 2, sigma=0.5, dose=dose, generator=0)
        assert float(y.mean()) == pytest.approx(0.5, rel=0.01)  # unbiased
        var[dose] = float(y.var())
        assert var[dose] == pytest.approx(0.5 / dose, rel=0.05)  # Var = E / dose
    assert var[100.0] / var[1000.0] == pytest.approx(10.0, rel=0.08)
    assert var[1000.0] / var[10000.0] == pytest.approx(10.0, rel=0.08)


def test_determinism():
    x = torch.rand(2, 1, 32, 32)
    a = radiograph(x, 2, dose=500.0, generator=1)
    torch.testing.assert_close(a, radiograph(x, 2, dose=500.0, generator=1))
    assert not torch.equal(a, radiograph(x, 2, dose=500.0, generator=2))
    deg = RandomRadiograph(2, sigma=(0.3, 1.0), dose=(1e2, 1e4))
    torch.testing.assert_close(deg(x, generator=4), deg(x, generator=4))
    assert all(1e2 <= p["dose"] <= 1e4 for p in deg.last_params)
