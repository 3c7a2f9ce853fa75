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


def _dynamic_ct(folder, size: int = 24, positions: int = 3):
    """A dynamic CT series (a perfusion's time points) from CT_small: ``positions`` slices
    5 mm apart at each of 2 time points (TemporalPositionIdentifier 1, 2), stored −2000 outside
    a centred circle with PixelPaddingValue −2000, as a scanner fills the outside of its field
    of view. Time point 2 holds time point 1 mirrored left-right (so the same values: the same
    darkest measured value and range) stored 24 lower with Rescale Intercept −1000, the same
    HU, while its padding reads −3000 HU against −3024: padding per slice of each time point.
    Returns the series key and the outside of the circle."""
    from pydicom.uid import generate_uid

    from medsr.io.dicom import series_key

    template = pydicom.dcmread(corpus_path("CT_small.dcm"))
    lo = (int(template.Rows) - size) // 2
    crop = template.pixel_array[lo : lo + size, lo : lo + size].astype(np.int16)
    yy, xx = np.mgrid[:size, :size]
    outside = (yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 > (size / 2 - 1) ** 2
    uid = generate_uid()
    folder.mkdir()
    for t in range(2):
        for p in range(positions):
            ds = template.copy()
            stored = crop[:, ::-1] - 24 if t else crop.copy()
            stored = stored + 10 * p
            stored[outside] = -2000
            ds.Rows = ds.Columns = size
            ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
            ds.RescaleIntercept = -1000 if t else -1024
            ds.PixelPaddingValue = -2000
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-80, -90, 5.0 * p]
            ds.SliceLocation = 5.0 * p
            ds.TemporalPositionIdentifier = t + 1
            ds.InstanceNumber = t * positions + p + 1
            ds.save_as(folder / f"IM{t * positions + p:04d}.dcm", enforce_file_format=True)
    return series_key(uid), outside


def test_padding_of_a_dynamic_ct_read_over_time_is_kept_exact(tmp_path):
    """``medsr upscale DYN OUT --series KEY:all`` of a dynamic CT whose outside of the field of
    view is padding: every output pixel of a padding pixel is padding again (stored −2000, as
    the source), and the network never saw it — the result is, on every pixel, that of each
    time point read on its own (``KEY:N``, a volume). The padding of an image over time used to
    be ignored (``padding_mask`` kept DICOM padding to images without channels): it was
    interpolated as signal (``medsr upscale`` of a 40² series: 4728 of its 13920 output padding
    pixels no longer padding, pixels inside up to 1290 HU off each time point's own result)."""
    from medsr.api import upscale_file
    from medsr.io.dicom import read_dicom

    key, outside = _dynamic_ct(tmp_path / "dyn")
    image = read_dicom(tmp_path / "dyn", series_uid=f"{key}:all")
    assert image.channels == "time" and image.array.shape == (2, 3, 24, 24)
    assert image.meta["padding"]["value"] == [-3024.0] * 3 + [-3000.0] * 3  # (t, z), time-major
    up = np.repeat(np.repeat(outside, 2, 0), 2, 1)
    out = upscale_file(tmp_path / "dyn", tmp_path / "x2", series_uid=f"{key}:all")
    written = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    assert len(written) == 6
    for ds in written:
        stored = ds.pixel_array
        np.testing.assert_array_equal(stored == -2000, up)  # padding exact, nowhere else
    sr = medsr.upscale(image, 2, "default-x2")
    assert sr.meta["derivation"]["padding_pixels_kept"] == 6 * int(outside.sum())
    for t in range(2):
        phase = read_dicom(tmp_path / "dyn", series_uid=f"{key}:{t + 1}")
        np.testing.assert_allclose(
            sr.array[t], medsr.upscale(phase, 2, "default-x2").array, atol=1e-3
        )


def test_padding_of_a_dynamic_ct_read_over_time_is_kept_exact_through_plane(tmp_path):
    """``medsr upscale DYN OUT --through-plane --series KEY:all``: padding stays padding
    (stored −2000) exactly where each time point upscaled on its own (``KEY:N``) keeps it,
    nowhere else, and every other pixel is that time point's own result (to the stored
    integer). It used to be interpolated along z as signal (15846 of 26680 padding pixels
    kept on a 40² series)."""
    from medsr.api import upscale_file
    from medsr.io.dicom import read_dicom
    from medsr.pipeline import upscale_through_plane

    key, outside = _dynamic_ct(tmp_path / "dyn", size=16, positions=2)
    out = upscale_file(
        tmp_path / "dyn", tmp_path / "thin", series_uid=f"{key}:all", through_plane=True
    )
    stored = np.stack([pydicom.dcmread(f).pixel_array for f in sorted(out.glob("*.dcm"))])
    back = read_dicom(out, series_uid=":all").array
    nz = back.shape[1]
    assert stored.shape == (2 * nz, 16, 16)
    for t in range(2):
        phase = read_dicom(tmp_path / "dyn", series_uid=f"{key}:{t + 1}")
        alone, _ = upscale_through_plane(phase)
        pad = alone.array == alone.array.min()
        assert np.all(pad == outside)  # every slice: padding outside the circle, as measured
        np.testing.assert_array_equal(stored[t * nz : (t + 1) * nz] == -2000, pad)
        np.testing.assert_allclose(back[t][~pad], alone.array[~pad], atol=0.5 + 1e-3)


@pytest.mark.parametrize("through_plane", [False, True], ids=["in-plane", "through-plane"])
def test_nifti_nan_of_an_image_over_time_stays_where_it_was(tmp_path, through_plane):
    """A 4-D NIfTI (an fMRI/DWI series masked to NaN outside the brain), each time point NaN
    outside its own region (time point 2 holds time point 1 mirrored: the same values):
    upscaled (``medsr upscale``, in-plane or through-plane), NaN comes back exactly where each
    time point upscaled on its own has it — none lost, none invented — and every other voxel
    is that time point's own result. (This held before the fix for DICOM padding over time:
    the non-finite record was never limited to images without channels.)"""
    import nibabel as nib

    from medsr.api import upscale_file

    zz, yy, xx = np.mgrid[:3, :16, :20]
    vol = (100 + 20 * np.sin(yy / 3.0 + zz / 2.0) * np.cos(xx / 4.0)).astype(np.float32)
    vol[((yy - 9) / 7) ** 2 + ((xx - 8) / 8) ** 2 > 1] = np.nan  # off-centre: its mirror differs
    series = np.stack([vol, vol[..., ::-1]])  # (T, Z, Y, X)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(series.transpose(3, 2, 1, 0), affine), tmp_path / "in.nii.gz")
    for t in range(2):
        nib.save(nib.Nifti1Image(series[t].transpose(2, 1, 0), affine), tmp_path / f"t{t}.nii.gz")
    opts = {"through_plane": True} if through_plane else {"model": "fast-x2"}
    out = upscale_file(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", **opts)
    sr = np.asarray(nib.load(str(out)).dataobj).transpose(3, 2, 1, 0)
    assert sr.shape[0] == 2
    for t in range(2):
        alone = upscale_file(tmp_path / f"t{t}.nii.gz", tmp_path / f"t{t}_out.nii.gz", **opts)
        own = np.asarray(nib.load(str(alone)).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(sr[t]), np.isnan(own))
        assert np.isnan(own).any() and not np.isnan(own).all()
        np.testing.assert_allclose(sr[t], own, atol=1e-3)  # NaN where NaN, else equal
    if not through_plane:
        want = np.repeat(np.repeat(np.isnan(series), 2, axis=2), 2, axis=3)
        np.testing.assert_array_equal(np.isnan(sr), want)


@pytest.mark.parametrize("through_plane", [False, True], ids=["in-plane", "through-plane"])
def test_each_time_point_is_filled_normalised_and_clipped_as_on_its_own(tmp_path, through_plane):
    """A 4-D series whose time points' value ranges differ (a pre-contrast phase, one 3× brighter
    + 500, one at half - 20; NaN outside the field of view): upscaled whole (``medsr upscale``,
    in-plane with a learned model, or through-plane), each time point equals that time point
    upscaled on its own, to float rounding. No data was filled with the series' darkest value,
    the network's min-max normalisation and the clip to the input's range were the series' too:
    the brightest phase was up to 440 off its own result in-plane (30 through-plane), its
    border dragged towards the darkest phase's fill, the first phase's overshoot clipped at the
    brightest phase's maximum, i.e. not at all."""
    import nibabel as nib

    from medsr.api import upscale_file

    zz, yy, xx = np.mgrid[:3, :12, :12]
    vol = (100 + 40 * np.sin(yy / 2.0 + zz) * np.cos(xx / 1.7)).astype(np.float32)
    vol[((yy - 5.5) / 5) ** 2 + ((xx - 5.5) / 5) ** 2 > 1] = np.nan
    series = np.stack([vol, 3 * vol + 500, 0.5 * vol - 20])  # (T, Z, Y, X)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(series.transpose(3, 2, 1, 0), affine), tmp_path / "in.nii.gz")
    opts = {"through_plane": True} if through_plane else {"model": "fast-x2"}
    out = upscale_file(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", **opts)
    sr = np.asarray(nib.load(str(out)).dataobj).transpose(3, 2, 1, 0)
    assert sr.shape[0] == 3
    for t in range(3):
        nib.save(nib.Nifti1Image(series[t].transpose(2, 1, 0), affine), tmp_path / f"t{t}.nii.gz")
        alone = upscale_file(tmp_path / f"t{t}.nii.gz", tmp_path / f"t{t}_out.nii.gz", **opts)
        own = np.asarray(nib.load(str(alone)).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(sr[t]), np.isnan(own))
        np.testing.assert_allclose(sr[t], own, rtol=1e-5, atol=1e-3)
