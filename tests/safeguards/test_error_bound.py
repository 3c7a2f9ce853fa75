"""The error bound map: noise estimate, calibration, and its coverage against a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from medsr.degradations import degrade_image
from medsr.pipeline import upscale_with_safeguards
from medsr.safeguards.error_bound import (
    COVERAGE,
    calibration_factor,
    error_bound,
    image_noise,
    noise_sigma,
)
from tests.conftest import corpus_path


def _smooth(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth image: a plane plus two broad Gaussian bumps (what Immerkær's kernel nearly ignores)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = rng.uniform(-1, 1) * y + rng.uniform(-1, 1) * x
    for _ in range(2):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        img += 50 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 40.0**2))
    return img


@settings(max_examples=25, deadline=None)
@given(
    sigma=st.floats(0.5, 50.0),
    a=st.floats(0.01, 1000.0) | st.floats(-1000.0, -0.01),
    b=st.floats(-30000.0, 30000.0),
    seed=st.integers(0, 2**16),
)
def test_noise_estimate_finds_the_noise_and_follows_an_affine_change(sigma, a, b, seed):
    """White noise of σ on a smooth image is measured as σ (within 12 %: 128² samples, the
    bumps' curvature); ``a·image + b`` has the noise ``|a|·σ``: the estimate is equivariant."""
    rng = np.random.default_rng(seed)
    img = _smooth((128, 128), seed) + rng.normal(0, sigma, (128, 128))
    est = noise_sigma(img[None])[0]
    assert est == pytest.approx(sigma, rel=0.12)
    assert noise_sigma((a * img + b)[None])[0] == pytest.approx(abs(a) * est, rel=1e-6)


def test_noise_estimate_leaves_out_what_holds_no_data():
    """A CT's fill (a −3024 step beside tissue) would read as enormous noise; left out by
    ``valid`` it does not count, and a plane with no whole 3×3 window of data is NaN."""
    rng = np.random.default_rng(0)
    img = 40 + rng.normal(0, 5, (1, 96, 96))
    y, x = np.mgrid[:96, :96]
    img[0][(y - 48) ** 2 + (x - 48) ** 2 > 40**2] = -3024.0  # outside the scan circle
    valid = img > -3000
    assert noise_sigma(img)[0] > 25  # the circle's edge read as noise: 5× the truth
    assert noise_sigma(img, valid)[0] == pytest.approx(5, rel=0.1)
    assert np.isnan(noise_sigma(img, np.zeros_like(valid))[0])
    # colour: the channels' noise averaged, per plane
    inner = img[:, 30:66, 30:66]
    two = np.stack([inner, 3 * inner])  # (C=2, Z=1, Y, X)
    assert image_noise(two)[0] == pytest.approx(2 * noise_sigma(inner)[0], rel=1e-9)


def test_calibration_factor_is_the_coverage_quantile_of_the_normalised_error():
    rng = np.random.default_rng(1)
    std = rng.uniform(0, 3, (2, 50, 50))
    noise = np.array([1.0, 2.0])
    spread = np.hypot(std, noise[:, None, None])
    err = rng.normal(0, 1, std.shape) * spread * 4
    k = calibration_factor(err, std, noise)
    inside = np.abs(err) <= k * spread
    assert inside.mean() == pytest.approx(COVERAGE, abs=1 / err.size + 1e-9)
    bound = error_bound(std, noise, k)
    assert bound.dtype == np.float32
    np.testing.assert_allclose(bound, k * spread, rtol=1e-6)
    # an error that is exactly 3 spreads everywhere: k = 3 at any coverage
    assert calibration_factor(3 * spread, std, noise, coverage=0.5) == pytest.approx(3)
    keep = np.zeros(std.shape, bool)
    assert calibration_factor(err, std, noise, keep) is None
    with pytest.raises(ValueError):
        calibration_factor(err, std, noise, coverage=1.0)


@pytest.fixture(scope="module")
def mr_pair():
    """MR_small as the truth and its ×2 bicubic degradation as the input."""
    hr = medsr.load_image(corpus_path("MR_small.dcm"))
    return hr, degrade_image(hr, "bicubic", 2, generator=0)


@pytest.fixture(scope="module")
def mr_run(mr_pair):
    _, lr = mr_pair
    return upscale_with_safeguards(lr, 2, "fast-x2", warn=False, ood=False)


def test_the_bound_holds_for_most_pixels_of_an_image_it_has_not_seen(mr_pair, mr_run):
    """On a real MR (a validation image: never trained on) whose truth is known, the bound
    calibrated one scale down holds for about 90 % of the pixels (the uncertainty map alone, an
    equivariance spread, holds for a minority: it is no error bar)."""
    hr, _ = mr_pair
    sr, summary = mr_run
    info = summary["error_bound"]
    assert info["calibrated"] and info["coverage"] == COVERAGE
    assert info["calibration"]["degradation"] == "bicubic" and info["calibration"]["pixels"] > 500
    assert info["noise_sigma"]["mean"] > 0 and info["map"]["units"] == sr.units
    bound, std = sr.meta["maps"]["error_bound"][0], sr.meta["maps"]["uncertainty"][0]
    err = np.abs(sr.array[0] - hr.array[0])[4:-4, 4:-4]
    bound, std = bound[4:-4, 4:-4], std[4:-4, 4:-4]
    assert np.all(bound >= info["factor"] * std - 1e-3)
    assert 0.8 <= np.mean(err <= bound) <= 0.98
    assert np.mean(err <= 2 * std) < 0.5


def test_the_bound_follows_an_affine_intensity_change(mr_pair, mr_run):
    """The pipeline is equivariant to ``a·x + b`` (issue 20): so is the bound, as ``|a|·bound``."""
    _, lr = mr_pair
    sr, _ = mr_run
    a, b = 12.0, -3000.0
    sr2, _ = upscale_with_safeguards(
        lr.replace(array=lr.array * a + b), 2, "fast-x2", warn=False, ood=False
    )
    bound, bound2 = sr.meta["maps"]["error_bound"], sr2.meta["maps"]["error_bound"]
    np.testing.assert_allclose(bound2, a * bound, rtol=2e-3, atol=2e-3 * a * float(bound.max()))


def test_no_bound_without_maps_or_when_asked_not_to(mr_pair):
    _, lr = mr_pair
    sr, summary = upscale_with_safeguards(lr, 2, "lanczos", warn=False, error_bound=False)
    assert "error_bound" not in sr.meta["maps"] and "error_bound" not in summary
    sr, summary = upscale_with_safeguards(lr, 2, "lanczos", warn=False, maps=False)
    assert "maps" not in sr.meta and "error_bound" not in summary
    # a learned model's spread needs its 8 passes: none asked, no bound
    sr, summary = upscale_with_safeguards(lr, 2, "fast-x2", warn=False, tta=False, ood=False)
    assert "error_bound" not in sr.meta["maps"] and "error_bound" not in summary


def test_an_interpolator_has_a_bound_without_its_8_passes(mr_pair):
    """An interpolator is flip/rotation-equivariant: its spread is 0, so its bound (the web
    page's, which runs no TTA for interpolators) needs no 8 passes and is the same."""
    _, lr = mr_pair
    with_tta, s1 = upscale_with_safeguards(lr, 2, "lanczos", warn=False)
    without, s2 = upscale_with_safeguards(lr, 2, "lanczos", warn=False, tta=False)
    assert "uncertainty" not in without.meta["maps"]
    assert s2["error_bound"]["factor"] == pytest.approx(s1["error_bound"]["factor"], rel=1e-3)
    np.testing.assert_allclose(
        without.meta["maps"]["error_bound"], with_tta.meta["maps"]["error_bound"], rtol=1e-3
    )


def test_a_too_small_image_says_why_it_has_no_bound():
    img = medsr.MedImage(np.random.default_rng(0).normal(100, 5, (1, 24, 24)).astype(np.float32))
    sr, summary = upscale_with_safeguards(img, 2, "lanczos", warn=False)
    assert "error_bound" not in sr.meta["maps"]
    assert summary["error_bound"] == {
        "calibrated": False,
        "reason": "image too small for a calibration one scale down",
    }
    # and so does the provenance text (a DICOM output's DerivationDescription; it said nothing)
    assert "no error bound: image too small" in sr.meta["derivation"]["summary"]


def test_padding_is_kept_exact_so_its_bound_is_zero():
    """A CT's fill outside the reconstruction circle is padding: kept exact in the output (error
    0), so its bound is 0 — and it does not inflate the noise estimate of the rest."""
    from medsr.io.padding import no_data_mask

    ct = medsr.load_image(corpus_path("J2K_pixelrep_mismatch.dcm"))  # head CT, −2000 HU fill
    img = ct.replace(array=np.ascontiguousarray(ct.array[:, ::4, ::4]))  # 128²
    fill = no_data_mask(img)[0, 0]
    assert 0.05 < fill.mean() < 0.9
    sr, summary = upscale_with_safeguards(img, 2, "lanczos", warn=False)
    bound = sr.meta["maps"]["error_bound"][0]
    up = np.repeat(np.repeat(fill, 2, axis=0), 2, axis=1)
    assert np.all(bound[up] == 0) and np.all(bound[~up] > 0)
    assert summary["error_bound"]["noise_sigma"]["mean"] < 100  # HU: the fill's step left out
    # its summary is over the voxels that hold data: the padding's zeros do not dilute it
    assert summary["error_bound"]["map"]["mean"] == pytest.approx(
        float(bound[~up].mean()), rel=1e-5
    )
