"""JSON sidecar beside non-DICOM outputs: what the pixel format cannot hold.

PNG/TIFF cannot store spacing, modality, units or a rescale to physical units; NIfTI cannot
store provenance. medsr writes ``<name>.json`` beside such outputs and reads it back when present,
so a CT written to 16-bit PNG comes back in Hounsfield units with its spacing. The sidecar never
contains patient identifiers.

The name is the stem's (BIDS names a NIfTI's sidecar so, and batch, the web service and readers of
earlier outputs find it there), so ``scan.png`` and ``scan.nii.gz`` would share ``scan.json``. A
sidecar therefore records the file it describes (``"describes": "scan.png"``), and
:func:`check_sidecar` — called by every writer before it writes anything, and by
:func:`medsr.pipeline.check_paths` before the model runs — refuses to replace a sidecar that
describes another file (its calibration would be lost: a PNG whose rescale is gone reads back as
0…65535 still labelled HU) or a JSON file medsr did not write, ``overwrite`` or not; without
``overwrite`` an existing sidecar is an existing output. The reader ignores a sidecar that
describes a file of another format (it would mislabel this one); sidecars written before the
record are read as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import OutputExistsError
from medsr.image import MedImage
from medsr.io._atomic import atomic_file

#: the outputs that get a sidecar (the first suffix that ends a name is its format's)
SIDECAR_SUFFIXES = (".nii.gz", ".nii", ".png", ".tiff", ".tif", ".npy")


def scale_text(value: Any) -> str:
    """A derivation's scale as the writers state it: ``x2`` (a whole factor: ``x4``, not the
    ``x4.0`` a through-plane ratio of slice counts is stored as), ``x2.6667``, ``x?`` unknown."""
    try:
        return f"x{float(value):g}"
    except (TypeError, ValueError):
        return "x?"


def _split(name: str) -> tuple[str, str]:
    """``scan.nii.gz`` → ``("scan", ".nii.gz")``; a name without a sidecar suffix → ``(name, "")``."""
    for suffix in SIDECAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``scan.nii.gz`` → ``scan.json``; ``slice.png`` → ``slice.json``."""
    p = Path(path)
    stem, suffix = _split(p.name)
    return p.with_name((stem if suffix else p.name) + ".json")


def _load(sp: Path) -> dict[str, Any] | None:
    """The JSON object in ``sp``, or ``None`` when it is no readable JSON object."""
    try:
        data = json.loads(sp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describes_other(data: dict[str, Any], path: Path) -> str | None:
    """The file a sidecar records that it describes, when that is not ``path`` (another format:
    ``scan.png``'s sidecar seen from ``scan.nii.gz``); ``None`` when it is ``path`` or the sidecar
    records none. Only the format is compared, so a pair renamed together still reads."""
    described = data.get("describes")
    if not isinstance(described, str):
        return None
    if _split(described)[1] == _split(path.name)[1]:
        return None
    return _split(path.name)[0] + _split(described)[1]


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``path`` as a dict (empty when absent, unreadable, or the sidecar of a file
    of another format with the same stem: its rescale and units are not this file's)."""
    p = Path(path)
    sp = sidecar_path(p)
    if not sp.is_file():
        return {}
    data = _load(sp)
    if data is None or _describes_other(data, p) is not None:
        return {}
    return data


def check_sidecar(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse to write the sidecar of the output ``path`` (module docstring): its place holds a
    JSON file medsr did not write, or the sidecar of another file (or, for a sidecar written
    before medsr recorded which file it describes, another output of that stem exists), whatever
    ``overwrite``; or an existing sidecar without ``overwrite``. Nothing to check for outputs
    without a sidecar (DICOM)."""
    p = Path(path)
    stem, suffix = _split(p.name)
    if not suffix:
        return
    sp = sidecar_path(p)
    if not (sp.exists() or sp.is_symlink()):
        return
    where = f"'{sp}' (where the JSON sidecar of '{p.name}' goes)"
    data = _load(sp) if sp.is_file() else None
    if data is None or not str(data.get("generator", "")).startswith("medsr"):
        raise OutputExistsError(
            f"{where} exists and was not written by medsr; it is never replaced: move it or choose another output name"
        )
    other, verb = _describes_other(data, p), "is"
    if other is None and not isinstance(data.get("describes"), str):  # written before the record
        others = [
            stem + s for s in SIDECAR_SUFFIXES if s != suffix and (p.parent / (stem + s)).exists()
        ]
        other, verb = (others[0] if others else None), "may be"
    if other is not None:
        raise OutputExistsError(
            f"{where} {verb} the sidecar of '{other}' (its units and calibration); it is never "
            "replaced: choose another output name"
        )
    if not overwrite:
        raise OutputExistsError(
            f"output {where} already exists; pass --overwrite (overwrite=True in Python) to replace it"
        )


def sidecar_dict(image: MedImage, **extra: Any) -> dict[str, Any]:
    """The sidecar content for ``image``.

    ``spacing_mm_zyx`` means what it means in ``medsr info`` (:meth:`MedImage.summary`) and in
    every grid medsr reports: its z value is the distance between the slices' planes
    (:func:`medsr.slice_grid.slice_spacing`, what SpacingBetweenSlices states). On a tilted
    (sheared) stack the step from one slice to the next along ``affine_ras`` is longer; the
    sidecar then gives it as ``slice_step_mm`` too, which the raster reader takes for the grid
    (:func:`read_spacing`)."""
    from medsr._version import __version__
    from medsr.image import plane_spacing

    step = float(image.spacing[0])
    between = plane_spacing(image.affine, step)
    out: dict[str, Any] = {
        "generator": f"medsr {__version__}",
        "modality": image.modality,
        "units": image.units,
        "spacing_mm_zyx": [between, *(float(s) for s in image.spacing[1:])],
        **({"slice_step_mm": step} if between != step else {}),
        "affine_ras": np.asarray(image.affine).round(9).tolist(),
        "channels": image.channels or "gray",
        "derived": bool(image.history or image.meta.get("derivation")),
        "derivation": image.meta.get("derivation"),
        "history": list(image.history),
    }
    if image.meta.get("provenance"):  # version, model checksum, settings, safeguards summary
        out["provenance"] = image.meta["provenance"]
    reflect = image.meta.get("monochrome1_reflect")
    if reflect is not None:  # the values are a MONOCHROME1 source's, inverted: how to undo it
        out["monochrome1_inverted"] = {"source_value": f"{float(reflect):g} - value"}
    out.update(extra)
    return out


def read_spacing(side: dict[str, Any]) -> tuple[float, float, float]:
    """The grid's ``(z, y, x)`` spacing (:attr:`MedImage.spacing`: the length of each step
    along the affine's axes) from a sidecar: ``spacing_mm_zyx`` with its z value replaced by
    ``slice_step_mm`` where a tilted stack's sidecar gives one (:func:`sidecar_dict`); 1 mm
    each without a sidecar. Sidecars written before ``slice_step_mm`` held the step in
    ``spacing_mm_zyx`` and read as before."""
    z, y, x = (float(s) for s in side.get("spacing_mm_zyx", (1.0, 1.0, 1.0)))
    if "slice_step_mm" in side:
        z = float(side["slice_step_mm"])
    return z, y, x


def write_sidecar(
    image: MedImage, path: str | os.PathLike[str], *, overwrite: bool = True, **extra: Any
) -> Path:
    """Write the sidecar of the output ``path`` (the image's own path, not the sidecar's) and
    return the sidecar's path; it records the file it describes. The one way medsr writes a
    sidecar: :func:`check_sidecar` first (the writers also call it before they write the image,
    so a refused sidecar leaves nothing written)."""
    p = Path(path)
    check_sidecar(p, overwrite)
    sp = sidecar_path(p)
    with atomic_file(sp, overwrite=True) as tmp:
        content = {"describes": p.name, **sidecar_dict(image, **extra)}
        tmp.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return sp
