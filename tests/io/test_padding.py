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
from tests.conftest import make_nan_nifti
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
    # an array that still holds NaN (one made in Python) is masked from its values
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


@pytest.mark.parametrize("suffix", [".nii.gz", ".npy"])
def test_nifti_nan_comes_back_as_nan_not_zero(tmp_path, suffix):
    """A NaN (or inf) voxel is no data: read as 0 with its place recorded, it used to be written
    back as 0 — a measured value. A float output holds NaN there again, nowhere else."""
    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    image = medsr.load_image(tmp_path / "in.nii.gz")
    out = medsr.save_image(image, tmp_path / f"out{suffix}")
    back = medsr.load_image(out)
    np.testing.assert_array_equal(padding_mask(back), nonfinite)
    np.testing.assert_array_equal(np.where(nonfinite, 0, back.array), image.array)
    assert np.isfinite(image.array).all()  # in memory: finite, the place recorded
    if suffix == ".nii.gz":
        stored = nib.load(str(out))
        assert stored.get_data_dtype() == np.float32
        assert np.isnan(np.asarray(stored.dataobj).transpose(2, 1, 0)[nonfinite]).all()
        side = (tmp_path / "out.json").read_text()
        assert f'"no_data": "NaN ({int(nonfinite.sum())} voxels' in side


def test_integer_nifti_with_non_finite_voxels_is_written_float32_with_nan(tmp_path):
    """Integer storage cannot hold NaN: a scaled integer NIfTI whose scaling overflows float32
    (inf, read as no data) is written float32 with NaN there, not integers with 0."""
    data = (np.arange(24, dtype=np.int32).reshape(4, 3, 2) - 12) * 2**24
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_data_dtype(np.int32)
    img.header.set_slope_inter(1e31, 0.0)
    nib.save(img, tmp_path / "v.nii.gz")
    image = medsr.load_image(tmp_path / "v.nii.gz")
    overflow = image.meta["nonfinite_mask"]
    assert overflow.any() and not overflow.all()
    stored = nib.load(str(medsr.save_image(image, tmp_path / "out.nii.gz")))
    assert stored.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.isnan(stored.get_fdata()).transpose(2, 1, 0), overflow)


def test_the_nonfinite_record_follows_the_grid():
    """In-plane ×s: each no-data pixel's s × s block (the pixels fill_blocks keeps exact);
    through-plane: an output slice where the slices on both sides hold none (keep_no_data's
    rule); a grid change without a rule drops the stale record."""
    from medsr.io.padding import carry_nonfinite, nonfinite_mask
    from medsr.slice_grid import keep_no_data

    mask = np.zeros((3, 4, 5), bool)
    mask[0] = True
    mask[:, 1, 2] = True
    image = MedImage(np.zeros((3, 4, 5), np.float32), meta={"nonfinite_mask": mask})
    up = carry_nonfinite(image, image.resampled(np.zeros((3, 12, 15), np.float32)), scale=3)
    np.testing.assert_array_equal(up.meta["nonfinite_mask"], np.kron(mask, np.ones((1, 3, 3))))
    tall = image.resampled(np.zeros((6, 4, 5), np.float32))
    assert nonfinite_mask(tall) is None and "nonfinite_mask" not in tall.meta
    through = carry_nonfinite(image, tall, axis=0).meta["nonfinite_mask"]
    kept = keep_no_data(np.zeros((6, 4, 5), np.float32), image.array, mask, axis=0)
    np.testing.assert_array_equal(through, kept)
    assert (
        through[0].all() and through[:, 1, 2].all() and through[1:].sum() == 5
    )  # slices 1-5: one voxel


def test_padding_of_an_image_over_time_is_masked_at_each_time_point_and_slice():
    """A grey image over time (``channels="time"``, ``(T, Z, Y, X)``: a dynamic series read
    with ``KEY:all``) has its DICOM padding masked as a volume has: one value for every plane,
    or one per slice of each time point, time-major (entry ``t·Z + z``). It used to be ignored
    (only non-finite values counted) and the padding was interpolated as signal. Colour keeps
    none (DICOM defines padding for grey pixels only); a list of another length (the image was
    resampled along z) is stale and not applied."""
    from medsr.io.padding import no_data_mask, padding_of_planes

    arr = np.zeros((2, 3, 4, 4), np.float32)
    values = [-3024.0, -3023.0, -3022.0, -3000.0, -2999.0, -2998.0]  # (t, z) → t·3 + z
    for k, v in enumerate(values):
        t, z = divmod(k, 3)
        arr[t, z, 0] = v  # row 0: this plane's own padding
        arr[t, z, 1] = values[(k + 1) % 6]  # row 1: another plane's padding value: data here
    arr[1, 2, 2, :2] = -2997.0  # inside phase 2, slice 2's range (its limit -2996)
    limits = [None] * 5 + [-2996.0]
    timed = MedImage(
        arr, channels="time", meta={"padding": {"value": values, "range_limit": limits}}
    )
    expected = np.zeros(arr.shape, bool)
    expected[:, :, 0] = True
    expected[1, 2, 2, :2] = True
    np.testing.assert_array_equal(padding_mask(timed), expected)
    # one value for all: every time point's planes
    one = MedImage(arr, channels="time", meta={"padding": {"value": -3024.0, "range_limit": None}})
    np.testing.assert_array_equal(padding_mask(one), arr == -3024.0)
    # a sample of the slices (what the self-check looks at) keeps each time point's values
    sub = MedImage(arr[:, [0, 2]], channels="time", meta=padding_of_planes(timed.meta, [0, 2], 3))
    np.testing.assert_array_equal(padding_mask(sub), expected[:, [0, 2]])
    # the CT fill below −1024 HU is no data at each time point too (no header needed)
    fill = np.zeros(arr.shape, bool)
    fill[:, :, 0] = True
    fill[1, 1] = False
    fill[1, 1, 3] = True  # each slice of each time point its own darkest constant
    ct_arr = np.where(fill, np.float32(-2048), np.float32(40))
    ct_arr[1, 1, 0] = -1500  # above that slice's fill: data (a slice holds one fill)
    ct = MedImage(ct_arr, channels="time", modality="CT", units="HU")
    np.testing.assert_array_equal(no_data_mask(ct), fill)
    stale = MedImage(arr[:, :2], channels="time", meta=timed.meta)  # 2·2 planes, 6 values
    assert padding_mask(stale) is None
    colour = MedImage(arr[:, :1], channels="RGB", meta=one.meta)
    assert padding_mask(colour) is None
