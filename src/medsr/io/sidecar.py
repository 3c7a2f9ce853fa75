"""JSON sidecar beside non-DICOM outputs: what the pixel format cannot hold.

PNG/TIFF cannot store spacing, modality, units or a rescale to physical units; NIfTI cannot
store provenance. medsr writes ``<name>.json`` beside such outputs and reads it back when present,
so a CT written to 16-bit PNG comes back in Hounsfield units with its spacing. The sidecar never
contains patient identifiers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.image import MedImage
from medsr.io._atomic import atomic_file


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``scan.nii.gz`` → ``scan.json``; ``slice.png`` → ``slice.json``."""
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".png", ".tiff", ".tif", ".npy"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(name + ".json")


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``path`` as a dict (empty when absent or unreadable)."""
    sp = sidecar_path(path)
    if not sp.is_file():
        return {}
    try:
        data = json.loads(sp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sidecar_dict(image: MedImage, **extra: Any) -> dict[str, Any]:
    """The sidecar content for ``image``."""
    from medsr._version import __version__

    out: dict[str, Any] = {
        "generator": f"medsr {__version__}",
        "modality": image.modality,
        "units": image.units,
        "spacing_mm_zyx": list(image.spacing),
        "affine_ras": np.asarray(image.affine).round(9).tolist(),
        "channels": image.channels or "gray",
        "derived": bool(image.history or image.meta.get("derivation")),
        "derivation": image.meta.get("derivation"),
        "history": list(image.history),
    }
    if image.meta.get("provenance"):  # version, model checksum, settings, safeguards summary
        out["provenance"] = image.meta["provenance"]
    out.update(extra)
    return out


def write_sidecar(image: MedImage, path: Path, *, overwrite: bool = True, **extra: Any) -> Path:
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(sidecar_dict(image, **extra), indent=2) + "\n", encoding="utf-8")
    return path
