"""Pixel padding (DICOM Pixel Padding Value / Range Limit, NIfTI NaN) → ``padding_mask``."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

import medsr
from medsr.image import MedImage
from medsr.io.padding import padding_mask
from tests.io.conftest import dicom_corpus_path


def _circle_outside(n: int = 128, radius: float = 60.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 > radius**2


def _padded_ct(padding: int = -3024, limit: int | None = None) -> tuple[Dataset, np.ndarray]:
    """CT_small with stored value ``padding`` outside a circle (a CT reconstruction field)."""
    ds = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    stored = ds.pixel_array.astype(np.int16)
    outside = _circle_outside(int(ds.Rows))
    stored[outside] = padding
    if limit is not None:  # a ring of values inside the range, also padding
        stored[outside & (np.indices(stored.shape)[1] % 2 == 0)] = limit
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.PixelPaddingValue = padding
    ds["PixelPaddingValue"].VR = "SS"
    if limit is not None:
        ds.PixelPaddingRangeLimit = limit
        ds["PixelPaddingRangeLimit"].VR = "SS"
    return ds, outside


def test_ct_padding_outside_the_reconstruction_circle(tmp_path):
    ds, outside = _padded_ct(-3024)
    ds.save_as(tmp_path / "ct.dcm")
    img = medsr.load_image(tmp_path / "ct.dcm")
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert img.meta["padding"] == {"value": -3024 * slope + intercept, "range_limit": None}
    mask = padding_mask(img)
    assert mask is not None and mask.shape == img.array.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask[0], outside)
    # the padding value really is what the padded pixels read as, in HU
    assert np.all(img.array[0][outside] == img.meta["padding"]["value"])


def test_padding_range_limit_covers_every_value_between(tmp_path):
    ds, outside = _padded_ct(-3024, limit=-2000)
    ds.save_as(tmp_path / "ct.dcm")
    img = medsr.load_image(tmp_path / "ct.dcm")
    intercept = float(ds.RescaleIntercept)
    assert img.meta["padding"] == {"value": -3024 + intercept, "range_limit": -2000 + intercept}
    np.testing.assert_array_equal(
        padding_mask(img)[0], outside | (img.array[0] <= -2000 + intercept)
    )
    assert padding_mask(img)[0][outside].all()


def test_padding_follows_monochrome1_inversion(tmp_path):
    ds, outside = _padded_ct(-3024)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    img = medsr.load_image(tmp_path / "m1.dcm")
    value = img.meta["padding"]["value"]
    assert value == pytest.approx(
        img.meta["monochrome1_reflect"] - (-3024 + float(ds.RescaleIntercept))
    )
    np.testing.assert_array_equal(padding_mask(img)[0], outside)


def test_padding_per_frame_when_the_rescale_differs(tmp_path):
    """Multi-frame with a Rescale Intercept per frame: one padding value per slice."""
    ds = pydicom.dcmread(dicom_corpus_path("emri_small.dcm"))
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = 3
    stored = np.full((3, 8, 8), 100, dtype=np.uint16)
    stored[:, :2] = 0
    ds.PixelData = stored.tobytes()
    ds.PixelPaddingValue = 0
    ds["PixelPaddingValue"].VR = "US"
    groups = []
    for f in range(3):
        pvt = Dataset()
        pvt.RescaleSlope = 1
        pvt.RescaleIntercept = 10 * f
        pvt.RescaleType = "US"
        item = Dataset()
        item.PixelValueTransformationSequence = DicomSequence([pvt])
        groups.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(groups)
    ds.save_as(tmp_path / "mf.dcm")
    img = medsr.load_image(tmp_path / "mf.dcm")
    assert img.meta["padding"] == {"value": [0.0, 10.0, 20.0], "range_limit": None}
    mask = padding_mask(img)
    assert mask[:, :2].all() and not mask[:, 2:].any()


def test_series_padding_per_slice(ct_template, tmp_path):
    from pydicom.uid import generate_uid

    from tests.io.conftest import make_ct_slice, write_series

    uid = generate_uid()
    slices = []
    for k in range(3):
        pixels = np.full((8, 8), 50, dtype=np.int16)
        pixels[0] = -2000
        ds = make_ct_slice(
            ct_template, pixels=pixels, ipp=(0, 0, 2.0 * k), series_uid=uid, instance=k + 1
        )
        ds.RescaleIntercept = -1024 + k  # slices with their own rescale
        ds.PixelPaddingValue = -2000
        ds["PixelPaddingValue"].VR = "SS"
        slices.append(ds)
    img = medsr.load_image(write_series(tmp_path / "series", slices))
    assert img.meta["padding"]["value"] == [-3024.0, -3023.0, -3022.0]
    mask = padding_mask(img)
    assert mask[:, 0].all() and not mask[:, 1:].any()


def test_no_padding_gives_none(tmp_path):
    img = medsr.load_image(dicom_corpus_path("MR_small.dcm"))
    assert img.meta["padding"] is None
    assert padding_mask(img) is None
    ct = medsr.load_image(dicom_corpus_path("CT_small.dcm"))  # declares padding, uses none
    assert ct.meta["padding"] == {"value": -3024.0, "range_limit": None}
    assert padding_mask(ct) is None
    assert padding_mask(MedImage(np.zeros((1, 4, 4), np.float32))) is None


def test_nifti_nan_is_padding(tmp_path):
    vol = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)  # (X, Y, Z)
    vol[0, :, :] = np.nan
    vol[:, 4, 3] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    img = medsr.load_image(tmp_path / "nan.nii.gz")
    assert np.isfinite(img.array).all()  # the reader hands on finite values...
    mask = padding_mask(img)  # ...and remembers where the data was missing
    np.testing.assert_array_equal(mask, np.isnan(vol).transpose(2, 1, 0))
    # an array that still holds NaN (e.g. an .npy) is masked from its values
    arr = copy.deepcopy(img.array)
    arr[0, 0, 1] = np.nan
    bare = MedImage(arr)
    assert padding_mask(bare)[0, 0, 1] and padding_mask(bare).sum() == 1


def test_padding_mask_ignores_stale_per_slice_values():
    """After a change of slice count the per-slice values no longer line up: not applied."""
    img = MedImage(
        np.zeros((4, 2, 2), np.float32),
        meta={"padding": {"value": [0.0, 0.0], "range_limit": None}},
    )
    assert padding_mask(img) is None
    img = MedImage(
        np.zeros((2, 2, 2), np.float32), meta={"padding": {"value": 0.0, "range_limit": None}}
    )
    assert padding_mask(img).all()
