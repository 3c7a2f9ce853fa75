"""Ultrasound: lateral-only blur and line decimation; axial speckle untouched."""

from __future__ import annotations

import pytest
import torch

from medsr.degradations import RandomUltrasound, ultrasound_lateral
from medsr.errors import InvalidParameterError


def _speckle(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Fully developed speckle: Rayleigh-distributed envelope."""
    g = torch.Generator().manual_seed(seed)
    re, im = torch.randn(n, 1, h, w, generator=g), torch.randn(n, 1, h, w, generator=g)
    return torch.sqrt(re**2 + im**2)


@pytest.mark.parametrize("f", [1, 2, 3, 4])
def test_axial_only_image_passes_unchanged(f):
    profile = _speckle(2, 64, 1)  # varies along depth (y) only
    x = profile.expand(2, 1, 64, 50).contiguous()
    y = ultrasound_lateral(x, f, lateral_sigma=1.7)
    assert y.shape == (2, 1, 64, 50 // f)
    torch.testing.assert_close(y, x[..., : 50 // f], atol=1e-6, rtol=1e-6)


def test_rows_filtered_identically_and_axial_speckle_kept():
    x = _speckle(1, 40, 64)
    y = ultrasound_lateral(x, 2, lateral_sigma=1.0)
    # the operator acts on each row (depth) independently: permuting rows commutes with it
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        ultrasound_lateral(x[..., perm, :], 2, lateral_sigma=1.0), y[..., perm, :]
    )

    # lateral smoothing: neighbours along x become correlated, along y they stay independent
    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).mean() / (a.std() * b.std()))

    assert corr(y[..., :-1, :], y[..., 1:, :]) < 0.1
    assert corr(y[..., :, :-1], y[..., :, 1:]) > 0.2


def test_default_sigma_and_scale_one():
    x = _speckle(1, 16, 32)
    assert ultrasound_lateral(x, 1, lateral_sigma=0.0) is not None
    torch.testing.assert_close(ultrasound_lateral(x, 1, lateral_sigma=0.0), x)
    assert ultrasound_lateral(x, 4).shape == (1, 1, 16, 8)
    # transposed storage: lateral axis −2
    assert ultrasound_lateral(x, 2, axis=-2).shape == (1, 1, 8, 32)
    with pytest.raises(InvalidParameterError):
        ultrasound_lateral(x, 2, axis=1)


def test_wrapper_deterministic():
    x = _speckle(3, 32, 32)
    deg = RandomUltrasound(2, lateral_sigma=(0.5, 2.0))
    torch.testing.assert_close(deg(x, generator=9), deg(x, generator=9))
    assert deg(x).shape == (3, 1, 32, 16)
