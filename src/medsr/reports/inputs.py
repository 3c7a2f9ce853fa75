"""The references an evaluation reads: discovery under folders, the cropped grayscale reference,
and the display / file-safe names of each image."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medsr.errors import EmptyInputError, InvalidParameterError
from medsr.image import MedImage
from medsr.io import to_luminance

IMAGE_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz", ".png", ".tif", ".tiff", ".npy", ".ima")


def discover_inputs(data: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files given directly, plus every image file (or DICOM series folder) under given folders."""
    found: list[Path] = []
    for entry in data:
        p = Path(entry)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)
            )
            found.extend(files)
        else:
            from medsr.errors import InputNotFoundError

            raise InputNotFoundError(f"evaluation data '{p}' does not exist")
    if not found:
        raise EmptyInputError("no images found in the evaluation data")
    return found


def reference_image(image: MedImage, scale: int) -> MedImage:
    """Grayscale reference cropped to a multiple of ``scale`` in-plane."""
    img = to_luminance(image) if image.is_color else image
    if img.channels == "time":
        img = img.replace(array=img.array[0], channels=None)
    _, h, w = img.spatial_shape
    hh, ww = h - h % scale, w - w % scale
    if hh < 4 * scale or ww < 4 * scale:
        raise InvalidParameterError(f"image is too small ({h}×{w}) to evaluate at ×{scale}")
    return img.replace(array=np.ascontiguousarray(img.array[:, :hh, :ww]))


def display_name(path: Path, files: list[Path]) -> str:
    if len({f.name for f in files}) == len(files):
        return path.name
    common = Path(os.path.commonpath([str(f) for f in files]))
    return str(path.relative_to(common)) if path != common else path.name


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
