"""The one grid rule for through-plane outputs (slice interpolation and through-plane SR).

A core module (it imports only :mod:`medsr.image` and :mod:`medsr.errors`), so every layer that
makes slices — :mod:`medsr.interpolation`, :mod:`medsr.selfsup`, the evaluation — uses the same
rule without importing each other.

**Rule: cell-centred, same field of view.** A through-plane output of a volume with ``N``
slices of spacing ``s`` along the slice axis has

* ``n = f·N`` slices for an integer factor ``f`` (``medsr interpolate --factor f``), or
  ``n = max(N, round(N·s / target))`` for a target spacing (``medsr upscale --through-plane
  --target-spacing``, :func:`output_slices`);
* slice spacing ``N·s / n`` (``s / f`` for a factor; the target exactly when ``N·s / target``
  is a whole number);
* the same field of view: each input slice is read as a slab of width ``s`` centred on its
  position, and the ``n`` output slices tile the same ``N·s`` mm.

``s`` is the distance between the slices' planes, along their normal (:func:`slice_spacing`):
``image.spacing[0]`` except on a sheared grid (a tilted-gantry CT), whose step from slice to
slice is longer than that distance. Output slice ``j`` sits at
  input index ``(j + ½)·N/n − ½`` (:func:`cell_positions`): for ×2 at ``k ∓ ¼``, for ×4 at
  ``k − ⅜, k − ⅛, k + ⅛, k + ⅜`` — no output slice lies on an input slice for an even factor,
  exactly as for in-plane upscaling. Positions before the first / after the last input slice
  take the value of that slice (edge replication; no extrapolation).

Geometry comes from :meth:`medsr.image.MedImage.resampled` (:func:`on_grid`), the one place it
is computed: spacing and affine column divided by the zoom, origin moved by
``A·((1/f − 1)/2)`` voxels; DICOM slice positions follow. This is the convention of the rest of
medsr: in-plane upscaling, the thick-slice degradation (thick slice ``j`` centred on thin slice
``f·j + (f − 1)/2``, :func:`medsr.degradations.thick_slice`), its data-consistency operator and
the thick-slice evaluation (``medsr evaluate --degradation thick-slice`` and
``medsr evaluate --interpolation``), so a thin volume ``thick_slice(x, f)`` was made from is
reconstructed on ``x``'s own grid.

Who uses it: :func:`medsr.interpolation.interpolate_slices` (``medsr interpolate``) and
:func:`medsr.selfsup.through_plane_upscale` / :func:`medsr.selfsup.interpolate_z`
(``medsr upscale --through-plane``). Midpoint predictors (the slice interpolators, which predict
the slice half-way between two) reach the cell-centred positions by inserting midpoints
``log2(2f)`` times and keeping every other one (:func:`nested_midpoint_index`); for a linear
midpoint this is exactly linear resampling (:func:`resize_axis`).

(Before issue 19, ``medsr interpolate`` inserted ``f − 1`` slices between measured ones —
``(N − 1)·f + 1`` slices, the measured ones kept — while ``--through-plane`` used this rule;
the two outputs of one input were on different grids.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medsr.errors import InvalidParameterError, positive_number
from medsr.image import MedImage, plane_spacing  # plane_spacing: re-exported

__all__ = [
    "cell_positions",
    "check_frames_are_slices",
    "check_target_spacing",
    "factor_slices",
    "keep_no_data",
    "nearest_slices",
    "nested_midpoint_index",
    "no_data_kept",
    "on_grid",
    "output_slices",
    "plane_spacing",
    "positive_mm",
    "resize_axis",
    "slice_spacing",
    "slice_thickness_mm",
]

RESIZE_MODES = ("linear", "cubic", "nearest")


def factor_slices(n_in: int, factor: int) -> int:
    """Slices of the output for an integer ``factor``: ``f·N``."""
    return int(n_in) * int(factor)


def slice_spacing(image: MedImage, axis: int = 0) -> float:
    """The distance in mm between neighbouring slices along ``axis``, measured along their
    normal: what SpacingBetweenSlices states and what a target spacing asks for.

    It is ``image.spacing[axis]`` unless the affine is sheared along ``axis`` — a CT with a
    tilted gantry, whose slice positions step along the table while the slices are tilted, read
    as one grid (:func:`medsr.io.dicom.geometry._stack_geometry`): the step from one slice to
    the next is then longer than the distance between their planes, by ``1 / cos(tilt)``, and
    ``spacing[axis]`` (the step's length, the affine column's norm) is the step. A slice's
    profile spans its thickness along the normal, so the grid rule and the slice profile count
    in this distance (5 mm slices with a 20° tilt are 5 mm apart, their step 5.32 mm long).
    """
    return plane_spacing(image.affine, float(image.spacing[axis]), axis)


def output_slices(image: MedImage, target_spacing: float, axis: int = 0) -> int:
    """Slices of the output for a target spacing: ``max(N, round(N·s / target))``, ``s`` the
    distance between the slices' planes (:func:`slice_spacing`). The ratio is taken to 9
    decimals first: a tilted stack's distance, worked out from its affine, is its stated
    spacing to ~1e-15, and on a tie (6 slices 5 mm apart at 0.8 mm: 37.5) that gave 37 slices
    where the straight stack got 38."""
    n = image.spatial_shape[axis]
    return max(n, round(round(n * slice_spacing(image, axis) / float(target_spacing), 9)))


def check_target_spacing(image: MedImage, target_spacing: Any, axis: int = 0) -> float:
    """The target slice spacing in mm (default: the finer in-plane spacing, i.e. isotropic);
    refuses non-positive values and targets that would not add slices."""
    spacing = list(image.spacing)
    spacing.pop(axis)
    s = slice_spacing(image, axis)
    if target_spacing is None:
        target = min(spacing)
    else:
        target = positive_number(target_spacing, "target spacing", "mm")
    if output_slices(image, target, axis) <= image.spatial_shape[axis] and s <= target * (1 + 1e-3):
        raise InvalidParameterError(
            f"the slice spacing ({s:g} mm) is already no coarser than the target spacing "
            f"({target:g} mm): nothing to do through-plane"
        )
    return target


def cell_positions(n_in: int, n_out: int) -> np.ndarray:
    """Positions of the ``n_out`` output slice centres in input slice indices (cell-centred)."""
    return (np.arange(int(n_out)) + 0.5) * (int(n_in) / int(n_out)) - 0.5


def nearest_slices(n_in: int, n_out: int) -> np.ndarray:
    """The input slice whose cell holds each of ``n_out`` output slices' centres (no
    interpolation: which measured slice an output slice lies in)."""
    src = np.clip(np.floor(cell_positions(n_in, n_out) + 0.5), 0, int(n_in) - 1)
    return src.astype(np.int64)


def neighbour_step(array: np.ndarray, n_out: int, axis: int = 0) -> np.ndarray:
    """``|x[k+1] − x[k]|`` of the two measured slices (along ``axis`` of ``array``) around each
    of ``n_out`` output slices on the one grid (:func:`cell_positions`), float32, shaped like
    ``array`` with ``n_out`` along ``axis``: how much the volume changes where an output slice
    is estimated — the spread an interpolated slice's error bound scales
    (``medsr.pipeline.through_plane_spread``, ``medsr.interpolation.core.bound_spread``)."""
    a = np.asarray(array, dtype=np.float32)
    n_in = a.shape[axis]
    step = np.abs(np.diff(a, axis=axis))
    k = np.clip(np.floor(cell_positions(n_in, n_out)), 0, n_in - 2).astype(np.int64)
    return np.ascontiguousarray(np.take(step, k, axis=axis), np.float32)


def nested_midpoint_index(n_in: int, factor: int) -> np.ndarray:
    """Indices into the ``log2(2f)``-times midpoint-inserted stack (``(N − 1)·2f + 1`` slices at
    input positions ``m / 2f``) of the ``f·N`` cell-centred output slices; the ``f/2`` slices
    beyond each end repeat the first / last slice (edge replication)."""
    f = int(factor)
    if f < 1 or f & (f - 1):
        raise InvalidParameterError(f"midpoint insertion reaches powers of two only, got ×{f}")
    m = 2 * np.arange(f * int(n_in)) + 1 - f
    return np.clip(m, 0, (int(n_in) - 1) * 2 * f)


def resize_axis(x: Any, dim: int, n: int, mode: str = "linear") -> Any:
    """Resample ``x`` (a ``torch.Tensor``) along ``dim`` to ``n`` samples on the cell-centred
    grid (``align_corners=False``; antialiased when shrinking; edge samples replicated beyond
    the ends for ``linear``). ``mode``: ``linear``, ``cubic`` (Keys, a = −0.75) or
    ``nearest``."""
    import torch.nn.functional as F

    if mode not in RESIZE_MODES:
        raise InvalidParameterError(f"mode must be linear, cubic or nearest, got {mode!r}")
    dim = dim % x.ndim
    z = x.shape[dim]
    if n == z:
        return x
    lead, trail = x.shape[:dim], x.shape[dim + 1 :]
    # (axes before dim as channels, dim, axes after dim flattened): a reshape, no copy
    flat = x.reshape(1, math.prod(lead), z, math.prod(trail))
    m = flat.shape[-1]
    if mode == "nearest":
        out = F.interpolate(flat, size=(n, m), mode="nearest-exact")
    else:
        interp = {"linear": "bilinear", "cubic": "bicubic"}[mode]
        out = F.interpolate(flat, size=(n, m), mode=interp, align_corners=False, antialias=n < z)
    return out.reshape(*lead, n, *trail)


def on_grid(image: MedImage, array: np.ndarray, step: str | None = None) -> MedImage:
    """``image`` with ``array`` on the cell-centred output grid (geometry from
    :meth:`MedImage.resampled`: zoom per axis from the shapes)."""
    return image.resampled(array, step=step)


def positive_mm(value: Any) -> float | None:
    """``value`` as a length in mm when it is a finite number above 0, else ``None`` (an unset,
    malformed or meaningless thickness)."""
    try:
        v = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return v if v is not None and math.isfinite(v) and v > 0 else None


def slice_thickness_mm(image: MedImage) -> float | None:
    """Slice thickness of ``image`` in mm when its header says it, else ``None``.

    Looks at ``meta["slice_thickness_mm"]`` and DICOM ``SliceThickness`` (also in the shared
    functional groups of an enhanced multi-frame object). When the image has been resampled
    along z since it was read, its slices are new and the source's thickness does not describe
    them: the nominal thickness of contiguous slices, the slice spacing, as the DICOM writer
    states it (:func:`medsr.io.dicom.geometry._nominal_thickness`).
    """
    meta = image.meta or {}
    value = meta.get("slice_thickness_mm")
    if value is None and meta.get("format") == "dicom" and meta.get("datasets"):
        ds = meta["datasets"][0]
        value = ds.get("SliceThickness")
        if value is None:
            try:
                value = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
            except (AttributeError, IndexError, KeyError):
                value = None
        src = meta.get("source_spacing")
        try:
            value = float(value) if value is not None else None
        except (TypeError, ValueError):
            value = None
        value = positive_mm(value)
        if value is not None and src and abs(image.spacing[0] / float(src[0]) - 1.0) > 1e-6:
            value = slice_spacing(image, 0)
    return positive_mm(value)


def keep_no_data(out: np.ndarray, src: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Set the no-data voxels of ``out`` — ``src`` resampled along ``axis`` onto this module's
    grid — to ``src``'s exact values, in place, and return where they are (shaped like ``out``).

    ``mask`` (shaped like ``src``) marks the input's no-data voxels (DICOM padding, a CT's fill
    outside the scan circle, NaN: :func:`medsr.io.padding.no_data_mask`). An output slice holds
    no data where the input slices on both sides of its centre (:func:`cell_positions`) hold
    none; it takes the value of the nearer one.
    """
    ax = axis % src.ndim
    n_in, n_out = src.shape[ax], out.shape[ax]
    near = np.clip(np.round(cell_positions(n_in, n_out)), 0, n_in - 1).astype(np.int64)
    kept = no_data_kept(mask, n_out, ax)
    np.copyto(out, np.take(src, near, axis=ax), where=kept)
    return kept


def no_data_kept(mask: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """The no-data ``mask`` of an input on the grid of ``n_out`` slices along ``axis``: an output
    slice holds no data where the input slices on both sides of its centre
    (:func:`cell_positions`) hold none — the voxels :func:`keep_no_data` keeps exact."""
    ax = axis % mask.ndim
    n_in = mask.shape[ax]
    pos = cell_positions(n_in, n_out)
    lo = np.clip(np.floor(pos), 0, n_in - 1).astype(np.int64)
    hi = np.clip(np.ceil(pos), 0, n_in - 1).astype(np.int64)
    return np.take(mask, lo, axis=ax) & np.take(mask, hi, axis=ax)


def check_frames_are_slices(image: MedImage, what: str) -> None:
    """Refuse to make new slices between frames that are not slices: a multi-frame object whose
    Frame Increment Pointer says its frames are time points (a cine) or indexed by something else
    (``meta["frame_axis"]``, :func:`medsr.io.dicom.geometry.frame_axis`). Interpolating between
    two time frames of a heart would invent an instant, not a slice."""
    axis = image.meta.get("frame_axis") or {}
    if axis.get("kind") in ("time", "other"):
        raise InvalidParameterError(
            f"{what} makes new slices between slices, and this object's frames are not slices: "
            f"{axis.get('describe', axis['kind'])}"
        )
    if axis.get("kind") == "unknown":  # neither said: the user may know; they are told
        import warnings

        from medsr.errors import MedSRWarning

        warnings.warn(
            f"{what} takes the frames for slices, which the header does not say: "
            f"{axis.get('describe', 'frames of unstated kind')}",
            MedSRWarning,
            stacklevel=3,
        )
