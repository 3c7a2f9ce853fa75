"""Padding is masked: kept exact in the output, never fed to the network as signal."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

import medsr
from medsr.image import MedImage
from tests.conftest import corpus_path, make_nan_nifti

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


@pytest.mark.parametrize(("scale", "model"), [(2, "default-x2"), (3, "bicubic")])
def test_nifti_nan_stays_nan_in_an_upscaled_file_and_its_maps(tmp_path, scale, model):
    """``medsr upscale`` of a NIfTI that is NaN outside its data: every output pixel of a NaN
    pixel's block is NaN again (it used to be written as 0, a measured value), and so are the
    trust maps there; everything else is finite and within the measured range."""
    import nibabel as nib
    from typer.testing import CliRunner

    from medsr.cli import app

    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    out, maps = tmp_path / "out.nii.gz", tmp_path / "maps"
    res = CliRunner().invoke(
        app,
        ["upscale", str(tmp_path / "in.nii.gz"), str(out), "--scale", str(scale),
         "--model", model, "--maps", str(maps)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    want = np.repeat(np.repeat(nonfinite, scale, axis=1), scale, axis=2)
    sr = np.asarray(nib.load(str(out)).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(np.isnan(sr), want)
    assert 60 <= sr[~want].min() and sr[~want].max() <= 140  # data: 80…120, no 0 bled in
    for name in ("consistency", "uncertainty"):
        m = np.asarray(nib.load(str(maps / f"{name}.nii.gz")).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(m), want, err_msg=name)


def test_the_self_ensemble_turns_the_nan_record_with_the_pixels(tmp_path):
    """The 8 turned runs of ``ensemble=True`` used to keep the NaN record unturned: on a
    non-square image it no longer matched and the NaN (read as 0) was fed as signal; the mean
    then left the no-data blocks and drew their edge towards 0."""
    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    image = medsr.load_image(tmp_path / "in.nii.gz")
    sr = medsr.upscale(image, 2, "default-x2", ensemble=True)
    want = np.repeat(np.repeat(nonfinite, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(sr.meta["nonfinite_mask"], want)
    assert (sr.array[want] == 0).all()  # kept exact in memory: written as NaN
    assert 60 <= sr.array[~want].min() and sr.array[~want].max() <= 140
