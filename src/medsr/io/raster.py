"""PNG / TIFF (8- and 16-bit, grayscale or RGB) and NumPy ``.npy`` reader and writer.

Rasters have no geometry: spacing defaults to 1 mm per pixel unless a medsr JSON sidecar
(``<name>.json``) says otherwise. Writers keep the bit depth of a raster source. Anything else
(e.g. CT in HU, float MR) is written as 16-bit with a linear rescale recorded in the sidecar, so
reading the output back returns the original units.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import CorruptInputError, InvalidParameterError, UnsupportedFormatError
from medsr.image import MedImage, affine_from_spacing
from medsr.io._atomic import atomic_file
from medsr.io.sidecar import read_sidecar, sidecar_path, write_sidecar


def read_raster(path: str | os.PathLike[str], fmt: str, *, modality: str | None = None, **_: Any) -> MedImage:
    """Read PNG, TIFF or ``.npy`` (``fmt`` from :func:`medsr.io.sniff_format`)."""
    p = Path(path)
    try:
        if fmt == "png":
            data = _read_png(p)
        elif fmt == "tiff":
            import tifffile

            data = np.asarray(tifffile.imread(str(p)))
        elif fmt == "npy":
            data = np.load(str(p), allow_pickle=False)
        else:
            raise UnsupportedFormatError(f"unknown raster format {fmt!r}")
    except (UnsupportedFormatError, InvalidParameterError):
        raise
    except Exception as exc:
        raise CorruptInputError(f"corrupt or truncated {fmt.upper()} '{p.name}': {str(exc)[:200]}") from None
    if data.dtype.kind not in "biuf":
        raise UnsupportedFormatError(f"'{p.name}' holds {data.dtype} data, not an image")
    stored_dtype = str(data.dtype)
    side = read_sidecar(p)
    arr, channels = _to_medimage_layout(data, fmt, p.name)
    arr = arr.astype(np.float32)
    slope = float(side.get("rescale_slope", 1.0))
    intercept = float(side.get("rescale_intercept", 0.0))
    if slope != 1.0 or intercept != 0.0:
        arr = arr * np.float32(slope) + np.float32(intercept)
    spacing = tuple(side.get("spacing_mm_zyx", (1.0, 1.0, 1.0)))
    affine = np.asarray(side["affine_ras"], dtype=float) if "affine_ras" in side else affine_from_spacing(spacing)
    return MedImage(
        array=arr,
        spacing=spacing,  # type: ignore[arg-type]
        affine=affine,
        modality=(modality or side.get("modality") or "OT").upper(),
        channels=channels,
        units=side.get("units", "a.u."),
        meta={
            "format": fmt,
            "stored_dtype": stored_dtype,
            "bit_depth": int(np.dtype(stored_dtype).itemsize * 8) if data.dtype.kind in "iu" else None,
            "source_paths": [str(p)],
            "rescale": (slope, intercept),
        },
    )


def _read_png(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("LA", "RGBA"):
            im = im.convert("RGB" if im.mode == "RGBA" else "L")
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode == "I":
            a = np.asarray(im)
            return a.astype(np.uint16) if a.min() >= 0 and a.max() <= 65535 else a
        if im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def _to_medimage_layout(data: np.ndarray, fmt: str, name: str) -> tuple[np.ndarray, str | None]:
    """Raster axes → ``(Z, Y, X)`` or ``(3, Z, Y, X)``."""
    if data.ndim == 2:
        return data[None], None
    if data.ndim == 3 and data.shape[-1] in (3, 4) and fmt in ("png", "tiff"):
        rgb = data[..., :3]
        return rgb.transpose(2, 0, 1)[:, None], "RGB"
    if data.ndim == 3:
        return data, None  # a stack: (Z, Y, X)
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        return data[..., :3].transpose(3, 0, 1, 2), "RGB"
    raise UnsupportedFormatError(f"'{name}' has shape {data.shape}; expected 2-D, RGB or a stack of slices")


def write_raster(image: MedImage, path: str | os.PathLike[str], fmt: str, *, overwrite: bool = False, **_: Any) -> Path:
    """Write PNG / TIFF / ``.npy``; spacing and rescale go to the JSON sidecar."""
    p = Path(path)
    arr = image.array
    extra: dict[str, Any] = {}
    if fmt == "npy":
        data = arr[0] if (arr.ndim == 3 and arr.shape[0] == 1) else arr
        with atomic_file(p, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(data, dtype=np.float32))
        write_sidecar(image, sidecar_path(p), overwrite=True)
        return p
    if fmt == "png" and image.spatial_shape[0] != 1:
        raise InvalidParameterError(
            f"PNG holds one 2-D image but this one has {image.spatial_shape[0]} slices; write .tif, .nii.gz or DICOM"
        )
    stored, slope, intercept = _quantise(image)
    if slope != 1.0 or intercept != 0.0:
        extra = {"rescale_slope": slope, "rescale_intercept": intercept}
    # (Z, Y, X) or (3, Z, Y, X) → raster layout
    data = stored.transpose(1, 2, 3, 0) if image.channels == "RGB" else stored
    if image.channels == "time":
        raise InvalidParameterError("4-D (time) images cannot be written as PNG/TIFF; write NIfTI")
    with atomic_file(p, overwrite=overwrite) as tmp:
        if fmt == "png":
            from PIL import Image

            Image.fromarray(data[0]).save(tmp, format="PNG")
        else:
            import tifffile

            out = data[0] if data.shape[0] == 1 else data
            tifffile.imwrite(str(tmp), out, photometric="rgb" if image.channels == "RGB" else "minisblack")
    write_sidecar(image, sidecar_path(p), overwrite=True, **extra)
    return p


def _quantise(image: MedImage) -> tuple[np.ndarray, float, float]:
    """Pixels → stored integers. Raster sources keep their dtype; others get 16 bits + rescale."""
    arr = image.array.astype(np.float64)
    src_dtype = image.meta.get("stored_dtype")
    raster_source = image.meta.get("format") in ("png", "tiff")
    slope, intercept = image.meta.get("rescale", (1.0, 0.0)) if raster_source else (1.0, 0.0)
    if raster_source and src_dtype in ("uint8", "uint16", "bool"):
        dtype = np.uint8 if src_dtype in ("uint8", "bool") else np.uint16
        if (slope, intercept) != (1.0, 0.0):
            arr = (arr - intercept) / slope
        info = np.iinfo(dtype)
        return np.clip(np.rint(arr), info.min, info.max).astype(dtype), float(slope), float(intercept)
    if image.is_color:
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8), 1.0, 0.0
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo >= 0 and hi <= 65535 and np.allclose(arr, np.rint(arr), atol=1e-3):
        return np.rint(arr).astype(np.uint16), 1.0, 0.0
    # linear map onto the full 16-bit range, recorded so the reader restores the units
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    intercept = lo
    stored = np.clip(np.rint((arr - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, float(slope), float(intercept)
