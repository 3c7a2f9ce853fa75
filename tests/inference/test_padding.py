"""Padding is masked: kept exact in the output, never fed to the network as signal."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

import medsr
from medsr.image import MedImage
from tests.conftest import corpus_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _padded_ct(tmp_path, tag: bool):
    """CT_small.dcm with everything outside a circle set to −3024 HU (+ PixelPaddingValue)."""
    ds = pydicom.dcmread(corpus_path("CT_small.dcm"))
    arr = ds.pixel_array.astype(np.int32)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    yy, xx = np.mgrid[: arr.shape[0], : arr.shape[1]]
    outside = (yy - 63.5) ** 2 + (xx - 63.5) ** 2 > 58**2
    stored = round((-3024 - intercept) / slope)
    arr[outside] = stored
    ds.PixelData = arr.astype(ds.pixel_array.dtype).tobytes()
    if tag:
        ds.PixelPaddingValue = stored
        ds["PixelPaddingValue"].VR = "SS" if ds.PixelRepresentation else "US"
    path = tmp_path / ("padded_tag.dcm" if tag else "padded.dcm")
    ds.save_as(path)
    return path, outside


@pytest.mark.parametrize("tag", [True, False], ids=["PixelPaddingValue", "fill below air"])
def test_ct_padding_is_kept_exact_and_not_fed_as_signal(tmp_path, tag):
    path, outside = _padded_ct(tmp_path, tag)
    image = medsr.load_image(path)
    if tag:
        assert image.meta["padding"]["value"] == pytest.approx(-3024.0)
    sr = medsr.upscale(image, 2, "default-x2")
    up = np.repeat(np.repeat(outside, 2, 0), 2, 1)
    out = sr.array[0]
    np.testing.assert_array_equal(out[up], -3024.0)  # every output pixel of a padding pixel
    assert sr.meta["derivation"]["padding_pixels_kept"] == int(outside.sum())
    # inside, the network saw air (not −3024): no dotted ring of bright values at the edge
    inside = ~up
    ring = inside & np.repeat(np.repeat(_dilate(outside), 2, 0), 2, 1)
    tissue = image.array[0][~outside]
    assert tissue.min() <= out[ring].min() and out[ring].max() <= tissue.max()  # no −3024 bleeding
    # without the mask the −3024 fill is signal: the edge pixels are dragged far below any tissue
    raw = medsr.upscale(image.replace(meta={}, modality="OT"), 2, "bicubic", clip=False).array[0]
    assert raw[ring].min() < tissue.min() - 500


def _dilate(mask: np.ndarray, r: int = 2) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_nifti_nan_is_padding(tmp_path):
    arr = np.random.default_rng(0).uniform(0, 100, (1, 24, 24)).astype(np.float32)
    arr[0, :, :6] = np.nan
    path = tmp_path / "nan.nii.gz"
    medsr.save_image(MedImage(arr, modality="MR"), path)
    image = medsr.load_image(path)
    sr = medsr.upscale(image, 2, "default-x2")
    assert np.isfinite(sr.array).all()
    np.testing.assert_array_equal(sr.array[0, :, :12], image.array[0, 0, 0])  # kept as read
    inside = sr.array[0, :, 12:]
    assert inside.min() >= np.nanmin(arr) - 1e-3 and inside.max() <= np.nanmax(arr) + 1e-3
