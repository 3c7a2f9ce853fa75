"""The references an evaluation reads: discovery under folders (a DICOM series is one reference),
the cropped grayscale reference, and the file-safe name of each image."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsr.errors import EmptyInputError, InvalidParameterError
from medsr.image import MedImage
from medsr.io import load_image, to_luminance
from medsr.io.sniff import IMAGE_SUFFIXES


@dataclass(frozen=True)
class EvalInput:
    """One reference of an evaluation: an image file, or the files of one DICOM series.

    ``path``: the file, or for a series the folder its files share (read with ``series_uid``,
    as ``medsr info``/``upscale`` read a series folder); ``name``: how the report names it.
    """

    path: Path
    name: str
    series_uid: str | None = None
    n_files: int = 1

    def load(self) -> MedImage:
        if self.series_uid is not None and self.path.is_dir():
            return load_image(self.path, series_uid=self.series_uid)
        return load_image(self.path)


def discover_inputs(
    data: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None
) -> list[EvalInput]:
    """The references in ``data``: files given directly (one image each, even a slice of a
    series), and under given folders every image file, where the DICOM files of one series are
    **one** volume (as :func:`medsr.io.load_image` reads a series folder; the grouping is the
    reader's own, :func:`medsr.io.dicom.dicom_volumes`), not one image per slice; a series of
    several stacks (a localizer, echoes, time points) is one reference per stack, named
    ``[series KEY:N]`` as ``--series`` reads it.

    DICOM files whose header cannot be read, and files with a DICOM suffix that hold no image,
    stay in the list as single files: reading them says why they are skipped.

    ``out_dir``, the report's folder, must not lie inside a folder of ``data``
    (:func:`medsr.io._atomic.check_not_input`): its figures (PNG) were found as references by
    the next evaluation of that folder, which then scored its own report (2 images became 4).
    """
    from medsr.errors import InputNotFoundError
    from medsr.io._atomic import check_not_input
    from medsr.io.dicom import dicom_volumes

    data = list(data)
    if out_dir is not None:  # before anything is read or written
        for entry in data:
            if Path(entry).is_dir():
                check_not_input(entry, out_dir)
    found: list[tuple[Path, str | None, int]] = []  # (path, series uid, files)
    for entry in data:
        p = Path(entry)
        if p.is_file():
            found.append((p, None, 1))
        elif p.is_dir():
            volumes, unreadable = dicom_volumes(p)
            here: list[tuple[Path, str | None, int]] = []
            for uid, files in volumes:
                if len(files) == 1:
                    here.append((files[0], None, 1))
                else:
                    common = Path(os.path.commonpath([str(f.parent) for f in files]))
                    here.append((common, uid, len(files)))
            here += [(f, None, 1) for f, _ in unreadable]
            dicom = {f for _, files in volumes for f in files} | {f for f, _ in unreadable}
            here += [
                (f, None, 1)
                for f in p.rglob("*")
                if f.is_file()
                and not f.name.startswith(".")
                and f.name.lower().endswith(IMAGE_SUFFIXES)
                and f not in dicom
            ]
            found += sorted(here, key=lambda it: (it[0].as_posix(), it[1] or ""))
        else:
            raise InputNotFoundError(f"evaluation data '{p}' does not exist")
    if not found:
        raise EmptyInputError("no images found in the evaluation data")
    return _named(found)


def _named(found: list[tuple[Path, str | None, int]]) -> list[EvalInput]:
    """Names for the report: the file (or series folder) name, or its path relative to what all
    inputs share when names repeat; a series that shares its folder with another gets its key."""
    from medsr.io.dicom import series_key
    from medsr.io.dicom.stacks import split_choice

    per_folder: dict[Path, int] = {}
    for p, uid, _ in found:
        if uid is not None:
            per_folder[p] = per_folder.get(p, 0) + 1

    def key(p: Path, uid: str | None) -> str:
        if uid is None or per_folder[p] < 2:
            return ""
        series, stack = split_choice(uid)  # "UID:N": the N-th stack of a series
        return f" [series {series_key(series or '')}{'' if stack is None else f':{stack}'}]"

    names = [(p.name or str(p)) + key(p, uid) for p, uid, _ in found]
    if len(set(names)) != len(names):
        common = Path(os.path.commonpath([str(p.absolute()) for p, _, _ in found]))
        names = [
            (
                str(p.absolute().relative_to(common))
                if p.absolute() != common
                else (p.name or str(p))
            )
            + key(p, uid)
            for p, uid, _ in found
        ]
    return [EvalInput(p, name, uid, n) for (p, uid, n), name in zip(found, names, strict=True)]


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


def reference_notes(image: MedImage, ref: MedImage, z0: int = 0) -> list[str]:
    """How ``ref`` (what was scored) differs from ``image`` (what was read), for the report:
    the luminance of a colour image, the first frame of a series in time, an in-plane crop to a
    multiple of the scale, a slab of slices from ``z0``."""
    notes = []
    if image.is_color:
        notes.append("luminance of the colour image")
    elif image.channels == "time":
        notes.append(f"first of {image.array.shape[0]} frames")
    z, h, w = image.spatial_shape
    rz, rh, rw = ref.spatial_shape
    if (rh, rw) != (h, w):
        notes.append(f"{rh}×{rw} of {h}×{w} pixels (a multiple of the scale)")
    if rz != z:
        notes.append(f"slices {z0}–{z0 + rz - 1} of {z} (centred slab, max_slices)")
    return notes


def measured_pixels(
    ref: MedImage, lr: MedImage, scale: int, *, through_plane: bool = False
) -> np.ndarray | None:
    """The reference pixels a score may count (shaped like ``ref.array``), or None for all: not
    where the reference holds no data (DICOM padding, a CT's fill outside the scan circle, NaN:
    :func:`medsr.io.padding.no_data_mask`), nor where the degraded input holds none (every model
    keeps those pixels' blocks exact: no model is judged there). ``lr`` is ``ref`` reduced
    ×``scale`` in-plane, or along z with ``through_plane`` (thick slices). Grey images only."""
    from medsr.io.padding import block_mask, no_data_mask

    if ref.channels:
        return None
    hr, low = no_data_mask(ref), no_data_mask(lr)
    if hr is None and low is None:
        return None
    gone = np.zeros(ref.array.shape, bool) if hr is None else hr[0].copy()
    if low is not None:
        up = np.repeat(low[0], scale, axis=0) if through_plane else block_mask(low[0], scale)
        z, h, w = (min(a, b) for a, b in zip(up.shape, gone.shape, strict=True))
        gone[:z, :h, :w] |= up[:z, :h, :w]
    return ~gone


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_options(models: Iterable[object], max_slices: object, device: str) -> list[str]:
    """What every evaluation checks before it reads or writes anything: model names (none
    empty), ``max_slices`` (a whole number ≥ 1) and ``device``; the model names, stripped."""
    names = []
    for m in models:
        text = os.fspath(m) if isinstance(m, os.PathLike) else str(m)
        if not text.strip():
            raise InvalidParameterError(
                "a model name is empty; name models separated by commas, e.g. bicubic,lanczos"
            )
        names.append(text.strip())
    if (
        isinstance(max_slices, bool)
        or not isinstance(max_slices, int | np.integer)
        or max_slices < 1
    ):
        raise InvalidParameterError(
            f"max_slices (--max-slices) must be a whole number of at least 1, got {max_slices!r}"
        )
    from medsr.inference.device import resolve_device

    resolve_device(device)
    return names
