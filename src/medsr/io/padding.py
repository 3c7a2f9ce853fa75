"""Where an image holds no data: DICOM pixel padding and non-finite (NaN) voxels.

DICOM marks pixels outside the scanned field (e.g. the corners of a CT reconstruction circle)
with Pixel Padding Value, optionally a whole range up to Pixel Padding Range Limit. The reader
records both in the image's units (after the Modality LUT / rescale and any MONOCHROME1
inversion, exactly as the pixels were converted) in ``meta["padding"]``::

    {"value": -3024.0, "range_limit": None}            # one value for every slice
    {"value": [v0, v1, ...], "range_limit": [...]}     # per slice (array order) when the
                                                       # slices' rescales differ; None entries
                                                       # for slices without padding

An image over time (``channels="time"``, ``(T, Z, Y, X)``: a dynamic or cine series read with
``KEY:all``) holds one value for all, or one per slice of each time point, time-major (``T·Z``
entries: those of time ``t`` are entries ``t·Z … t·Z + Z − 1``, as
:func:`medsr.io.dicom.read._read_over_time` joins them). Its padding is masked plane by plane
exactly as a volume's; only colour is left out.

A range means every value between the two, inclusive, is padding. NIfTI has no padding
attribute: NaN marks voxels outside the data there. The NIfTI reader (and the raster reader, for
a float ``.npy`` or TIFF) replaces non-finite values by 0 (so every array medsr hands on is
finite) and keeps where they were in ``meta["nonfinite_mask"]``.

CT has one more kind: scanners fill the outside of the reconstruction circle with a constant far
below air (e.g. −2000 or −3024 HU) even when the header names no padding.
:func:`no_data_mask` adds it to :func:`padding_mask`; it is what the pipeline masks (never fed
to a network, kept exact in the output) and what the out-of-distribution check leaves out.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import numpy as np

from medsr.image import MedImage

#: CT: no tissue is below air (−1000 HU); a constant value below this, covering at least
#: :data:`CT_PADDING_MIN_FRACTION` of a slice, is the scanner's fill outside the reconstruction
#: circle even when the header has no PixelPaddingValue
CT_PADDING_BELOW_HU = -1024.0
CT_PADDING_MIN_FRACTION = 0.01


def padding_mask(image: MedImage) -> np.ndarray | None:
    """Boolean mask shaped like ``image.array``: True where the image holds no data.

    True where DICOM padding applies (the value, or the inclusive range up to the limit) and
    where the array is non-finite or the reader found it non-finite (``meta["nonfinite_mask"]``
    of a NIfTI). None when no voxel is padding. Colour images carry no padding
    (DICOM defines it for grey pixels only), so only their non-finite values count; a grey
    image over time (``channels="time"``) has it in each time point, as a volume has.
    """
    arr = image.array
    mask = np.ascontiguousarray(~np.isfinite(arr))  # C order: set plane by plane via _planes
    recorded = nonfinite_mask(image)
    if recorded is not None:
        mask |= recorded
    padding = image.meta.get("padding")
    if padding and image.channels != "RGB":
        _apply_padding(_planes(arr), padding, _planes(mask))
    return mask if mask.any() else None


def _planes(arr: np.ndarray) -> np.ndarray:
    """``arr`` ``(Z, Y, X)`` or ``(T, Z, Y, X)`` as its planes ``(T·Z, Y, X)``, time-major: a
    view when ``arr`` is C-contiguous (a mask set through it is set in ``arr``), else a copy."""
    return arr.reshape(-1, *arr.shape[-2:])


def _per_plane(values: Any, planes: int) -> list[Any] | None:
    """``meta["padding"]``'s ``value`` or ``range_limit`` as one entry per plane of ``planes``
    planes (time-major): a number for all, or a list of one per plane; None when the list is
    of another length (the image was resampled along z: per-slice values no longer apply)."""
    if not isinstance(values, list | tuple):
        return [values] * planes
    return list(values) if len(values) == planes else None


def _apply_padding(planes: np.ndarray, padding: dict[str, Any], mask: np.ndarray) -> None:
    """Set ``mask`` ``(P, Y, X)`` where ``planes`` (``(Z, Y, X)``, or ``(T·Z, Y, X)``
    time-major) hold ``padding``'s value or range."""
    n = planes.shape[0]
    per_slice = _per_plane(padding.get("value"), n)
    limits = padding.get("range_limit")
    per_limit = [limits] * n if limits is None else _per_plane(limits, n)
    if per_slice is None or per_limit is None:
        return
    for k in range(n):
        v, lim = per_slice[k], per_limit[k]
        if v is None:
            continue
        sl = planes[k]
        if lim is None or lim == v:
            mask[k] |= sl == np.float32(v)
        else:
            lo, hi = sorted((np.float32(v), np.float32(lim)))
            mask[k] |= (sl >= lo) & (sl <= hi)


def padding_of_planes(meta: dict[str, Any], zs: np.ndarray, nz: int) -> dict[str, Any]:
    """``meta`` for the planes ``zs`` of an image of ``nz`` planes: its per-slice padding values
    and limits and its non-finite mask restricted to those planes (so that :func:`padding_mask`
    still applies to a sample of a volume's planes); everything else unchanged."""
    out = dict(meta)
    padding = meta.get("padding")
    if isinstance(padding, dict):
        picked = dict(padding)
        for key in ("value", "range_limit"):
            v = padding.get(key)
            if isinstance(v, list | tuple) and v and len(v) % nz == 0:  # per slice (of each
                # time point, time-major: medsr.io.padding's module note)
                picked[key] = [v[t + int(k)] for t in range(0, len(v), nz) for k in zs]
        out["padding"] = picked
    recorded = meta.get("nonfinite_mask")
    if isinstance(recorded, np.ndarray) and recorded.ndim >= 3 and recorded.shape[-3] == nz:
        out["nonfinite_mask"] = np.ascontiguousarray(recorded[..., zs, :, :])
    return out


__all__ = [
    "COMPUTE",
    "NoData",
    "block_mask",
    "carry_nonfinite",
    "fill_blocks",
    "fill_no_data",
    "mean_over_held",
    "nan_mask",
    "no_data_fill",
    "no_data_mask",
    "no_data_of",
    "nonfinite_mask",
    "padding_mask",
    "padding_of_planes",
    "with_nan",
]


def nonfinite_mask(image: MedImage) -> np.ndarray | None:
    """Where ``image``'s source held NaN/±inf (``meta["nonfinite_mask"]``, boolean, shaped like
    ``image.array``), or None: none recorded, or a record made for another grid (stale)."""
    recorded = image.meta.get("nonfinite_mask")
    if isinstance(recorded, np.ndarray) and recorded.shape == image.array.shape:
        return recorded.astype(bool, copy=False)
    return None


def block_mask(mask: np.ndarray, s: int) -> np.ndarray:
    """``mask`` ``(..., H, W)`` on the grid upscaled ×``s`` in-plane ``(..., H·s, W·s)``: each
    True pixel's ``s × s`` block True — the in-plane rule of no data, the pixels
    :func:`fill_blocks` keeps exact."""
    return np.repeat(np.repeat(mask, s, axis=-2), s, axis=-1)


def carry_nonfinite(
    source: MedImage, result: MedImage, *, scale: int | None = None, axis: int | None = None
) -> MedImage:
    """``result`` (``source`` on a finer grid) with ``source``'s non-finite voxels
    (:func:`nonfinite_mask`) on its grid, by the rule that kept its no data exact there:

    * ``scale``: in-plane ×``scale``, each no-data pixel's ``scale × scale`` block
      (:func:`block_mask`, :func:`fill_blocks`);
    * ``axis``: through-plane along the spatial axis ``axis`` (0: z), an output slice where the
      input slices on both sides of its centre hold none
      (:func:`medsr.slice_grid.no_data_kept`, :func:`medsr.slice_grid.keep_no_data`).

    DICOM padding needs no such record: its pixels keep their value, which ``meta["padding"]``
    names on any grid. A NaN is read as 0 (every array medsr hands on is finite), so where it was
    is a mask that must follow the grid; the writers put NaN back there (:func:`with_nan`).
    ``result`` unchanged (without a stale record) when ``source`` has none."""
    from medsr.slice_grid import no_data_kept

    mask = nonfinite_mask(source)
    meta = {k: v for k, v in result.meta.items() if k != "nonfinite_mask"}
    if mask is not None:
        if scale is not None:
            mask = block_mask(mask, int(scale))
        elif axis is not None:
            a = int(axis) % 3 - 3  # the spatial axis, counted from the end (channels lead)
            mask = no_data_kept(mask, result.array.shape[a], a)
        if mask.shape == result.array.shape and mask.any():
            meta["nonfinite_mask"] = np.ascontiguousarray(mask)
    return result.replace(meta=meta)


def nan_mask(image: MedImage) -> np.ndarray | None:
    """Where a writer stores "no data" (NaN, or what stands for it in an integer format): the
    source's non-finite voxels (:func:`nonfinite_mask`) and any non-finite value in the array
    (an array made in Python; the readers record theirs), shaped like ``image.array``; None when
    there are none. DICOM
    padding is not among them: its pixels keep their value, which ``meta["padding"]`` names."""
    mask = ~np.isfinite(image.array)
    recorded = nonfinite_mask(image)
    if recorded is not None:
        mask |= recorded
    return mask if mask.any() else None


def with_nan(image: MedImage) -> np.ndarray:
    """``image.array`` as float32 with NaN where its source held non-finite values
    (:func:`nonfinite_mask`): what a float output stores there — no data, never the 0 it was
    read as. The array itself when there are none (nothing copied)."""
    arr = np.asarray(image.array, dtype=np.float32)
    mask = nonfinite_mask(image)
    if mask is None or not mask.any():
        return arr
    return np.where(mask, np.float32(np.nan), arr)


def mean_over_held(values: np.ndarray, no_data: np.ndarray | None) -> np.ndarray:
    """``values`` ``(C, ...)`` averaged over its leading axis (colour channels, a 4-D series'
    time frames) at each voxel over the channels that hold data there (``no_data`` False,
    shaped like ``values``); 0 where none does (a map's no-data record makes it NaN there:
    :func:`medsr.safeguards.maps.write_maps`). A frame without data at a voxel has no error
    and no spread there — its 0 is nothing measured — so averaging it in would scale the map
    down by the share of such frames (half of it, in a 2-frame series one of whose frames holds
    none). The plain mean where no channel lacks data; ``values``' float dtype kept."""
    v = np.asarray(values)
    if no_data is None or no_data.shape != v.shape or not no_data.any():
        return v.mean(axis=0)
    held = ~no_data
    count = held.sum(axis=0)
    total = np.where(held, v, 0).sum(axis=0, dtype=np.float64)
    out = np.zeros(total.shape, np.float64)
    np.divide(total, count, out=out, where=count > 0)
    return out.astype(v.dtype if v.dtype.kind == "f" else np.float64, copy=False)


def no_data_mask(image: MedImage) -> np.ndarray | None:
    """Boolean ``(C, Z, Y, X)`` mask of pixels that hold no data, or None: DICOM
    PixelPaddingValue/range and non-finite voxels (:func:`padding_mask`), and for CT a constant
    fill below −1024 HU covering at least 1 % of a slice (:data:`CT_PADDING_BELOW_HU`; each
    slice of each time point of a CT over time)."""
    from medsr.modality import modality_group

    mask = padding_mask(image)
    ct = modality_group(image.modality) == "CT" and image.units == "HU"
    if image.channels != "RGB" and ct:
        planes = _planes(image.array)
        for k in range(planes.shape[0]):
            low = float(planes[k].min())
            if low < CT_PADDING_BELOW_HU:
                fill = planes[k] == np.float32(low)
                if fill.mean() >= CT_PADDING_MIN_FRACTION:
                    if mask is None:
                        mask = np.zeros(image.array.shape, dtype=bool)
                    _planes(mask)[k] |= fill
    if mask is None or not mask.any():
        return None
    return mask if image.channels else mask[None]


class _Compute(enum.Enum):
    COMPUTE = "compute"


#: the ``no_data`` of a function that takes an image's :func:`no_data_mask` from a caller that
#: has it (one mask for every step of a run: :func:`medsr.pipeline.upscale_through_plane`):
#: compute it (``None`` is a mask already computed: every pixel holds data)
COMPUTE = _Compute.COMPUTE
#: what such a ``no_data`` takes: :func:`no_data_mask` of the same image, or :data:`COMPUTE`
NoData: TypeAlias = np.ndarray | _Compute | None


def no_data_of(image: MedImage, no_data: NoData = COMPUTE) -> np.ndarray | None:
    """:func:`no_data_mask` of ``image``, or ``no_data`` when the caller computed it (never
    checked: it must be the mask of this very image, unchanged since; nothing changes it)."""
    return no_data_mask(image) if isinstance(no_data, _Compute) else no_data


def no_data_fill(
    image: MedImage, no_data: NoData = COMPUTE
) -> tuple[np.ndarray | None, float | np.ndarray]:
    """The no-data mask of ``image`` (:func:`no_data_mask`; ``no_data``: :func:`no_data_of`)
    shaped like ``image.array`` and the value such pixels are read as: the darkest measured
    value (0 when every pixel is padding); ``(None, 0.0)`` when every pixel holds data. Nothing
    is copied.

    An image over time (``channels="time"``) reads each time point's no data as that time
    point's own darkest measured value: a float32 ``(T, 1, 1, 1)`` array (broadcasts against
    the array), so that each time point is filled as it is when read on its own (``KEY:N``).
    The series' darkest value read a post-contrast phase's padding as a pre-contrast one's
    darkest tissue, which every interpolator then carried inside its field of view."""
    pad = no_data_of(image, no_data)
    if pad is None:
        return None, 0.0
    mask = pad if image.channels else pad[0]
    if image.channels == "time":
        lows = [_darkest(image.array[t], mask[t]) for t in range(mask.shape[0])]
        return mask, np.asarray(lows, np.float32).reshape(-1, 1, 1, 1)
    return mask, _darkest(image.array, mask)


def _darkest(arr: np.ndarray, mask: np.ndarray) -> float:
    """The least value of ``arr`` where ``mask`` is False (0 when it is True everywhere)."""
    low = float(np.min(arr, where=~mask, initial=np.inf))  # no copy of the measured values
    return low if np.isfinite(low) else 0.0


def fill_no_data(
    image: MedImage, no_data: NoData = COMPUTE
) -> tuple[MedImage, np.ndarray | None, float | np.ndarray]:
    """``image`` with its no-data pixels (:func:`no_data_mask`; ``no_data``: :func:`no_data_of`)
    set to its darkest measured value (what a network sees there; each time point's own for an
    image over time, :func:`no_data_fill`), the mask shaped like ``image.array`` and that value;
    ``(image, None, 0.0)`` when every pixel holds data."""
    mask, low = no_data_fill(image, no_data)
    if mask is None:
        return image, None, 0.0
    filled = image.array.copy()
    filled[mask] = low if np.ndim(low) == 0 else np.broadcast_to(low, filled.shape)[mask]
    return image.replace(array=filled), mask, low


def fill_blocks(t: Any, mask: Any, value: Any, s: int, *, out: Any = None) -> Any:
    """``t`` ``(..., H·s, W·s)`` (a torch tensor) with the ``s × s`` block of each True pixel of
    ``mask`` ``(..., H, W)`` set to ``value``: a number, or a tensor shaped like ``mask`` (each
    block its own pixel's value). One ``torch.where``, the mask and values repeated along each row
    only and broadcast over each block's ``s`` rows, so the inner axis stays contiguous (a 1024²
    plane: 1.1 ms against 1.4 with masks replicated over whole blocks, 0.9 against 1.9 for a copy
    then a masked fill). ``out``: a contiguous tensor of ``t``'s shape to write into; else a new
    tensor. What the pipeline uses to keep padding exact in an upscaled output and to read it as
    its fill value when degrading one."""
    import torch

    *lead, hs, ws = t.shape
    blocks = (*lead, hs // s, s, ws)

    def rows(a: Any) -> Any:  # (..., H, W) → (..., H, 1, W·s): each pixel s times along its row
        *lead_a, h, w = a.shape
        return a[..., None].expand(*lead_a, h, w, s).reshape(*lead_a, h, 1, w * s)

    fill = rows(value) if isinstance(value, torch.Tensor) else value
    if out is None:
        return torch.where(rows(mask), fill, t.reshape(blocks)).reshape(t.shape)
    torch.where(rows(mask), fill, t.reshape(blocks), out=out.view(blocks))
    return out
