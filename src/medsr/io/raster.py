"""PNG / TIFF (8- and 16-bit, grayscale or RGB) and NumPy ``.npy`` reader and writer.

Rasters have no geometry: spacing defaults to 1 mm per pixel unless a medsr JSON sidecar
(``<name>.json``) says otherwise. Writers keep the bit depth of a raster source. Anything else
(e.g. CT in HU, float MR) is written as 16-bit with a linear rescale recorded in the sidecar, so
reading the output back returns the original units.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import (
    CorruptInputError,
    EmptyInputError,
    InputTooLargeError,
    InvalidHeaderError,
    MedSRError,
    MedSRWarning,
    NoDataStoredWarning,
    UnsupportedFormatError,
    is_fatal,
    scrub,
)
from medsr.image import MedImage, affine_from_spacing
from medsr.io._atomic import atomic_file, check_output
from medsr.io.limits import MAX_COMPRESSION_RATIO, MAX_TIFF_PAGES, check_pixel_count
from medsr.io.sidecar import check_sidecar, read_sidecar, read_spacing, write_sidecar
from medsr.io.sniff import truncated_dicom_hint


def read_raster(
    path: str | os.PathLike[str], fmt: str, *, modality: str | None = None, **_: Any
) -> MedImage:
    """Read PNG, TIFF or ``.npy`` (``fmt`` from :func:`medsr.io.sniff_format`).

    No data is read as the NIfTI reader reads it: a float array's NaN/±inf (a ``.npy`` or a
    float TIFF), and the pixels a medsr sidecar's ``stored_as.no_data`` names, become 0 and
    ``meta["nonfinite_mask"]`` records where they were (:mod:`medsr.io.padding`), so every
    array medsr hands on is finite and every path (through-plane included) treats them as no
    data; the writers put NaN back there (:func:`write_raster`).

    Sizes are checked from the header before decoding (:mod:`medsr.io.limits`): an empty image
    is an :class:`~medsr.errors.EmptyInputError`, one above ``MEDSR_MAX_PIXELS`` an
    :class:`~medsr.errors.InputTooLargeError`; a TIFF whose strips/tiles lie outside the file,
    whose uncompressed data is short, whose compressed data would expand more than
    :data:`~medsr.io.limits.MAX_COMPRESSION_RATIO`-fold or that has more than
    :data:`~medsr.io.limits.MAX_TIFF_PAGES` pages is corrupt, found before tifffile decodes it.
    """
    p = Path(path)
    try:
        if fmt == "png":
            data = _read_png(p)
        elif fmt == "tiff":
            data = _read_tiff(p)
        elif fmt == "npy":
            data = _read_npy(p)
        else:
            raise UnsupportedFormatError(f"unknown raster format {fmt!r}")
    except MedSRError:
        raise
    except BaseException as exc:
        if is_fatal(exc):
            raise
        hint = truncated_dicom_hint(p) if fmt == "tiff" else ""
        raise CorruptInputError(
            f"corrupt or truncated {fmt.upper()} '{p.name}': {scrub(exc)}{hint}"
        ) from None
    if data.dtype.kind not in "biuf":
        raise UnsupportedFormatError(f"'{p.name}' holds {data.dtype} data, not an image")
    if data.size == 0:
        raise EmptyInputError(f"'{p.name}' holds no pixels (shape {tuple(data.shape)})")
    stored_dtype = str(data.dtype)
    side = read_sidecar(p)
    arr, channels = _to_medimage_layout(data, fmt, p.name)
    no_data = _sidecar_no_data(side, arr, channels)
    arr = arr.astype(np.float32)
    slope, intercept = _sidecar_rescale(side, p.name)
    if slope != 1.0 or intercept != 0.0:
        arr = arr * np.float32(slope) + np.float32(intercept)
    if data.dtype.kind == "f":  # a float .npy/TIFF's NaN/±inf: no data, as a NIfTI's
        nonfinite = ~np.isfinite(arr)
        if nonfinite.any():
            no_data = nonfinite if no_data is None else no_data | nonfinite
    extra: dict[str, Any] = {}
    if no_data is not None:  # read as a NIfTI's NaN is: 0, where recorded (medsr.io.padding)
        arr[no_data] = 0.0
        extra["nonfinite_mask"] = no_data
    try:
        spacing = read_spacing(side)
        affine = (
            np.asarray(side["affine_ras"], dtype=float)
            if "affine_ras" in side
            else affine_from_spacing(spacing)
        )
        return MedImage(
            array=arr,
            spacing=spacing,  # type: ignore[arg-type]
            affine=affine,
            modality=str(modality or side.get("modality") or "OT").upper(),
            channels=channels,
            units=str(side.get("units", "a.u.")),
            meta={
                "format": fmt,
                "stored_dtype": stored_dtype,
                "bit_depth": int(np.dtype(stored_dtype).itemsize * 8)
                if data.dtype.kind in "iu"
                else None,
                "source_paths": [str(p)],
                "rescale": (slope, intercept),
                **extra,
            },
        )
    except (TypeError, ValueError) as exc:
        raise InvalidHeaderError(
            f"the JSON sidecar of '{p.name}' holds invalid geometry ({scrub(exc)})"
        ) from None


def _sidecar_no_data(
    side: dict[str, Any], stored: np.ndarray, channels: str | None
) -> np.ndarray | None:
    """Where the sidecar says a grey raster holds no data: every pixel stored as the value its
    ``stored_as.no_data`` names when that value is theirs alone (``reserved``: what medsr's
    writer records when the source held NaN there, :func:`_quantise`); else None."""
    record = (side.get("stored_as") or {}) if isinstance(side.get("stored_as"), dict) else {}
    no_data = record.get("no_data")
    if channels or not isinstance(no_data, dict) or no_data.get("reserved") is not True:
        return None
    value = no_data.get("value_stored")
    if not isinstance(value, int) or isinstance(value, bool) or stored.dtype.kind not in "iu":
        return None
    mask = stored == value
    return mask if mask.any() else None


def _sidecar_rescale(side: dict[str, Any], name: str) -> tuple[float, float]:
    try:
        slope = float(side.get("rescale_slope", 1.0))
        intercept = float(side.get("rescale_intercept", 0.0))
    except (TypeError, ValueError):
        raise InvalidHeaderError(
            f"the JSON sidecar of '{name}' holds a non-numeric rescale"
        ) from None
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise InvalidHeaderError(
            f"the JSON sidecar of '{name}' holds an invalid rescale (slope {slope:g}, intercept {intercept:g})"
        )
    return slope, intercept


def _read_png(p: Path) -> np.ndarray:
    from PIL import Image

    try:
        im_ctx = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(
            f"PNG '{p.name}' is too large to decode safely ({scrub(exc)})"
        ) from None
    with im_ctx as opened:
        im: Image.Image = opened
        bands = len(im.getbands())
        check_pixel_count(
            (im.size[1], im.size[0]) + ((bands,) if bands > 1 else ()), p.name, "PNG image"
        )
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("LA", "RGBA"):
            _warn_alpha(p.name, im.getchannel("A").getextrema()[0], 255)
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode == "I":
            a = np.asarray(im)
            return a.astype(np.uint16) if a.min() >= 0 and a.max() <= 65535 else a
        if im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def _read_npy(p: Path) -> np.ndarray:
    """``.npy`` without pickles; shape, dtype and length checked from the header first."""
    from numpy.lib import format as npformat

    with open(p, "rb") as fh:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise UnsupportedFormatError(
                f"'{p.name}' is a NumPy file of format version {version}; medsr reads 1.0 and 2.0"
            )
        offset = fh.tell()
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        raise UnsupportedFormatError(f"'{p.name}' holds {dtype} data, not an image")
    check_pixel_count(tuple(shape), p.name, "array")
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if p.stat().st_size < offset + needed:
        raise CorruptInputError(
            f"corrupt or truncated NPY '{p.name}': its header announces {needed:,} bytes of data, "
            f"the file holds {max(p.stat().st_size - offset, 0):,}"
        )
    return np.load(str(p), allow_pickle=False)


def _read_tiff(p: Path) -> np.ndarray:
    import tifffile

    size = p.stat().st_size
    _count_tiff_pages(p, size)
    with tifffile.TiffFile(str(p)) as tf:
        # index every page first: iterating pages lazily (TiffFile.series, tifffile.imread) loops
        # forever when an IFD's next-pointer points into an earlier IFD (tifffile 2026.3.3)
        if len(tf.pages) > MAX_TIFF_PAGES:
            raise InputTooLargeError(f"TIFF '{p.name}' has more than {MAX_TIFF_PAGES:,} pages")
        if not tf.series:
            raise CorruptInputError(
                f"corrupt or truncated TIFF '{p.name}': it holds no image{truncated_dicom_hint(p)}"
            )
        series = tf.series[0]
        _check_tiff_series(series, p.name, size)
        return np.asarray(series.asarray())


def _count_tiff_pages(p: Path, size: int) -> int:
    """Walk the chain of image file directories (classic and BigTIFF) without decoding anything.

    More than :data:`MAX_TIFF_PAGES` pages is refused; the walk stops at a loop or at an offset
    outside the file, as tifffile does.
    """
    with open(p, "rb") as fh:
        head = fh.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise CorruptInputError(
                f"corrupt or truncated TIFF '{p.name}': no TIFF header{truncated_dicom_hint(p)}"
            )
        bo = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(bo + "H", head[2:4])[0]
        if version == 43 and len(head) >= 16:
            offset = struct.unpack(bo + "Q", head[8:16])[0]
            count_fmt, entry, next_fmt = "Q", 20, "Q"
        else:
            offset = struct.unpack(bo + "I", head[4:8])[0]
            count_fmt, entry, next_fmt = "H", 12, "I"
        count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
        seen: set[int] = set()
        while offset and offset not in seen and 8 <= offset <= size - count_size:
            seen.add(offset)
            if len(seen) > MAX_TIFF_PAGES:
                raise InputTooLargeError(f"TIFF '{p.name}' has more than {MAX_TIFF_PAGES:,} pages")
            fh.seek(offset)
            n = struct.unpack(bo + count_fmt, fh.read(count_size))[0]
            nxt = offset + count_size + n * entry
            if nxt + next_size > size:
                break
            fh.seek(nxt)
            offset = struct.unpack(bo + next_fmt, fh.read(next_size))[0]
    if not seen:
        raise CorruptInputError(
            f"corrupt or truncated TIFF '{p.name}': its first image directory lies outside the file{truncated_dicom_hint(p)}"
        )
    return len(seen)


def _check_tiff_series(series: Any, name: str, size: int) -> None:
    """Sizes from the tags, checked against the limits and the file before decoding."""
    shape = tuple(int(s) for s in series.shape)
    pages = [pg for pg in series.pages if pg is not None]
    if not pages:
        raise CorruptInputError(f"corrupt or truncated TIFF '{name}': it holds no image data")
    stored = 0
    compressed = False
    bits = 0
    for page in pages:
        key = getattr(page, "keyframe", None) or page
        offsets = tuple(int(o) for o in page.dataoffsets)
        counts = tuple(int(c) for c in page.databytecounts)
        if len(offsets) != len(counts):
            raise CorruptInputError(
                f"corrupt TIFF '{name}': the strip/tile offsets and byte counts disagree"
            )
        for o, c in zip(offsets, counts, strict=True):
            if c and (o < 0 or o + c > size):
                raise CorruptInputError(
                    f"corrupt or truncated TIFF '{name}': image data at bytes {o:,}–{o + c:,} lies beyond "
                    f"the end of the file ({size:,} bytes)"
                )
        stored += sum(counts)
        compressed = compressed or int(key.compression) != 1
        bits = max(bits, int(getattr(key, "bitspersample", 8) or 8))
    needed = -(-int(np.prod(shape, dtype=np.int64)) * bits // 8)
    if not compressed and stored < needed:
        raise CorruptInputError(
            f"corrupt or truncated TIFF '{name}': its tags announce {needed:,} bytes of pixels, "
            f"its strips/tiles hold {stored:,}"
        )
    if compressed and needed > max(stored, 1) * MAX_COMPRESSION_RATIO:
        raise CorruptInputError(
            f"corrupt TIFF '{name}': {stored:,} bytes of compressed data cannot hold the {needed:,} "
            f"bytes its tags announce (more than {MAX_COMPRESSION_RATIO}:1)"
        )
    check_pixel_count(shape, name, "TIFF image")


def _warn_alpha(name: str, lowest: Any, opaque: float) -> None:
    """An alpha channel is not an intensity: medsr drops it; a warning when it was not opaque
    everywhere (``lowest`` alpha below ``opaque``: its transparency is then lost), silence when
    dropping it loses nothing."""
    if float(lowest) < float(opaque):
        warnings.warn(
            f"'{name}' has an alpha channel with transparent pixels: medsr reads its colour (or grey) "
            "values only, and the output has no alpha channel",
            MedSRWarning,
            stacklevel=3,
        )


def _to_medimage_layout(data: np.ndarray, fmt: str, name: str) -> tuple[np.ndarray, str | None]:
    """Raster axes → ``(Z, Y, X)`` or ``(3, Z, Y, X)``."""
    if data.ndim == 2:
        return data[None], None
    if data.ndim == 3 and data.shape[-1] in (3, 4) and fmt in ("png", "tiff"):
        if data.shape[-1] == 4:
            full = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else 1.0
            _warn_alpha(name, data[..., 3].min(), full)
        rgb = data[..., :3]
        return rgb.transpose(2, 0, 1)[:, None], "RGB"
    if data.ndim == 3:
        return data, None  # a stack: (Z, Y, X)
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        return data[..., :3].transpose(3, 0, 1, 2), "RGB"
    raise UnsupportedFormatError(
        f"'{name}' has shape {data.shape}; expected 2-D, RGB or a stack of slices"
    )


def write_raster(
    image: MedImage,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    overwrite: bool = False,
    no_data_warning: bool = True,
    **_: Any,
) -> Path:
    """Write PNG / TIFF / ``.npy``; spacing and rescale go to the JSON sidecar.

    Where the source held no data (NaN: :func:`medsr.io.padding.nan_mask`) a ``.npy`` holds
    NaN; a PNG/TIFF, whose integers cannot, the value :func:`_quantise` sets aside (grey: the
    lowest stored value, which no measured pixel then holds; colour: 0 in each channel that
    held none, a value measured pixels hold too), its sidecar's ``stored_as.no_data`` saying
    how many pixels (colour: where any channel held none, and how many channel values), which
    stored value and what it reads as (the reader takes a grey image's as no data again), and a :class:`~medsr.errors.NoDataStoredWarning` (``no_data_warning``) says
    so once."""
    p = Path(path)
    check_output(p, overwrite)
    check_sidecar(p, overwrite)  # before the image: a refused sidecar leaves nothing written
    arr = image.array
    extra: dict[str, Any] = {}
    if fmt == "npy":  # float32: a NIfTI source's NaN are NaN again (medsr.io.padding.with_nan)
        from medsr.io.padding import with_nan

        arr = with_nan(image)
        data = arr[0] if (arr.ndim == 3 and arr.shape[0] == 1) else arr
        with atomic_file(p, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(data, dtype=np.float32))
        write_sidecar(image, p)
        return p
    from medsr.io import check_holds

    check_holds(image, p)  # PNG: one 2-D slice; PNG/TIFF: no time axis
    from medsr.io.padding import nan_mask

    no_data = nan_mask(image)
    stored, slope, intercept, pad = _quantise(image, fmt, no_data)
    if slope != 1.0 or intercept != 0.0:
        extra = {"rescale_slope": slope, "rescale_intercept": intercept}
    if no_data is not None and pad is not None:
        extra["stored_as"] = {
            "dtype": str(stored.dtype),
            "no_data": _no_data_record(image, no_data, pad, slope, intercept, stored),
        }
    # (Z, Y, X) or (3, Z, Y, X) → raster layout
    data = stored.transpose(1, 2, 3, 0) if image.channels == "RGB" else stored
    with atomic_file(p, overwrite=overwrite) as tmp:
        if fmt == "png":
            from PIL import Image
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            for key, value in _labels(image).items():  # in the file: a sidecar gets separated
                info.add_text(key, value)
            Image.fromarray(data[0]).save(tmp, format="PNG", pnginfo=info)
        else:
            import tifffile

            out = data[0] if data.shape[0] == 1 else data
            tifffile.imwrite(
                str(tmp), out, photometric="rgb" if image.channels == "RGB" else "minisblack",
                software=_labels(image)["Software"],
            )  # fmt: skip
    write_sidecar(image, p, **extra)
    if no_data is not None and pad is not None and no_data_warning:
        record = extra["stored_as"]["no_data"]
        warnings.warn(
            f"'{p.name}': {fmt.upper()} cannot store 'no data' (NaN): its {record['pixels']:,} "
            + (
                f"pixels where the source held none in one or more channels have those "
                f"channels ({record['channel_values']:,} values) stored as {pad} (read as "
                if image.channels
                else f"pixels where the source held none are stored as {pad} (read as "
            )
            + f"{record['reads_as']:g} {image.units}), "
            + (
                "a value no measured pixel holds"
                if record["reserved"]
                else "a value measured pixels may hold too"
            )
            + "; its sidecar says so (stored_as.no_data). A .nii.gz or .npy output keeps NaN",
            NoDataStoredWarning,
            stacklevel=2,
        )
    return p


def _no_data_record(
    image: MedImage,
    no_data: np.ndarray,
    pad: int,
    slope: float,
    intercept: float,
    stored: np.ndarray,
) -> dict[str, Any]:
    """The sidecar's ``stored_as.no_data``: how many pixels were written as no data, the stored
    value that stands there and what it reads as, and whether that value is theirs alone
    (``reserved``: then every pixel stored as it is no data, and :func:`read_raster` reads them
    so again). A colour image's ``pixels`` are those where any channel held none — each such
    channel is stored as the value, the others keep theirs — with ``channel_values`` (how many
    channel values that is) and ``in_all_channels`` (the pixels with none in any channel)."""
    reserved = not image.is_color and not bool(np.any(stored[~no_data] == pad))
    # the lowest stored value (_quantise): below every measured one unless the slope inverts it
    where = "below" if slope > 0 else "above"
    record: dict[str, Any] = {
        "pixels": int(no_data.any(axis=0).sum()) if image.channels else int(no_data.sum()),
        "value_stored": int(pad),
        "reads_as": float(f"{pad * slope + intercept:.9g}"),
        "reserved": reserved,
        "note": (
            f"the source held no data (NaN) at these pixels; every pixel stored as {pad} is no "
            f"data, {where} every measured value"
            if reserved
            else f"the source held no data (NaN) at these pixels, stored as {pad}, which "
            "measured pixels may hold too: where they are is not kept"
        ),
    }
    if image.channels:
        record["channel_values"] = int(no_data.sum())
        record["in_all_channels"] = int(no_data.all(axis=0).sum())
        record["note"] = (
            f"the source held no data (NaN) in one or more channels at these pixels; those "
            f"channels are stored as {pad}, which measured pixels may hold too: where they are "
            "is not kept"
        )
    return record


def _labels(image: MedImage) -> dict[str, str]:
    """PNG text (Software, and for a derived image a Description saying so and how it was made):
    the sidecar says it too, but a viewer shown the image alone sees only the file."""
    from medsr._version import __version__

    labels = {"Software": f"medsr {__version__}"}
    deriv = image.meta.get("derivation") or {}
    steps = [h for h in image.history if not h.startswith("read ")]
    if deriv or steps:
        what = [str(deriv["method"])] if deriv.get("method") else []
        if deriv.get("model") is not None:
            what.append(f"model {deriv['model']}")
        if deriv.get("scale") is not None:
            what.append(f"scale x{deriv['scale']}")
        labels["Description"] = "; ".join(
            [
                "derived by medsr, not an acquired image",
                *what,
                *(["steps: " + "; ".join(steps)] if steps else []),
            ]
        )[:2000]
    return labels


def _quantise(
    image: MedImage, fmt: str = "tiff", no_data: np.ndarray | None = None
) -> tuple[np.ndarray, float, float, int | None]:
    """Pixels → ``(stored integers, slope, intercept, no-data value)``. Raster sources keep
    their dtype (a signed one where the format has signed pixels, TIFF; PNG has none: its
    integers are stored shifted by an intercept); others get 16 bits + rescale.

    ``no_data`` (shaped like ``image.array``: :func:`medsr.io.padding.nan_mask`) marks pixels
    where the source held none (NaN, which integers cannot hold). The stored range is then the
    measured pixels' alone, and those pixels get the lowest value of the stored type when no
    measured pixel is stored as it (DICOM's padding convention: below every measured value),
    else a 16-bit encoding of the measured values above stored 0, which they then get; colour
    has no value to spare: 0. The no-data value is None without ``no_data``."""
    arr = image.array.astype(np.float64)
    if no_data is None:
        return (*_quantise_values(arr, image, fmt), None)
    held = ~no_data
    if image.is_color:
        stored, slope, intercept = _quantise_values(np.where(held, arr, 0.0), image, fmt)
        stored[no_data] = 0
        return stored, slope, intercept, 0
    lowest = float(arr[held].min()) if held.any() else 0.0
    arr[no_data] = lowest  # the range is the measured pixels'
    stored, slope, intercept = _quantise_values(arr, image, fmt)
    floor = int(np.iinfo(stored.dtype).min)
    if not held.any() or int(stored[held].min()) > floor:
        stored[no_data] = floor
        return stored, slope, intercept, floor
    stored, slope, intercept = _sixteen_bits(arr, reserve=1)
    stored[no_data] = 0
    return stored, slope, intercept, 0


def _quantise_values(arr: np.ndarray, image: MedImage, fmt: str) -> tuple[np.ndarray, float, float]:
    """:func:`_quantise` of the values ``arr`` (float64, shaped like ``image.array``)."""
    src_dtype = image.meta.get("stored_dtype")
    raster_source = image.meta.get("format") in ("png", "tiff")
    slope, intercept = image.meta.get("rescale", (1.0, 0.0)) if raster_source else (1.0, 0.0)
    if raster_source and src_dtype in ("uint8", "uint16", "bool"):
        dtype = np.uint8 if src_dtype in ("uint8", "bool") else np.uint16
        if (slope, intercept) != (1.0, 0.0):
            arr = (arr - intercept) / slope
        info = np.iinfo(dtype)
        return (
            np.clip(np.rint(arr), info.min, info.max).astype(dtype),
            float(slope),
            float(intercept),
        )
    if raster_source and src_dtype in ("int8", "int16", "int32"):
        # back onto the source's integer grid (values rounded, as an unsigned source's)
        if (slope, intercept) != (1.0, 0.0):
            arr = (arr - intercept) / slope
        signed = np.iinfo(np.dtype(src_dtype))
        ints = np.clip(np.rint(arr), signed.min, signed.max)
        if fmt == "tiff":
            return ints.astype(src_dtype), float(slope), float(intercept)
        base = float(np.nanmin(ints)) if ints.size else 0.0
        if float(np.nanmax(ints)) - base <= 65535:
            return (ints - base).astype(np.uint16), float(slope), float(intercept + slope * base)
        arr = ints * slope + intercept  # too wide for 16 bits: the general rule below
    if image.is_color:
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8), 1.0, 0.0
    return _sixteen_bits(arr)


def _sixteen_bits(arr: np.ndarray, reserve: int = 0) -> tuple[np.ndarray, float, float]:
    """``arr`` as unsigned 16-bit integers ``reserve`` … 65535 (the values below ``reserve``
    left free: :func:`_quantise`'s no-data value) and the slope and intercept that read them."""
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if np.allclose(arr, np.rint(arr), atol=1e-3):
        if lo >= reserve and hi <= 65535:
            return np.rint(arr).astype(np.uint16), 1.0, 0.0
        base = float(np.rint(lo)) - reserve
        if hi - base <= 65535:  # integers (an int16 source, HU): exact, shifted by an intercept
            return np.rint(arr - base).astype(np.uint16), 1.0, base
    # linear map onto the 16-bit range, recorded so the reader restores the units
    slope = (hi - lo) / (65535.0 - reserve) if hi > lo else 1.0
    intercept = lo - reserve * slope
    stored = np.clip(np.rint((arr - intercept) / slope), reserve, 65535).astype(np.uint16)
    return stored, float(slope), float(intercept)
