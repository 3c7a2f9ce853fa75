"""DICOM reader and derived-series writer.

Reading (:func:`read_dicom`) accepts one file (single- or multi-frame) or a folder holding one
series (files found recursively; non-DICOM files such as ``DICOMDIR`` or a readme are skipped).
Slices are sorted along the slice normal, checked for a consistent grid (orientation, size,
pixel spacing, even gaps) and stacked into a :class:`~medsr.image.MedImage`:

* pixels are decoded by pydicom (+ pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000, RLE); the
  Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence) is applied, so CT is in HU;
* ``MONOCHROME1`` is inverted so that high values are bright (``meta["monochrome1_reflect"]``
  lets the writer restore it exactly); palette colour and YBR become RGB
  (``channels="RGB"``, array ``(3, Z, Y, X)``);
* DICOM geometry (LPS) becomes the RAS affine of the image (see :mod:`medsr.image`).

Writing (:func:`write_dicom`) produces a *derived* series that a PACS accepts beside the
original: new Series/SOP Instance UIDs, same Study and Frame of Reference, ``DERIVED\\SECONDARY``,
Derivation Description/Code and Source Image Sequence, geometry updated per slice from the
image's affine, pixels back in the source's stored units (uncompressed Explicit VR Little
Endian). An image that did not come from DICOM is written as Secondary Capture.

``meta`` written by the reader (and used by the writer):

==========================  ================================================================
``format``                  ``"dicom"``
``datasets``                headers (pydicom Datasets without pixel data), in sorted slice
                            order; one dataset for a multi-frame object
``multiframe``              the source is one multi-frame object
``frame_order``             multi-frame only: source frame index of each slice of the array
``stored_dtype``            e.g. ``"uint16"``, ``"int16"``
``bits_stored``, ``bits_allocated``, ``pixel_representation``
``photometric``             the source's Photometric Interpretation
``rescale``                 ``(slope, intercept)`` of the first slice (each slice's own values
                            stay in its header)
``monochrome1_reflect``     ``lo + hi`` of the output range when MONOCHROME1 was inverted
``modality_lut``            a Modality LUT Sequence was applied (the writer drops it)
``window``                  ``(center, width)`` in the image's units (after any MONOCHROME1
                            inversion), for viewers; ``None`` if the source had none
``transfer_syntax``         the source's transfer syntax UID
``lossy``                   ``{"method": ..., "ratio": ...}`` if the source was lossy-compressed
``source_paths``            files read, in slice order
``source_shape``, ``source_spacing``, ``source_affine``   geometry as read, so a writer can
                            map resampled slices back to source slices by world position
``spacing_source``          which attribute gave the in-plane spacing
``has_geometry``            the source had Image Orientation/Position (Patient)
==========================  ================================================================
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputNotFoundError,
    InvalidParameterError,
    MedSRError,
    NotAnImageError,
    SeriesMismatchError,
    UnsupportedTransferSyntaxError,
)
from medsr.image import MedImage, affine_from_spacing
from medsr.io._atomic import atomic_dir, atomic_file, check_output

__all__ = ["read_dicom", "series_key", "write_dicom"]

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: SOP classes (or class prefixes) that carry no image to super-resolve.
_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registration, fiducials, segmentation, surfaces
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA/STL
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.68.",  # surface scans
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.6",
    "1.2.840.10008.5.1.4.1.1.481.7",
    "1.2.840.10008.5.1.4.1.1.481.8",
    "1.2.840.10008.5.1.4.1.1.481.9",
    "1.2.840.10008.1.3.10",  # DICOMDIR
)
_NON_IMAGE_MODALITIES = {
    "SEG",
    "SR",
    "RTSTRUCT",
    "RTPLAN",
    "RTRECORD",
    "PR",
    "KO",
    "DOC",
    "REG",
    "FID",
}

#: transfer syntaxes that are always lossy, and the Lossy Image Compression Method of each family.
_ALWAYS_LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.80": "ISO_14495_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.90": "ISO_15444_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.201": "ISO_15444_15",
    "1.2.840.10008.1.2.4.202": "ISO_15444_15",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}

#: enhanced multi-frame IODs: Image Type value 2 must stay PRIMARY, frames carry a Frame Type.
_ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF
    "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis
}

_GEOM_TOL_COS = 1e-3  # direction cosines that differ by less are "the same orientation"
_SPACING_RTOL = 1e-3  # pixel spacings within 0.1 % are "the same"


# =============================================================================== helpers
def series_key(uid: str) -> str:
    """Short, non-identifying handle of a Series Instance UID (accepted by ``series_uid=``)."""
    return hashlib.sha1(str(uid).encode()).hexdigest()[:8]


def _scrub(exc: BaseException) -> str:
    """Exception text without quoted values (which could hold patient data)."""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "…", str(exc)).strip()
    msg = msg.splitlines()[0] if msg else ""
    if len(msg) > 200:
        msg = msg[:200] + "…"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _floats(value: Any, n: int | None = None) -> np.ndarray | None:
    """A DICOM multi-valued numeric attribute as floats, or None if absent/malformed."""
    if value is None:
        return None
    try:
        seq = (
            list(value)
            if isinstance(value, list | tuple | pydicom.multival.MultiValue)
            else [value]
        )
        arr = np.array([float(v) for v in seq], dtype=float)
    except (TypeError, ValueError):
        return None
    if n is not None and arr.size != n:
        return None
    if not np.all(np.isfinite(arr)):
        return None
    return arr


def _first_float(value: Any) -> float | None:
    arr = _floats(value)
    return float(arr[0]) if arr is not None and arr.size else None


def _ds(value: float) -> DSfloat:
    """A float formatted to fit the 16-character DS limit."""
    return DSfloat(float(value), auto_format=True)


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if not uid:
        return "DICOM object of unknown class"
    name = UID(str(uid)).name
    return f"{name} object" if name != str(uid) else f"DICOM object of SOP class {uid}"


def _article(noun: str) -> str:
    return ("an " if noun[:1].upper() in "AEIOU" else "a ") + noun


def _non_image_reason(ds: Dataset, assume_pixels: bool = False) -> str | None:
    """Why this object is not an image (or None if it is one).

    ``assume_pixels``: the header was read without pixel data; only the SOP class/modality decide.
    """
    uid = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if (
        uid == SEGMENTATION_STORAGE
        or uid.startswith(SEGMENTATION_STORAGE + ".")
        or modality == "SEG"
    ):
        return (
            "it is a segmentation (DICOM SEG), not an image: open the image series it was drawn on"
        )
    if any(uid == p.rstrip(".") or uid.startswith(p) for p in _NON_IMAGE_PREFIXES):
        return f"it is {_article(_sop_name(ds))}, not an image"
    if modality in _NON_IMAGE_MODALITIES:
        return f"it is {_article(_sop_name(ds))} (modality {modality}), not an image"
    if assume_pixels:
        return None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return (
            f"it is {_article(_sop_name(ds))} without pixel data (the file may also be truncated)"
        )
    return None


def _check_complete(ds: Dataset, name: str) -> None:
    """An object without pixel data that also lacks what every image has was cut short."""
    if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return
    missing = [k for k in ("SOPClassUID", "Rows", "Columns", "BitsAllocated") if k not in ds]
    if missing:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{name}' stops before its pixel data "
            f"(no {', '.join(missing)})"
        )


def _transfer_syntax(ds: Dataset) -> UID:
    fm = getattr(ds, "file_meta", None)
    ts = fm.get("TransferSyntaxUID") if fm is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if little is False:
        return UID("1.2.840.10008.1.2.2")
    return UID("1.2.840.10008.1.2" if implicit in (True, None) else "1.2.840.10008.1.2.1")


def _check_decoder(ds: Dataset, name: str) -> None:
    """Raise UnsupportedTransferSyntaxError if no installed decoder handles the pixel data."""
    from pydicom.pixels import get_decoder

    ts = _transfer_syntax(ds)
    label = ts.name if ts.name != str(ts) else "an unknown transfer syntax"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"'{name}' is compressed with {label} ({ts}), which medsr cannot decode; "
            "convert it to an uncompressed or JPEG/JPEG-LS/JPEG 2000/RLE transfer syntax first "
            "(for example with dcmtk's dcmdjpeg or gdcmconv --raw)"
        ) from None
    if not decoder.is_available:
        missing = (
            "; ".join(decoder.missing_dependencies)
            if hasattr(decoder, "missing_dependencies")
            else ""
        )
        raise UnsupportedTransferSyntaxError(
            f"'{name}' is compressed with {label} ({ts}) and no installed decoder handles it"
            + (f" (install one of: {missing})" if missing else "")
        )


def _check_truncation(ds: Dataset, size: int, name: str) -> None:
    """Raise CorruptInputError if the last element read claims bytes beyond the end of the file."""
    tags = list(ds.keys())
    if not tags:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{name}' holds no data set after its header"
        )
    elem = ds.get_item(max(tags))
    tell = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{name}' ends {tell + length - size} bytes early"
        )


def _read_file(path: Path, *, stop_before_pixels: bool = False, name: str | None = None) -> Dataset:
    """dcmread with medsr errors: empty → EmptyInputError, unreadable → CorruptInputError."""
    from medsr.io import _looks_like_raw_dicom

    name = name or path.name
    size = path.stat().st_size
    if size == 0:
        raise EmptyInputError(f"input '{name}' is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(132)
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    if not has_preamble and not _looks_like_raw_dicom(head):
        raise CorruptInputError(f"'{name}' is not a DICOM file (no DICM signature)")
    try:
        ds = pydicom.dcmread(path, force=not has_preamble, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise CorruptInputError(f"'{name}' is not a readable DICOM file ({_scrub(exc)})") from None
    except Exception as exc:
        raise CorruptInputError(f"truncated or corrupt DICOM: '{name}' ({_scrub(exc)})") from None
    try:
        _check_truncation(ds, size, name)
        # touch every top-level element so that a malformed value fails here, not later
        for _ in ds:
            pass
    except MedSRError:
        raise
    except Exception as exc:
        raise CorruptInputError(f"truncated or corrupt DICOM: '{name}' ({_scrub(exc)})") from None
    return ds


# ======================================================================== pixel decoding
def _decode(ds: Dataset, name: str, index: int | None = None) -> tuple[np.ndarray, str]:
    """Decoded pixels (frames, rows, cols[, samples]) and the photometric interpretation they are in."""
    from pydicom.pixels import as_pixel_options, get_decoder

    ts = _transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
        opts = as_pixel_options(ds)
        opts.setdefault("transfer_syntax_uid", ts)
        arr, info = decoder.as_array(ds, index=index, validate=True, raw=False, **opts)
    except MedSRError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: the pixel data of '{name}' cannot be decoded ({_scrub(exc)})"
        ) from None
    photometric = str(
        info.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))
    )
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = 1 if index is not None else int(_first_float(ds.get("NumberOfFrames", 1)) or 1)
    if frames == 1 and arr.ndim == (2 if spp == 1 else 3):
        arr = arr[None]  # pydicom drops the frame axis of single-frame data
    return arr, photometric


def _bits(ds: Dataset) -> tuple[int, int, int]:
    ba = int(ds.get("BitsAllocated", 16) or 16)
    bs = int(ds.get("BitsStored", ba) or ba)
    pr = int(ds.get("PixelRepresentation", 0) or 0)
    return ba, bs, pr


def _stored_range(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    if pixel_representation:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def _fg_item(ds: Dataset, frame: int | None, seq: str) -> Dataset | None:
    """First item of functional group ``seq`` for ``frame`` (per-frame first, then shared)."""
    if frame is not None:
        per = ds.get("PerFrameFunctionalGroupsSequence")
        if per is not None and frame < len(per):
            inner = per[frame].get(seq)
            if inner:
                return inner[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        inner = shared[0].get(seq)
        if inner:
            return inner[0]
    return None


def _rescale(ds: Dataset, frame: int | None = None) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT for ``frame`` (functional groups first)."""
    item = _fg_item(ds, frame, "PixelValueTransformationSequence")
    source = item if item is not None and "RescaleSlope" in item else ds
    slope = _first_float(source.get("RescaleSlope"))
    intercept = _first_float(source.get("RescaleIntercept"))
    if slope is None or slope == 0:
        slope = 1.0
    return float(slope), float(intercept or 0.0)


def _modality_lut_range(ds: Dataset) -> tuple[float, float]:
    seq = ds.get("ModalityLUTSequence")
    data = (
        np.asarray(seq[0].LUTData, dtype=float) if seq and "LUTData" in seq[0] else np.array([0.0])
    )
    return float(data.min()), float(data.max())


def _to_gray_values(
    raw: np.ndarray, ds: Dataset, frames: Sequence[int | None]
) -> tuple[np.ndarray, float | None, bool]:
    """Apply the Modality LUT and MONOCHROME1 inversion. Returns (values, reflect, used_lut)."""
    from pydicom.pixels import apply_modality_lut

    out = np.empty(raw.shape, dtype=np.float32)
    used_lut = "ModalityLUTSequence" in ds
    if used_lut:
        out[:] = apply_modality_lut(raw, ds)
        lo, hi = _modality_lut_range(ds)
    else:
        for i, frame in enumerate(frames):
            slope, intercept = _rescale(ds, frame)
            out[i] = raw[i].astype(np.float64) * slope + intercept
        slope, intercept = _rescale(ds, frames[0] if frames else None)
        _, bs, pr = _bits(ds)
        smin, smax = _stored_range(bs, pr)
        lo, hi = sorted((smin * slope + intercept, smax * slope + intercept))
    reflect = None
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        reflect = float(lo + hi)
        np.subtract(reflect, out, out=out)
    return out, reflect, used_lut


def _palette_to_rgb(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """PALETTE COLOR → 8-bit RGB (16-bit LUT entries keep their high byte, as viewers do)."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(raw, ds)
    desc = ds.get("RedPaletteColorLookupTableDescriptor")
    bits = int(desc[2]) if desc is not None and len(desc) > 2 else 8
    if bits > 8:
        rgb = np.right_shift(rgb.astype(np.uint32), bits - 8)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _decode_slices(
    ds: Dataset, name: str, frames: Sequence[int] | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``frames`` of ``ds`` (None: all) → (array (Z,Y,X) or (3,Z,Y,X), info)."""
    if frames is not None and len(frames) == 1:
        raw, photometric = _decode(ds, name, index=frames[0])
        frame_ids: list[int | None] = [frames[0]]
    else:
        raw, photometric = _decode(ds, name, index=None)
        frame_ids = list(range(raw.shape[0])) if "NumberOfFrames" in ds else [None] * raw.shape[0]
        if frames is not None:
            raw = raw[list(frames)]
            frame_ids = list(frames)
    source_pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    info: dict[str, Any] = {"reflect": None, "modality_lut": False, "color_from": None}
    if source_pi == "PALETTE COLOR":
        rgb = _palette_to_rgb(raw, ds)
        info["color_from"] = "PALETTE COLOR"
        return np.moveaxis(rgb, -1, 0).astype(np.float32), info
    if raw.ndim == 4:
        pi = photometric.strip().upper()
        if pi.startswith("YBR") and pi not in ("YBR_ICT", "YBR_RCT"):
            from pydicom.pixels import convert_color_space

            raw = convert_color_space(raw, pi, "RGB", per_frame=True)
        info["color_from"] = source_pi
        return np.moveaxis(raw, -1, 0).astype(np.float32), info
    values, reflect, used_lut = _to_gray_values(raw, ds, frame_ids)
    info["reflect"] = reflect
    info["modality_lut"] = used_lut
    return values, info


# ============================================================================== geometry
def _plane(ds: Dataset, frame: int | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(IOP as 6 floats, IPP as 3 floats) from functional groups or the top level."""
    iop = ipp = None
    if frame is not None or "SharedFunctionalGroupsSequence" in ds:
        item = _fg_item(ds, frame, "PlaneOrientationSequence")
        if item is not None:
            iop = _floats(item.get("ImageOrientationPatient"), 6)
        item = _fg_item(ds, frame, "PlanePositionSequence")
        if item is not None:
            ipp = _floats(item.get("ImagePositionPatient"), 3)
    if iop is None:
        iop = _floats(ds.get("ImageOrientationPatient"), 6)
    if ipp is None and frame is None:
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
    if iop is not None:
        row, col = iop[:3], iop[3:]
        if (
            np.linalg.norm(row) < 0.5
            or np.linalg.norm(col) < 0.5
            or np.linalg.norm(np.cross(row, col)) < 0.5
        ):
            iop = None  # degenerate: ignore the orientation
    return iop, ipp


def _pixel_measures(ds: Dataset, frame: int | None = None) -> Dataset:
    item = _fg_item(ds, frame, "PixelMeasuresSequence")
    return item if item is not None else ds


def _inplane_spacing(ds: Dataset, frame: int | None = None) -> tuple[float, float, str]:
    """(row spacing = y, column spacing = x, source attribute) in mm."""
    pm = _pixel_measures(ds, frame)
    for holder, key in ((pm, "PixelSpacing"), (ds, "PixelSpacing"), (ds, "ImagerPixelSpacing")):
        vals = _floats(holder.get(key), 2)
        if vals is not None and np.all(vals > 0):
            return float(vals[0]), float(vals[1]), key
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        ux, uy = region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection")
        dx = _first_float(region.get("PhysicalDeltaX"))
        dy = _first_float(region.get("PhysicalDeltaY"))
        if ux == 3 and uy == 3 and dx and dy and dx > 0 and dy > 0:
            return abs(dy) * 10.0, abs(dx) * 10.0, "SequenceOfUltrasoundRegions"
    return 1.0, 1.0, "default"


def _slice_gap(ds: Dataset, frame: int | None = None) -> float:
    """Nominal slice spacing when positions cannot tell: SpacingBetweenSlices, SliceThickness, 1."""
    pm = _pixel_measures(ds, frame)
    for holder in (pm, ds):
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            v = _first_float(holder.get(key))
            if v is not None and v > 0:
                return abs(v)
    return 1.0


def _same(a: np.ndarray | None, b: np.ndarray | None, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, atol=atol, rtol=0))


def _fmt(v: Sequence[float] | None) -> str:
    return "none" if v is None else "\\".join(f"{x:g}" for x in v)


def _corner_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Affine of an image without patient geometry: axis-aligned, field of view starting at 0.

    Putting the *corner* of the first pixel (not its centre) at the origin makes the convention
    invariant under :meth:`MedImage.resampled`, so a written and re-read image keeps its centre.
    """
    sz, sy, sx = spacing
    return affine_from_spacing(spacing, origin=(sx / 2, sy / 2, sz / 2))


def _stack_geometry(
    iops: list[np.ndarray | None],
    ipps: list[np.ndarray | None],
    pixel_spacing: tuple[float, float],
    fallback_gap: float,
    what: str = "slices",
) -> tuple[list[int], np.ndarray, tuple[float, float, float], bool]:
    """Sort slices along the normal and check the grid. Returns (order, affine, spacing, has_geometry)."""
    n = len(iops)
    sy, sx = pixel_spacing
    ref = next((i for i in iops if i is not None), None)
    for i, iop in enumerate(iops):
        if not _same(iop, ref, _GEOM_TOL_COS):
            raise SeriesMismatchError(
                f"the {what} do not share one orientation (ImageOrientationPatient differs: "
                f"{_fmt(ref)} vs {_fmt(iop)} at {what[:-1]} {i + 1}); "
                "a localizer or a second stack may be mixed in: choose one series"
            )
    have_ipp = [p is not None for p in ipps]
    if ref is None or not all(have_ipp):
        if any(have_ipp) and not all(have_ipp) and n > 1:
            raise SeriesMismatchError(
                f"some {what} have a position (ImagePositionPatient) and others do not"
            )
        if ref is not None and n == 1 and ipps[0] is None:
            ipps = [np.zeros(3)]
        else:
            spacing = (fallback_gap, sy, sx)
            return list(range(n)), _corner_affine(spacing), spacing, False
    row = ref[:3] / np.linalg.norm(ref[:3])
    col = ref[3:] / np.linalg.norm(ref[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    pos = np.array([float(np.dot(normal, p)) for p in ipps])
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    sorted_ipp = np.array([ipps[i] for i in order], dtype=float)
    if n > 1:
        gaps = np.diff(pos[order])
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            raise SeriesMismatchError(
                f"{dup.size + 1} or more {what} share the same position "
                f"({pos[order][dup[0]]:.2f} mm along the slice normal); the series may hold several "
                "echoes, phases or time points: split it into one folder per volume"
            )
        step = (sorted_ipp[-1] - sorted_ipp[0]) / (n - 1)
        dz = float(np.dot(normal, step))
        tol = max(0.02 * dz, 0.01)
        if np.max(np.abs(gaps - dz)) > tol:
            raise SeriesMismatchError(
                f"the gaps between {what} are not uniform (from {gaps.min():.3f} to {gaps.max():.3f} mm; "
                "missing or overlapping slices?): medsr needs an evenly spaced volume"
            )
        expected = sorted_ipp[0] + np.arange(n)[:, None] * step[None, :]
        if np.max(np.linalg.norm(sorted_ipp - expected, axis=1)) > max(tol, 0.05):
            raise SeriesMismatchError(
                f"the {what} positions (ImagePositionPatient) do not lie on a straight line: "
                "the series is not one regular volume"
            )
    else:
        step = normal * fallback_gap
    m = np.eye(4)
    m[:3, 0] = row * sx
    m[:3, 1] = col * sy
    m[:3, 2] = step
    m[:3, 3] = sorted_ipp[0]
    affine = _LPS_TO_RAS @ m
    spacing = (float(np.linalg.norm(step)), sy, sx)
    return order, affine, spacing, True


# ================================================================================ reading
def read_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    luminance: bool = False,
    frame: int | None = None,
) -> MedImage:
    """Read a DICOM file (single- or multi-frame) or a series folder into a :class:`MedImage`.

    Args:
        path: a DICOM file, or a folder holding one series (searched recursively).
        series_uid: choose one series when the folder holds several: the full Series Instance
            UID or the short key printed in the error message (:func:`series_key`).
        luminance: convert colour to one grayscale channel (ITU-R BT.601 luma).
        frame: read only this 0-based frame of a multi-frame file (or slice of a sorted series).

    Raises:
        EmptyInputError, CorruptInputError, NotAnImageError, UnsupportedTransferSyntaxError,
        SeriesMismatchError, InvalidParameterError (frame out of range), InputNotFoundError.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"input '{p}' does not exist")
    if frame is not None and (not isinstance(frame, int | np.integer) or frame < 0):
        raise InvalidParameterError(f"frame must be a non-negative integer, got {frame!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = _read_folder(p, series_uid, frame) if p.is_dir() else _read_single(p, frame)
        except MedSRError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # anything pydicom/numpy did not expect: never a traceback
            raise CorruptInputError(
                f"truncated or corrupt DICOM: '{p.name}' ({_scrub(exc)})"
            ) from None
    if luminance:
        from medsr.io import to_luminance

        image = to_luminance(image)
    return image


def _strip_pixels(ds: Dataset) -> Dataset:
    for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "DataSetTrailingPadding"):
        if key in ds:
            del ds[key]
    return ds


def _window(ds: Dataset, reflect: float | None) -> tuple[float, float] | None:
    holder: Dataset = ds
    if "WindowCenter" not in ds:
        item = _fg_item(
            ds, 0 if "PerFrameFunctionalGroupsSequence" in ds else None, "FrameVOILUTSequence"
        )
        if item is None:
            return None
        holder = item
    center = _first_float(holder.get("WindowCenter"))
    width = _first_float(holder.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    if reflect is not None:
        center = reflect - center
    return float(center), float(width)


def _lossy_info(ds: Dataset, expected_bytes: int) -> dict[str, Any] | None:
    ts = str(_transfer_syntax(ds))
    flagged = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    lossy_ts = ts in _ALWAYS_LOSSY
    if not (flagged or lossy_ts):
        return None
    info: dict[str, Any] = {
        "already_recorded": flagged,
        "method": _LOSSY_METHOD.get(ts),
        "ratio": None,
    }
    elem = ds.get_item("PixelData") if "PixelData" in ds else None
    stored = len(elem.value) if elem is not None and elem.value is not None else 0
    if lossy_ts and stored > 0:
        info["ratio"] = round(expected_bytes / stored, 2)
    return info


def _units(ds: Dataset, modality: str) -> str:
    if modality == "CT":
        return "HU"
    if modality == "PT":
        units = str(ds.get("Units", "") or "").strip()
        return units or "a.u."
    return "a.u."


def _base_meta(ds: Dataset, info: dict[str, Any]) -> dict[str, Any]:
    ba, bs, pr = _bits(ds)
    color_from = info.get("color_from")
    if color_from == "PALETTE COLOR":
        ba = bs = 8
        pr = 0
    return {
        "format": "dicom",
        "stored_dtype": f"{'int' if pr else 'uint'}{ba}",
        "bits_stored": bs,
        "bits_allocated": ba,
        "pixel_representation": pr,
        "photometric": str(ds.get("PhotometricInterpretation", "")).strip(),
        "monochrome1_reflect": info.get("reflect"),
        "modality_lut": bool(info.get("modality_lut")),
        "color_from": color_from,
        "transfer_syntax": str(_transfer_syntax(ds)),
    }


def _read_single(p: Path, frame: int | None) -> MedImage:
    ds = _read_file(p)
    reason = _non_image_reason(ds, assume_pixels=True)
    if not reason:
        _check_complete(ds, p.name)
        reason = _non_image_reason(ds)
    if reason:
        raise NotAnImageError(f"'{p.name}' cannot be super-resolved: {reason}")
    _check_decoder(ds, p.name)
    nframes = int(_first_float(ds.get("NumberOfFrames", 1)) or 1)
    multiframe = "NumberOfFrames" in ds
    if frame is not None and frame >= nframes:
        raise InvalidParameterError(
            f"frame {frame} does not exist: '{p.name}' has {nframes} frame(s) (0-based)"
        )
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    ba = int(ds.get("BitsAllocated", 16) or 16)

    # ---------------------------------------------------------------- geometry per frame
    frames = list(range(nframes))
    has_fg = (
        "PerFrameFunctionalGroupsSequence" in ds
        and len(ds.PerFrameFunctionalGroupsSequence) == nframes
    )
    sy, sx, spacing_src = _inplane_spacing(ds, 0 if has_fg else None)
    if has_fg:
        planes = [_plane(ds, f) for f in frames]
        iops = [pl[0] for pl in planes]
        ipps = [pl[1] for pl in planes]
        gap = _slice_gap(ds, 0)
    else:
        iop, ipp = _plane(ds)
        gap = _slice_gap(ds)
        if iop is not None and ipp is not None:
            normal = np.cross(iop[:3], iop[3:])
            normal /= np.linalg.norm(normal)
            iops = [iop] * nframes
            ipps = [ipp + normal * gap * f for f in frames]
        else:
            iops = [iop] * nframes
            ipps = [ipp] * nframes if nframes == 1 else [None] * nframes
    if frame is not None:
        iops, ipps = [iops[frame]], [ipps[frame]]
        _, affine, spacing, has_geom = _stack_geometry(iops, ipps, (sy, sx), gap, "frames")
        order = [frame]
    else:
        order, affine, spacing, has_geom = _stack_geometry(iops, ipps, (sy, sx), gap, "frames")

    # ---------------------------------------------------------------------- pixels
    arr, info = _decode_slices(
        ds, p.name, order if (frame is not None or order != frames) else None
    )
    meta = _base_meta(ds, info)
    expected = rows * cols * spp * nframes * max(ba, 8) // 8
    meta["lossy"] = _lossy_info(ds, expected)
    modality = str(ds.get("Modality", "") or "OT").strip() or "OT"
    window = _window(ds, info.get("reflect")) if arr.ndim == 3 else None
    meta.update(
        {
            "datasets": [_strip_pixels(ds)],
            "multiframe": multiframe,
            "frame_order": order if multiframe else None,
            "rescale": _rescale(ds, order[0] if has_fg else None),
            "window": window,
            "source_paths": [str(p)],
            "spacing_source": spacing_src,
            "has_geometry": has_geom,
        }
    )
    return _finish(arr, spacing, affine, modality, _units(ds, modality), meta, info)


def _finish(
    arr: np.ndarray,
    spacing: tuple[float, float, float],
    affine: np.ndarray,
    modality: str,
    units: str,
    meta: dict[str, Any],
    info: dict[str, Any],
) -> MedImage:
    channels = "RGB" if arr.ndim == 4 else None
    if channels:
        units = "a.u."
    meta["source_shape"] = tuple(int(s) for s in arr.shape[-3:])
    meta["source_spacing"] = tuple(float(s) for s in spacing)
    meta["source_affine"] = np.asarray(affine, dtype=float).tolist()
    history = ("read DICOM",)
    return MedImage(
        array=arr,
        spacing=spacing,
        affine=affine,
        modality=modality,
        channels=channels,
        units=units,
        meta=meta,
        history=history,
    )


def _collect(folder: Path) -> tuple[list[tuple[Path, Dataset]], list[str]]:
    """Headers of every DICOM image under ``folder`` (recursively) and names of non-image objects."""
    from medsr.io import _looks_like_raw_dicom

    images: list[tuple[Path, Dataset]] = []
    skipped: list[str] = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            size = f.stat().st_size
            if size < 8:
                continue
            with open(f, "rb") as fh:
                head = fh.read(132)
        except OSError:
            continue
        if not ((len(head) >= 132 and head[128:132] == b"DICM") or _looks_like_raw_dicom(head)):
            continue  # readme, thumbnails, ... : not DICOM, skip quietly
        rel = f.name  # file name only: sub-folder names may carry patient names
        ds = _read_file(f, stop_before_pixels=True, name=rel)
        uid = str(ds.get("SOPClassUID", "") or "")
        if uid == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            continue
        reason = _non_image_reason(ds, assume_pixels=True)
        if not reason and "Rows" not in ds:
            reason = f"it is {_article(_sop_name(ds))} without an image"
        if reason:
            skipped.append(_sop_name(ds))
            continue
        images.append((f, ds))
    return images, skipped


def _choose_series(
    groups: dict[str, list[tuple[Path, Dataset]]], series_uid: str | None, folder: Path
):
    if series_uid is not None:
        wanted = str(series_uid).strip()
        hits = [u for u in groups if u == wanted] or [
            u for u in groups if series_key(u).startswith(wanted.lower())
        ]
        if len(hits) != 1:
            raise SeriesMismatchError(
                f"series '{wanted}' is not in '{folder.name}'; it holds: {_describe_series(groups)}"
            )
        return hits[0]
    if len(groups) > 1:
        raise SeriesMismatchError(
            f"'{folder.name}' holds {len(groups)} series: {_describe_series(groups)}. "
            "Choose one with --series KEY (Python: series_uid=KEY), KEY being the 8-character key "
            "shown or the full Series Instance UID"
        )
    return next(iter(groups))


def _describe_series(groups: dict[str, list[tuple[Path, Dataset]]]) -> str:
    parts = []
    for uid, members in groups.items():
        ds = members[0][1]
        desc = str(ds.get("SeriesDescription", "") or "").strip()
        modality = str(ds.get("Modality", "") or "OT").strip()
        label = f"{series_key(uid)} ({modality}"
        if desc:
            label += f", '{desc[:40]}'"
        label += f", {len(members)} file{'s' if len(members) != 1 else ''})"
        parts.append(label)
    return "; ".join(parts)


def _check_consistent(members: list[tuple[Path, Dataset]]) -> None:
    ref_path, ref = members[0]

    def fail(what: str, a: str, b: str, path: Path) -> None:
        raise SeriesMismatchError(
            f"the images of this series differ in {what} ({a} in '{ref_path.name}' vs {b} in '{path.name}'): "
            "medsr reads one regular volume at a time"
        )

    r_size = (int(ref.get("Rows", 0) or 0), int(ref.get("Columns", 0) or 0))
    r_ps = _inplane_spacing(ref)
    r_pi = str(ref.get("PhotometricInterpretation", "")).strip()
    r_spp = int(ref.get("SamplesPerPixel", 1) or 1)
    for path, ds in members[1:]:
        size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if size != r_size:
            fail(
                "image size (Rows/Columns)",
                f"{r_size[0]}×{r_size[1]}",
                f"{size[0]}×{size[1]}",
                path,
            )
        ps = _inplane_spacing(ds)
        if not np.allclose(ps[:2], r_ps[:2], rtol=_SPACING_RTOL, atol=1e-6):
            fail(
                "pixel spacing (PixelSpacing)",
                f"{r_ps[0]:g}\\{r_ps[1]:g} mm",
                f"{ps[0]:g}\\{ps[1]:g} mm",
                path,
            )
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        pi = str(ds.get("PhotometricInterpretation", "")).strip()
        if spp != r_spp or pi != r_pi:
            fail("colour format (PhotometricInterpretation)", r_pi, pi, path)
        iop_a, iop_b = _plane(ref)[0], _plane(ds)[0]
        if not _same(iop_a, iop_b, _GEOM_TOL_COS):
            fail("slice orientation (ImageOrientationPatient)", _fmt(iop_a), _fmt(iop_b), path)


def _read_folder(folder: Path, series_uid: str | None, frame: int | None) -> MedImage:
    images, skipped = _collect(folder)
    if not images:
        if skipped:
            kinds = ", ".join(sorted(set(skipped)))
            raise NotAnImageError(
                f"'{folder.name}' holds DICOM objects but no images (found: {kinds})"
            )
        raise EmptyInputError(f"'{folder.name}' holds no DICOM files")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for f, ds in images:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or "unknown"), []).append((f, ds))
    uid = _choose_series(groups, series_uid, folder)
    members = groups[uid]
    if len(members) == 1:
        return _read_single(members[0][0], frame)
    multi = [f for f, ds in members if int(_first_float(ds.get("NumberOfFrames", 1)) or 1) > 1]
    if multi:
        raise SeriesMismatchError(
            f"this series mixes {len(multi)} multi-frame object(s) with other files; "
            "read each multi-frame file on its own"
        )
    _check_consistent(members)
    ref = members[0][1]
    sy, sx, spacing_src = _inplane_spacing(ref)
    planes = [_plane(ds) for _, ds in members]
    gap = _slice_gap(ref)
    iops = [pl[0] for pl in planes]
    ipps = [pl[1] for pl in planes]
    if all(p is None for p in ipps):
        # no positions: keep the acquisition order
        def inst(ds: Dataset) -> float:
            v = _first_float(ds.get("InstanceNumber"))
            return v if v is not None else 0.0

        by_number = sorted(range(len(members)), key=lambda i: inst(members[i][1]))
        members = [members[i] for i in by_number]
        iops = [iops[i] for i in by_number]
        ipps = [ipps[i] for i in by_number]
    order, affine, spacing, has_geom = _stack_geometry(iops, ipps, (sy, sx), gap, "slices")
    members = [members[i] for i in order]
    if frame is not None:
        if frame >= len(members):
            raise InvalidParameterError(
                f"slice {frame} does not exist: the series has {len(members)} slices (0-based)"
            )
        if has_geom:
            offset = np.eye(4)
            offset[2, 3] = frame
            affine = affine @ offset
        members = [members[frame]]

    arrays = []
    datasets = []
    info: dict[str, Any] = {}
    for f, _header in members:
        rel = f.name  # file name only: sub-folder names may carry patient names
        ds = _read_file(f, name=rel)
        _check_complete(ds, rel)
        reason = _non_image_reason(ds)
        if reason:
            raise NotAnImageError(f"'{rel}' cannot be super-resolved: {reason}")
        _check_decoder(ds, rel)
        arr, info_k = _decode_slices(ds, rel, None)
        if not info:
            info = info_k
        arrays.append(arr)
        datasets.append(ds)
    channel_axis = 1 if arrays[0].ndim == 4 else 0
    stacked = np.concatenate(arrays, axis=channel_axis)
    ref_ds = datasets[0]
    meta = _base_meta(ref_ds, info)
    rows, cols = int(ref_ds.Rows), int(ref_ds.Columns)
    spp = int(ref_ds.get("SamplesPerPixel", 1) or 1)
    meta["lossy"] = _lossy_info(ref_ds, rows * cols * spp * max(_bits(ref_ds)[0], 8) // 8)
    modality = str(ref_ds.get("Modality", "") or "OT").strip() or "OT"
    window = _window(ref_ds, info.get("reflect")) if stacked.ndim == 3 else None
    meta.update(
        {
            "datasets": [_strip_pixels(ds) for ds in datasets],
            "multiframe": False,
            "frame_order": None,
            "rescale": _rescale(ref_ds),
            "window": window,
            "source_paths": [str(f) for f, _ in members],
            "spacing_source": spacing_src,
            "has_geometry": has_geom,
        }
    )
    return _finish(stacked, spacing, affine, modality, _units(ref_ds, modality), meta, info)


# ================================================================================ writing
_REMOVE_ALWAYS = (
    0x00880200,  # Icon Image Sequence
    0x00280106,  # Smallest Image Pixel Value
    0x00280107,  # Largest Image Pixel Value
    0x00280108,  # Smallest Pixel Value in Series
    0x00280109,  # Largest Pixel Value in Series
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0xFFFCFFFC,  # Data Set Trailing Padding
    0x00082112,  # Source Image Sequence (replaced)
    0x00089215,  # Derivation Code Sequence (replaced)
    0x00282000,  # ICC profile only applies to the source colour space (kept for true RGB below)
)
_PALETTE_TAGS = (
    0x00281101, 0x00281102, 0x00281103, 0x00281104, 0x00281199,
    0x00281201, 0x00281202, 0x00281203, 0x00281204,
    0x00281221, 0x00281222, 0x00281223, 0x00281224,
)  # fmt: skip
_MONO_ONLY_TAGS = (
    0x00281050,
    0x00281051,
    0x00281055,
    0x00283010,
    0x20500020,
    0x00281052,
    0x00281053,
    0x00281054,
)


def _medsr_version() -> str:
    try:
        from medsr import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - partial installs
        return "unknown"


def _derivation_text(image: MedImage) -> str:
    deriv = image.meta.get("derivation") or {}
    parts = [f"medsr {_medsr_version()}"]
    if deriv:
        desc = str(deriv.get("method", "resampling"))
        extras = []
        if deriv.get("model") is not None:
            extras.append(f"model {deriv['model']}")
        if deriv.get("model_version"):
            extras.append(f"model version {deriv['model_version']}")
        if deriv.get("scale") is not None:
            extras.append(f"scale x{deriv['scale']}")
        if deriv.get("axes"):
            extras.append(str(deriv["axes"]))
        if deriv.get("model_checksum"):
            extras.append(str(deriv["model_checksum"]))
        parts.append(desc + (f" ({', '.join(extras)})" if extras else ""))
        if deriv.get("summary"):  # fidelity safeguards (medsr.safeguards.provenance)
            parts.append(str(deriv["summary"]))
    steps = [h for h in image.history if h != "read DICOM"]
    if steps:
        parts.append("steps: " + "; ".join(steps))
    if not deriv and not steps:
        parts.append("spatial resampling")
    text = ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")
    text = text.replace("×", "x").encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return text[:1024]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _secondary_capture_template(image: MedImage) -> Dataset:
    """A minimal, valid Secondary Capture header for an image that did not come from DICOM."""
    date, time = _now()
    study_uid = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "ANONYMOUS^"
    ds.PatientID = "MEDSR-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12].upper()
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    modality = str(image.modality or "OT").upper()
    ds.Modality = modality if re.fullmatch(r"[A-Z0-9 _]{1,16}", modality) else "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = ""
    ds.Laterality = ""
    ds.ConversionType = "WSD"
    ds.Manufacturer = "medsr"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = date
    ds.ContentTime = time
    ds.DateOfSecondaryCapture = date
    ds.TimeOfSecondaryCapture = time
    ds.ImageType = ["DERIVED", "SECONDARY"]
    # geometry as standard-extended attributes, so a volume keeps its place in space
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageOrientationPatient = [0.0] * 6
    ds.ImagePositionPatient = [0.0] * 3
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    if image.meta.get("window") and not image.is_color:
        c, w = image.meta["window"]
        ds.WindowCenter = _ds(c)
        ds.WindowWidth = _ds(max(w, 1e-3))
    return ds


def _choose_encoding(
    values: np.ndarray, eight_bit: bool, integer_units: bool = False, force_rescale: bool = False
) -> tuple[int, int, int, float, float]:
    """(bits allocated, bits stored, pixel representation, slope, intercept) covering ``values``.

    Integer data (or Hounsfield units, where 1 HU steps are customary) is stored as is; other
    values (and everything when ``force_rescale``, e.g. small-valued maps) are spread over the
    full unsigned 16-bit range with a Rescale Slope/Intercept.
    """
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    sample = finite[:: max(1, finite.size // 200_000)]
    integral = bool(sample.size == 0 or np.allclose(sample, np.rint(sample), atol=1e-3))
    span = hi - lo
    if force_rescale:
        return 16, 16, 0, (span / 65535.0 if span > 0 else 1.0), lo
    if eight_bit and lo >= -0.5 and hi <= 255.5:
        return 8, 8, 0, 1.0, 0.0
    if integral or integer_units:
        if lo >= -0.5 and hi <= 65535.5:
            return 16, 16, 0, 1.0, 0.0
        if lo >= -32768.5 and hi <= 32767.5:
            return 16, 16, 1, 1.0, 0.0
    slope = span / 65535.0 if span > 0 else 1.0
    return 16, 16, 0, slope, lo


def _encode(
    values: np.ndarray,
    ba: int,
    bs: int,
    pr: int,
    slope: float,
    intercept: float,
    reflect: float | None,
) -> np.ndarray:
    v = values.astype(np.float64)
    if reflect is not None:
        v = reflect - v
    stored = np.rint((v - intercept) / slope)
    lo, hi = _stored_range(bs, pr)
    stored = np.nan_to_num(stored, nan=0.0, posinf=hi, neginf=lo)
    np.clip(stored, lo, hi, out=stored)
    dtype = np.dtype(f"<{'i' if pr else 'u'}{max(ba, 8) // 8}")
    return stored.astype(dtype)


def _scale_us_regions(ds: Dataset, zoom_x: float, zoom_y: float, cols: int, rows: int) -> None:
    """Scale Sequence of Ultrasound Regions to a resampled grid (cell-centred)."""
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return
    for region in regions:
        x0 = int(region.get("RegionLocationMinX0", 0))
        y0 = int(region.get("RegionLocationMinY0", 0))
        x1 = int(region.get("RegionLocationMaxX1", x0))
        y1 = int(region.get("RegionLocationMaxY1", y0))
        nx0 = min(max(round(x0 * zoom_x), 0), cols - 1)
        ny0 = min(max(round(y0 * zoom_y), 0), rows - 1)
        nx1 = min(max(round((x1 + 1) * zoom_x) - 1, nx0), cols - 1)
        ny1 = min(max(round((y1 + 1) * zoom_y) - 1, ny0), rows - 1)
        if "ReferencePixelX0" in region:
            ref_abs = x0 + int(region.ReferencePixelX0)
            region.ReferencePixelX0 = round((ref_abs + 0.5) * zoom_x - 0.5) - nx0
        if "ReferencePixelY0" in region:
            ref_abs = y0 + int(region.ReferencePixelY0)
            region.ReferencePixelY0 = round((ref_abs + 0.5) * zoom_y - 0.5) - ny0
        region.RegionLocationMinX0 = nx0
        region.RegionLocationMinY0 = ny0
        region.RegionLocationMaxX1 = nx1
        region.RegionLocationMaxY1 = ny1
        for key, zoom in (("PhysicalDeltaX", zoom_x), ("PhysicalDeltaY", zoom_y)):
            if key in region and region.get(key) is not None:
                region[key].value = float(region[key].value) / zoom


def _strip_for_write(
    ds: Dataset, *, color: bool, drop_modality_lut: bool, keep_padding: bool
) -> None:
    ds.remove_private_tags()
    for tag in list(ds.keys()):
        group, elem = tag >> 16, tag & 0xFFFF
        if elem == 0 and group != 0x0002:  # group lengths (retired)
            del ds[tag]
        elif 0x6000 <= group <= 0x60FF and group % 2 == 0:  # overlays
            del ds[tag]
        elif 0x5000 <= group <= 0x50FF and group % 2 == 0:  # curves (retired)
            del ds[tag]
    for tag in _REMOVE_ALWAYS:
        if tag in ds and not (tag == 0x00282000 and color):
            del ds[tag]
    for tag in _PALETTE_TAGS:
        if tag in ds:
            del ds[tag]
    if drop_modality_lut and 0x00283000 in ds:
        del ds[0x00283000]
    if color:
        for tag in _MONO_ONLY_TAGS:
            if tag in ds:
                del ds[tag]
        for tag in (0x00280120, 0x00280121):
            if tag in ds:
                del ds[tag]
    elif not keep_padding:
        for tag in (0x00280120, 0x00280121):
            if tag in ds:
                del ds[tag]


class _Grid:
    """Output geometry (LPS) from the image affine."""

    def __init__(self, image: MedImage) -> None:
        lps = _LPS_TO_RAS @ image.affine
        self.row_vec = lps[:3, 0]
        self.col_vec = lps[:3, 1]
        self.step = lps[:3, 2]
        self.origin = lps[:3, 3]
        nr, nc = np.linalg.norm(self.row_vec), np.linalg.norm(self.col_vec)
        self.row_cos = self.row_vec / nr if nr > 0 else np.array([1.0, 0.0, 0.0])
        self.col_cos = self.col_vec / nc if nc > 0 else np.array([0.0, 1.0, 0.0])
        normal = np.cross(self.row_cos, self.col_cos)
        self.normal = normal / (np.linalg.norm(normal) or 1.0)
        self.slice_spacing = abs(float(np.dot(self.normal, self.step))) or float(image.spacing[0])

    def ipp(self, k: int) -> np.ndarray:
        return self.origin + k * self.step

    def iop(self) -> list[DSfloat]:
        return [_ds(round(v, 10)) for v in (*self.row_cos, *self.col_cos)]


def _source_map(image: MedImage, nsrc: int) -> list[int]:
    """Source slice index for each output slice (1:1 when Z is unchanged, else by world position)."""
    z = image.spatial_shape[0]
    if z == nsrc:
        return list(range(z))
    src_aff = image.meta.get("source_affine")
    if src_aff is None:
        return [min(round(k * nsrc / z), nsrc - 1) for k in range(z)]
    inv = np.linalg.inv(np.asarray(src_aff, dtype=float))
    _, y, x = image.spatial_shape
    out = []
    for k in range(z):
        world = image.affine @ np.array([(x - 1) / 2, (y - 1) / 2, k, 1.0])
        sz = (inv @ world)[2]
        out.append(int(min(max(round(float(sz)), 0), nsrc - 1)))
    return out


def write_dicom(
    image: MedImage,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    series_description_suffix: str = " [medsr]",
) -> Path:
    """Write ``image`` as a derived DICOM series; return the path written.

    ``path`` ending in ``.dcm`` writes one file (a single slice, or one multi-frame object when
    the source was multi-frame); any other path is a folder with one ``IM00001.dcm`` … per slice.
    The output is written to a temporary name and renamed only when complete.
    """
    if image.channels not in (None, "RGB"):
        raise InvalidParameterError(
            f"DICOM output supports grayscale or RGB images, not channels={image.channels!r}; "
            "save 4-D data as NIfTI"
        )
    p = Path(path)
    check_output(p, overwrite)
    _refuse_source_overwrite(image, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = _build_output(image, series_description_suffix)
        single_file = p.suffix.lower() in (".dcm", ".dicom")
        if single_file and len(datasets) != 1:
            raise InvalidParameterError(
                f"'{p.name}' names one file but the image has {len(datasets)} slices; "
                "give a folder path (no .dcm suffix) to write a DICOM series"
            )
        if single_file:
            with atomic_file(p, overwrite=overwrite) as tmp:
                pydicom.dcmwrite(tmp, datasets[0], enforce_file_format=True)
        else:
            width = max(5, len(str(len(datasets))))
            with atomic_dir(p, overwrite=overwrite) as tmp:
                for i, ds in enumerate(datasets, start=1):
                    pydicom.dcmwrite(tmp / f"IM{i:0{width}d}.dcm", ds, enforce_file_format=True)
    return p


def _refuse_source_overwrite(image: MedImage, target: Path) -> None:
    """Never replace (or delete, via a folder rename) the files the image was read from."""
    target = target.resolve()
    for src in image.meta.get("source_paths") or []:
        src_path = Path(src).resolve()
        if src_path == target or target in src_path.parents:
            raise InvalidParameterError(
                f"refusing to write onto the input '{target.name}': choose another output path"
            )


def _build_output(image: MedImage, suffix: str) -> list[Dataset]:
    meta = image.meta
    from_dicom = meta.get("format") == "dicom" and bool(meta.get("datasets"))
    templates: list[Dataset] = (
        list(meta["datasets"]) if from_dicom else [_secondary_capture_template(image)]
    )
    multiframe = bool(meta.get("multiframe")) and from_dicom
    z, rows, cols = image.spatial_shape
    series_uid = generate_uid()
    date, time = _now()
    grid = _Grid(image)
    src_spacing = (
        tuple(meta.get("source_spacing") or image.spacing) if from_dicom else image.spacing
    )
    zoom_z, zoom_y, zoom_x = (
        float(s) / float(n) for s, n in zip(src_spacing, image.spacing, strict=True)
    )
    has_geometry = bool(meta.get("has_geometry", True)) if from_dicom else True

    # ---------------------------------------------------------------- pixel encoding
    color = image.is_color
    source_gray = (
        from_dicom
        and not meta.get("color_from")
        and not meta.get("modality_lut")
        and meta.get("pixel_encoding") != "rescaled"  # e.g. float-valued maps of a DICOM image
    )
    values = image.array
    generic: tuple[int, int, int, float, float] | None = None
    if color:
        src_bits = int(meta.get("bits_allocated", 8)) if from_dicom else 8
        true_rgb = from_dicom and meta.get("color_from") not in (None, "PALETTE COLOR")
        finite = values[np.isfinite(values)]
        hi = float(finite.max()) if finite.size else 0.0
        if true_rgb and src_bits in (8, 16, 32):
            cba = src_bits
        else:
            cba = 8 if hi <= 255.5 else 16
        cbs = int(meta.get("bits_stored", cba)) if (true_rgb and cba == src_bits) else cba
        color_pixels = _encode(np.moveaxis(values, 0, -1), cba, cbs, 0, 1.0, 0.0, None)  # (Z,Y,X,3)
    elif not source_gray:
        eight = from_dicom and int(meta.get("bits_allocated", 16)) == 8
        generic = _choose_encoding(
            values,
            eight,
            integer_units=image.units == "HU",
            force_rescale=meta.get("pixel_encoding") == "rescaled",
        )

    if multiframe:
        nsrc = len(meta.get("frame_order") or [0])
        src_idx = _source_map(image, nsrc)
        template = templates[0]
        ds = _derive(
            template,
            image,
            meta,
            suffix,
            series_uid,
            date,
            time,
            color,
            generic,
            instance=1,
            rows=rows,
            cols=cols,
        )
        _update_geometry(
            ds,
            template,
            grid,
            0,
            zoom=(zoom_z, zoom_y, zoom_x),
            image=image,
            has_geometry=has_geometry,
            meta=meta,
        )
        _update_multiframe(ds, image, meta, grid, src_idx, nsrc, zoom_z, has_geometry)
        ds.SourceImageSequence = DicomSequence([_source_ref(template, None)])
        if color:
            frames = color_pixels
        elif generic is not None:
            frames = _encode(values, *generic, None)
        else:
            frames = np.empty(values.shape, dtype=np.dtype(_dtype_name(meta)))
            per = ds.get("PerFrameFunctionalGroupsSequence")
            for k in range(z):
                slope, intercept = _rescale(ds, k if per is not None else None)
                frames[k] = _encode(
                    values[k], int(meta["bits_allocated"]), int(meta["bits_stored"]),
                    int(meta["pixel_representation"]), slope, intercept, meta.get("monochrome1_reflect"),
                )  # fmt: skip
        _set_pixels(ds, frames, color, generic, meta, from_dicom)
        ds.NumberOfFrames = z
        return [ds]

    nsrc = len(templates)
    src_idx = _source_map(image, nsrc) if from_dicom else [0] * z
    out = []
    for k in range(z):
        template = templates[src_idx[k]]
        ds = _derive(
            template,
            image,
            meta,
            suffix,
            series_uid,
            date,
            time,
            color,
            generic,
            instance=k + 1,
            rows=rows,
            cols=cols,
        )
        _update_geometry(
            ds,
            template,
            grid,
            k,
            zoom=(zoom_z, zoom_y, zoom_x),
            image=image,
            has_geometry=has_geometry,
            meta=meta,
        )
        if from_dicom:
            ds.SourceImageSequence = DicomSequence([_source_ref(template, None)])
        if "ImagesInAcquisition" in ds and z != nsrc:
            ds.ImagesInAcquisition = z
        if color:
            pixels = color_pixels[k : k + 1]
        elif generic is not None:
            pixels = _encode(values[k : k + 1], *generic, None)
        else:
            slope, intercept = _rescale(template)
            pixels = _encode(
                values[k : k + 1], int(meta["bits_allocated"]), int(meta["bits_stored"]),
                int(meta["pixel_representation"]), slope, intercept, meta.get("monochrome1_reflect"),
            )  # fmt: skip
        _set_pixels(ds, pixels, color, generic, meta, from_dicom)
        if "NumberOfFrames" in ds and not multiframe:
            del ds.NumberOfFrames
        out.append(ds)
    return out


def _dtype_name(meta: dict[str, Any]) -> str:
    ba = max(int(meta.get("bits_allocated", 16)), 8)
    return f"<{'i' if int(meta.get('pixel_representation', 0)) else 'u'}{ba // 8}"


def _source_ref(template: Dataset, frames: Iterable[int] | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = template.SOPClassUID
    item.ReferencedSOPInstanceUID = template.SOPInstanceUID
    if frames:
        item.ReferencedFrameNumber = [int(f) + 1 for f in frames]
    item.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("121322", "DCM", "Source image for image processing operation")]
    )
    return item


def _derive(
    template: Dataset,
    image: MedImage,
    meta: dict[str, Any],
    suffix: str,
    series_uid: str,
    date: str,
    time: str,
    color: bool,
    generic: tuple[int, int, int, float, float] | None,
    *,
    instance: int,
    rows: int,
    cols: int,
) -> Dataset:
    """A copy of ``template`` turned into a derived instance (UIDs, type, derivation, pixel module)."""
    ds = copy.deepcopy(template)
    from_dicom = meta.get("format") == "dicom" and bool(meta.get("datasets"))
    keep_padding = (not color) and generic is None
    _strip_for_write(
        ds, color=color, drop_modality_lut=generic is not None or color, keep_padding=keep_padding
    )
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    old_type = [str(v) for v in (ds.get("ImageType") or [])]
    enhanced = str(ds.get("SOPClassUID", "")) in _ENHANCED_SOP_CLASSES
    ds.ImageType = ["DERIVED", "PRIMARY" if enhanced else "SECONDARY", *old_type[2:]]
    if enhanced:
        _mark_frames_derived(ds)
    ds.DerivationDescription = _derivation_text(image)
    ds.DerivationCodeSequence = DicomSequence([_code("113085", "DCM", "Spatial resampling")])
    _add_contributing_equipment(ds, date, time, ds.DerivationDescription)
    if from_dicom:
        try:
            number = int(_first_float(ds.get("SeriesNumber")) or 0)
        except (TypeError, ValueError):
            number = 0
        ds.SeriesNumber = min(number + 1000, 2**31 - 1)
    old_desc = str(ds.get("SeriesDescription", "") or "").strip()
    room = max(0, 64 - len(suffix))
    desc = (old_desc[:room] + suffix).strip()
    ds.SeriesDescription = desc[:64]
    ds.InstanceNumber = instance
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    if "ContentDate" in ds or not from_dicom:
        ds.ContentDate = date
    if "ContentTime" in ds or not from_dicom:
        ds.ContentTime = time
    ds.Rows = rows
    ds.Columns = cols
    lossy = meta.get("lossy") if from_dicom else None
    if lossy:
        ds.LossyImageCompression = "01"
        if not lossy.get("already_recorded") and lossy.get("method"):
            methods = [str(m) for m in (ds.get("LossyImageCompressionMethod") or [])]
            ratios = [float(r) for r in (ds.get("LossyImageCompressionRatio") or [])]
            if lossy.get("ratio"):
                ds.LossyImageCompressionRatio = [_ds(r) for r in (*ratios, lossy["ratio"])]
                ds.LossyImageCompressionMethod = [*methods, lossy["method"]]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"MEDSR_{_medsr_version()}"[:16]
    return ds


def _add_contributing_equipment(ds: Dataset, date: str, time: str, description: str) -> None:
    """Append medsr to ContributingEquipmentSequence as the modifying equipment (PS3.3 C.12.1)."""
    item = Dataset()
    item.Manufacturer = "medsr"
    item.SoftwareVersions = _medsr_version()[:64]
    item.ContributionDateTime = f"{date}{time}"
    item.ContributionDescription = description[:1024]
    item.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("109103", "DCM", "Modifying Equipment")]
    )
    previous = list(ds.get("ContributingEquipmentSequence") or [])
    ds.ContributingEquipmentSequence = DicomSequence([*previous, item])


def _mark_frames_derived(ds: Dataset) -> None:
    """Frame Type value 1 → DERIVED in every functional group that has one."""
    groups = list(ds.get("SharedFunctionalGroupsSequence") or []) + list(
        ds.get("PerFrameFunctionalGroupsSequence") or []
    )
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for item in elem.value:
                    if "FrameType" in item and len(item.FrameType) >= 1:
                        item.FrameType = ["DERIVED", *list(item.FrameType)[1:]]


def _update_geometry(
    ds: Dataset,
    template: Dataset,
    grid: _Grid,
    k: int,
    *,
    zoom: tuple[float, float, float],
    image: MedImage,
    has_geometry: bool,
    meta: dict[str, Any],
) -> None:
    zoom_z, zoom_y, zoom_x = zoom
    _, sy, sx = image.spacing
    from_dicom = meta.get("format") == "dicom"
    spacing_src = meta.get("spacing_source", "PixelSpacing") if from_dicom else "PixelSpacing"
    if "PixelSpacing" in ds:
        old = _floats(ds.PixelSpacing, 2)
        if spacing_src == "PixelSpacing" or old is None:
            ds.PixelSpacing = [_ds(sy), _ds(sx)]
        else:
            ds.PixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "ImagerPixelSpacing" in ds:
        if spacing_src == "ImagerPixelSpacing":
            ds.ImagerPixelSpacing = [_ds(sy), _ds(sx)]
        else:
            old = _floats(ds.ImagerPixelSpacing, 2)
            if old is not None:
                ds.ImagerPixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "NominalScannedPixelSpacing" in ds:
        old = _floats(ds.NominalScannedPixelSpacing, 2)
        if old is not None:
            ds.NominalScannedPixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "PixelAspectRatio" in ds and abs(zoom_x - zoom_y) > 1e-6:
        del ds.PixelAspectRatio
    _scale_us_regions(ds, zoom_x, zoom_y, int(ds.Columns), int(ds.Rows))
    z_changed = abs(zoom_z - 1.0) > 1e-6
    if "SliceThickness" in ds and z_changed:
        st = _first_float(ds.SliceThickness)
        if st:
            ds.SliceThickness = _ds(st / zoom_z)
    if "SpacingBetweenSlices" in ds and (
        z_changed or (has_geometry and image.spatial_shape[0] > 1)
    ):
        ds.SpacingBetweenSlices = _ds(grid.slice_spacing if has_geometry else image.spacing[0])
    if not has_geometry:
        return
    ipp = grid.ipp(k)
    if "ImagePositionPatient" in ds:
        ds.ImagePositionPatient = [_ds(round(v, 6)) for v in ipp]
    if "ImageOrientationPatient" in ds:
        ds.ImageOrientationPatient = grid.iop()
    if "SliceLocation" in ds:
        old_loc = _first_float(template.get("SliceLocation"))
        src_ipp = _floats(template.get("ImagePositionPatient"), 3)
        if old_loc is not None and src_ipp is not None:
            ds.SliceLocation = _ds(round(old_loc + float(np.dot(grid.normal, ipp - src_ipp)), 6))
        else:
            ds.SliceLocation = _ds(round(float(np.dot(grid.normal, ipp)), 6))


def _update_multiframe(
    ds: Dataset,
    image: MedImage,
    meta: dict[str, Any],
    grid: _Grid,
    src_idx: list[int],
    nsrc: int,
    zoom_z: float,
    has_geometry: bool,
) -> None:
    z = image.spatial_shape[0]
    _, sy, sx = image.spacing
    order = list(meta.get("frame_order") or range(nsrc))
    iop = grid.iop()

    def update_measures(item: Dataset) -> None:
        pm = item.get("PixelMeasuresSequence")
        if pm:
            m = pm[0]
            if "PixelSpacing" in m:
                m.PixelSpacing = [_ds(sy), _ds(sx)]
            if "SliceThickness" in m and abs(zoom_z - 1.0) > 1e-6:
                st = _first_float(m.SliceThickness)
                if st:
                    m.SliceThickness = _ds(st / zoom_z)
            if "SpacingBetweenSlices" in m and (has_geometry or abs(zoom_z - 1.0) > 1e-6):
                m.SpacingBetweenSlices = _ds(
                    grid.slice_spacing if has_geometry else image.spacing[0]
                )
        if has_geometry:
            po = item.get("PlaneOrientationSequence")
            if po and "ImageOrientationPatient" in po[0]:
                po[0].ImageOrientationPatient = iop

    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        update_measures(shared[0])
        pp = shared[0].get("PlanePositionSequence")
        if pp and has_geometry:
            pp[0].ImagePositionPatient = [_ds(round(v, 6)) for v in grid.ipp(0)]
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and len(per) > 0:
        items = list(per)
        new_items = []
        for k in range(z):
            src_frame = order[src_idx[k]] if src_idx[k] < len(order) else src_idx[k]
            item = copy.deepcopy(items[min(src_frame, len(items) - 1)])
            update_measures(item)
            pp = item.get("PlanePositionSequence")
            if pp and has_geometry:
                pp[0].ImagePositionPatient = [_ds(round(v, 6)) for v in grid.ipp(k)]
            fc = item.get("FrameContentSequence")
            if fc and "InStackPositionNumber" in fc[0]:
                fc[0].InStackPositionNumber = k + 1
            new_items.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(new_items)
    if z != nsrc:
        ft = _first_float(ds.get("FrameTime"))
        if ft:
            ds.FrameTime = _ds(ft * nsrc / z)
        if "FrameTimeVector" in ds:
            del ds.FrameTimeVector


def _set_pixels(
    ds: Dataset,
    pixels: np.ndarray,
    color: bool,
    generic: tuple[int, int, int, float, float] | None,
    meta: dict[str, Any],
    from_dicom: bool,
) -> None:
    """Image Pixel module + Pixel Data for ``pixels`` ((Z,Y,X) gray or (Z,Y,X,3) RGB)."""
    if color:
        ba = pixels.dtype.itemsize * 8
        bs = (
            int(meta.get("bits_stored", ba))
            if meta.get("color_from") not in (None, "PALETTE COLOR")
            else ba
        )
        bs = min(bs, ba)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        pr = 0
    else:
        ds.SamplesPerPixel = 1
        if "PlanarConfiguration" in ds:
            del ds.PlanarConfiguration
        if generic is not None:
            ba, bs, pr, slope, intercept = generic
            ds.PhotometricInterpretation = "MONOCHROME2"
            had_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
            if had_rescale or not from_dicom or slope != 1.0 or intercept != 0.0:
                ds.RescaleSlope = _ds(slope)
                ds.RescaleIntercept = _ds(intercept)
                is_ct_iod = str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.2"
                if "RescaleType" not in ds and not is_ct_iod:
                    ds.RescaleType = "HU" if str(ds.get("Modality", "")) == "CT" else "US"
        else:
            ba = int(meta["bits_allocated"])
            bs = int(meta["bits_stored"])
            pr = int(meta["pixel_representation"])
            photometric = str(meta.get("photometric") or "MONOCHROME2")
            ds.PhotometricInterpretation = (
                photometric if photometric in ("MONOCHROME1", "MONOCHROME2") else "MONOCHROME2"
            )
    ds.BitsAllocated = ba
    ds.BitsStored = bs
    ds.HighBit = bs - 1
    ds.PixelRepresentation = pr
    if "PixelPaddingValue" in ds and not color:
        lo, hi = _stored_range(bs, pr)
        value = int(ds.PixelPaddingValue)
        if not lo <= value <= hi:
            del ds.PixelPaddingValue
            if "PixelPaddingRangeLimit" in ds:
                del ds.PixelPaddingRangeLimit
        else:
            ds["PixelPaddingValue"].VR = "SS" if pr else "US"
            if "PixelPaddingRangeLimit" in ds:
                ds["PixelPaddingRangeLimit"].VR = "SS" if pr else "US"
    data = np.ascontiguousarray(pixels).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OB" if ba <= 8 else "OW", data)
