"""NIfTI-1/2 reader and writer (nibabel).

NIfTI stores data as ``(X, Y, Z[, T])`` with an affine from index ``(i, j, k)`` to RAS+ world
coordinates in the header's spatial unit (``xyzt_units``: mm, µm or m; unknown is taken as mm);
a MedImage keeps the same affine in mm (and spacing in mm) and transposes the data to
``(Z, Y, X)`` (``(T, Z, Y, X)`` with ``channels="time"`` for 4-D series). 2-D images ``(X, Y)``
become ``(1, Y, X)``. The affine is nibabel's choice: the sform where its code is set, else the
qform, else (both codes 0: no space stated) one from the voxel sizes alone. A label map (intent
``LABEL`` or ``NEURONAME``), a field, a matrix, a mesh or CIFTI data (intent ``VECTOR``,
``DISPVECT``, ``SYMMATRIX``...) is not an image: it is refused (:func:`_refuse_label_map`).

The writer sets the sform to the image's affine, in the source's unit, with the code of the
transform it came from (0 where the source stated none), and the qform to the same geometry with
the same code where a qform can represent it (no shear), else qform_code 0, so any viewer agrees
on the geometry; a source whose qform was set beside its sform (a scanner qform beside a
template's sform) keeps that qform with its code, moved with the grid (:func:`_set_xforms`).
**Storage** (``dtype``): an image read from integer storage — an
integer NIfTI (int16 CT in HU, the usual MR ``int16``/``uint16``), a DICOM series with one Rescale
Slope/Intercept, an 8/16-bit PNG/TIFF — is written as that integer type with the source's
scaling as ``scl_slope``/``scl_inter``, each value rounded onto the source's own grid of
representable values: the same format back, as PNG/TIFF keep their bit depth and DICOM its
integer pixels with rescale (and what ``dcm2niix`` writes for a DICOM series); what the source
could not represent, the output does not claim. Everything else (float sources, colour, maps,
values the type cannot hold) is float32 with the scaling reset; ``dtype="float32"`` asks for
float32 always. **No data**: the reader reads a NaN/±inf voxel as 0 and records where it was
(``meta["nonfinite_mask"]``; every operation that changes the grid moves that record onto its
new grid, :func:`medsr.io.padding.carry_nonfinite`); the writer stores NaN there again — no data
stays no data, never a measured 0 (an infinite voxel comes back as NaN too) — so such an image
is always float32, which alone can hold NaN, and its sidecar's ``stored_as`` says ``no_data``.
On a ×2 CT output the integer storage halves the
bytes to deflate and cuts the compressed file ~3.2× (a 9-slice 512² CT at ×2 with fast-x2: 29.2 → 9.1 MB).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medsr.errors import (
    CorruptInputError,
    InputTooLargeError,
    InvalidHeaderError,
    InvalidParameterError,
    MedSRError,
    NotAnImageError,
    UnsupportedFormatError,
    is_fatal,
)
from medsr.image import MedImage
from medsr.io._atomic import atomic_file, check_output
from medsr.io._gzip import ParallelGzipWriter
from medsr.io._quiet import library_messages
from medsr.io.limits import check_pixel_count
from medsr.io.padding import nonfinite_mask, with_nan
from medsr.io.sidecar import check_sidecar, read_sidecar, scale_text, write_sidecar

try:
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - isal is a dependency; nibabel's gzip is the fallback
    _igzip = None  # type: ignore[assignment]


def read_nifti(path: str | os.PathLike[str], *, modality: str | None = None, **_: Any) -> MedImage:
    """Read a NIfTI file. ``modality`` overrides the one recorded in a medsr/BIDS JSON sidecar.

    The header is checked before the data are read: an empty dimension gives
    :class:`EmptyInputError`, more values than ``MEDSR_MAX_PIXELS`` an
    :class:`~medsr.errors.InputTooLargeError`, and data shorter than the header announces a
    :class:`CorruptInputError`. Non-finite voxels (NaN: outside the data) become 0; where they
    were is kept in ``meta["nonfinite_mask"]`` (see :func:`medsr.io.padding.padding_mask`).
    """
    import nibabel as nib

    with library_messages():  # nibabel's own logger exists only once nibabel is imported
        return _read_nifti(nib, Path(path), modality)


def _read_nifti(nib: Any, p: Path, modality: str | None) -> MedImage:
    try:
        img = nib.load(str(p))
        if not isinstance(img, nib.Nifti1Pair):  # NIfTI-1/2, one file or a .hdr/.img pair
            if isinstance(img, nib.AnalyzeImage):
                raise UnsupportedFormatError(
                    f"'{p.name}' is an Analyze 7.5 header, not NIfTI: it states no orientation "
                    "(left and right cannot be told); convert it to NIfTI where the orientation "
                    "is known"
                )
            raise UnsupportedFormatError(f"'{p.name}' is not a NIfTI image")
        shape = tuple(int(s) for s in img.header.get_data_shape())
        stored = np.dtype(img.get_data_dtype())
        # nibabel moves scl_slope/scl_inter from the header (reset to NaN) into the data proxy
        slope = float(getattr(img.dataobj, "slope", 1.0))
        inter = float(getattr(img.dataobj, "inter", 0.0))
    except MedSRError:
        raise
    except BaseException as exc:  # nibabel raises many types for bad headers / truncated data
        if is_fatal(exc):
            raise
        raise CorruptInputError(f"corrupt or truncated NIfTI '{p.name}': {_short(exc)}") from None
    if stored.kind not in "iuf" or stored.fields is not None:
        raise UnsupportedFormatError(f"NIfTI '{p.name}' holds non-numeric data (e.g. RGB records)")
    _refuse_label_map(img.header, p.name)
    check_pixel_count(shape, p.name, "NIfTI image")
    for label, value in (("scl_slope", slope), ("scl_inter", inter)):
        if not np.isfinite(value):
            raise InvalidHeaderError(f"NIfTI '{p.name}' has a non-finite {label} ({value})")
    _check_data_length(img, p, shape, stored)
    try:
        data = _voxels(nib, img, p)
    except MedSRError:
        raise
    except BaseException as exc:
        if is_fatal(exc):
            raise
        raise CorruptInputError(f"corrupt or truncated NIfTI '{p.name}': {_short(exc)}") from None
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        arr, channels = data.T[None], None
    elif data.ndim == 3:
        arr, channels = data.transpose(2, 1, 0), None
    elif data.ndim == 4:
        arr, channels = data.transpose(3, 2, 1, 0), "time"
    else:
        raise UnsupportedFormatError(
            f"NIfTI '{p.name}' has {data.ndim} dimensions; medsr reads 2-D to 4-D"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    nonfinite: np.ndarray | None = None
    if not _always_finite(stored, slope, inter):  # integers scaled within float32 need no look
        nonfinite = ~np.isfinite(arr)
        if nonfinite.any():
            arr[nonfinite] = 0.0
        else:
            nonfinite = None
    header = img.header.copy()
    to_mm = _unit_mm(header)  # the header's coordinates in its xyzt_units: µm and m become mm
    affine = _scaled(np.asarray(img.affine, dtype=np.float64), to_mm)
    if (
        not np.isfinite(affine).all()
        or np.abs(affine).max() > _MAX_AFFINE
        or abs(np.linalg.det(affine[:3, :3])) < 1e-12
    ):
        raise CorruptInputError(f"NIfTI '{p.name}' has an invalid (singular or non-finite) affine")
    spacing = _spacing(img, affine, data.ndim, p.name, to_mm)
    side = read_sidecar(p)
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    meta: dict[str, Any] = {
        "format": "nifti",
        "stored_dtype": str(stored),
        "nifti_scaling": (slope, inter),  # the voxels' scl_slope, scl_inter (1, 0: none)
        "nifti_header": header,
        # the code of the transform the affine is (nibabel's choice: the sform where its code is
        # set, else the qform; 0: neither, the affine is nibabel's from the voxel sizes alone)
        "xform_code": sform_code if sform_code > 0 else qform_code,
        "source_paths": [str(p)],
    }
    if sform_code > 0 and qform_code > 0:
        # the qform's space as a map of the sform's (e.g. scanner coordinates beside a template's
        # sform): the writer moves it with the grid (:func:`_set_xforms`)
        qform = _scaled(np.asarray(header.get_qform(), dtype=np.float64), to_mm)
        meta["nifti_qform"] = (qform @ np.linalg.inv(affine), qform_code)
    if nonfinite is not None:
        meta["nonfinite_mask"] = nonfinite
    return MedImage(
        array=arr,
        spacing=spacing,
        affine=affine,
        modality=(modality or side.get("modality") or "OT").upper(),
        channels=channels,
        units=side.get("units", "a.u."),
        meta=meta,
    )


#: NIfTI intent codes whose voxel values name regions rather than measure anything:
#: ``NIFTI_INTENT_LABEL`` (1002, a segmentation or atlas) and ``NIFTI_INTENT_NEURONAME`` (1003,
#: indices into the NeuroNames list)
_LABEL_INTENTS = {1002: "LABEL", 1003: "NEURONAME"}

_FIELD = "resample it with the tool that made it"
_NOT_A_GRID = "use the image it was computed from"
#: NIfTI intent codes (nifti1.h; FSL's and CIFTI-2's) whose voxels hold no intensity: what each
#: voxel holds, and what to do instead. A super-resolution model learnt on images has no meaning
#: on them, and upscaling their components one by one as if each were an image breaks what they
#: hold together. Every other code is an image of one value per voxel and stays allowed: none,
#: the statistics (t, F, z, p... 2-24: one value per voxel, its parameters copied to the output),
#: ESTIMATE, DIMLESS, TIME_SERIES, RGB(A)_VECTOR (a colour per voxel), SHAPE, FSL's TOPUP field
#: (a field map in Hz).
_NON_IMAGE_INTENTS: dict[int, tuple[str, str, str]] = {
    1004: ("GENMATRIX", "each voxel holds a matrix", _FIELD),
    1005: ("SYMMATRIX", "each voxel holds a symmetric matrix, e.g. a diffusion tensor", _FIELD),
    1006: ("DISPVECT", "each voxel holds a displacement, a deformation field", _FIELD),
    1007: ("VECTOR", "each voxel holds a vector", _FIELD),
    1008: ("POINTSET", "it lists points, not voxels", _NOT_A_GRID),
    1009: ("TRIANGLE", "it lists the triangles of a mesh", _NOT_A_GRID),
    1010: ("QUATERNION", "each voxel holds a rotation (a quaternion)", _FIELD),
    2002: ("NODE_INDEX", "each value indexes a surface node", _NOT_A_GRID),
    2006: ("FSL_FNIRT_DISPLACEMENT_FIELD", "each voxel holds a displacement, a warp", _FIELD),
    **{
        code: (name, "it holds the coefficients of a warp or field, not values at voxels", _FIELD)
        for code, name in (
            (2007, "FSL_CUBIC_SPLINE_COEFFICIENTS"),
            (2008, "FSL_DCT_COEFFICIENTS"),
            (2009, "FSL_QUADRATIC_SPLINE_COEFFICIENTS"),
            (2016, "FSL_TOPUP_CUBIC_SPLINE_COEFFICIENTS"),
            (2017, "FSL_TOPUP_QUADRATIC_SPLINE_COEFFICIENTS"),
        )
    },
    **{
        code: ("CONNECTIVITY (CIFTI-2)", "a matrix over brain-ordinates or parcels", _NOT_A_GRID)
        for code in (3000, 3001, 3002, 3003, 3004, 3006, 3007, 3008, 3009, 3010, 3011, 3012)
    },
}


def _refuse_label_map(header: Any, name: str) -> None:
    """A label map (:data:`_LABEL_INTENTS`) is a :class:`NotAnImageError`, as a DICOM SEG is:
    any interpolation between two labels invents labels that name other regions (between 2 and
    7 come 3 to 6), written back as a label map that claims them (it was upscaled like an image
    and kept its intent). So is a field, a matrix, a mesh or CIFTI data
    (:data:`_NON_IMAGE_INTENTS`): it used to be upscaled component by component (4-D) and written
    back with its intent, or refused for its dimensions only (5-D)."""
    try:
        code = int(header["intent_code"])
    except Exception:  # pragma: no cover - every NIfTI-1/2 header has the field
        return
    if code in _LABEL_INTENTS:
        raise NotAnImageError(
            f"'{name}' cannot be super-resolved: it is a label map (NIfTI intent "
            f"{_LABEL_INTENTS[code]}: each value names a region), not an image; interpolating it "
            "would invent labels between regions: upscale the image it was drawn on (resample "
            "a label map with nearest neighbour)"
        )
    if code in _NON_IMAGE_INTENTS:
        intent, what, instead = _NON_IMAGE_INTENTS[code]
        raise NotAnImageError(
            f"'{name}' cannot be super-resolved: it is not an image (NIfTI intent {intent}: "
            f"{what}); a super-resolution model has no meaning on it: {instead}"
        )


#: largest magnitude of an affine entry (mm): 10 km
_MAX_AFFINE = 1e7
#: deflate's largest expansion is 1032:1; a little slack for the gzip framing
_MAX_DEFLATE_RATIO = 1100


#: millimetres per unit of a NIfTI header's spatial ``xyzt_units`` (``unknown``: taken as mm, as
#: FSL and ITK do)
_UNIT_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3, "unknown": 1.0}


def _unit_mm(header: Any) -> float:
    """Millimetres per coordinate unit of ``header`` (its spatial ``xyzt_units``): the affine,
    the qform, the sform and pixdim are all in that unit."""
    try:
        unit = header.get_xyzt_units()[0]
    except Exception:  # a code nibabel does not name: NIfTI readers take it as mm
        return 1.0
    return _UNIT_MM.get(unit, 1.0)


def _scaled(affine: np.ndarray, factor: float) -> np.ndarray:
    """``affine`` with its world coordinates multiplied by ``factor`` (a change of unit)."""
    if factor == 1.0:
        return affine
    out = np.array(affine, dtype=np.float64)
    out[:3] *= factor
    return out


def _spacing(
    img: Any, affine: np.ndarray, ndim: int, name: str, to_mm: float = 1.0
) -> tuple[float, float, float]:
    """(z, y, x) spacing in mm from pixdim (in the header's unit, × ``to_mm``); a zero, negative
    or non-finite pixdim falls back to the column norm of ``affine`` (already in mm); a result
    outside 1e-6 … 1e5 mm is an :class:`InvalidHeaderError`."""
    zooms = [float(z) * to_mm for z in img.header.get_zooms()[:3]]
    norms = [float(n) for n in np.linalg.norm(affine[:3, :3], axis=0)]
    out = []
    for axis in range(3):
        z = zooms[axis] if axis < len(zooms) and (axis < 2 or ndim >= 3) else float("nan")
        if not (np.isfinite(z) and z > 0):
            z = norms[axis] if norms[axis] > 0 else 1.0
        if not 1e-6 <= z <= 1e5:
            raise InvalidHeaderError(
                f"NIfTI '{name}' has a voxel size of {z:g} mm along axis {axis}: "
                "not a physical size (1e-06 to 100000 mm)"
            )
        out.append(z)
    sx, sy, sz = out
    return (sz, sy, sx)


def _always_finite(stored: np.dtype, slope: float, inter: float) -> bool:
    """Whether every voxel of ``stored`` integers scaled by finite ``slope``/``inter`` is a
    finite float32 (the largest magnitude stays below half float32's maximum, a margin for the
    rounding of the scaling): then the reader skips looking for NaN/inf (a pass and a mask of
    the volume)."""
    if stored.kind not in "iu":
        return False
    info = np.iinfo(stored)
    bound = max(abs(int(info.min)), abs(int(info.max))) * abs(slope) + abs(inter)
    return bool(bound < float(np.finfo(np.float32).max) / 2)


def _voxels(nib: Any, img: Any, p: Path) -> np.ndarray:
    """``img``'s voxel values as float32 (nibabel's scaling). A ``.nii.gz`` is inflated by ISA-L
    (``isal.igzip``, a dependency; the writer's library) rather than Python's ``gzip``: the
    9-slice 512² int16 CT of ``benchmarks/speed.py`` reads in 10 ms instead of 21 ms, the same
    values."""
    single = isinstance(img, nib.Nifti1Image | nib.Nifti2Image)  # not a .hdr/.img pair
    if single and p.name.lower().endswith(".gz") and _igzip is not None:
        with _igzip.open(p, "rb") as f:
            holder = nib.FileHolder(fileobj=f)
            inflated = type(img).from_file_map({"image": holder, "header": holder})
            return np.asarray(inflated.get_fdata(dtype=np.float32))
    return np.asarray(img.get_fdata(dtype=np.float32))


def _check_data_length(img: Any, p: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The file must hold the bytes the header announces (gzip: within deflate's ratio)."""
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        offset = int(img.dataobj.offset)
    except Exception:  # pragma: no cover - other proxies
        return
    # a .hdr/.img pair: the voxels are in the image file
    p = Path(img.file_map["image"].filename or p)
    size = p.stat().st_size
    if p.name.lower().endswith(".gz"):
        # deflate cannot expand data more than 1032-fold: a header announcing more lies
        if offset + needed > size * _MAX_DEFLATE_RATIO:
            raise CorruptInputError(
                f"corrupt or truncated NIfTI '{p.name}': the header announces {needed:,} bytes "
                f"of data, more than {size:,} compressed bytes can hold"
            )
        return
    if size < offset + needed:
        raise CorruptInputError(
            f"corrupt or truncated NIfTI '{p.name}': the header announces {needed:,} bytes of "
            f"data, the file holds {max(size - offset, 0):,}"
        )


#: the most samples along one axis of a NIfTI-1 file (its dim[] is int16)
NIFTI1_AXIS_MAX = 32767


def check_nifti1_shape(shape: tuple[int, ...], name: str) -> None:
    """Refuse, before any work, a NIfTI-1 output ``name`` of ``shape`` with an axis longer than
    :data:`NIFTI1_AXIS_MAX` (nibabel raised its HeaderDataError, a traceback, at the write)."""
    dims = [int(n) for n in shape]
    if dims and max(dims) > NIFTI1_AXIS_MAX:
        raise InputTooLargeError(
            f"'{name}': the image is {' × '.join(map(str, dims))} samples; a NIfTI-1 axis holds "
            f"at most {NIFTI1_AXIS_MAX:,} (write .npy, or a smaller factor)"
        )


#: what ``write_nifti``'s ``dtype`` accepts: the source's integer storage when it holds the
#: values (``input``, default), or float32 always
OUTPUT_DTYPES = ("input", "float32")


def check_output_dtype(value: str | None, what: str = "output dtype") -> str:
    """``value`` (``None``: ``input``) as one of :data:`OUTPUT_DTYPES`, any case; else an
    :class:`~medsr.errors.InvalidParameterError` naming ``what`` (the option of the front end)."""
    want = (value or "input").lower()
    if want not in OUTPUT_DTYPES:
        raise InvalidParameterError(
            f"{what} must be one of {', '.join(OUTPUT_DTYPES)}; got {value!r}"
        )
    return want


def write_nifti(
    image: MedImage,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dtype: str | None = None,
    **_: Any,
) -> Path:
    """Write ``image`` as NIfTI (``.nii`` or ``.nii.gz``) with one geometry (the sform, and the
    qform equal to it or unset: :func:`_set_xforms`); stored as
    its source's integer type and scaling (``dtype`` ``"input"``, the default) when it came from
    integer storage and the values fit, else (or with ``dtype="float32"``) as float32 (module
    docstring)."""
    import nibabel as nib

    want = check_output_dtype(dtype)
    check_output(path, overwrite)
    check_sidecar(path, overwrite)  # before the image: a refused sidecar leaves nothing written
    # the source's NaN (read as 0: meta["nonfinite_mask"], on this grid) are NaN again: no data
    # stays no data, never a measured 0 — and so float32, which alone can hold it
    no_data = nonfinite_mask(image)
    arr = np.ascontiguousarray(with_nan(image))
    store = integer_storage(image, arr) if want == "input" and no_data is None else None
    # (Z, Y, X) in C order is NIfTI's (X, Y, Z) in Fortran order: the transposed view is written
    # as it lies in memory, without a transposed copy of the volume
    data = arr.transpose(3, 2, 1, 0) if image.channels else arr.transpose(2, 1, 0)
    cls = (
        nib.Nifti2Image
        if isinstance(image.meta.get("nifti_header"), nib.Nifti2Header)
        else nib.Nifti1Image
    )
    if cls is nib.Nifti1Image:
        check_nifti1_shape(image.array.shape, Path(path).name)
    header = cls.header_class()
    src = image.meta.get("nifti_header")
    if src is not None and isinstance(src, cls.header_class):
        for key in ("xyzt_units", "dim_info"):
            header[key] = src[key]
        if not (image.meta.get("derivation") or {}).get("map"):  # a map is none of these
            _copy_meaning(src, header)
        if image.channels == "time":
            header["pixdim"][4] = src["pixdim"][4]
    else:
        header.set_xyzt_units("mm", "sec")
    header.set_data_dtype(np.float32 if store is None else store[0])
    to_mm = _unit_mm(header)  # the source's unit (µm, m) kept: the affine goes back into it
    affine = np.asarray(image.affine, dtype=np.float64)
    out = cls(data, _scaled(affine, 1.0 / to_mm), header=header)
    qform = image.meta.get("nifti_qform")
    _set_xforms(out, affine, int(image.meta.get("xform_code", 1)), qform=qform, unit_mm=to_mm)
    out.header["descrip"] = _descrip(image)
    p = Path(path)
    with atomic_file(p, overwrite=overwrite) as tmp, open(tmp, "wb") as raw:
        if p.name.lower().endswith(".gz"):  # deflated on every core (medsr.io._gzip)
            with ParallelGzipWriter(raw) as gz:
                _write_image(out, arr, gz, store)
        else:
            _write_image(out, arr, raw, store)
    stored_as: dict[str, Any] = {"dtype": "float32"}
    if store is not None:  # what a reader of the values should know: they sit on this grid
        stored_as = {
            "dtype": store[0].name,
            "scl_slope": store[1],
            "scl_inter": store[2],
            "rounded": True,
        }
    if no_data is not None:
        stored_as["no_data"] = f"NaN ({int(no_data.sum())} voxels the source held no data at)"
    write_sidecar(image, p, stored_as=stored_as)
    return p


#: what the source's header says the values are, copied together: the intent (a statistic and
#: its parameters, e.g. a t map and its degrees of freedom; its name) and the display window
_MEANING_FIELDS = ("intent_code", "intent_p1", "intent_p2", "intent_p3", "intent_name")


def _copy_meaning(src: Any, header: Any) -> None:
    """Copy :data:`_MEANING_FIELDS` and a valid display window (``cal_min`` < ``cal_max``) from
    ``src`` to ``header``; the intent used to be copied without its parameters (a t map with 0
    degrees of freedom) and the window not at all."""
    for key in _MEANING_FIELDS:
        header[key] = src[key]
    lo, hi = float(src["cal_min"]), float(src["cal_max"])
    if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
        header["cal_min"], header["cal_max"] = lo, hi


#: largest difference (in the header's unit, mm as a rule) between the qform, as a reader decodes
#: it from the header, and the transform it should be, in any entry of their 3×4 matrices (each
#: voxel step and the origin): float32 storage of a quaternion that is not near a half turn
#: reproduces a rotation to ~1e-7 of the voxel size
_QFORM_TOL = 1e-5


def _set_xforms(
    img: Any,
    affine: np.ndarray,
    code: int,
    *,
    qform: tuple[np.ndarray, int] | None = None,
    unit_mm: float = 1.0,
) -> None:
    """Set ``img``'s sform to ``affine`` (mm) with ``code``, and its qform to the same geometry
    with that code — or, with ``qform`` (``(W, qform_code)`` of a source whose qform was a
    space of its own, :func:`read_nifti`'s ``meta["nifti_qform"]``), to ``W · affine`` with the
    source's qform code: the source's second space on the new grid — only where a qform can
    hold it. Both are written in the header's unit (``unit_mm`` mm each).

    A qform is a rotation, voxel sizes and a flip of the third axis (qfac), its quaternion in
    float32; a sheared affine (a tilted-gantry CT, a resampled oblique volume, dipy's
    ``S0_10slices.nii.gz``) has none, nor, to this precision, one whose rotation is near a half
    turn about an oblique axis (the quaternion's first component is rebuilt from the float32
    others). nibabel's ``set_qform`` then silently stores the nearest shear-free transform — a
    second, different geometry that viewers preferring the qform (ITK, FSL in some modes) would
    use. So the qform is decoded back from the header as written and kept only if it equals the
    transform asked for to :data:`_QFORM_TOL`; else its code is 0 (unknown: readers take the
    sform), its fields left as nibabel fills them (pixdim: the voxel sizes)."""
    header = img.header
    q_affine, q_code = affine, code
    if qform is not None:
        q_affine, q_code = np.asarray(qform[0], dtype=np.float64) @ affine, int(qform[1])
    img.set_sform(_scaled(affine, 1.0 / unit_mm), code=code)
    img.set_qform(_scaled(q_affine, 1.0 / unit_mm), code=q_code)
    # in the header's unit, against the transform as float32 storage holds it (an sform's srow):
    # the rounding of a large offset is the sform's too, not a difference between them
    wanted = _scaled(q_affine, 1.0 / unit_mm).astype(np.float32).astype(np.float64)
    if np.abs(np.asarray(header.get_qform(), dtype=np.float64) - wanted)[:3].max() > _QFORM_TOL:
        img.set_qform(_scaled(affine, 1.0 / unit_mm), code=0)


def _source_scaling(image: MedImage) -> tuple[float, float] | None:
    """``(slope, intercept)`` that map the stored integers of ``image``'s source to its values,
    one pair for the whole image: a NIfTI's ``scl_slope``/``scl_inter``, a DICOM series' Rescale
    Slope/Intercept when every slice has the same (not a multi-frame object, whose frames may
    differ, nor a Modality LUT: not a linear map of the stored integers; an inverted
    MONOCHROME1 when its values are whole numbers), a PNG/TIFF's sidecar rescale; ``None``
    otherwise."""
    fmt = image.meta.get("format")
    if fmt == "nifti":
        return image.meta.get("nifti_scaling", (1.0, 0.0))
    if fmt in ("png", "tiff"):
        return image.meta.get("rescale", (1.0, 0.0))
    if fmt != "dicom" or image.meta.get("multiframe") or image.meta.get("modality_lut"):
        return None
    from medsr.io.dicom.header import _rescale  # the reader's own reading of each slice's

    slope, inter = (float(v) for v in image.meta.get("rescale", (1.0, 0.0)))
    if any(_rescale(ds) != (slope, inter) for ds in image.meta.get("datasets") or []):
        return None
    reflect = image.meta.get("monochrome1_reflect")
    if reflect is not None:  # inverted: reflect − (slope·k + inter), integers when all three are
        whole = slope == 1.0 and float(inter).is_integer() and float(reflect).is_integer()
        return (1.0, 0.0) if whole else None
    return slope, inter


def _extremes(a: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of ``a`` (NaN if it has one): in one pass on both cores with torch's
    ``aminmax`` when torch is already loaded (an upscaling run; 10 against 34 ms for a 1024²×64
    float32 volume), NumPy's two reductions otherwise (reading or converting files does not
    import torch)."""
    torch = sys.modules.get("torch")
    usable = a.dtype in (np.float32, np.float64) and a.flags.writeable  # torch warns on read-only
    if torch is not None and usable and all(st >= 0 for st in a.strides):
        lo, hi = torch.aminmax(torch.from_numpy(a))
        return float(lo), float(hi)
    return float(a.min()), float(a.max())


def integer_storage(
    image: MedImage, arr: np.ndarray | None = None
) -> tuple[np.dtype, float, float] | None:
    """``(dtype, slope, inter)`` of the integer storage ``image`` was read from (a NIfTI, a
    DICOM series, a PNG/TIFF: :func:`_source_scaling`), when its values ``arr`` (default:
    ``image.array``) all map into that type's range once rounded onto the source's grid
    (``(value − inter) / slope``); ``None``: float32 (float or unknown storage, colour,
    non-finite values, or values the type cannot hold)."""
    if image.is_color:
        return None
    try:
        dt = np.dtype(str(image.meta.get("stored_dtype", "float32"))).newbyteorder("=")
    except TypeError:
        return None
    if dt.kind not in "iu":
        return None
    scaling = _source_scaling(image)
    if scaling is None:
        return None
    slope, inter = (float(v) for v in scaling)
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0:
        return None
    a = image.array if arr is None else arr
    if not a.size:
        return dt, slope, inter
    ends = (np.array(_extremes(a), dtype=np.float64) - inter) / slope
    if not np.isfinite(ends).all():
        return None
    info = np.iinfo(dt)
    lo, hi = np.rint(ends.min()), np.rint(ends.max())
    return (dt, slope, inter) if info.min <= lo and hi <= info.max else None


#: voxels rounded and written per chunk of this many values (bounded temporaries; each chunk is
#: a new array, which the gzip writer deflates where it lies)
_CHUNK = 2**21


def _write_image(
    img: Any,
    voxels: np.ndarray,
    fileobj: Any,
    store: tuple[np.dtype, float, float] | None = None,
) -> None:
    """What nibabel's ``img.to_file_map`` writes — its header, zeros up to the data offset, the
    voxels — with the voxels written from where they lie: ``voxels`` is the C-contiguous float32
    volume whose memory is NIfTI's Fortran order (nibabel copies each slab into ``bytes`` first:
    14 ms for a ×2 output of 9 slices of 512²). Float32 without scaling, or with ``store``
    (``(dtype, slope, inter)``, :func:`integer_storage`) that integer type: each value rounded
    to the nearest of ``inter + slope·k``, chunk by chunk. ``tests/io/test_nifti.py`` checks that
    the bytes are nibabel's."""
    header = img.header
    if store is None:
        header.set_slope_inter(1.0, 0.0)
    else:
        header.set_slope_inter(store[1], store[2])
    img.update_header()
    want = np.dtype(np.float32) if store is None else np.dtype(store[0])
    if (
        header.get_data_dtype() != want
        or not voxels.flags.c_contiguous
        or voxels.dtype != np.float32
    ):
        raise ValueError(
            "the direct writer takes C-contiguous float32 voxels and the header's dtype"
        )
    header.write_to(fileobj)
    gap = int(header.get_data_offset()) - fileobj.tell()
    if gap > 0:
        fileobj.write(b"\x00" * gap)
    if not voxels.size:
        return
    flat = voxels.reshape(-1)
    if store is None:  # read-only: the gzip writer deflates it in place (it does not change)
        fileobj.write(flat.data.cast("B").toreadonly())
        return
    dt, slope, inter = store
    target = dt.newbyteorder(header.endianness)
    # one float64 scratch for every chunk of a rescaled output (half the time of a new array per
    # operation), rounded straight into the integers (one pass); each chunk's integers are a fresh
    # array, as the gzip writer may still be deflating the last one
    plain = slope == 1.0 and inter == 0.0  # rounding the float32 values themselves is exact
    work = None if plain else np.empty(min(flat.size, _CHUNK), np.float64)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        if work is not None:
            buf = work[: part.size]
            np.subtract(part, inter, out=buf, dtype=np.float64)  # exact: float32 in float64
            if slope != 1.0:
                np.divide(buf, slope, out=buf)
            part = buf
        q = np.empty(part.size, target)
        np.rint(part, out=q, casting="unsafe")  # in range: integer_storage checked the extremes
        fileobj.write(q.data.cast("B").toreadonly())


def _descrip(image: MedImage) -> bytes:
    """The header's 80-byte description: derived by what; a trust map (``derivation["map"]``,
    :mod:`medsr.safeguards.maps`) says it is one, and in which units, not the output's text."""
    deriv = image.meta.get("derivation")
    text = "medsr derived" if deriv or image.history else ""
    if deriv and deriv.get("map"):
        text = f"medsr {deriv['map']} map ({image.units}), not an image"
        text += f": {deriv.get('model', '?')} {scale_text(deriv.get('scale'))}"
    elif deriv and deriv.get("model") is None and deriv.get("kind"):  # medsr degrade
        text += f": simulated {deriv['kind']} {scale_text(deriv.get('scale'))}, not measured"
    elif deriv and deriv.get("model") is None and deriv.get("scale") is None:
        text += f": {deriv.get('method', '')}".rstrip(": ")
    elif deriv:
        text += f": {deriv.get('model', '?')} {scale_text(deriv.get('scale'))}"
    return text.encode("ascii", "replace")[:79]


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:200]
