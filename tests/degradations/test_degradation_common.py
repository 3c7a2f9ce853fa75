"""Shared machinery: parameter sampling, generators, cell-integrated filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.degradations._common import (
    as_generator,
    block_mean,
    check_scale,
    filter_axis,
    gaussian_blur,
    profile_weights,
    sample_value,
)
from medsr.errors import InvalidParameterError, MedSRError


def test_as_generator_accepts_seed_generator_none():
    assert as_generator(None) is None
    g = torch.Generator()
    assert as_generator(g) is g
    a = torch.rand(3, generator=as_generator(7))
    b = torch.rand(3, generator=as_generator(7))
    assert torch.equal(a, b)
    with pytest.raises(InvalidParameterError):
        as_generator("seed")


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", None, True])
def test_check_scale_rejects_bad_values(bad):
    with pytest.raises(MedSRError):
        check_scale(bad)


def test_check_scale_accepts_integral_values():
    assert check_scale(3) == 3
    assert check_scale(np.int64(2)) == 2
    assert check_scale(4.0) == 4


def test_sample_value_specs():
    g = as_generator(0)
    assert sample_value(0.5, g) == 0.5
    assert sample_value(None, g) is None
    draws = [sample_value((1.0, 2.0), g) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in draws)
    ints = {sample_value((2, 4), g) for _ in range(200)}
    assert ints == {2, 3, 4}
    choices = {sample_value(["a", None, "b"], g) for _ in range(200)}
    assert choices == {"a", None, "b"}
    logs = np.array([sample_value((10.0, 1000.0), g, log=True) for _ in range(2000)])
    assert logs.min() >= 10 and logs.max() <= 1000
    # log-uniform: the median is the geometric mean
    assert 70 < np.median(logs) < 140
    with pytest.raises(InvalidParameterError):
        sample_value((2.0, 1.0), g)


@pytest.mark.parametrize("profile,width", [("gaussian", 0.0), ("gaussian", 1.3), ("box", 3.0)])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_profile_weights_normalised_and_symmetric(profile, width, factor):
    w, first = profile_weights(profile, width, factor)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w >= 0)
    # symmetric about the LR cell centre (f − 1)/2
    positions = first + np.arange(len(w))
    assert np.sum(w * positions) == pytest.approx((factor - 1) / 2)
    np.testing.assert_allclose(w, w[::-1], atol=1e-12)


def test_point_sample_picks_centre_or_averages_two():
    x = torch.arange(12, dtype=torch.float32).view(1, 1, 12)
    odd = filter_axis(x, -1, 3, profile="gaussian", width=0.0)
    assert odd.flatten().tolist() == [1.0, 4.0, 7.0, 10.0]
    even = filter_axis(x, -1, 2, profile="gaussian", width=0.0)
    assert even.flatten().tolist() == [0.5, 2.5, 4.5, 6.5, 8.5, 10.5]


def test_box_of_width_f_is_block_mean():
    x = torch.rand(2, 3, 12, generator=torch.Generator().manual_seed(0))
    for f in (2, 3, 4):
        a = filter_axis(x, -1, f, profile="box", width=float(f))
        b = block_mean(x, f, (-1,))
        torch.testing.assert_close(a, b)


def test_gaussian_blur_keeps_constant_and_matches_scipy_in_the_interior():
    c = torch.full((1, 1, 20, 24), 3.5)
    torch.testing.assert_close(gaussian_blur(c, 2.0), c)
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = gaussian_blur(x, 2.0)[0, 0].numpy()
    ref = gaussian_filter(x[0, 0].numpy(), 2.0, mode="reflect")
    # cell integration adds 1/12 px² of variance: close, not equal
    assert np.abs(ours - ref)[8:-8, 8:-8].max() < 0.01
