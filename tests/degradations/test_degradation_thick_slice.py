"""Thick-slice: slice-profile blur along z then every f-th (centred) slice."""

from __future__ import annotations

import numpy as np
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


# ------------------------------------------------- the measurement of any grid (through-plane maps)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medsr.degradations.thick_slice import thick_slice_matrix  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    f=st.integers(1, 5),
    n_in=st.integers(1, 12),
    profile=st.sampled_from(["gaussian", "box"]),
    t=st.sampled_from([0.0, 0.5, 1.0, 1.4, 2.0, 3.0]),
    seed=st.integers(0, 2**16),
)
def test_thick_slice_matrix_is_thick_slice_at_an_integer_factor(f, n_in, profile, t, seed):
    x = torch.randn(
        1, 1, n_in * f, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ref = thick_slice(x, f, profile=profile, thickness=t * f, axis=-2)[0, 0]
    w = torch.from_numpy(thick_slice_matrix(n_in, n_in * f, profile=profile, thickness=t))
    torch.testing.assert_close(w @ x[0, 0], ref, atol=1e-9, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    n_in=st.integers(2, 12),
    n_out=st.integers(2, 60),
    profile=st.sampled_from(["gaussian", "box"]),
    t=st.floats(0.0, 3.0),
)
def test_thick_slice_matrix_of_any_grid_is_centred_on_each_measured_slice(n_in, n_out, profile, t):
    """Rows sum to one (constants are kept), and each measured slice away from the borders reads
    the thin slices around its own centre: its weights' centroid is within half a thin slice of
    it (exactly on it when the thin slices fall symmetrically about it)."""
    w = thick_slice_matrix(n_in, n_out, profile=profile, thickness=t)
    assert w.shape == (n_in, n_out) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    r = n_out / n_in  # thin slices per measured slice
    centres = (np.arange(n_in) + 0.5) * r - 0.5  # in thin-slice indices
    reach = (t / 2 + 4 * t / 2.3548 if profile == "gaussian" else t / 2) * r + 1.5
    inner = [i for i in range(n_in) if centres[i] - reach > 0 and centres[i] + reach < n_out - 1]
    centroid = w @ np.arange(n_out)
    assert np.all(np.abs(centroid[inner] - centres[inner]) <= 0.5 + 1e-9)


def test_thick_slice_matrix_refuses_bad_values():
    with pytest.raises(InvalidParameterError, match="profile"):
        thick_slice_matrix(4, 8, profile="lorentz", thickness=1.0)
    with pytest.raises(InvalidParameterError, match="positive"):
        thick_slice_matrix(0, 8, thickness=1.0)


def test_thicken_measures_along_any_axis_and_says_where_thick_slices_hold_no_data():
    """thicken (the error bounds' "thick once more") is thick_slice_matrix applied along
    ``axis``; a thick voxel holds no data where any thin voxel under its profile holds none."""
    from medsr.degradations.thick_slice import thick_slice_matrix, thicken

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(8, 5, 6)).astype(np.float32)
    w = thick_slice_matrix(4, 8, profile="gaussian", thickness=1.0)
    expect = np.einsum("ij,jyx->iyx", w, vol)
    for axis in range(3):
        moved = np.moveaxis(vol, 0, axis)
        low, held = thicken(moved, 4, profile="gaussian", thickness=1.0, axis=axis)
        assert held is None and low.dtype == np.float32
        np.testing.assert_allclose(np.moveaxis(low, axis, 0), expect, rtol=1e-5, atol=1e-6)
    no_data = np.zeros(vol.shape, bool)
    no_data[3, 2, 2] = True  # one thin voxel
    _, held = thicken(vol, 4, profile="box", thickness=1.0, no_data=no_data)
    under = thick_slice_matrix(4, 8, profile="box", thickness=1.0)[:, 3] > 1e-6
    assert held is not None and held.shape == (4, 5, 6)
    assert list(~held[:, 2, 2]) == list(under) and held.sum() == held.size - under.sum()
