"""MedImage: pixels plus the geometry and units that make them a medical image.

Conventions (see DESIGN.md):

* ``array`` is float32. Grayscale images have shape ``(Z, Y, X)``; a 2-D image is ``(1, Y, X)``.
  Images with a leading channel axis have shape ``(C, Z, Y, X)`` and say what the channels
  are in ``channels``: ``"RGB"`` for colour (DICOM RGB/YBR/palette, colour PNG) or ``"time"``
  for the fourth NIfTI dimension.
* ``spacing`` is in millimetres, ordered ``(z, y, x)`` like the array axes.
* ``affine`` is the 4×4 NIfTI-style voxel → world (RAS+, mm) matrix. It maps the column vector
  ``(x, y, z, 1)`` of *indices* — x the last array axis, z the first — to world coordinates, so
  ``world = affine @ [x, y, z, 1]``. DICOM (LPS) geometry is converted on read and back on write.
* Intensities are in the source's units: Hounsfield units for CT (RescaleSlope/Intercept
  applied), stored values for MR, grey levels for radiographs and rasters.
  ``meta`` keeps what a writer needs to go back to the same format.

Operations that change the sampling grid (:meth:`MedImage.resampled`) return a new MedImage
whose spacing and affine describe the new grid over the *same physical field of view*
(cell-centred convention): ``spacing' = spacing / f`` and
``origin' = origin + A · ((1/f − 1) / 2)`` in voxel units.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Spacing = tuple[float, float, float]


def affine_from_spacing(
    spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """Axis-aligned affine for an image with ``spacing`` (z, y, x) and world ``origin`` (x, y, z)."""
    sz, sy, sx = (float(s) for s in spacing)
    aff = np.diag([sx, sy, sz, 1.0])
    aff[:3, 3] = origin
    return aff


def spacing_from_affine(affine: np.ndarray) -> Spacing:
    """Voxel sizes (z, y, x) implied by the affine's column norms."""
    norms = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    return (float(norms[2]), float(norms[1]), float(norms[0]))


#: what a leading channel axis can hold (``None``: none, a grey image)
CHANNEL_KINDS = (None, "RGB", "time")
#: each named kind by its lower-case spelling (``"rgb"`` is ``"RGB"``)
_CHANNELS_BY_LOWER = {k.lower(): k for k in CHANNEL_KINDS if k}


@dataclass(frozen=True, eq=False)
class MedImage:
    """A medical image: float32 pixels, spacing (mm), affine (RAS), modality and source metadata.

    Attributes:
        array: float32 pixels, ``(Z, Y, X)`` or ``(C, Z, Y, X)`` (see ``channels``).
        spacing: voxel size in mm, ``(z, y, x)``.
        affine: 4×4 voxel-index ``(x, y, z)`` → RAS world (mm).
        modality: DICOM modality code (``CT``, ``MR``, ``CR``, ``DX``, ``US``, ``NM``, ``OT``...).
        channels: ``None`` for grayscale, ``"RGB"`` for colour, ``"time"`` for 4-D series.
        units: intensity units (``"HU"`` for CT, otherwise ``"a.u."`` or the raster's grey levels).
        meta: what the reader knew about the source (format, headers, stored dtype...).
            Writers use it to write the same format back; it is never logged.
        history: provenance: one human-readable entry per operation applied since reading.
    """

    array: np.ndarray
    spacing: Spacing = (1.0, 1.0, 1.0)
    affine: np.ndarray | None = None
    modality: str = "OT"
    channels: str | None = None
    units: str = "a.u."
    meta: dict[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        channels = (
            _CHANNELS_BY_LOWER.get(self.channels.lower())
            if isinstance(self.channels, str)
            else None
        )
        if channels is None and self.channels is not None:
            raise ValueError(
                f"channels must be one of None (grey), 'RGB' (colour) or 'time' (a 4-D series), "
                f"got {self.channels!r}"
            )
        object.__setattr__(self, "channels", channels)  # 'rgb' is 'RGB'
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[None]
        expected = 4 if self.channels else 3
        if arr.ndim != expected:
            raise ValueError(
                f"MedImage array must have {expected} dimensions "
                f"({'(C, Z, Y, X)' if self.channels else '(Z, Y, X)'}), got shape {arr.shape}"
            )
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        object.__setattr__(self, "array", arr)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(
                f"spacing must be three positive numbers (z, y, x) in mm, got {self.spacing}"
            )
        object.__setattr__(self, "spacing", spacing)
        if self.affine is None:
            affine = affine_from_spacing(spacing)
        else:
            affine = np.asarray(self.affine, dtype=np.float64)
            if affine.shape != (4, 4):
                raise ValueError(f"affine must be 4x4, got {affine.shape}")
        object.__setattr__(self, "affine", affine)

    def __repr__(self) -> str:  # never prints meta: it may hold patient headers
        return (
            f"MedImage(shape={tuple(self.array.shape)}, channels={self.channels!r}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, modality={self.modality!r}, "
            f"units={self.units!r}, format={self.meta.get('format', 'unknown')!r})"
        )

    # ------------------------------------------------------------------ shape helpers
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` whatever the channel layout."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0]) if self.channels else 1

    @property
    def is_volume(self) -> bool:
        return self.spatial_shape[0] > 1

    @property
    def is_color(self) -> bool:
        return self.channels == "RGB"

    @property
    def orientation(self) -> str:
        """Where the (x, y, z) index axes point, as nibabel axis codes: ``"LPS"`` means x runs
        toward the patient's Left, y toward Posterior, z toward Superior.

        This names directions, not a coordinate system: world coordinates are RAS+ whatever the
        code (see :meth:`world_center`). An axis whose direction cannot be told (a degenerate
        or non-finite affine) is ``"?"``.
        """
        import nibabel as nib

        try:
            with np.errstate(all="ignore"):
                codes = nib.orientations.aff2axcodes(self.affine)
        except Exception:  # nibabel cannot even decompose the affine
            return "???"
        return "".join(c if isinstance(c, str) else "?" for c in codes)

    def world_coordinate(self, index_xyz: Sequence[float]) -> np.ndarray:
        """World (RAS, mm) position of a (possibly fractional) voxel index ``(x, y, z)``."""
        v = np.ones(4)
        v[:3] = index_xyz
        return (np.asarray(self.affine) @ v)[:3]

    def world_center(self) -> np.ndarray:
        """World position (RAS+, mm) of the centre of the field of view."""
        z, y, x = self.spatial_shape
        return self.world_coordinate(((x - 1) / 2, (y - 1) / 2, (z - 1) / 2))

    def channel_first(self) -> np.ndarray:
        """Pixels as ``(C, Z, Y, X)`` (C = 1 for grayscale)."""
        return self.array if self.channels else self.array[None]

    # ------------------------------------------------------------------ derivation
    def replace(self, **changes: Any) -> MedImage:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_step(self, step: str) -> MedImage:
        """A copy with ``step`` appended to the provenance history."""
        return self.replace(history=(*self.history, step))

    def resampled(self, array: np.ndarray, step: str | None = None) -> MedImage:
        """A new MedImage for ``array`` covering the same field of view on a new grid.

        The zoom factor per axis is inferred from the shapes (new / old), so spacing, affine and
        origin follow exactly (cell-centred): nothing else in medsr computes geometry by hand.
        """
        arr = np.asarray(array, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        old = np.array(self.spatial_shape, dtype=float)
        new = np.array(arr.shape[-3:], dtype=float)
        if self.channels and (arr.ndim != 4 or arr.shape[0] != self.array.shape[0]):
            raise ValueError(
                f"expected {self.array.shape[0]} channels, got array of shape {arr.shape}"
            )
        zoom_zyx = new / old
        zoom_xyz = zoom_zyx[::-1]
        affine = np.array(self.affine, dtype=np.float64)
        lin = affine[:3, :3]
        affine[:3, 3] = affine[:3, 3] + lin @ ((1.0 / zoom_xyz - 1.0) / 2.0)
        affine[:3, :3] = lin / zoom_xyz[None, :]
        sz, sy, sx = (float(s) for s in np.array(self.spacing) / zoom_zyx)
        spacing: Spacing = (sz, sy, sx)
        history = self.history if step is None else (*self.history, step)
        meta = self.meta
        if abs(zoom_zyx[0] - 1.0) > 1e-9 and "slice_thickness_mm" in meta:
            # a thickness stated for the old slices does not describe the new ones
            meta = {k: v for k, v in meta.items() if k != "slice_thickness_mm"}
        if "nonfinite_mask" in meta and tuple(arr.shape) != tuple(self.array.shape):
            # where the old grid held no data (NaN): the operation that made the new grid
            # records it there by its own rule (medsr.io.padding.carry_nonfinite)
            meta = {k: v for k, v in meta.items() if k != "nonfinite_mask"}
        return dataclasses.replace(
            self, array=arr, spacing=spacing, affine=affine, history=history, meta=meta
        )

    def _time_summary(self) -> dict[str, Any]:
        labels = [str(v) for v in self.meta.get("time_points") or [] if v]
        out: dict[str, Any] = {"time_points": int(self.array.shape[0])}
        if len(labels) == out["time_points"] and labels:
            out["time_span"] = f"{labels[0]} … {labels[-1]}" if len(labels) > 1 else labels[0]
        return out

    def summary(self) -> dict[str, Any]:
        """Non-identifying description (for ``medsr info``, logs and reports).

        ``orientation`` gives the directions of the index axes (see :attr:`orientation`); the
        centre of the field of view is given in both conventions, named in the keys:
        ``world_center_ras_mm`` (RAS+, as the affine and NIfTI) and ``world_center_lps_mm``
        (DICOM patient coordinates, as ImagePositionPatient). The z spacing is the distance
        between the slices' planes (:func:`medsr.slice_grid.slice_spacing`, what
        SpacingBetweenSlices states); on a tilted (sheared) stack, whose step from slice to slice
        is longer, ``slice_step_mm`` gives the step too.
        """
        arr = self.array
        # the extremes of the finite values, without a copy of them (as large as the image)
        finite = np.isfinite(arr)
        has_finite = bool(finite.any())
        center = self.world_center() + 0.0  # + 0.0: no negative zeros in the printout
        lps = center * np.array([-1.0, -1.0, 1.0]) + 0.0
        between = plane_spacing(self.affine, float(self.spacing[0]))
        return {
            "format": self.meta.get("format", "unknown"),
            "modality": self.modality,
            "shape_zyx": list(self.spatial_shape),
            "channels": self.channels or "gray",
            "num_channels": self.num_channels,
            # an image over time: how many time points, and what the first and last are (a
            # DICOM cine's "cardiac phase 1 (trigger time ~18 ms)")
            **(self._time_summary() if self.channels == "time" else {}),
            "spacing_mm_zyx": [round(s, 6) for s in (between, *self.spacing[1:])],
            # a tilted-gantry stack: the step along the slices' line, longer than their distance
            **({"slice_step_mm": round(self.spacing[0], 6)} if between != self.spacing[0] else {}),
            # a multi-frame DICOM's frames: slices, or time frames (a cine) whose z spacing is
            # no distance (io.dicom.geometry.frame_axis)
            **(
                {"z_axis": self.meta["frame_axis"]["describe"]}
                if self.meta.get("frame_axis")
                else {}
            ),
            # a DICOM without PixelSpacing (or the like): 1 mm is assumed, not measured, and so is
            # the world position derived from it
            "spacing_assumed": self.meta.get("spacing_source") == "default",
            "orientation": self.orientation,
            # what the file stores (a palette's indices: ``read_as`` says how they became values)
            "stored_dtype": self.meta.get("source_dtype")
            or self.meta.get("stored_dtype", "float32"),
            **({"read_as": self.meta["read_as"]} if self.meta.get("read_as") else {}),
            "units": self.units,
            "min": float(np.min(arr, where=finite, initial=np.inf)) if has_finite else np.nan,
            "max": float(np.max(arr, where=finite, initial=-np.inf)) if has_finite else np.nan,
            # world coordinates name their convention: RAS+ (NIfTI, the affine) and the same
            # point in DICOM patient coordinates (LPS: x and y negated)
            "world_center_ras_mm": [round(float(c), 3) for c in center],
            "world_center_lps_mm": [round(float(c), 3) for c in lps],
        }


def require_image(image: object, where: str, *, pixels: bool = False) -> MedImage:
    """``image`` when it is a :class:`MedImage`, else a ``TypeError`` that says what ``where``
    (``"medsr.upscale"``...) takes and how to make one: an array has no spacing, a path is read
    by :func:`medsr.load_image` (or upscaled by ``medsr.upscale_file``). ``pixels``: an image
    with an axis of length 0 is an ``InvalidParameterError`` (nothing to upscale)."""
    if isinstance(image, MedImage):
        if pixels and image.array.size == 0:
            from medsr.errors import InvalidParameterError

            raise InvalidParameterError(
                f"{where}: the image has no pixels (shape {tuple(image.array.shape)})"
            )
        return image
    if isinstance(image, np.ndarray):
        how = "wrap an array as medsr.MedImage(array, spacing=(z, y, x)) with its voxel size in mm"
    elif isinstance(image, str | os.PathLike):
        how = "read a file with medsr.load_image(path) (medsr.upscale_file(path, output) upscales a file)"
    else:
        how = "read one with medsr.load_image(path) or make one with medsr.MedImage(array, spacing=...)"
    raise TypeError(f"{where} takes a MedImage, got {type(image).__name__}: {how}")


def plane_spacing(affine: Any, step: float, axis: int = 0) -> float:
    """:func:`medsr.slice_grid.slice_spacing` of a grid given by its ``affine`` (RAS+, columns x, y, z) and the
    length ``step`` of its step along array ``axis`` (0 = z): for a reader that has the grid
    before the image."""
    s = float(step)
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    col = 2 - (axis % 3)  # affine columns are x, y, z; array axes z, y, x
    a, b = (lin[:, c] for c in range(3) if c != col)
    normal = np.cross(a, b)
    scale = float(np.linalg.norm(normal) * np.linalg.norm(lin[:, col]))
    if not (np.isfinite(scale) and scale > 0):
        return s
    cos = abs(float(np.dot(normal, lin[:, col]))) / scale
    # no shear (to rounding): the stated spacing as it is, so no slice count moves by a rounding
    return s if not np.isfinite(cos) or cos <= 0 or cos > 1 - 1e-9 else s * cos
