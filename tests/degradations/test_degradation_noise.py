"""Noise helpers: Gaussian, Rician, Poisson."""

from __future__ import annotations

import math

import pytest
import torch

from medsr.degradations import (
    RandomGaussianNoise,
    RandomPoissonNoise,
    RandomRicianNoise,
    gaussian_noise,
    poisson_noise,
    rician_noise,
)
from medsr.errors import InvalidParameterError


def test_gaussian():
    x = torch.zeros(2, 1, 128, 128)
    y = gaussian_noise(x, 0.1, generator=0)
    assert float(y.std()) == pytest.approx(0.1, rel=0.02)
    torch.testing.assert_close(y, gaussian_noise(x, 0.1, generator=0))
    assert gaussian_noise(x, 0.0) is x


def test_rician_background_and_high_snr():
    s = 0.05
    bg = rician_noise(torch.zeros(2, 1, 128, 128), s, generator=0)
    assert float(bg.mean()) == pytest.approx(s * math.sqrt(math.pi / 2), rel=0.02)  # Rayleigh
    hi = rician_noise(torch.full((2, 1, 128, 128), 1.0), s, generator=0)
    assert float(hi.mean()) == pytest.approx(1.0 + s**2 / 2, abs=0.002)  # bias ≈ σ²/2A
    assert float(hi.std()) == pytest.approx(s, rel=0.03)
    assert float(bg.min()) >= 0


def test_poisson():
    x = torch.full((2, 1, 128, 128), 2.0)
    y = poisson_noise(x, 50.0, generator=0)
    assert float(y.mean()) == pytest.approx(2.0, rel=0.01)
    assert float(y.var()) == pytest.approx(2.0 / 50.0, rel=0.04)
    assert float(poisson_noise(-x, 50.0, generator=0).abs().max()) == 0.0  # clamped at 0
    with pytest.raises(InvalidParameterError):
        poisson_noise(x, 0.0)


def test_wrappers_deterministic():
    x = torch.rand(3, 1, 16, 16)
    for deg in (RandomGaussianNoise(), RandomRicianNoise(), RandomPoissonNoise()):
        torch.testing.assert_close(deg(x, generator=2), deg(x, generator=2))
        assert deg(x, generator=2).shape == x.shape
