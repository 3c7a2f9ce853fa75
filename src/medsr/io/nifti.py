"""NIfTI-1/2 reader and writer (nibabel).

NIfTI stores data as ``(X, Y, Z[, T])`` with an affine from index ``(i, j, k)`` to RAS+ mm; a
MedImage keeps the same affine and transposes the data to ``(Z, Y, X)`` (``(T, Z, Y, X)`` with
``channels="time"`` for 4-D series). 2-D images ``(X, Y)`` become ``(1, Y, X)``.

The writer stores float32 with ``scl_slope``/``scl_inter`` reset, sform and qform both set to
the image's affine (same code), so any viewer agrees on the geometry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import CorruptInputError, UnsupportedFormatError
from medsr.image import MedImage
from medsr.io._atomic import atomic_file
from medsr.io.sidecar import read_sidecar, sidecar_path, write_sidecar


def read_nifti(path: str | os.PathLike[str], *, modality: str | None = None, **_: Any) -> MedImage:
    """Read a NIfTI file. ``modality`` overrides the one recorded in a medsr/BIDS JSON sidecar."""
    import nibabel as nib

    p = Path(path)
    try:
        img = nib.load(str(p))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise UnsupportedFormatError(f"'{p.name}' is not a NIfTI image")
        data = np.asanyarray(img.dataobj)
        data = np.asarray(img.get_fdata(dtype=np.float32)) if data.dtype.kind in "iuf" else None
    except (UnsupportedFormatError, CorruptInputError):
        raise
    except Exception as exc:  # nibabel raises many types for bad headers / truncated data
        raise CorruptInputError(f"corrupt or truncated NIfTI '{p.name}': {_short(exc)}") from None
    if data is None:
        raise UnsupportedFormatError(f"NIfTI '{p.name}' holds non-numeric data (e.g. RGB records)")
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        arr, channels = data.T[None], None
    elif data.ndim == 3:
        arr, channels = data.transpose(2, 1, 0), None
    elif data.ndim == 4:
        arr, channels = data.transpose(3, 2, 1, 0), "time"
    else:
        raise UnsupportedFormatError(f"NIfTI '{p.name}' has {data.ndim} dimensions; medsr reads 2-D to 4-D")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CorruptInputError(f"NIfTI '{p.name}' has an invalid (singular) affine")
    zooms = img.header.get_zooms()
    sx, sy = float(zooms[0]), float(zooms[1])
    sz = float(zooms[2]) if len(zooms) > 2 and data.ndim >= 3 else float(np.linalg.norm(affine[:3, 2])) or 1.0
    spacing = tuple(s if s > 0 else 1.0 for s in (sz, sy, sx))
    side = read_sidecar(p)
    header = img.header.copy()
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    return MedImage(
        array=np.ascontiguousarray(arr, dtype=np.float32),
        spacing=spacing,  # type: ignore[arg-type]
        affine=affine,
        modality=(modality or side.get("modality") or "OT").upper(),
        channels=channels,
        units=side.get("units", "a.u."),
        meta={
            "format": "nifti",
            "stored_dtype": str(img.get_data_dtype()),
            "nifti_header": header,
            "xform_code": max(sform_code, qform_code, 1),
            "source_paths": [str(p)],
        },
    )


def write_nifti(image: MedImage, path: str | os.PathLike[str], *, overwrite: bool = False, **_: Any) -> Path:
    """Write ``image`` as float32 NIfTI (``.nii`` or ``.nii.gz``) with consistent sform/qform."""
    import nibabel as nib

    arr = image.array
    if image.channels:
        data = arr.transpose(3, 2, 1, 0)
    else:
        data = arr.transpose(2, 1, 0)
    data = np.ascontiguousarray(data, dtype=np.float32)
    cls = nib.Nifti2Image if isinstance(image.meta.get("nifti_header"), nib.Nifti2Header) else nib.Nifti1Image
    header = cls.header_class()
    src = image.meta.get("nifti_header")
    if src is not None and isinstance(src, cls.header_class):
        for key in ("xyzt_units", "intent_code", "dim_info"):
            header[key] = src[key]
        if image.channels == "time":
            header["pixdim"][4] = src["pixdim"][4]
    else:
        header.set_xyzt_units("mm", "sec")
    header.set_data_dtype(np.float32)
    out = cls(data, image.affine, header=header)
    code = int(image.meta.get("xform_code", 1))
    out.set_sform(image.affine, code=code)
    out.set_qform(image.affine, code=code)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = _descrip(image)
    p = Path(path)
    with atomic_file(p, overwrite=overwrite) as tmp:
        nib.save(out, str(tmp))
    write_sidecar(image, sidecar_path(p), overwrite=True)
    return p


def _descrip(image: MedImage) -> bytes:
    deriv = image.meta.get("derivation")
    text = "medsr derived" if deriv or image.history else ""
    if deriv:
        text += f": {deriv.get('model', '?')} x{deriv.get('scale', '?')}"
    return text.encode("ascii", "replace")[:79]


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:200]
