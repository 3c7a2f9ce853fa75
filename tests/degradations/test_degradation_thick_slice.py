"""Thick-slice: slice-profile blur along z then every f-th (centred) slice."""

from __future__ import annotations

import pytest
import torch

from medsr.degradations import RandomThickSlice, thick_slice
from medsr.errors import InvalidParameterError


@pytest.mark.parametrize("profile", ["gaussian", "box"])
@pytest.mark.parametrize("f", [2, 3, 4])
def test_constant_along_z_is_unchanged(profile, f):
    plane = torch.rand(2, 1, 1, 12, 10, generator=torch.Generator().manual_seed(f))
    x = plane.expand(2, 1, 13, 12, 10).contiguous()
    y = thick_slice(x, f, profile=profile, thickness=1.5 * f)
    assert y.shape == (2, 1, 13 // f, 12, 10)
    torch.testing.assert_close(y, x[:, :, : 13 // f], atol=1e-6, rtol=1e-6)


def test_box_of_width_f_averages_the_thin_slices():
    x = torch.rand(1, 2, 9, 4, 4, generator=torch.Generator().manual_seed(0))
    y = thick_slice(x, 3, profile="box")
    torch.testing.assert_close(y, x.view(1, 2, 3, 3, 4, 4).mean(dim=3))


def test_zero_thickness_keeps_centred_slices():
    z = torch.arange(12, dtype=torch.float32).view(1, 1, 12, 1, 1).expand(1, 1, 12, 3, 3)
    odd = thick_slice(z, 3, thickness=0.0)
    assert odd[0, 0, :, 0, 0].tolist() == [1.0, 4.0, 7.0, 10.0]  # slices 3j + 1
    even = thick_slice(z, 2, thickness=0.0)
    assert even[0, 0, :, 0, 0].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5, 10.5]


@pytest.mark.parametrize("f", [2, 3, 5])
def test_thick_slices_are_centred_on_their_slab(f):
    # a linear ramp along z is kept exactly at LR slice centres f·j + (f−1)/2 (interior)
    z = torch.arange(40, dtype=torch.float64).view(1, 1, 40, 1, 1).expand(1, 1, 40, 2, 2)
    y = thick_slice(z, f)[0, 0, :, 0, 0]
    j = torch.arange(len(y), dtype=torch.float64)
    torch.testing.assert_close(y[2:-2], (f * j + (f - 1) / 2)[2:-2])


def test_in_plane_axis_for_2d_slices():
    x = torch.rand(3, 1, 32, 30)
    assert thick_slice(x, 2, axis=-1).shape == (3, 1, 32, 15)
    assert thick_slice(x, 2, axis=-2).shape == (3, 1, 16, 30)
    with pytest.raises(InvalidParameterError):
        thick_slice(x, 2)
    with pytest.raises(InvalidParameterError):
        thick_slice(x, 2, axis=1)
    with pytest.raises(InvalidParameterError):
        thick_slice(torch.rand(1, 1, 8, 4, 4), 2, profile="sinc")


def test_gaussian_thickness_blurs_more():
    x = torch.rand(1, 1, 24, 8, 8, generator=torch.Generator().manual_seed(3))
    thin = thick_slice(x, 2, thickness=1.0)
    thick = thick_slice(x, 2, thickness=4.0)
    assert float(thick.std()) < float(thin.std())


def test_wrapper():
    x = torch.rand(2, 1, 12, 8, 8)
    deg = RandomThickSlice(3, profile=["gaussian", "box"], thickness=(2.0, 5.0))
    torch.testing.assert_close(deg(x, generator=0), deg(x, generator=0))
    assert deg(x).shape == (2, 1, 4, 8, 8)
