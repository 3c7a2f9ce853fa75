"""Which reader a file needs, from its first bytes (never from the suffix alone).

DICOM evidence wins over other signatures: the 128-byte DICOM preamble is free-form and some
writers put a TIFF header there (dual-personality files), so ``DICM`` at offset 128 is checked
first; a file without a preamble counts as DICOM when its first element parses as a group 0002
or 0008 element (:func:`looks_like_raw_dicom`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputNotFoundError,
    UnreadableInputError,
    UnsupportedFormatError,
)

FORMATS = ("dicom", "nifti", "png", "tiff", "npy")

#: bytes before the data set of a DICOM Part 10 file: 128-byte preamble + b"DICM"
DICOM_PREFIX_LENGTH = 132
#: file names that say DICOM (a short one is a truncated DICOM; one that is not DICOM in a series
#: folder is left out with a warning, :func:`medsr.io.dicom.read._collect`)
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")
#: file names that say a medical image medsr reads (a folder's files named so and unreadable are
#: reported, not passed over: ``medsr evaluate``'s and ``medsr batch``'s discovery)
IMAGE_SUFFIXES = (*DICOM_SUFFIXES, ".nii", ".nii.gz", ".png", ".tif", ".tiff", ".npy")
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)


def has_dicom_magic(head: bytes) -> bool:
    """``DICM`` at offset 128 (a DICOM Part 10 file)."""
    return len(head) >= DICOM_PREFIX_LENGTH and head[128:132] == b"DICM"


def looks_like_raw_dicom(head: bytes) -> bool:
    """DICOM without the preamble: the first element parses as a group 0002 or 0008 element.

    Explicit VR needs a valid two-letter VR after the tag; implicit VR needs a plausible value
    length and, when the next tag lies within ``head``, a next element of group 0002–0010 that
    does not go backwards.
    """
    if len(head) < 8:
        return False
    group, element = struct.unpack_from("<HH", head, 0)
    if group not in (0x0002, 0x0008) or element >= 0xFF00:
        return False
    if head[4:6] in _VRS:
        return True
    length = struct.unpack_from("<I", head, 4)[0]
    if length > 0xFFFF:
        return False
    nxt = 8 + length
    if nxt + 4 <= len(head):
        next_group, next_element = struct.unpack_from("<HH", head, nxt)
        return group <= next_group <= 0x0010 and (next_group, next_element) > (group, element)
    return True


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Return the format of ``path`` from its first bytes (``dicom``, ``nifti``, ``png``...)."""
    p = Path(path)
    try:
        if not p.exists():
            raise InputNotFoundError(f"input '{p}' does not exist")
        if p.is_dir():
            return "dicom"
        if not p.is_file():  # a FIFO, a device (/dev/zero), a socket: no size, maybe no end
            raise UnreadableInputError(
                f"input '{p.name}' is not a regular file (a pipe or a device): save it to a file first"
            )
        size = p.stat().st_size
        if size == 0:
            raise EmptyInputError(f"input '{p.name}' is empty (0 bytes)")
        with open(p, "rb") as fh:
            head = fh.read(352)
    except OSError as exc:  # a folder on the way that may not be entered, a file not readable
        raise UnreadableInputError(f"cannot read the input '{p}': {exc.strerror or exc}") from None
    if has_dicom_magic(head) or looks_like_raw_dicom(head):
        return "dicom"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in TIFF_SIGNATURES:
        if p.suffix.lower() in DICOM_SUFFIXES and size < DICOM_PREFIX_LENGTH:
            raise _truncated_dicom(p.name, size)  # a DICOM preamble may start like a TIFF
        return "tiff"  # if this one is short and unreadable, the TIFF reader says "truncated"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:2] == b"\x1f\x8b":
        # gzip: only NIfTI is gzipped among our formats
        return "nifti"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if int.from_bytes(head[:4], "little") in (348, 540) or int.from_bytes(head[:4], "big") in (
        348,
        540,
    ):
        return "nifti"  # header size field: a NIfTI-1/2 (or Analyze) header, possibly truncated
    if p.suffix.lower() in DICOM_SUFFIXES and size < DICOM_PREFIX_LENGTH:
        raise _truncated_dicom(p.name, size)
    header = p.with_suffix(".hdr")
    if p.suffix.lower() == ".img" and header.is_file():
        raise UnsupportedFormatError(
            f"'{p.name}' holds only the voxels of a .hdr/.img pair: give its header, "
            f"'{header.name}'"
        )
    raise UnsupportedFormatError(
        f"'{p.name}' is not a format medsr reads (DICOM, NIfTI, PNG, TIFF, NumPy .npy)"
    )


def _truncated_dicom(name: str, size: int) -> CorruptInputError:
    return CorruptInputError(
        f"truncated DICOM: '{name}' is only {size} bytes, shorter than the 128-byte preamble and "
        "DICM signature every DICOM file starts with"
    )


def truncated_dicom_hint(path: Path) -> str:
    """A sentence for readers of other formats when ``path`` may be a DICOM file cut short."""
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    if size >= DICOM_PREFIX_LENGTH:
        return ""
    return (
        f"; at {size} bytes it is also too short to be DICOM (a 128-byte preamble and DICM come "
        "first): a truncated file?"
    )
