"""Resource limits checked from headers *before* any pixel buffer is allocated.

A reader computes the number of values an image will hold (pixels × frames × samples) from its
header and calls :func:`check_pixel_count` before decoding. The ceiling is
``MEDSR_MAX_PIXELS`` (environment variable, a number of values; default :data:`DEFAULT_MAX_PIXELS`
= 2³¹, i.e. 8 GiB as float32). Readers also compare what the header announces with the bytes
the file actually holds, so a 1 kB file cannot claim a gigabyte of pixels:

* uncompressed data must be present in full;
* compressed raster data (TIFF) may not expand by more than :data:`MAX_COMPRESSION_RATIO`;
* a TIFF may hold at most :data:`MAX_TIFF_PAGES` pages (IFDs), a DICOM object at most one frame
  per fragment of its encapsulated pixel data.

Together these bound the memory and the decoding work of any input; a time limit on top (a
worker process with a timeout) belongs to the front ends that read untrusted uploads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from medsr.errors import EmptyInputError, InputTooLargeError, UnsupportedFormatError

if TYPE_CHECKING:
    from medsr.image import MedImage

#: default ceiling on the values (voxels × channels) of one image: 2**31 (8 GiB as float32)
DEFAULT_MAX_PIXELS = 2**31
#: largest expansion accepted from compressed raster data (deflate tops out near 1032:1)
MAX_COMPRESSION_RATIO = 2000
#: most pages (image file directories) a TIFF may hold
MAX_TIFF_PAGES = 65536


def max_pixels() -> int:
    """The ceiling in force: ``MEDSR_MAX_PIXELS`` if set to a positive number, else the default."""
    raw = os.environ.get("MEDSR_MAX_PIXELS", "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 1:
            return int(value)
    return DEFAULT_MAX_PIXELS


def check_pixel_count(shape: tuple[int, ...] | list[int], name: str, what: str = "image") -> int:
    """Raise unless ``shape`` is non-empty and its product is within :func:`max_pixels`.

    Returns the number of values. ``shape`` comes from a header, so it is checked before any
    allocation; a zero in it gives :class:`~medsr.errors.EmptyInputError`.
    """
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise EmptyInputError(f"'{name}' declares a negative {what} size {tuple(dims)}")
    if not dims or any(d == 0 for d in dims):
        raise EmptyInputError(f"'{name}' holds no pixels: its {what} size is {tuple(dims)}")
    count = math.prod(dims)
    ceiling = max_pixels()
    if count > ceiling:
        raise InputTooLargeError(
            f"'{name}' declares {count:,} values ({' × '.join(str(d) for d in dims)}), more than "
            f"the limit of {ceiling:,} (set MEDSR_MAX_PIXELS to raise it)"
        )
    return count


#: the most samples along one axis each output format stores (NIfTI-1's dim[] is int16; DICOM's
#: Rows/Columns are US, its frame count is bounded by what a series folder holds in practice)
AXIS_LIMIT = {"nifti": 32767, "dicom": 65535}


def check_output_size(
    image: MedImage, shape: tuple[int, int, int], target: str | os.PathLike[str] | None = None
) -> None:
    """Refuse, before any work, an output of ``shape`` (Z, Y, X) with more values than the reader's ceiling
    (:func:`medsr.io.limits.max_pixels`, ``MEDSR_MAX_PIXELS``), or an axis longer than the
    ``target``'s format stores (:data:`AXIS_LIMIT`): a through-plane target spacing of 1e-6 mm
    asked the allocator for 1.6 TB, one of 1e-4 mm computed 16 GB and then failed to write a
    NIfTI of 480,000 slices, each a traceback."""
    from medsr.io import format_for_output

    dims = [int(n) for n in shape]
    text = " × ".join(map(str, dims))
    count = image.num_channels * int(np.prod(dims, dtype=np.float64))
    ceiling = max_pixels()
    advice = "a smaller factor or a larger target spacing"
    if count > ceiling:
        raise InputTooLargeError(
            f"the output would hold {count:,} values ({text}), more than the limit of "
            f"{ceiling:,} ({advice}; MEDSR_MAX_PIXELS raises the limit)"
        )
    fmt = (
        format_for_output(target) if target is not None and output_kind(target) == "file" else None
    )
    limit = AXIS_LIMIT.get(fmt or ("dicom" if target is not None else ""))
    if limit is not None and max(dims) > limit:
        label = {"nifti": "NIfTI-1"}.get(fmt or "", "DICOM")
        raise InputTooLargeError(
            f"the output would be {text} samples; a {label} axis holds at most {limit:,} ({advice})"
        )


def output_kind(target: str | os.PathLike[str]) -> Literal["file", "series"]:
    """Whether :func:`output_path_for`'s ``target`` is one file or a DICOM series folder (a path
    whose suffix names no format medsr writes, or none: :func:`medsr.io.dicom.write_dicom`)."""
    from medsr.io import format_for_output

    out = Path(target)
    try:
        fmt = format_for_output(out)
    except UnsupportedFormatError:
        fmt = None
    single = out.suffix.lower() in (".dcm", ".dicom")
    return "series" if fmt in (None, "dicom") and not single else "file"
