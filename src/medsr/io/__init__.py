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

from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InvalidParameterError,
    MedSRError,
    UnsupportedFormatError,
    is_fatal,
    scrub,
)
from medsr.image import MedImage, require_image
from medsr.io._quiet import library_messages, scrubbed, with_details
from medsr.io.padding import padding_mask
from medsr.io.sniff import FORMATS, looks_like_raw_dicom, sniff_format

#: old private name of :func:`medsr.io.sniff.looks_like_raw_dicom`
_looks_like_raw_dicom = looks_like_raw_dicom


#: the help of ``--series`` on every command that reads one image (``medsr info``, ``upscale``,
#: ``interpolate``, ``degrade``): the choice :func:`load_image` passes to the DICOM reader as
#: ``series_uid`` (its one grammar: :func:`medsr.io.dicom.stacks.split_series`)
SERIES_HELP = (
    "SeriesInstanceUID (or its key) to pick in a mixed folder; KEY:N for the N-th stack of a "
    "series; KEY:all (or :all) for every time point or cardiac phase of a series as one image "
    "over time, written as one series."
)


#: the default file suffix each writer format gets when medsr names an output itself (DICOM:
#: a folder, the derived series)
OUTPUT_SUFFIX = {"nifti": ".nii.gz", "png": ".png", "tiff": ".tif", "npy": ".npy"}


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


def check_holds(image: MedImage, path: str | os.PathLike[str], *, series_ok: bool = True) -> None:
    """Refuse an output format that cannot hold ``image``'s slices or channels, advising what
    can: PNG holds one 2-D slice, PNG and TIFF no time axis, DICOM grey or RGB (or a series
    over time read from a DICOM series: ``KEY:all``), a ``.dcm`` file one slice (or a
    multi-frame DICOM source's frames); NIfTI and ``.npy`` hold them all. The
    writers' own check, and :func:`medsr.pipeline.upscale_file`'s before the model runs.
    ``series_ok``: whether a folder output would be a DICOM series of this image (always for
    :func:`save_image`; for ``medsr upscale`` only from a DICOM input, as a folder output of any
    other input keeps the input's format)."""
    try:
        fmt = format_for_output(path)
    except UnsupportedFormatError:
        return  # the writer's own error
    n, channels = image.spatial_shape[0], image.channels
    if fmt in ("png", "tiff") and channels not in (None, "RGB"):
        raise InvalidParameterError(
            f"{fmt.upper()} holds grey or RGB images, not channels={channels!r}; write .nii.gz (NIfTI)"
        )
    if fmt == "png" and n != 1:
        where = ".nii.gz, .tif or a folder (a DICOM series)" if series_ok else ".nii.gz or .tif"
        raise InvalidParameterError(
            f"PNG holds one 2-D image but this one has {n} slices; write {where}"
        )
    if fmt != "dicom":
        return
    from medsr.io.dicom.write import _output_count, over_time

    if channels not in (None, "RGB") and not over_time(image):
        raise InvalidParameterError(
            "DICOM output supports grayscale or RGB images (a series over time only as read "
            f"from a DICOM series with --series KEY:all), not channels={channels!r}; write "
            ".nii.gz (NIfTI)"
        )

    count = _output_count(image)
    if Path(path).suffix.lower() in (".dcm", ".dicom") and count != 1:
        advice = (
            "give a folder path (no .dcm suffix) to write a DICOM series"
            if series_ok
            else "a DICOM series is written from a DICOM input only: write .nii.gz"
        )
        raise InvalidParameterError(
            f"'{Path(path).name}' names one file but the image has {count} slices; {advice}"
        )


def load_image(path: str | os.PathLike[str], **options: Any) -> MedImage:
    """Read any supported file (or DICOM series folder) into a :class:`MedImage`.

    Options are passed to the reader: ``series_uid`` (DICOM folder with several series),
    ``luminance=True`` (colour → one grayscale channel, ITU-R BT.601 luma), ``frame``.

    Every failure is a :class:`~medsr.errors.MedSRError` (never a library exception, never a
    library message on the console): sizes are checked against the file and ``MEDSR_MAX_PIXELS``
    before decoding (:mod:`medsr.io.limits`), an image without pixels is an
    :class:`~medsr.errors.EmptyInputError`, and what the libraries warned about is kept in
    ``meta["reader_messages"]`` (or, for a corrupt file, appended to the error).
    """
    name = Path(path).name
    with library_messages() as messages:
        try:
            image = _load(path, options)
            check_loaded(image, name)
        except MedSRError as exc:
            raise with_details(exc, messages) from None
        except BaseException as exc:
            if is_fatal(exc):
                raise
            error = CorruptInputError(f"'{name}' cannot be read ({scrub(exc)})")
            raise with_details(error, messages) from exc
    if messages and "reader_messages" not in image.meta:
        image.meta["reader_messages"] = scrubbed(messages)
    return image


def _load(path: str | os.PathLike[str], options: dict[str, Any]) -> MedImage:
    fmt = sniff_format(path)
    if fmt == "dicom":
        from medsr.io import dicom

        return dicom.read_dicom(path, **options)
    if options.get("series_uid"):  # a choice among a DICOM folder's series, of a file without
        kind = "NIfTI" if fmt == "nifti" else fmt.upper()
        raise InvalidParameterError(
            "a series choice (--series) picks a series, a stack or every time point of a DICOM "
            f"folder; '{Path(path).name}' is a {kind} file, one image: leave the choice out"
        )
    luminance = bool(options.pop("luminance", False))
    if fmt == "nifti":
        from medsr.io import nifti

        image = nifti.read_nifti(path, **options)
    else:
        from medsr.io import raster

        image = raster.read_raster(path, fmt, **options)
    return to_luminance(image) if luminance else image


def check_loaded(image: MedImage, name: str) -> None:
    """What every reader must return: at least one pixel along every axis."""
    if image.array.size == 0 or 0 in image.array.shape:
        raise EmptyInputError(
            f"'{name}' holds no pixels (its image has shape {tuple(image.array.shape)})"
        )


def save_image(
    image: MedImage, path: str | os.PathLike[str], *, overwrite: bool = False, **options: Any
) -> Path:
    """Write ``image`` to ``path`` in the format the path names; return the path written.

    Writing is atomic: a temporary file (or folder) is renamed onto ``path`` only once complete.
    Library warnings raised while writing are kept off the console.
    """
    require_image(image, "medsr.save_image", pixels=True)
    fmt = format_for_output(path)
    with library_messages():
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


__all__ = [
    "FORMATS",
    "OUTPUT_SUFFIX",
    "check_holds",
    "check_loaded",
    "format_for_output",
    "load_image",
    "padding_mask",
    "save_image",
    "sniff_format",
    "to_luminance",
]
