"""Issue 22, readers: every malformed input gets one clean medsr error, in bounded time and memory.

Each malformed input is generated here (from corpus headers or from scratch), never stored.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.uid import RLELossless

import medsr
from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputTooLargeError,
    InvalidHeaderError,
    MedSRError,
    MedSRWarning,
    UnreadableInputError,
    UnsupportedTransferSyntaxError,
)
from medsr.image import MedImage
from tests.io.conftest import dicom_corpus_path


def _ct() -> pydicom.Dataset:
    return pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))


def _rle_mr(rows: int | None = None) -> pydicom.Dataset:
    """MR_small compressed with RLE by pydicom; ``rows`` then overrides the header's Rows."""
    ds = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    if rows is not None:
        ds.Rows = rows
    return ds


def _within(seconds: float, fn):
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it overruns."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# ------------------------------------------------------------------------ 1. RLE panics
def test_rle_rows_disagreeing_with_data_is_a_clean_error(tmp_path, capfd):
    _rle_mr(rows=32).save_as(tmp_path / "x.dcm")
    with pytest.raises(InvalidHeaderError, match="Rows/Columns do not match"):
        medsr.load_image(tmp_path / "x.dcm")
    assert "panicked" not in capfd.readouterr().err  # pydicom's RLE decoder runs first


def test_decoder_panic_becomes_corrupt_input(tmp_path, monkeypatch):
    """pylibjpeg-rle raises pyo3_runtime.PanicException, a BaseException: caught all the same."""
    from medsr.io.dicom import pixels

    monkeypatch.setattr(pixels, "_PREFERRED_PLUGIN", {})  # let the Rust plugin go first
    _rle_mr(rows=32).save_as(tmp_path / "x.dcm")
    with pytest.raises(CorruptInputError, match="cannot be decoded"):
        medsr.load_image(tmp_path / "x.dcm")

    class PanicException(BaseException):  # what pyo3 raises; not an Exception subclass
        pass

    from pydicom.pixels.decoders.base import Decoder

    def panic(*_a, **_k):
        raise PanicException("index out of bounds")

    monkeypatch.setattr(Decoder, "as_array", panic)
    _rle_mr().save_as(tmp_path / "ok.dcm")
    with pytest.raises(CorruptInputError, match="PanicException"):
        medsr.load_image(tmp_path / "ok.dcm")


# ---------------------------------------------------------- 2. frame counts and the ceiling
@pytest.mark.parametrize("compressed", [False, True])
def test_absurd_number_of_frames_is_refused_before_allocation(tmp_path, compressed):
    ds = _rle_mr() if compressed else _ct()
    ds.NumberOfFrames = 2147483647
    ds.save_as(tmp_path / "frames.dcm")
    tracemalloc.start()
    try:
        with pytest.raises(InvalidHeaderError, match=r"2,?147,?483,?647"):
            _within(30, lambda: medsr.load_image(tmp_path / "frames.dcm"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_truncated_uncompressed_pixel_data(tmp_path):
    ds = _ct()
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(InvalidHeaderError, match="truncated"):
        medsr.load_image(tmp_path / "short.dcm")


def _write_all_formats(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    arr = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    paths = {
        "dicom": folder / "ct.dcm",
        "nifti": folder / "v.nii.gz",
        "png": folder / "p.png",
        "tiff": folder / "t.tif",
        "npy": folder / "a.npy",
    }
    _ct().save_as(paths["dicom"])
    nib.save(nib.Nifti1Image(arr.reshape(32, 32, 1).astype(np.int16), np.eye(4)), paths["nifti"])
    from PIL import Image

    Image.fromarray(arr).save(paths["png"])
    tifffile.imwrite(paths["tiff"], arr)
    np.save(paths["npy"], arr)
    return paths


def test_pixel_ceiling_applies_to_every_reader(tmp_path, monkeypatch):
    paths = _write_all_formats(tmp_path / "all")
    for path in paths.values():  # within the default ceiling, all read
        assert medsr.load_image(path).array.size > 0
    monkeypatch.setenv("MEDSR_MAX_PIXELS", "500")
    for fmt, path in paths.items():
        with pytest.raises(InputTooLargeError, match="MEDSR_MAX_PIXELS"):
            medsr.load_image(path)
        assert fmt


def test_series_ceiling_counts_every_slice(ct_template, tmp_path, monkeypatch):
    from pydicom.uid import generate_uid

    from tests.io.conftest import make_ct_slice, write_series

    uid = generate_uid()
    slices = [
        make_ct_slice(
            ct_template,
            pixels=np.zeros((8, 8), np.int16),
            ipp=(0, 0, k),
            series_uid=uid,
            instance=k + 1,
        )
        for k in range(4)
    ]
    folder = write_series(tmp_path / "s", slices)
    monkeypatch.setenv("MEDSR_MAX_PIXELS", str(8 * 8 * 3))
    with pytest.raises(InputTooLargeError, match="4 × 8 × 8"):
        medsr.load_image(folder)


# -------------------------------------------------------------------------- 3. TIFF
def _tiff_ifd_pointing_into_itself() -> bytes:
    """A 464-byte TIFF whose first IFD's next-pointer points 8 bytes into that same IFD.

    tifffile 2026.3.3 iterates such pages forever when asked for ``series`` (or ``imread``)
    before the page list is indexed; found by fuzzing (issue 22, item 3).
    """
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(256, dtype=np.uint8).reshape(16, 16), metadata=None)
    data = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, first + 2 + 12 * count, first + 8)
    return bytes(data)


def _tiff(
    width: int, length: int, *, rows_per_strip: int, compression: int = 1, strips: int = 1
) -> bytes:
    """A classic little-endian TIFF built by hand: 8-bit grey, ``strips`` strips of 64 bytes."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, length),
        (258, 3, 1, 8),
        (259, 3, 1, compression),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (278, 4, 1, rows_per_strip),
    ]
    n = len(entries) + 2
    data_at = 8 + 2 + 12 * n + 4 + (8 * strips if strips > 1 else 0)
    payload = bytes(range(64))
    extra = b""
    if strips == 1:
        entries += [(273, 4, 1, data_at), (279, 4, 1, len(payload))]
    else:
        offsets_at = 8 + 2 + 12 * n + 4
        entries += [(273, 4, strips, offsets_at), (279, 4, strips, offsets_at + 4 * strips)]
        extra = struct.pack(f"<{strips}I", *([data_at] * strips)) + struct.pack(
            f"<{strips}I", *([64] * strips)
        )
    ifd = struct.pack("<H", n)
    for tag, typ, cnt, value in sorted(entries):
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, cnt) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + extra + payload


def test_tiff_with_looping_ifd_pointer_does_not_hang(tmp_path):
    path = tmp_path / "loop.tif"
    path.write_bytes(_tiff_ifd_pointing_into_itself())
    img = _within(30, lambda: medsr.load_image(path))
    assert img.spatial_shape == (1, 16, 16)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            {"width": 100000, "length": 100000, "rows_per_strip": 100000},
            CorruptInputError,
            "announce",
        ),
        ({"width": 1, "length": 2**24, "rows_per_strip": 1}, CorruptInputError, "announce"),
        (
            {"width": 64, "length": 2**24, "rows_per_strip": 1, "compression": 8},
            CorruptInputError,
            "2000:1",
        ),
        ({"width": 16, "length": 16, "rows_per_strip": 1, "strips": 16}, None, None),
    ],
)
def test_tiff_sizes_are_checked_from_the_tags(tmp_path, kwargs, error, match):
    path = tmp_path / "t.tif"
    path.write_bytes(_tiff(**kwargs))
    assert path.stat().st_size < 1024
    if error is None:
        assert _within(30, lambda: medsr.load_image(path)).spatial_shape == (1, 16, 16)
        return
    with pytest.raises(error, match=match):
        _within(30, lambda: medsr.load_image(path))


def test_tiff_strip_beyond_the_end_of_file(tmp_path):
    data = bytearray(_tiff(16, 4, rows_per_strip=4))
    data = data[:-40]  # cut into the strip
    (tmp_path / "cut.tif").write_bytes(bytes(data))
    with pytest.raises(CorruptInputError, match="beyond the end of the file"):
        medsr.load_image(tmp_path / "cut.tif")


# --------------------------------------------------------------------- 4. zero-size images
def test_zero_size_images_fail_at_load(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 3), np.float32), np.eye(4)), tmp_path / "z.nii")
    np.save(tmp_path / "z.npy", np.zeros((0, 8), np.float32))
    for name in ("z.nii", "z.npy"):
        with pytest.raises(EmptyInputError, match="no pixels"):
            medsr.load_image(tmp_path / name)
    ds = _ct()
    ds.Rows = 0
    ds.save_as(tmp_path / "z.dcm")
    with pytest.raises(EmptyInputError, match="no pixels"):
        medsr.load_image(tmp_path / "z.dcm")


def test_zero_size_cli_info_exits_2_with_one_error_line(tmp_path):
    import subprocess
    import sys

    np.save(tmp_path / "z.npy", np.zeros((0, 8), np.float32))
    res = subprocess.run(
        [sys.executable, "-m", "medsr.cli", "info", str(tmp_path / "z.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and "no pixels" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1  # nothing printed before the error line


# ------------------------------------------------------------- 5. command-set elements
def test_group_0000_element_is_dropped_and_the_derived_object_writes(tmp_path):
    _ct().save_as(tmp_path / "ct.dcm")
    data = bytearray((tmp_path / "ct.dcm").read_bytes())
    at = data.find(b"\x08\x00\x20\x00DA")  # StudyDate (0008,0020) → (0000,0020): one flipped byte
    assert at > 0
    data[at : at + 2] = b"\x00\x00"
    (tmp_path / "g0.dcm").write_bytes(bytes(data))
    img = medsr.load_image(tmp_path / "g0.dcm")
    assert not [t for t in img.meta["datasets"][0].keys() if t >> 16 == 0]
    out = medsr.save_image(img, tmp_path / "out.dcm")
    assert pydicom.dcmread(out).SOPInstanceUID


# ------------------------------------------------------------------- 6. header sanity
@pytest.mark.parametrize(
    "attribute,value,match",
    [
        ("PixelSpacing", [1e300, 1e300], "PixelSpacing"),
        ("PixelSpacing", [-0.5, -0.5], "PixelSpacing"),
        ("PixelSpacing", [0, 0], "PixelSpacing"),
        ("PixelSpacing", ["nan", "1"], "PixelSpacing"),
        ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0], "ImageOrientationPatient"),
        ("ImageOrientationPatient", [1, 0, 0, 1, 0, 0], "ImageOrientationPatient"),
        ("ImagePositionPatient", [0, 0, 1e300], "ImagePositionPatient"),
        ("RescaleSlope", 0, "RescaleSlope"),
        ("RescaleSlope", "nan", "RescaleSlope"),
        ("RescaleSlope", 1e38, "RescaleSlope"),
        ("RescaleIntercept", "inf", "RescaleIntercept"),
    ],
)
def test_invalid_geometry_and_units_are_errors(tmp_path, attribute, value, match):
    ds = _ct()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DS values we set
        ds[attribute].value = value
        ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InvalidHeaderError, match=match):
        medsr.load_image(tmp_path / "bad.dcm")


def test_negative_slice_thickness_warns_and_is_not_copied(tmp_path):
    ds = _ct()
    ds.SliceThickness = -5
    ds.save_as(tmp_path / "st.dcm")
    with pytest.warns(MedSRWarning, match="SliceThickness is -5"):
        img = medsr.load_image(tmp_path / "st.dcm")
    assert img.spacing[0] == pytest.approx(float(ds.SpacingBetweenSlices))
    assert any("SliceThickness" in w for w in img.meta["header_warnings"])
    out = medsr.save_image(
        img.resampled(np.repeat(np.repeat(img.array, 2, 1), 2, 2)), tmp_path / "o.dcm"
    )
    written = pydicom.dcmread(out)
    assert "SliceThickness" in written and written.SliceThickness in (None, "")


def test_orientation_never_raises():
    huge = MedImage(np.zeros((1, 2, 2), np.float32), spacing=(1.0, 1e300, 1e300))
    assert isinstance(huge.orientation, str) and len(huge.orientation) == 3
    huge.summary()


# ------------------------------------------------------- 7. no library chatter on stderr
def test_library_messages_stay_off_the_console(tmp_path, capfd):
    # nibabel logs header fixes through its own StreamHandler
    loaded = medsr.load_image(_nifti_nibabel_fixes(tmp_path / "q.nii"))
    # tifffile logs warnings for this file before decoding it
    (tmp_path / "loop.tif").write_bytes(_tiff_ifd_pointing_into_itself())
    medsr.load_image(tmp_path / "loop.tif")
    # a corrupt TIFF: the library's message joins the error instead of the console
    (tmp_path / "bad.tif").write_bytes(
        b"II*\x00" + struct.pack("<I", 8) + b"\x01\x00" + b"\xff" * 30
    )
    with pytest.raises(MedSRError):
        medsr.load_image(tmp_path / "bad.tif")
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert loaded.meta.get("reader_messages")
    # the libraries' loggers are back as they were
    assert logging.getLogger("tifffile").propagate
    assert logging.getLogger("nibabel.global").handlers


def _nifti_nibabel_fixes(path: Path) -> Path:
    img = nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4))
    raw = bytearray(img.to_bytes())
    raw[252:254] = struct.pack("<h", 256)  # qform_code 256: nibabel logs that it resets it
    path.write_bytes(bytes(raw))
    return path


def test_concurrent_reads_keep_their_messages_apart(tmp_path, capfd):
    """The web service reads on several threads: each read gets its own library's messages,
    nothing is printed, and logging/warnings are as before once all reads are done."""
    nii = _nifti_nibabel_fixes(tmp_path / "q.nii")
    tif = tmp_path / "loop.tif"
    tif.write_bytes(_tiff_ifd_pointing_into_itself())
    before = (
        logging.getLogger("tifffile").propagate,
        list(logging.getLogger("nibabel.global").handlers),
    )
    results: list[tuple[str, list[str]]] = []
    errors: list[BaseException] = []

    def worker(path: Path) -> None:
        try:
            for _ in range(5):
                image = medsr.load_image(path)
                results.append((path.suffix, image.meta.get("reader_messages") or []))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in (nii, tif, nii, tif)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and len(results) == 20
    for suffix, messages in results:
        assert messages, suffix
        source = "nibabel" if suffix == ".nii" else "tifffile"
        assert all(m.startswith(source) for m in messages), (suffix, messages)
    assert capfd.readouterr().err == ""
    after = (
        logging.getLogger("tifffile").propagate,
        list(logging.getLogger("nibabel.global").handlers),
    )
    assert after == before


# ----------------------------------------------------------------- 8. sniffing, truncation
def test_dicom_cut_below_132_bytes_with_tiff_like_preamble(tmp_path):
    ds = _ct()
    ds.preamble = b"II*\x00" + bytes(124)
    ds.save_as(tmp_path / "full.dcm")
    head = (tmp_path / "full.dcm").read_bytes()[:100]
    assert head[:4] == b"II*\x00"
    assert medsr.load_image(tmp_path / "full.dcm").meta["format"] == "dicom"  # DICM wins
    (tmp_path / "cut.dcm").write_bytes(head)
    with pytest.raises(CorruptInputError, match="truncated DICOM"):
        medsr.load_image(tmp_path / "cut.dcm")
    (tmp_path / "cut.tif").write_bytes(head)  # misnamed too: still called truncated
    with pytest.raises(CorruptInputError, match="truncated"):
        medsr.load_image(tmp_path / "cut.tif")


def test_raw_dicom_is_recognised_whatever_the_suffix(tmp_path):
    ds = _ct()
    ds.preamble = None
    del ds.file_meta
    ds.save_as(tmp_path / "raw.bin", implicit_vr=True, little_endian=True)
    assert medsr.load_image(tmp_path / "raw.bin").meta["format"] == "dicom"


def test_12_bit_lossy_jpeg_is_unsupported_not_corrupt(tmp_path):
    """JPEG Extended with 12-bit samples (like pydicom's JPEG-lossy.dcm): Pillow cannot decode
    12-bit JPEG and libjpeg refuses this stream, so it is an unsupported variant."""
    from pydicom.encaps import encapsulate

    ds = _ct()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.51"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    # SOI, SOF1 (extended sequential, 12-bit precision, 128×128, 1 component), a scan whose
    # spectral selection (1…63) libjpeg refuses in sequential mode, as in JPEG-lossy.dcm, EOI
    sof1 = b"\xff\xc1" + struct.pack(">HBHHB", 11, 12, 128, 128, 1) + b"\x01\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + bytes([1, 63, 0])
    ds.PixelData = encapsulate([b"\xff\xd8" + sof1 + sos + bytes(16) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg12.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError, match="12-bit"):
        medsr.load_image(tmp_path / "jpeg12.dcm")


# --------------------------------------------------------------- 15. world coordinates
def test_summary_names_the_world_convention():
    img = medsr.load_image(dicom_corpus_path("CT_small.dcm"))
    s = img.summary()
    assert "world_center_mm" not in s
    ras, lps = np.array(s["world_center_ras_mm"]), np.array(s["world_center_lps_mm"])
    np.testing.assert_allclose(lps, ras * [-1, -1, 1])
    ds = _ct()  # the LPS centre is ImagePositionPatient + half the field of view
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    half = (int(ds.Rows) - 1) / 2 * float(ds.PixelSpacing[0])
    np.testing.assert_allclose(lps, ipp + np.array([half, half, 0.0]), atol=1e-3)


def test_a_pipe_or_a_device_is_not_read_as_an_empty_file(tmp_path):
    """A FIFO or ``/dev/zero`` given as input was reported as "is empty (0 bytes)" (its size
    is 0): now it is named for what it is, without reading from it (which could block)."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(UnreadableInputError, match="not a regular file"):
            medsr.load_image(path)
