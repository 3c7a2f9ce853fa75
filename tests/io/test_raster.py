"""PNG/TIFF/.npy: bit depth kept, units restored through the sidecar, bad files rejected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import medsr
from medsr.errors import CorruptInputError, InvalidParameterError, UnsupportedFormatError
from medsr.image import MedImage


def test_png_8bit_round_trip(tmp_path, corpus):
    img = medsr.load_image(corpus("camera.png"))
    assert img.spatial_shape == (1, 512, 512) and img.meta["stored_dtype"] == "uint8"
    out = medsr.save_image(img, tmp_path / "c.png")
    assert Image.open(out).mode == "L"
    np.testing.assert_array_equal(
        np.asarray(Image.open(out)), np.asarray(Image.open(corpus("camera.png")))
    )


def test_png_16bit_kept(tmp_path, rng):
    data = rng.integers(0, 65535, (33, 47), dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "s.png")
    img = medsr.load_image(tmp_path / "s.png")
    assert img.meta["stored_dtype"] == "uint16"
    np.testing.assert_array_equal(img.array[0], data)
    sr = medsr.upscale(img, scale=2, model="bicubic")
    out = medsr.save_image(sr, tmp_path / "sr.png")
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16 and back.shape == (66, 94)
    side = json.loads((tmp_path / "sr.json").read_text())
    assert side["spacing_mm_zyx"] == [1.0, 0.5, 0.5] and side["derived"] is True


def test_rgb_png(tmp_path, rng):
    data = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(data).save(tmp_path / "rgb.png")
    img = medsr.load_image(tmp_path / "rgb.png")
    assert img.channels == "RGB" and img.array.shape == (3, 1, 20, 24)
    np.testing.assert_array_equal(img.array[:, 0].transpose(1, 2, 0), data)
    gray = medsr.load_image(tmp_path / "rgb.png", luminance=True)
    assert gray.channels is None
    np.testing.assert_allclose(gray.array[0], data @ np.array([0.299, 0.587, 0.114]), atol=1e-3)
    sr = medsr.upscale(img, scale=2, model="nearest")
    out = medsr.save_image(sr, tmp_path / "rgb_x2.png")
    assert np.asarray(Image.open(out)).shape == (40, 48, 3)


def test_hu_to_png_and_back_keeps_units(tmp_path, rng):
    hu = rng.uniform(-1024, 3071, (1, 16, 16)).astype(np.float32)
    img = MedImage(hu, spacing=(3.0, 0.7, 0.7), modality="CT", units="HU")
    back = medsr.load_image(medsr.save_image(img, tmp_path / "ct.png"))
    assert back.modality == "CT" and back.units == "HU" and back.spacing == (3.0, 0.7, 0.7)
    step = (hu.max() - hu.min()) / 65535
    np.testing.assert_allclose(back.array, hu, atol=step)


def test_tiff_stack_16bit(tmp_path, rng):
    stack = rng.integers(0, 4096, (3, 10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", stack, photometric="minisblack")
    img = medsr.load_image(tmp_path / "v.tif")
    assert img.spatial_shape == (3, 10, 12)
    out = medsr.save_image(medsr.upscale(img, scale=2, model="linear"), tmp_path / "o.tiff")
    back = tifffile.imread(out)
    assert back.dtype == np.uint16 and back.shape == (3, 20, 24)
    assert back.max() <= stack.max()  # clipped to the input range: 12-bit stays 12-bit


def test_npy(tmp_path, corpus):
    img = medsr.load_image(corpus("t1_coronal_slice.npy"))
    assert img.spatial_shape[0] == 1
    out = medsr.save_image(img, tmp_path / "a.npy")
    np.testing.assert_array_equal(
        np.load(out), np.load(corpus("t1_coronal_slice.npy")).astype(np.float32)
    )


def test_volume_to_png_refused(tmp_path):
    with pytest.raises(InvalidParameterError, match="slices"):
        medsr.save_image(MedImage(np.zeros((2, 4, 4))), tmp_path / "v.png")
    assert not (tmp_path / "v.png").exists()


def test_truncated_png(tmp_path, corpus):
    (tmp_path / "t.png").write_bytes(corpus("camera.png").read_bytes()[:500])
    with pytest.raises(CorruptInputError):
        medsr.load_image(tmp_path / "t.png")


def test_unknown_bytes(tmp_path):
    (tmp_path / "x.png").write_bytes(b"hello, this is not an image at all" * 20)
    with pytest.raises(UnsupportedFormatError):
        medsr.load_image(tmp_path / "x.png")


def test_pickled_npy_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises((CorruptInputError, UnsupportedFormatError)):
        medsr.load_image(tmp_path / "o.npy")


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(2, 24),
    w=st.integers(2, 24),
    depth=st.sampled_from([np.uint8, np.uint16]),
    fmt=st.sampled_from(["png", "tif"]),
)
def test_integer_round_trip_exact(tmp_path_factory, h, w, depth, fmt):
    d = tmp_path_factory.mktemp("r")
    data = np.random.default_rng(h * w).integers(0, np.iinfo(depth).max, (h, w), dtype=depth)
    if fmt == "png":
        Image.fromarray(data).save(d / "in.png")
    else:
        tifffile.imwrite(d / "in.tif", data)
    img = medsr.load_image(d / f"in.{fmt}")
    out = medsr.save_image(img, d / f"out.{fmt}")
    back = np.asarray(Image.open(out)) if fmt == "png" else tifffile.imread(out)
    assert back.dtype == depth
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_transparent_alpha_channel_dropped_is_said(tmp_path, mode):
    """medsr reads colour/grey values only; a PNG whose alpha is not opaque everywhere loses its
    transparency, which a warning says (it was silent); an opaque alpha drops silently."""
    import warnings

    from PIL import Image

    bands = 4 if mode == "RGBA" else 2
    arr = np.full((12, 10, bands), 200, np.uint8)
    arr[..., -1] = 255
    Image.fromarray(arr, mode).save(tmp_path / "opaque.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        medsr.load_image(tmp_path / "opaque.png")
    arr[..., -1] = 0
    arr[:4, :4, -1] = 255
    Image.fromarray(arr, mode).save(tmp_path / "alpha.png")
    with pytest.warns(UserWarning, match="alpha channel with transparent pixels"):
        img = medsr.load_image(tmp_path / "alpha.png")
    assert img.channels == ("RGB" if mode == "RGBA" else None)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_signed_integer_values_survive_a_raster_exactly(tmp_path, suffix):
    """Integer values below 0 (an int16 TIFF, CT in HU) written to a 16-bit raster: stored with
    slope 1 and an integer intercept, so they read back exactly (a linear map onto 0…65535 put
    them up to 0.03 off the integers before)."""
    rng = np.random.default_rng(1)
    values = rng.integers(-1024, 3000, size=(1, 20, 30)).astype(np.float32)
    img = MedImage(values, spacing=(1.0, 0.5, 0.5), modality="CT", units="HU")
    back = medsr.load_image(medsr.save_image(img, tmp_path / f"hu{suffix}"))
    np.testing.assert_array_equal(back.array, values)


def test_png_and_tiff_outputs_say_in_the_file_that_they_are_derived(tmp_path):
    """A PNG/TIFF output said it was derived only in its JSON sidecar: shown alone (the sidecar
    left behind), nothing in the file told it from an acquired image. The PNG now carries
    Software and a Description (derived by medsr, how), the TIFF its Software tag."""
    import tifffile
    from PIL import Image

    import medsr

    img = MedImage(np.arange(64, dtype=np.float32).reshape(1, 8, 8), modality="CR")
    sr = medsr.upscale(img, 2, "bicubic")
    png = medsr.save_image(sr, tmp_path / "sr.png")
    info = Image.open(png).info
    assert info["Software"].startswith("medsr")
    assert info["Description"].startswith("derived by medsr, not an acquired image")
    assert "bicubic" in info["Description"]
    tif = medsr.save_image(sr, tmp_path / "sr_tiff.tif")
    assert tifffile.TiffFile(tif).pages[0].software.startswith("medsr")
    np.testing.assert_allclose(medsr.load_image(png).array, medsr.load_image(tif).array)


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(2, 24),
    w=st.integers(2, 24),
    depth=st.sampled_from([np.int8, np.int16, np.int32]),
    low=st.integers(-40000, 0),
)
def test_a_signed_tiff_comes_back_signed(tmp_path_factory, h, w, depth, low):
    """An int16 TIFF (or int8, int32) written back as a TIFF keeps its signed type and values
    (it came back uint16 with a rescale: a bicubic upscale's values then left the integer
    grid); a PNG, which has no signed pixels, stores the same integers with an intercept."""
    d = tmp_path_factory.mktemp("s")
    info = np.iinfo(depth)
    top = min(int(info.max), 1 << 24)  # MedImage holds float32: integers exact up to 2**24
    data = np.random.default_rng(h * w).integers(
        max(low, info.min), top, (h, w), dtype=depth, endpoint=True
    )
    tifffile.imwrite(d / "in.tif", data)
    img = medsr.load_image(d / "in.tif")
    back = tifffile.imread(medsr.save_image(img, d / "out.tif"))
    assert back.dtype == depth
    np.testing.assert_array_equal(back, data)
    up = medsr.upscale(img, 2, "bicubic")
    stored = tifffile.imread(medsr.save_image(up, d / "up.tif"))
    assert stored.dtype == depth
    expected = np.clip(np.rint(up.array[0].astype(np.float64)), info.min, info.max)
    np.testing.assert_array_equal(stored, expected)
    if expected.max() - expected.min() <= 65535:  # what 16 bits can hold exactly
        png = medsr.load_image(medsr.save_image(up, d / "up_png.png"))
        np.testing.assert_array_equal(png.array[0], expected)


def _nan_image(tmp_path, values: np.ndarray, nan: np.ndarray, units: str = "a.u.") -> MedImage:
    """``values`` (Z, Y, X) with NaN at ``nan``, written as a float NIfTI and read back (the
    reader records the NaN's places: meta["nonfinite_mask"])."""
    import nibabel as nib

    arr = np.where(nan, np.nan, values).astype(np.float32)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), tmp_path / "nan.nii.gz")
    image = medsr.load_image(tmp_path / "nan.nii.gz")
    np.testing.assert_array_equal(image.meta["nonfinite_mask"], nan)
    return image.replace(units=units)


@pytest.mark.parametrize(
    ("suffix", "integers"), [(".png", False), (".tif", False), (".png", True), (".tif", True)]
)
def test_no_data_in_png_tiff_is_a_stated_value_no_measured_pixel_holds(
    tmp_path, rng, suffix, integers
):
    """PNG/TIFF integers cannot hold NaN: the pixels where the source held none were written as
    0 without a word — a measured value (0 HU is water), and in a float image's rescale 0 also
    stretched the range. Now they get the lowest stored value, which no measured pixel holds
    (integers that reach it are shifted one step up: a measured 0 stays 0), the sidecar's
    stored_as.no_data says how many, which value and what it reads as, a NoDataStoredWarning
    says so, and the reader takes them for no data again."""
    from medsr.errors import NoDataStoredWarning

    z = 1 if suffix == ".png" else 3
    if integers:  # HU-like integers with measured zeros (water) beside the no data
        values = rng.integers(-20, 40, (z, 12, 10)).astype(np.float32)
        values[:, 5, 5] = 0.0
    else:
        values = rng.uniform(80.0, 120.0, (z, 12, 10)).astype(np.float32)
    nan = np.zeros(values.shape, bool)
    nan[:, :3, :4] = True
    nan[-1, 8, 8] = True
    image = _nan_image(tmp_path, values, nan, units="HU" if integers else "a.u.")
    out = tmp_path / f"out{suffix}"
    with pytest.warns(NoDataStoredWarning, match=f"{int(nan.sum())} pixels .* stored as 0"):
        medsr.save_image(image, out)
    side = json.loads((tmp_path / "out.json").read_text())
    record = side["stored_as"]["no_data"]
    assert record["pixels"] == int(nan.sum()) and record["value_stored"] == 0
    assert record["reserved"] is True and record["reads_as"] < values[~nan].min()
    stored = tifffile.imread(out) if suffix == ".tif" else np.asarray(Image.open(out))
    stored = stored.reshape(values.shape)
    assert (stored[nan] == 0).all() and (stored[~nan] > 0).all()
    back = medsr.load_image(out)
    np.testing.assert_array_equal(back.meta["nonfinite_mask"], nan)
    if integers:  # exact, the measured 0 included
        np.testing.assert_array_equal(back.array[~nan], values[~nan])
        assert back.array[0, 5, 5] == 0.0
    else:
        step = (values[~nan].max() - values[~nan].min()) / 65534
        np.testing.assert_allclose(back.array[~nan], values[~nan], atol=step)
    # written again as NIfTI: NaN where the source held none, as it was
    import nibabel as nib

    again = nib.load(str(medsr.save_image(back, tmp_path / "again.nii.gz"))).get_fdata()
    np.testing.assert_array_equal(np.isnan(again.transpose(2, 1, 0)), nan)


def test_a_raster_without_no_data_is_written_as_before(tmp_path, rng):
    """No NaN: no stored_as record, no warning, the full 16-bit range."""
    import warnings

    image = MedImage(rng.uniform(80.0, 120.0, (1, 12, 10)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = medsr.save_image(image, tmp_path / "plain.png")
    assert "stored_as" not in json.loads((tmp_path / "plain.json").read_text())
    stored = np.asarray(Image.open(out))
    assert stored.min() == 0 and stored.max() == 65535


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_a_float_raster_s_nan_is_no_data_as_a_nifti_s(tmp_path, suffix):
    """A ``.npy`` (or float TIFF) holding NaN/inf was read with them in its array, where a
    NIfTI's are read as 0 with their place recorded: ``medsr upscale x.npy y.npy
    --through-plane`` said "error: the volume contains NaN or infinite values" while the same
    volume as .nii.gz went through. Now the raster reader reads them as the NIfTI reader does
    (0, ``meta["nonfinite_mask"]``), every path treats them as no data, and a float output has
    NaN there again."""
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.slice_grid import no_data_kept

    yy, xx = np.mgrid[:16, :16]
    arr = np.stack([100 + 20 * np.sin(yy / 3 + k) * np.cos(xx / 4) for k in range(4)])
    arr = arr.astype(np.float32)
    arr[:, :, :3] = np.nan
    arr[2, 8, 8] = np.inf
    nonfinite = ~np.isfinite(arr)
    src = tmp_path / f"in{suffix}"
    np.save(src, arr) if suffix == ".npy" else tifffile.imwrite(src, arr)
    before = src.read_bytes()
    image = medsr.load_image(src)
    assert np.isfinite(image.array).all() and (image.array[nonfinite] == 0).all()
    np.testing.assert_array_equal(image.meta["nonfinite_mask"], nonfinite)
    out = tmp_path / "out.npy"
    res = CliRunner().invoke(
        app, ["upscale", str(src), str(out), "--through-plane", "--target-spacing", "0.5"]
    )
    assert res.exit_code == 0, res.output
    sr = np.load(out)
    want = no_data_kept(nonfinite, 8, 0)
    np.testing.assert_array_equal(np.isnan(sr), want)
    assert np.isfinite(sr[~want]).all() and 75 <= sr[~want].min() and sr[~want].max() <= 125
    assert src.read_bytes() == before


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_colour_no_data_counts_every_pixel_written_as_no_data(tmp_path, rng, suffix):
    """A colour image has no value to spare: each channel that held no data (NaN) at a pixel is
    stored as 0, a value measured pixels hold too. The sidecar counted only the pixels with no
    data in all three channels (1 here), while the 4 pixels with none in red alone had their red
    stored as 0 too: 5 pixels were written as no data and 1 said so. Now ``pixels`` counts
    where any channel held none, with ``channel_values`` and ``in_all_channels`` beside it, and
    the note and warning say that those channels are 0."""
    from medsr.errors import NoDataStoredWarning

    values = rng.integers(1, 256, (3, 1, 8, 8)).astype(np.float32)
    values[:, 0, 0, 0] = 0.0  # a measured black pixel
    nan = np.zeros(values.shape, bool)
    nan[0, 0, 2:4, 2:4] = True  # red held none
    nan[:, 0, 6, 6] = True  # no channel held any
    image = MedImage(np.where(nan, np.nan, values), spacing=(1.0, 1.0, 1.0), channels="RGB")
    out = tmp_path / f"rgb{suffix}"
    with pytest.warns(NoDataStoredWarning, match=r"5 pixels .* \(7 values\) stored as 0"):
        medsr.save_image(image, out)
    record = json.loads((tmp_path / "rgb.json").read_text())["stored_as"]["no_data"]
    assert record["pixels"] == 5 and record["channel_values"] == 7
    assert record["in_all_channels"] == 1
    assert record["value_stored"] == 0 and record["reserved"] is False
    assert "in one or more channels" in record["note"]
    stored = tifffile.imread(out) if suffix == ".tif" else np.asarray(Image.open(out))
    stored = np.moveaxis(stored.reshape(8, 8, 3), -1, 0)[:, None]
    assert (stored[nan] == 0).all()
    np.testing.assert_array_equal(stored[~nan], values[~nan])  # the other channels kept
