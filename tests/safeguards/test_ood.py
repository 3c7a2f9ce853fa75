"""Out-of-distribution check against the model card's training data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medsr.image import MedImage
from medsr.safeguards import OutOfDistributionWarning, check_distribution, intensity_stats

CARD = {
    "name": "m",
    "architecture": "srcnn",
    "kind": "super-resolution",
    "normalization": {"kind": "minmax"},
}


def test_training_stats(rng):
    stats = intensity_stats([rng.uniform(0, 1, (16, 16)), rng.uniform(0, 0.5, (16, 16))])
    assert stats["n_slices"] == 2 and 0 < stats["p01"] < stats["p50"] < stats["p99"] <= 1
    assert stats["slice_mean"][0] == pytest.approx(0.25, abs=0.05)
    assert intensity_stats([]) == {"n_slices": 0}


def test_classical_models_are_not_checked(ct_small):
    r = check_distribution(ct_small, {"name": "bicubic", "kind": "interpolator"})
    assert r["checked"] is False and r["flag"] is False


def test_unseen_modality_warns(ct_small, mr_small):
    card = {**CARD, "training_data": {"modalities": ["MR"]}}
    with pytest.warns(OutOfDistributionWarning, match="modality CT"):
        r = check_distribution(ct_small, card)
    assert r["flag"] and r["training_modalities"] == ["MR"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_distribution(mr_small, card)["flag"] is False
    # a modality of the same group counts as seen (DX ~ CR: both radiographs)
    dx = MedImage(np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8), modality="DX")
    assert not check_distribution(
        dx, {**CARD, "training_data": {"modalities": ["CR"]}}, warn=False
    )["flag"]


def test_intensities_outside_the_model_space(mr_small):
    card = {
        **CARD,
        "normalization": {"kind": "fixed", "low": -1024, "high": 3071},
        "data": {"modalities": ["CT", "MR"]},
    }
    bright = mr_small.replace(array=mr_small.array * 10)
    r = check_distribution(bright, card, warn=False)
    assert r["flag"] and "normalised range" in r["reasons"][0]
    assert r["normalised"]["frac_outside"] > 0.01


def test_training_statistics_bound_the_contrast(rng):
    stats = {"MR": intensity_stats([rng.uniform(0.2, 0.4, (32, 32)) for _ in range(4)])}
    card = {**CARD, "training_data": {"modalities": ["MR"], "training_stats": stats}}
    like = MedImage(rng.uniform(0.2, 0.4, (1, 32, 32)).astype(np.float32), modality="MR")
    like.array[0, 0, :2] = (0.0, 1.0)  # minmax maps the range to 0..1 as in training
    assert not check_distribution(like, card, warn=False)["flag"]
    spiky = np.zeros((1, 32, 32), np.float32)
    spiky[0, ::7, ::7] = 1.0  # mostly empty: normalised mean far below anything trained on
    r = check_distribution(MedImage(spiky, modality="MR"), card, warn=False)
    assert r["flag"] and r["training_stats"] and "training range" in " ".join(r["reasons"])


@pytest.mark.parametrize("tagged", [True, False], ids=["PixelPaddingValue", "untagged fill"])
def test_ct_padding_is_not_counted_as_out_of_range(ct_small, tagged):
    """A CT's fill outside the reconstruction circle (−3024 HU, a third of the pixels) is not an
    intensity the network sees: the check judges the data inside the circle only."""
    from medsr.models.resolver import resolve_model

    card = resolve_model("default-x2").card
    arr = ct_small.array.copy()
    yy, xx = np.mgrid[: arr.shape[1], : arr.shape[2]]
    c = (arr.shape[1] - 1) / 2
    outside = (yy - c) ** 2 + (xx - c) ** 2 > (0.48 * arr.shape[1]) ** 2
    assert not check_distribution(ct_small, card, warn=False)["flag"]
    arr[:, outside] = -3024.0
    meta = {"padding": {"value": -3024.0, "range_limit": None}} if tagged else {}
    padded = ct_small.replace(array=arr, meta=meta)
    r = check_distribution(padded, card, warn=False)
    assert not r["flag"], r["reasons"]
    assert r["normalised"]["frac_outside"] == 0.0
    # the same fill read as tissue (an MR has no padding rule) is out of range
    assert check_distribution(
        padded.replace(meta={}, units="a.u."),
        {**card, "normalization": {"kind": "fixed", "low": -1024, "high": 3071}},
        warn=False,
    )["flag"]


def test_the_sample_and_the_normaliser_leave_padding_out(ct_small):
    """The check reads an evenly spaced sample of the measured pixels and a min-max normaliser of
    them alone, without copying the image: the same numbers as on an image whose padding is
    filled with its darkest measured value (what the network sees), and the input unchanged."""
    from medsr.intensity import Normalizer
    from medsr.io.padding import fill_no_data

    arr = np.repeat(ct_small.array, 3, axis=0).astype(np.float32)
    arr[:, :20, :] = -3024.0  # a CT's fill outside the scan circle
    padded = ct_small.replace(array=arr)
    before = arr.copy()
    filled, mask, _ = fill_no_data(padded)
    assert mask is not None
    card = {"name": "t", "architecture": "x", "normalization": {"kind": "minmax"}}
    got = Normalizer.from_card(card, padded, exclude=mask)
    want = Normalizer.from_card(card, filled)
    assert (got.offset, got.scale) == (want.offset, want.scale)
    assert np.array_equal(padded.array, before)
    r = check_distribution(padded, card, warn=False)
    assert r["normalised"]["frac_outside"] == 0.0 and r["normalised"]["p01"] >= 0.0
    everything = np.ones_like(mask)
    none = Normalizer.from_card(card, padded, exclude=everything)
    assert (none.offset, none.scale) == (0.0, 1e-6)
