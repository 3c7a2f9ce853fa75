"""Reading values out of DICOM headers: constants, typed attribute access, classification.

Everything here is shared by the reader and the writer and touches no pixel data.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import private_dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID
from pydicom.valuerep import DSfloat
from pydicom.values import convert_value

from medsr.errors import InvalidHeaderError, scrub

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

#: sanity bounds: header values outside them are errors, never silently replaced
MIN_SPACING_MM = 1e-6  # 1 nm
MAX_SPACING_MM = 1e5  # 100 m
MAX_POSITION_MM = 1e7  # 10 km from the origin of the patient coordinate system
MIN_ABS_SLOPE = 1e-20
MAX_ABS_VALUE = 1e20  # largest magnitude a value may reach after Rescale Slope/Intercept

_GEOM_TOL_COS = 1e-3  # direction cosines that differ by less are "the same orientation"
_SPACING_RTOL = 1e-3  # pixel spacings within 0.1 % are "the same"


def series_key(uid: str) -> str:
    """Short, non-identifying handle of a Series Instance UID (accepted by ``series_uid=``)."""
    return hashlib.sha1(str(uid).encode()).hexdigest()[:8]


#: exception text without quoted values (kept under its old private name for other packages)
_scrub = scrub


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


def non_image_reason(ds: Dataset, assume_pixels: bool = False) -> str | None:
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


_non_image_reason = non_image_reason  # old private name


#: Image Type values (the third on) that mark an MR phase image: Siemens' ``P``
#: (``ORIGINAL\\PRIMARY\\P\\ND``), Philips' ``P`` and ``PHASE MAP``, and ``PHASE`` (the Enhanced
#: MR term of Complex Image Component). ``M``/``MAGNITUDE``, ``R``/``REAL``, ``I``/``IMAGINARY``
#: are linear in the signal and interpolate like any image; so does a velocity map (``VELOCITY``,
#: Philips' ``PHASE CONTRAST M``) unless it is aliased, which no header says. A phase image that
#: is a phase-contrast velocity image (:func:`velocity_cue`) is such a map too.
_PHASE_TYPES = frozenset({"P", "PHASE", "PHASE MAP"})
#: GE's private image type, (0043,xx2F) of ``GEMS_PARM_01``: 0 magnitude, 1 phase, 2 real,
#: 3 imaginary (dcm2niix's ``kImageTypeGE``; pydicom's private dictionary names the element
#: "Image Type (real, imaginary, phase, magnitude)", VR SS)
_GE_PARM_CREATOR, _GE_IMAGE_TYPE, _GE_PHASE = "GEMS_PARM_01", 0x2F, 1
#: Siemens' Sequence Name of a phase-contrast (flow) image: ``_v``, the VENC in cm/s and the
#: encoded direction (``*fl2d1_v150in`` through the plane, ``fl3d1r_v150rl``, ``*fl2d1r3_v200fh``;
#: magnitude images of the scan may carry it too, typed ``M``/``MAG``). Siemens types the velocity
#: image ``P`` like a wrapped phase (``ORIGINAL\\PRIMARY\\P\\ND``, ``DERIVED\\PRIMARY\\P\\RETRO``):
#: its values are the velocity, ±VENC over the stored range, and the name tells it apart
_SIEMENS_VELOCITY_SEQUENCE = re.compile(r"_v\d+[a-z]", re.IGNORECASE)
#: Image Type words (the third value on) of a velocity (flow) image
_VELOCITY_WORDS = ("VELOCITY", "FLOW", "PHASE CONTRAST")
#: the standard Velocity Encoding attributes (MR Velocity Encoding Sequence, PS3.3 C.8.13.5.13)
_VELOCITY_KEYS = ("VelocityEncodingDirection", "VelocityEncodingMaximumValue")


def _is_mr(ds: Dataset) -> bool:
    uid = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return modality == "MR" or uid.startswith("1.2.840.10008.5.1.4.1.1.4")


def _component(item: Dataset | None) -> str:
    return str(item.get("ComplexImageComponent", "") or "").strip().upper() if item else ""


def _image_types(ds: Dataset) -> list[str]:
    return [str(v).strip().upper() for v in ds.get("ImageType") or []]


def _stated(holder: Dataset | None, key: str) -> bool:
    if holder is None or key not in holder:
        return False
    value = holder[key].value
    return value is not None and value != "" and value != b"" and value != []


def velocity_cue(ds: Dataset, frame: int | None = None) -> str | None:
    """What says this MR image is a phase-contrast velocity (flow) image, or None.

    Its values are a velocity, linear within ±VENC: it interpolates like a velocity map, however
    it is typed (Siemens types it ``P``, as a wrapped phase). Said by Siemens' Sequence Name
    (:data:`_SIEMENS_VELOCITY_SEQUENCE`), an Image Type word from the third value on
    (:data:`_VELOCITY_WORDS`) or the standard Velocity Encoding attributes
    (:data:`_VELOCITY_KEYS`: at the top level, or in the MR Velocity Encoding Sequence of the
    image or of the functional groups of ``frame`` — the shared ones where ``frame`` is None).
    """
    name = str(ds.get("SequenceName", "") or "").strip()
    if _SIEMENS_VELOCITY_SEQUENCE.search(name):
        return f"Sequence Name {name}"
    types = _image_types(ds)
    if any(word in t for t in types[2:] for word in _VELOCITY_WORDS):
        return "Image Type " + "\\".join(types)
    top = ds.get("MRVelocityEncodingSequence")
    holders = [ds, top[0] if top else None, _fg_item(ds, frame, "MRVelocityEncodingSequence")]
    for holder in holders:
        for key in _VELOCITY_KEYS:
            if _stated(holder, key):
                return key
    return None


def _ge_image_type(ds: Dataset) -> int | None:
    """GE's private image type (:data:`_GE_IMAGE_TYPE`) of ``ds``, or None.

    A PACS that converts a file between implicit and explicit VR may store the element, and
    its private creator, as UN: pydicom then keeps the value bytes (where it does not replace
    UN by the private dictionary's VR: ``pydicom.config.replace_un_with_known_vr``), and the
    creator, bytes too, names no private block. The creator is matched as text and a UN value
    decoded as the private dictionary's VR (SS), in the byte order of the file."""
    for tag in list(ds.keys()):
        if tag.group != 0x0043 or not 0x10 <= tag.element <= 0xFF:
            continue
        creator = ds[tag].value
        if isinstance(creator, bytes):
            creator = creator.decode("latin-1")
        if str(creator).strip(" \0") != _GE_PARM_CREATOR:
            continue
        elem = ds.get(Tag(0x0043, tag.element << 8 | _GE_IMAGE_TYPE))
        if elem is None:
            return None
        value = elem.value
        if isinstance(value, bytes):
            implicit, little = getattr(ds, "original_encoding", (False, True))
            vr = private_dictionary_VR(elem.tag, _GE_PARM_CREATOR)
            raw = RawDataElement(
                elem.tag, vr, len(value), value, 0, bool(implicit), little is not False
            )
            value = convert_value(vr, raw)
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return None


def phase_reason(ds: Dataset, frame: int | None = None) -> str | None:
    """Why this MR image cannot be interpolated because it is a phase image (or None).

    A phase wraps at ±π: two neighbours at +3.1 and −3.1 rad are 0.08 rad apart, and any
    interpolation between them (bicubic, a CNN's upsampling) makes a ramp through 0 rad that was
    never measured, written back as a phase image. Said by the Image Type (:data:`_PHASE_TYPES`),
    the Enhanced MR Complex Image Component (top level, or of ``frame`` — of any frame when
    ``frame`` is None — in the MR Image Frame Type functional group) or GE's private image type
    (:func:`_ge_image_type`). A phase-contrast velocity image (:func:`velocity_cue`; for a
    frame, its own MR Velocity Encoding Sequence too) is a velocity map, not a phase image.
    """
    if not _is_mr(ds) or velocity_cue(ds, frame) is not None:
        return None
    said = None
    types = _image_types(ds)
    if any(t in _PHASE_TYPES for t in types[2:]):
        said = "Image Type " + "\\".join(types)
    elif _component(ds) == "PHASE":
        said = "Complex Image Component PHASE"
    elif frame is not None:
        if _component(_fg_item(ds, frame, "MRImageFrameTypeSequence")) == "PHASE":
            said = f"Complex Image Component PHASE of frame {frame}"
    elif _component(_fg_item(ds, None, "MRImageFrameTypeSequence")) == "PHASE":
        said = "Complex Image Component PHASE of every frame"
    else:
        for f, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or []):
            items = group.get("MRImageFrameTypeSequence")
            if items and _component(items[0]) == "PHASE" and velocity_cue(ds, f) is None:
                said = f"Complex Image Component PHASE of frame {f}"
                break
    if said is None and str(ds.get("Manufacturer", "") or "").strip().upper().startswith("GE"):
        if _ge_image_type(ds) == _GE_PHASE:
            said = "GE image type (0043,xx2F) 1: phase"
    if said is None:
        return None
    return (
        f"it is an MR phase image ({said}): its values wrap at ±π, and interpolating across a "
        "wrap invents values that were never measured (a jump from +π to −π becomes a ramp "
        "through 0): upscale the magnitude image, or unwrap the phase first"
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


def _fmt_values(arr: Any) -> str:
    try:
        return "\\".join(f"{float(x):g}" for x in arr)
    except (TypeError, ValueError):
        return "?"


def _attr_floats(holder: Dataset, key: str, n: int | None = None) -> np.ndarray | None:
    """Numeric attribute ``key`` of ``holder`` as floats.

    None when the attribute is absent or empty; :class:`InvalidHeaderError` when it is present
    but not ``n`` finite numbers (a malformed value is an error, not a missing one).
    """
    if key not in holder:
        return None
    try:
        value = holder[key].value
    except Exception as exc:
        raise InvalidHeaderError(f"{key} cannot be read ({scrub(exc)})") from None
    if value is None or value == "" or value == b"":
        return None
    seq = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    if not seq:
        return None
    try:
        arr = np.array([float(v) for v in seq], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InvalidHeaderError(f"{key} is not numeric") from None
    if n is not None and arr.size != n:
        raise InvalidHeaderError(f"{key} has {arr.size} value(s) ({_fmt_values(arr)}), not {n}")
    if not np.all(np.isfinite(arr)):
        raise InvalidHeaderError(f"{key} is not a finite number ({_fmt_values(arr)})")
    return arr


def map_value_mapping(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) of the Real World Value Mapping that gives a trust map its values, in
    an IOD without a Modality LUT (MR Image, US Image: medsr's writer puts a map's scaling
    there, :func:`medsr.io.dicom.write._set_real_world_mapping`); ``None`` for any other object.

    A map is an image whose Image Type is DERIVED with a Value 4 naming a map (``... MAP``, as
    :data:`medsr.safeguards.maps.MAP_DICOM` writes), with no Rescale Slope/Intercept or an
    identity one (DX, MG, IO require Slope 1, Intercept 0), no Modality LUT Sequence, and one
    linear mapping item. Other images keep their stored values
    as their values (an MR image's Real World Value Mapping is a further interpretation, and its
    display window applies to the stored values).
    """
    if "ModalityLUTSequence" in ds:
        return None
    slope_in, intercept_in = _attr_floats(ds, "RescaleSlope"), _attr_floats(ds, "RescaleIntercept")
    identity = (
        (1.0 if slope_in is None else float(slope_in[0])),
        (0.0 if intercept_in is None else float(intercept_in[0])),
    ) == (1.0, 0.0)
    if not identity:
        return None  # a Modality LUT other than the identity (the DX IODs require the identity)
    types = [str(v).strip().upper() for v in ds.get("ImageType") or []]
    if len(types) < 4 or types[0] != "DERIVED" or not types[3].endswith(" MAP"):
        return None
    items = ds.get("RealWorldValueMappingSequence")
    if not isinstance(items, PydicomSequence) or len(items) != 1:
        return None
    if "RealWorldValueLUTData" in items[0]:
        return None
    slope = _attr_floats(items[0], "RealWorldValueSlope", 1)
    intercept = _attr_floats(items[0], "RealWorldValueIntercept", 1)
    if slope is None or intercept is None:
        return None
    return float(slope[0]), float(intercept[0])


def _rescale(ds: Dataset, frame: int | None = None) -> tuple[float, float]:
    """(slope, intercept) of the Modality LUT for ``frame`` (functional groups first); for a
    trust map in an IOD without one (MR, US), of its Real World Value Mapping
    (:func:`map_value_mapping`).

    Absent values mean slope 1, intercept 0. A slope of 0, non-finite values, or values that
    would map the stored range beyond ±1e20 raise :class:`InvalidHeaderError` (an all-constant
    or overflowing image is never returned as if it were valid).
    """
    item = _fg_item(ds, frame, "PixelValueTransformationSequence")
    source = item if item is not None and "RescaleSlope" in item else ds
    slopes = _attr_floats(source, "RescaleSlope")
    intercepts = _attr_floats(source, "RescaleIntercept")
    slope = float(slopes[0]) if slopes is not None else 1.0
    intercept = float(intercepts[0]) if intercepts is not None else 0.0
    mapping = map_value_mapping(ds) if source is ds else None
    if mapping is not None:
        slope, intercept = mapping
    if abs(slope) < MIN_ABS_SLOPE:
        raise InvalidHeaderError(
            f"RescaleSlope is {slope:g}: every pixel would get the same value "
            "(the slope must be a non-zero number)"
        )
    _, bs, pr = _bits(ds)
    lo, hi = _stored_range(max(1, min(bs, 64)), pr)
    reach = max(abs(lo * slope + intercept), abs(hi * slope + intercept))
    if not np.isfinite(reach) or reach > MAX_ABS_VALUE:
        raise InvalidHeaderError(
            f"RescaleSlope {slope:g} and RescaleIntercept {intercept:g} map the stored values "
            f"to ±{reach:.3g}, beyond any physical quantity"
        )
    return slope, intercept
