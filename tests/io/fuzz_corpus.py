"""Generated seed files for fuzzing the readers, and the byte-level mutations applied to them.

Every seed is made here from synthetic pixels (DICOM headers borrowed from the corpus files
``CT_small.dcm`` and ``emri_small.dcm``), so no binary blob lives in the repository. Seeds are
small (16×16 pixels and less) so that a random mutation often hits a header field.
"""

from __future__ import annotations

import copy
import gzip
import io
from collections.abc import Callable, Sequence

import numpy as np

#: byte patterns that break length and count fields in interesting ways
SPECIAL = (
    b"\xff\xff\xff\x7f",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x01\x00\x00\x00",
    b"\xff\xff\x00\x00",
    b"\x00\x80\x00\x00",
    b"\x00\x00\x80\x7f",  # float32 +inf
    b"\x00\x00\xc0\x7f",  # float32 NaN
)


def _pixels(shape: Sequence[int], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (0, 200) if info is None else (max(info.min, -1000), min(info.max, 4000))
    return rng.integers(lo, hi, size=tuple(shape)).astype(dtype)


def _dicom_bytes(ds) -> bytes:
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _dicom_seeds() -> dict[str, bytes]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    out: dict[str, bytes] = {}
    ct_path = get_testdata_file("CT_small.dcm", download=False)
    mr_path = get_testdata_file("emri_small.dcm", download=False)
    if ct_path is None or mr_path is None:
        return out
    ct = pydicom.dcmread(ct_path)
    ct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ct.Rows = ct.Columns = 16
    arr = _pixels((16, 16), "int16")
    arr[:2] = -2000
    ct.PixelData = arr.tobytes()
    ct.PixelPaddingValue = -2000
    ct["PixelPaddingValue"].VR = "SS"
    out["ct"] = _dicom_bytes(ct)

    rle = copy.deepcopy(ct)
    rle.compress(RLELossless, arr, encoding_plugin="pydicom")
    out["ct_rle"] = _dicom_bytes(rle)

    raw = copy.deepcopy(ct)
    raw.preamble = None
    del raw.file_meta
    buf = io.BytesIO()
    raw.save_as(buf, implicit_vr=True, little_endian=True)
    out["ct_raw"] = buf.getvalue()

    mono1 = copy.deepcopy(ct)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    mono1.BitsAllocated = mono1.BitsStored = 8
    mono1.HighBit = 7
    mono1.PixelRepresentation = 0
    del mono1.PixelPaddingValue
    mono1.PixelData = _pixels((16, 16), "uint8").tobytes()
    out["mono1"] = _dicom_bytes(mono1)

    mr = pydicom.dcmread(mr_path)
    mr.Rows = mr.Columns = 8
    mr.NumberOfFrames = 3
    frames = _pixels((3, 8, 8), "uint16")
    mr.PixelData = frames.tobytes()
    out["mr_multiframe"] = _dicom_bytes(mr)

    try:  # OpenJPEG needs at least 32×32 pixels for its default decomposition levels
        j2k = copy.deepcopy(mr)
        j2k.Rows = j2k.Columns = 32
        j2k.NumberOfFrames = 2
        pixels = _pixels((2, 32, 32), "uint16")
        j2k.PixelData = pixels.tobytes()
        j2k.compress(JPEG2000Lossless, pixels)
        out["mr_j2k"] = _dicom_bytes(j2k)
    except Exception:  # encoder plugin not installed
        pass
    return out


def _nifti_seeds() -> dict[str, bytes]:
    import nibabel as nib

    out: dict[str, bytes] = {}
    vol = _pixels((8, 8, 4), "float32").astype(np.float32)
    vol[0, 0, :] = np.nan
    img = nib.Nifti1Image(vol, np.diag([0.9, 0.9, 2.5, 1.0]))
    out["nii"] = img.to_bytes()
    img16 = nib.Nifti1Image(_pixels((8, 8, 3), "int16"), np.diag([1.0, 1.0, 3.0, 1.0]))
    img16.header.set_slope_inter(2.0, -10.0)
    out["nii_gz"] = gzip.compress(img16.to_bytes(), mtime=0)
    return out


def _png_seeds() -> dict[str, bytes]:
    from PIL import Image

    out: dict[str, bytes] = {}
    for key, arr in (
        ("png8", _pixels((16, 16), "uint8")),
        ("png16", _pixels((16, 16), "uint16")),
        ("png_rgb", _pixels((8, 8, 3), "uint8")),
    ):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out[key] = buf.getvalue()
    return out


def _tiff_seeds() -> dict[str, bytes]:
    import tifffile

    out: dict[str, bytes] = {}
    for key, arr, kwargs in (
        ("tif16", _pixels((16, 16), "uint16"), {}),
        (
            "tif_stack_deflate",
            _pixels((3, 16, 16), "uint8"),
            {"compression": "zlib", "photometric": "minisblack"},
        ),
        ("tif_rgb_tiled", _pixels((16, 16, 3), "uint8"), {"tile": (16, 16), "photometric": "rgb"}),
        ("tif_strips", _pixels((16, 16), "uint8"), {"rowsperstrip": 2}),
    ):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, **kwargs)
        out[key] = buf.getvalue()
    return out


def _npy_seeds() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, arr in (
        ("npy_f32", _pixels((8, 8), "float32").astype(np.float32)),
        ("npy_u16", _pixels((3, 8, 8), "uint16")),
    ):
        buf = io.BytesIO()
        np.save(buf, arr)
        out[key] = buf.getvalue()
    return out


#: file name suffix per seed family (the reader is sniffed from the bytes anyway)
SUFFIX = {
    "ct": ".dcm",
    "ct_rle": ".dcm",
    "ct_raw": ".dcm",
    "mono1": ".dcm",
    "mr_multiframe": ".dcm",
    "mr_j2k": ".dcm",
    "nii": ".nii",
    "nii_gz": ".nii.gz",
    "png8": ".png",
    "png16": ".png",
    "png_rgb": ".png",
    "tif16": ".tif",
    "tif_stack_deflate": ".tif",
    "tif_rgb_tiled": ".tif",
    "tif_strips": ".tif",
    "npy_f32": ".npy",
    "npy_u16": ".npy",
}

_MAKERS: tuple[Callable[[], dict[str, bytes]], ...] = (
    _dicom_seeds,
    _nifti_seeds,
    _png_seeds,
    _tiff_seeds,
    _npy_seeds,
)


def make_seeds() -> dict[str, bytes]:
    """Every seed file, by name (see :data:`SUFFIX`)."""
    seeds: dict[str, bytes] = {}
    for maker in _MAKERS:
        seeds.update(maker())
    return seeds


def mutate(data: bytes, edits: Sequence[tuple[int, int, int]]) -> bytes:
    """Apply ``edits``: (kind, position, value) each; position is taken modulo the length.

    Kinds: 0 set a byte, 1 flip a bit, 2 write a :data:`SPECIAL` pattern, 3 delete a run of
    bytes, 4 truncate, 5 duplicate a run of bytes (grows counts and lengths out of step).
    """
    buf = bytearray(data)
    for kind, position, value in edits:
        if not buf:
            break
        i = position % len(buf)
        k = kind % 6
        if k == 0:
            buf[i] = value & 0xFF
        elif k == 1:
            buf[i] ^= 1 << (value % 8)
        elif k == 2:
            pattern = SPECIAL[value % len(SPECIAL)]
            buf[i : i + len(pattern)] = pattern
        elif k == 3:
            del buf[i : i + 1 + value % 64]
        elif k == 4:
            del buf[max(i, 1) :]
        else:
            run = bytes(buf[i : i + 1 + value % 64])
            buf[i:i] = run
    return bytes(buf)
