"""Read and write medical images; the reader is chosen from the content, the writer from the path.

``load_image(path)`` sniffs the bytes (DICOM preamble, NIfTI magic, PNG/TIFF signatures, NumPy
magic) rather than trusting the suffix, so a misnamed file still reads and a non-image fails
with a clear :class:`~medsr.errors.UnsupportedFormatError`. A folder is read as one DICOM series.

``save_image(image, path)`` picks the writer from the output path: ``.nii``/``.nii.gz`` →
NIfTI, ``.png`` / ``.tif``/``.tiff`` → raster (bit depth kept, spacing in a JSON sidecar),
``.npy`` → NumPy, ``.dcm`` or a folder (no suffix) → derived DICOM series.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsr.errors import EmptyInputError, InputNotFoundError, UnsupportedFormatError
from medsr.image import MedImage

FORMATS = ("dicom", "nifti", "png", "tiff", "npy")


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Return the format of ``path`` from its first bytes (``dicom``, ``nifti``, ``png``...)."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"input '{p}' does not exist")
    if p.is_dir():
        return "dicom"
    size = p.stat().st_size
    if size == 0:
        raise EmptyInputError(f"input '{p.name}' is empty (0 bytes)")
    with open(p, "rb") as fh:
        head = fh.read(352)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:2] == b"\x1f\x8b":
        # gzip: only NIfTI is gzipped among our formats
        return "nifti"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if int.from_bytes(head[:4], "little") in (348, 540) or int.from_bytes(head[:4], "big") in (348, 540):
        return "nifti"  # header size field: a NIfTI-1/2 (or Analyze) header, possibly truncated
    if p.suffix.lower() in (".dcm", ".dicom", ".ima", "") and _looks_like_raw_dicom(head):
        return "dicom"
    raise UnsupportedFormatError(
        f"'{p.name}' is not a format medsr reads (DICOM, NIfTI, PNG, TIFF, NumPy .npy)"
    )


def _looks_like_raw_dicom(head: bytes) -> bool:
    """DICOM without the 128-byte preamble starts with a group 0x0002 or 0x0008 element."""
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\xff\x00"


def format_for_output(path: str | os.PathLike[str]) -> str:
    """Writer format chosen from the output path."""
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".dcm", ".dicom")) or Path(path).suffix == "":
        return "dicom"
    raise UnsupportedFormatError(
        f"cannot tell the output format from '{Path(path).name}': use .nii/.nii.gz, .png, "
        ".tif/.tiff, .npy, .dcm, or a folder name for a DICOM series"
    )


def load_image(path: str | os.PathLike[str], **options: Any) -> MedImage:
    """Read any supported file (or DICOM series folder) into a :class:`MedImage`.

    Options are passed to the reader: ``series_uid`` (DICOM folder with several series),
    ``luminance=True`` (colour → one grayscale channel, ITU-R BT.601 luma), ``frame``.
    """
    fmt = sniff_format(path)
    if fmt == "dicom":
        from medsr.io import dicom

        return dicom.read_dicom(path, **options)
    luminance = bool(options.pop("luminance", False))
    if fmt == "nifti":
        from medsr.io import nifti

        image = nifti.read_nifti(path, **options)
    else:
        from medsr.io import raster

        image = raster.read_raster(path, fmt, **options)
    return to_luminance(image) if luminance else image


def save_image(image: MedImage, path: str | os.PathLike[str], *, overwrite: bool = False, **options: Any) -> Path:
    """Write ``image`` to ``path`` in the format the path names; return the path written.

    Writing is atomic: a temporary file (or folder) is renamed onto ``path`` only once complete.
    """
    fmt = format_for_output(path)
    if fmt == "dicom":
        from medsr.io import dicom

        return dicom.write_dicom(image, path, overwrite=overwrite, **options)
    if fmt == "nifti":
        from medsr.io import nifti

        return nifti.write_nifti(image, path, overwrite=overwrite, **options)
    from medsr.io import raster

    return raster.write_raster(image, path, fmt, overwrite=overwrite, **options)


def to_luminance(image: MedImage) -> MedImage:
    """Colour → grayscale with ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B)."""
    if not image.is_color:
        return image
    r, g, b = image.array[0], image.array[1], image.array[2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    meta = dict(image.meta)
    meta["luminance_from"] = "RGB"
    return image.replace(array=luma, channels=None, meta=meta).with_step("luminance (BT.601)")


__all__ = ["FORMATS", "format_for_output", "load_image", "save_image", "sniff_format", "to_luminance"]
