"""Writing a :class:`~medsr.image.MedImage` as a derived DICOM series (or one object).

The output is written to a temporary name and renamed only when complete; see
:func:`write_dicom`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.io._atomic import atomic_dir, atomic_file, check_output, series_file_name
from medsr.io.dicom.derived import (
    _derive,
    _now,
    _secondary_capture_template,
    copy_sharing_raw,
    is_enhanced,
    monochrome1_as_monochrome2,
    repair_display_window,
    set_display_window,
    set_functional_group,
    upscale_overlays,
)
from medsr.io.dicom.geometry import (
    _Grid,
    _output_frame_order,
    _output_slice_order,
    _source_map,
    _update_geometry,
    _update_multiframe,
)
from medsr.io.dicom.header import _ds, _fg_item, _first_float, _rescale, _stored_range
from medsr.io.dicom.pixels import _choose_encoding, _encode, fitting_rescale, padding_encoding
from medsr.io.padding import nan_mask, with_nan


def write_dicom(
    image: MedImage,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    series_description_suffix: str = " [medsr]",
) -> Path:
    """Write ``image`` as a derived DICOM series; return the path written.

    ``path`` ending in ``.dcm`` writes one file (a single slice, or one multi-frame object when
    the source was multi-frame); any other path is a folder with one ``IM00001.dcm`` … per slice.
    The output is written to a temporary name and renamed only when complete.
    """
    from medsr.io import check_holds

    p = Path(path)
    check_holds(image, p)  # grey or RGB; one slice in a single file
    _refuse_source_overwrite(image, p)  # first: the reason that holds whatever the options
    check_output(p, overwrite, "file" if p.suffix.lower() in (".dcm", ".dicom") else "series")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = _build_output(image, series_description_suffix)
        if p.suffix.lower() in (".dcm", ".dicom"):
            with atomic_file(p, overwrite=overwrite) as tmp:
                pydicom.dcmwrite(tmp, next(datasets), enforce_file_format=True)
        else:
            count = _output_count(image)
            with atomic_dir(p, overwrite=overwrite) as tmp:
                # one slice at a time, as it is built: a series is never held in memory whole
                for i, ds in enumerate(datasets, start=1):
                    name = series_file_name(i, count)
                    pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
    return p


def _refuse_source_overwrite(image: MedImage, target: Path) -> None:
    """Never replace (or delete, via a folder rename) the files the image was read from."""
    target = target.resolve()
    for src in image.meta.get("source_paths") or []:
        src_path = Path(src).resolve()
        if src_path == target or target in src_path.parents:
            raise InvalidParameterError(
                f"refusing to write onto the input '{target.name}': choose another output path"
            )


def _from_dicom(meta: dict[str, Any]) -> tuple[bool, bool]:
    """``(from_dicom, multiframe)``: whether ``meta`` carries the source's DICOM datasets (the
    output derives from them), and whether that source was one multi-frame object."""
    from_dicom = meta.get("format") == "dicom" and bool(meta.get("datasets"))
    return from_dicom, bool(meta.get("multiframe")) and from_dicom


def over_time(image: MedImage) -> bool:
    """Whether ``image`` is a series over time read from single-frame DICOM images (``--series
    KEY:all``: :func:`medsr.io.dicom.read._read_over_time`), which is written as one series
    (:func:`_time_points`)."""
    from_dicom, multiframe = _from_dicom(image.meta)
    return image.channels == "time" and from_dicom and not multiframe


def _output_count(image: MedImage) -> int:
    """How many datasets :func:`_build_output` yields: one multi-frame object for a
    multi-frame DICOM source, else one per slice (of every time point of a series over time)."""
    if over_time(image):
        return int(image.array.shape[0]) * int(image.spatial_shape[0])
    return 1 if _from_dicom(image.meta)[1] else int(image.spatial_shape[0])


def _time_points(image: MedImage) -> list[MedImage]:
    """A series over time (:func:`over_time`) as one grey image per time point, each with the
    headers, positions, paths and padding of its own source images (``meta`` holds them
    time-major: :func:`medsr.io.dicom.read._read_over_time`) and its no-data record."""
    meta = image.meta
    count = int(image.array.shape[0])
    datasets = list(meta["datasets"])
    n, rest = divmod(len(datasets), count)
    if rest or not n:
        raise InvalidParameterError(
            f"the image has {count} time points but {len(datasets)} DICOM headers: not the same "
            "number for each, so which header goes with which time point is unknown"
        )
    out = []
    for t in range(count):
        own = dict(meta)
        for key in ("datasets", "source_paths", "source_positions"):
            values = meta.get(key)
            if isinstance(values, list) and len(values) == count * n:
                own[key] = values[t * n : (t + 1) * n]
            elif key == "source_positions":
                own[key] = None
        padding = meta.get("padding")
        if isinstance(padding, dict):
            own["padding"] = {
                k: v[t * n : (t + 1) * n] if isinstance(v, list) and len(v) == count * n else v
                for k, v in padding.items()
            }
        recorded = meta.get("nonfinite_mask")
        if isinstance(recorded, np.ndarray) and recorded.shape == image.array.shape:
            own["nonfinite_mask"] = recorded[t]
        out.append(image.replace(array=image.array[t], channels=None, meta=own))
    return out


#: what says which time point an image is (a cardiac phase's trigger time, a dynamic series'
#: temporal position): not true of a map over all of them (:func:`first_time_point`)
_TIME_KEYWORDS = (
    "TriggerTime",
    "NominalCardiacTriggerDelayTime",
    "TemporalPositionIdentifier",
    "TemporalPositionIndex",
    "NumberOfTemporalPositions",
    "TemporalResolution",
    "CardiacNumberOfImages",
)


def first_time_point(image: MedImage) -> MedImage:
    """``image`` itself, or for a series over time (:func:`over_time`) its first time point
    with the attributes that name a time point (:data:`_TIME_KEYWORDS`) removed from its
    headers: the headers of something made from all of them (a trust map, the mean over the
    time points)."""
    if not over_time(image):
        return image
    first = _time_points(image)[0]
    datasets = []
    for template in first.meta["datasets"]:
        ds = copy_sharing_raw(template)
        for keyword in _TIME_KEYWORDS:
            if keyword in ds:
                delattr(ds, keyword)
        datasets.append(ds)
    return first.replace(meta={**first.meta, "datasets": datasets})


def _build_output(image: MedImage, suffix: str) -> Iterator[Dataset]:
    """The derived datasets of ``image`` in order, each built when asked for (its header from
    its template, its pixels encoded): a series is never held in memory whole.

    A series over time (:func:`over_time`) is one series: each time point's slices from its own
    source images (their TriggerTime, TemporalPositionIdentifier, AcquisitionTime kept),
    InstanceNumber running time-major (time point 1's slices, in the source's order, then time
    point 2's...), the display window one for the whole series."""
    series_uid = generate_uid()
    when = _now()
    converted: dict[tuple[int, Any], Any] = {}  # shared elements' conversions (_header_copy)
    if not over_time(image):
        yield from _build_volume(image, suffix, series_uid, when, converted=converted)
        return
    values = image.array if nan_mask(image) is None else with_nan(image)
    first = 1
    for point in _time_points(image):
        yield from _build_volume(point, suffix, series_uid, when, first, values, converted)
        first += int(point.spatial_shape[0])


def _build_volume(
    image: MedImage,
    suffix: str,
    series_uid: str,
    when: tuple[str, str],
    first_instance: int = 1,
    whole: np.ndarray | None = None,
    converted: dict[tuple[int, Any], Any] | None = None,
) -> Iterator[Dataset]:
    """:func:`_build_output` of one volume (``image``: grey, RGB or, for a multi-frame source,
    one object), its instances numbered from ``first_instance`` in series ``series_uid``;
    ``whole``: the values of the whole series it is part of, whose range a display window the
    writer makes covers (else ``image``'s); ``converted``: the header elements converted for
    the instances before (:func:`~medsr.io.dicom.derived._header_copy`)."""
    meta = image.meta
    from_dicom, multiframe = _from_dicom(meta)
    templates: list[Dataset] = (
        list(meta["datasets"]) if from_dicom else [_secondary_capture_template(image)]
    )
    z, rows, cols = image.spatial_shape
    date, time = when
    grid = _Grid(image)
    src_spacing = (
        tuple(meta.get("source_spacing") or image.spacing) if from_dicom else image.spacing
    )
    zoom_z, zoom_y, zoom_x = (
        float(s) / float(n) for s, n in zip(src_spacing, image.spacing, strict=True)
    )
    has_geometry = bool(meta.get("has_geometry", True)) if from_dicom else True
    units = str(image.units or "a.u.")

    # ---------------------------------------------------------------- pixel encoding
    color = image.is_color
    # where the source held no data (NaN, read as 0): stated as Pixel Padding Value, a stored
    # value below every measured one (padding_encoding), never written as a measured 0
    no_data = None if color else nan_mask(image)
    # float pixel data (a parametric map: an ADC map in mm²/s) is written as floats: rounded onto
    # the integers of its 32/64 bits it would become 0
    float_key: str | None = (
        meta.get("float_pixels")
        if from_dicom
        and not color
        and no_data is None
        and not meta.get("map")
        and meta.get("pixel_encoding") != "rescaled"
        else None
    )
    source_gray = (
        from_dicom
        and no_data is None
        and not float_key
        and not meta.get("color_from")
        and not meta.get("modality_lut")
        and meta.get("pixel_encoding") != "rescaled"  # e.g. float-valued maps of a DICOM image
    )
    values = image.array if no_data is None else with_nan(image)  # encoded from measured values
    generic: tuple[int, int, int, float, float] | None = None
    pad: int | None = None
    if color:
        src_bits = int(meta.get("bits_allocated", 8)) if from_dicom else 8
        true_rgb = from_dicom and meta.get("color_from") not in (None, "PALETTE COLOR")
        finite = values[np.isfinite(values)]
        hi = float(finite.max()) if finite.size else 0.0
        if true_rgb and src_bits in (8, 16, 32):
            cba = src_bits
        else:
            cba = 8 if hi <= 255.5 else 16
        cbs = int(meta.get("bits_stored", cba)) if (true_rgb and cba == src_bits) else cba
        color_pixels = _encode(np.moveaxis(values, 0, -1), cba, cbs, 0, 1.0, 0.0, None)  # (Z,Y,X,3)
    elif not source_gray and not float_key:
        eight = from_dicom and int(meta.get("bits_allocated", 16)) == 8
        generic = _choose_encoding(
            values,
            eight,
            integer_units=image.units == "HU",
            force_rescale=meta.get("pixel_encoding") == "rescaled",
        )
        if no_data is not None:
            generic, pad = padding_encoding(values, generic)

    reflect = meta.get("monochrome1_reflect") if source_gray else None
    extremes: list[tuple[float, float]] = []

    def value_range() -> tuple[float, float]:
        """Lowest and highest value of the output in the units its window applies to (those of
        the Modality LUT's output: the source's stored units for a MONOCHROME1 image written as
        one), found once, slice by slice, when a window is to be computed."""
        if not extremes:
            lo, hi = np.inf, -np.inf
            for plane in values if whole is None else whole:
                finite = plane[np.isfinite(plane)]
                if finite.size:
                    lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
            lo, hi = (lo, hi) if lo <= hi else (0.0, 0.0)
            extremes.append((reflect - hi, reflect - lo) if reflect is not None else (lo, hi))
        return extremes[0]

    # a MONOCHROME1 source written MONOCHROME2, in the image's values (high = bright)
    inverted = (
        generic is not None
        and from_dicom
        and str(meta.get("photometric") or "").upper() == "MONOCHROME1"
    )

    def display(ds: Dataset) -> None:
        """The display attributes (Presentation LUT, windows) of a grey output ``ds``."""
        if inverted:
            monochrome1_as_monochrome2(
                ds, meta.get("monochrome1_reflect"), window_set=bool(meta.get("map"))
            )
        repair_display_window(ds, value_range)

    def derived(template: Any, k: int, instance: int) -> Any:
        """The output dataset of slice ``k`` (instance number ``instance``) from ``template``:
        derived header, then the geometry of the new grid."""
        ds = _derive(
            template,
            image,
            meta,
            suffix,
            series_uid,
            date,
            time,
            color,
            generic,
            instance=instance,
            rows=rows,
            cols=cols,
            converted=converted,
        )
        _update_geometry(
            ds,
            template,
            grid,
            k,
            zoom=(zoom_z, zoom_y, zoom_x),
            image=image,
            has_geometry=has_geometry,
            meta=meta,
        )
        return ds

    if multiframe:
        nsrc = len(meta.get("frame_order") or [0])
        src_idx = _source_map(image, nsrc)
        ds = derived(templates[0], 0, 1)
        slices = _output_frame_order(meta, z, nsrc)  # frame f holds slice slices[f]
        _update_multiframe(ds, image, meta, grid, src_idx, nsrc, zoom_z, has_geometry, slices)
        if not color:
            display(ds)
        if color:
            frames = color_pixels[slices]
        elif generic is not None:
            frames = _encode(values[slices], *generic, None)
            if no_data is not None and pad is not None:
                frames[no_data[slices]] = pad
        elif float_key:
            per = ds.get("PerFrameFunctionalGroupsSequence")
            frames = np.stack(
                [
                    _float_stored(
                        values[k], float_key, *_rescale(ds, f if per is not None else None)
                    )
                    for f, k in enumerate(slices)
                ]
            )
        else:
            frames = np.empty(values.shape, dtype=np.dtype(_dtype_name(meta)))
            per = ds.get("PerFrameFunctionalGroupsSequence")
            for f, k in enumerate(slices):
                slope, intercept = _rescale(ds, f if per is not None else None)
                own = per[f].get("PixelValueTransformationSequence") if per is not None else None
                if own and "RescaleSlope" in own[0] and reflect is None:  # this frame's own
                    slope, intercept = _refit(own[0], values[k], slope, intercept, meta)
                frames[f] = _encode(
                    values[k], int(meta["bits_allocated"]), int(meta["bits_stored"]),
                    int(meta["pixel_representation"]), slope, intercept, meta.get("monochrome1_reflect"),
                )  # fmt: skip
        _set_pixels(
            ds, frames, color, generic, meta, from_dicom, units, padding=pad, float_key=float_key
        )
        ds.NumberOfFrames = z
        yield ds
        return

    nsrc = len(templates)
    src_idx = _source_map(image, nsrc) if from_dicom else [0] * z
    # overlay planes (graphics drawn on the source) stay on an in-plane upscale by whole factors
    # of the same slices: the output's pixels cover the source's (cell-aligned)
    factors = (round(zoom_y), round(zoom_x))
    overlays = (
        from_dicom
        and not meta.get("map")
        and z == nsrc
        and abs(zoom_z - 1.0) < 1e-6
        and all(
            f >= 1 and abs(f - zoom) < 1e-6
            for f, zoom in zip(factors, (zoom_y, zoom_x), strict=True)
        )
    )
    # instance i + 1 holds slice order[i]: numbered as the source numbered its slices
    order = _output_slice_order(templates, z) if from_dicom else list(range(z))
    for i, k in enumerate(order):
        template = templates[src_idx[k]]
        # ImagesInAcquisition (General Image, Type 3) is copied: "number of images that resulted
        # from this acquisition", which the derived images still name (Acquisition Number,
        # Date, Time); their own count is the series'
        ds = derived(template, k, first_instance + i)
        if overlays and (rows, cols) == (
            int(template.get("Rows", 0) or 0) * factors[0],
            int(template.get("Columns", 0) or 0) * factors[1],
        ):
            upscale_overlays(ds, template, *factors)
        if not color:
            display(ds)
        if color:
            pixels = color_pixels[k : k + 1]
        elif generic is not None:
            pixels = _encode(values[k : k + 1], *generic, None)
            if no_data is not None and pad is not None:
                pixels[no_data[k : k + 1]] = pad
        elif float_key:
            pixels = _float_stored(values[k : k + 1], float_key, *_rescale(template))
        else:
            slope, intercept = _rescale(template)
            if reflect is None:
                slope, intercept = _refit(ds, values[k], slope, intercept, meta)
            pixels = _encode(
                values[k : k + 1], int(meta["bits_allocated"]), int(meta["bits_stored"]),
                int(meta["pixel_representation"]), slope, intercept, meta.get("monochrome1_reflect"),
            )  # fmt: skip
        _set_pixels(
            ds, pixels, color, generic, meta, from_dicom, units, padding=pad, float_key=float_key
        )
        if "NumberOfFrames" in ds and not multiframe:
            del ds.NumberOfFrames
        yield ds


def _refit(
    holder: Dataset, values: np.ndarray, slope: float, intercept: float, meta: dict[str, Any]
) -> tuple[float, float]:
    """The Rescale Slope/Intercept a slice of the source's encoding is written with
    (:func:`~medsr.io.dicom.pixels.fitting_rescale`): its template's, or grown so that its
    values are not clipped, then set in ``holder`` (the slice's dataset, or its frame's Pixel
    Value Transformation item)."""
    bits, representation = int(meta["bits_stored"]), int(meta["pixel_representation"])
    fitted = fitting_rescale(values, slope, intercept, bits, representation)
    if fitted != (slope, intercept):
        holder.RescaleSlope, holder.RescaleIntercept = _ds(fitted[0]), _ds(fitted[1])
    return fitted


def _float_stored(values: np.ndarray, key: str, slope: float, intercept: float) -> np.ndarray:
    """The float pixel data (``key``: FloatPixelData or DoubleFloatPixelData) of ``values``
    under the template's Rescale Slope/Intercept (identity in a parametric map): little-endian
    floats, not rounded."""
    stored = np.asarray(values, dtype=np.float64)
    if (slope, intercept) != (1.0, 0.0):
        stored = (stored - intercept) / slope
    return stored.astype("<f8" if key == "DoubleFloatPixelData" else "<f4")


def _dtype_name(meta: dict[str, Any]) -> str:
    ba = max(int(meta.get("bits_allocated", 16)), 8)
    return f"<{'i' if int(meta.get('pixel_representation', 0)) else 'u'}{ba // 8}"


#: CT Image Storage: no Rescale Type means HU (PS3.3 C.8.2.1); the enhanced CT IODs allow HU only
_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_ENHANCED_CT = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
#: IODs without a Modality LUT Module (MR Image, US Image, US Multi-frame Image, and the retired
#: US ones): Rescale Slope/Intercept/Type are not theirs (dciodvfy: "not present in standard
#: DICOM IOD"); the values of a map there are given by a Real World Value Mapping instead
_NO_MODALITY_LUT = (
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.6.1",
    "1.2.840.10008.5.1.4.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.6",
    "1.2.840.10008.5.1.4.1.1.3",
)
#: the DX Image Module's IODs (DX, MG, IO; for presentation and for processing): Rescale
#: Slope 1, Intercept present and Rescale Type US are required (PS3.3 C.8.11.3); the values of a
#: map there are given by a Real World Value Mapping over an identity Modality LUT
_DX_FAMILY = (
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
)
#: UCUM codes of the units a map's values are in (the image's units)
_UCUM = {"HU": ("[hnsf'U]", "Hounsfield unit"), "a.u.": ("[arb'U]", "arbitrary unit")}


def _set_real_world_mapping(
    ds: Dataset, slope: float, intercept: float, bits_stored: int, label: dict[str, Any], units: str
) -> None:
    """A trust map's scaling in an IOD without a Modality LUT (:data:`_NO_MODALITY_LUT`): the
    Real World Value Mapping Sequence (0040,9096) (General Image Module, Type 3: dciodvfy finds it
    in MR Image and US Image without a warning), one linear item over the whole stored range, in the image's units; no Rescale Slope/Intercept/
    Type. The display window, set in the map's values (:func:`medsr.safeguards.maps._windowed`),
    is moved onto the stored values, to which it applies without a Modality LUT. medsr's reader
    gives the map its values through this mapping (:func:`~medsr.io.dicom.header.map_value_mapping`).
    """
    for key in ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence"):
        if key in ds:
            delattr(ds, key)
    name = str(label.get("image_type") or "MAP")
    code, meaning = _UCUM.get(units, ("[arb'U]", "arbitrary unit"))
    unit = Dataset()
    unit.CodeValue = code
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = meaning
    item = Dataset()
    item.LUTExplanation = f"{name.lower()} values in {units}"[:64]
    item.LUTLabel = name.removesuffix(" MAP")[:16] or "MAP"
    item.MeasurementUnitsCodeSequence = DicomSequence([unit])
    item.add_new(0x00409216, "US", 0)  # Real World Value First Value Mapped
    item.add_new(0x00409211, "US", (1 << bits_stored) - 1)  # ... Last Value Mapped
    item.RealWorldValueIntercept = float(intercept)
    item.RealWorldValueSlope = float(slope)
    ds.RealWorldValueMappingSequence = DicomSequence([item])
    center = _first_float(ds.get("WindowCenter"))
    width = _first_float(ds.get("WindowWidth"))
    if center is not None and width is not None:
        set_display_window(ds, (center - intercept) / slope, width / abs(slope))


def _set_rescale(
    ds: Dataset,
    slope: float,
    intercept: float,
    from_dicom: bool,
    *,
    trust_map: dict[str, Any] | None,
    units: str,
    bits_stored: int,
) -> None:
    """Rescale Slope/Intercept/Type of a generic encoding (:func:`_choose_encoding`).

    An enhanced object carries them in its Pixel Value Transformation functional group, where
    readers look first (a stale one there would turn the new stored values into wrong ones); the
    others at the top level. A trust map (:mod:`medsr.safeguards.maps`) is not in Hounsfield
    units even when its image is: Rescale Type US (unspecified: its derivation says what the
    values are) wherever the IOD allows a value other than HU (every one but Enhanced CT). In an
    IOD without a Modality LUT (MR, US), or one whose Modality LUT must be the identity (DX, MG,
    IO: a map written with Rescale Slope 0.0024 drew dciodvfy's 'Unrecognized enumerated value'),
    a map's scaling is a Real World Value Mapping (:func:`_set_real_world_mapping`).
    """
    sop = str(ds.get("SOPClassUID", ""))
    ct = str(ds.get("Modality", "")) == "CT"
    if trust_map and sop in _NO_MODALITY_LUT + _DX_FAMILY and not is_enhanced(ds):
        _set_real_world_mapping(ds, slope, intercept, bits_stored, trust_map, units)
        if sop in _DX_FAMILY:  # an identity Modality LUT, as the IOD requires
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        return
    if is_enhanced(ds):
        item = _fg_item(ds, None, "PixelValueTransformationSequence")
        kind = str(item.get("RescaleType", "") or "") if item is not None else ""
        if trust_map or not kind:
            kind = "HU" if sop in _ENHANCED_CT or (ct and not trust_map) else "US"
        transform = Dataset()
        transform.RescaleIntercept = _ds(intercept)
        transform.RescaleSlope = _ds(slope)
        transform.RescaleType = kind
        set_functional_group(ds, "PixelValueTransformationSequence", transform)
        for key in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if key in ds:
                delattr(ds, key)
        return
    had_rescale = "RescaleSlope" in ds or "RescaleIntercept" in ds
    if had_rescale or not from_dicom or slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        if trust_map:
            ds.RescaleType = "US"
        elif "RescaleType" not in ds and sop != _CT_IMAGE:
            ds.RescaleType = "HU" if ct else "US"


def _set_pixels(
    ds: Dataset,
    pixels: np.ndarray,
    color: bool,
    generic: tuple[int, int, int, float, float] | None,
    meta: dict[str, Any],
    from_dicom: bool,
    units: str,
    *,
    padding: int | None = None,
    float_key: str | None = None,
) -> None:
    """Image Pixel module + Pixel Data for ``pixels`` ((Z,Y,X) gray or (Z,Y,X,3) RGB); ``units``:
    the image's (a map's Real World Value Mapping states them). ``padding``: the stored value
    of the pixels that hold no data (:func:`~medsr.io.dicom.pixels.padding_encoding`), set as
    Pixel Padding Value (General Equipment Module; US or SS as the pixels are), any Pixel
    Padding Range Limit of the template removed. ``float_key``: ``pixels`` are floats, written
    as that element (Floating Point Image Pixel Module: no Bits Stored, High Bit, Pixel
    Representation or padding)."""
    if float_key is not None and not color:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        for key in (
            "BitsStored",
            "HighBit",
            "PixelRepresentation",
            "PixelPaddingValue",
            "PixelPaddingRangeLimit",
            "PlanarConfiguration",
            "PixelData",
        ):
            if key in ds:
                delattr(ds, key)
        double = float_key == "DoubleFloatPixelData"
        ds.BitsAllocated = 64 if double else 32
        data = np.ascontiguousarray(pixels).tobytes()
        ds.add_new(0x7FE00009 if double else 0x7FE00008, "OD" if double else "OF", data)
        return
    if color:
        ba = pixels.dtype.itemsize * 8
        bs = (
            int(meta.get("bits_stored", ba))
            if meta.get("color_from") not in (None, "PALETTE COLOR")
            else ba
        )
        bs = min(bs, ba)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        pr = 0
    else:
        ds.SamplesPerPixel = 1
        if "PlanarConfiguration" in ds:
            del ds.PlanarConfiguration
        if "UltrasoundColorDataPresent" in ds:  # a colour source written as its luminance
            ds.UltrasoundColorDataPresent = 0
        if generic is not None:
            ba, bs, pr, slope, intercept = generic
            ds.PhotometricInterpretation = "MONOCHROME2"
            _set_rescale(
                ds,
                slope,
                intercept,
                from_dicom,
                trust_map=meta.get("map"),
                units=units,
                bits_stored=bs,
            )
        else:
            ba = int(meta["bits_allocated"])
            bs = int(meta["bits_stored"])
            pr = int(meta["pixel_representation"])
            photometric = str(meta.get("photometric") or "MONOCHROME2")
            ds.PhotometricInterpretation = (
                photometric if photometric in ("MONOCHROME1", "MONOCHROME2") else "MONOCHROME2"
            )
    ds.BitsAllocated = ba
    ds.BitsStored = bs
    ds.HighBit = bs - 1
    ds.PixelRepresentation = pr
    if padding is not None and not color:
        ds.add_new(0x00280120, "SS" if pr else "US", int(padding))
        if "PixelPaddingRangeLimit" in ds:
            del ds.PixelPaddingRangeLimit
    if "PixelPaddingValue" in ds and not color:
        lo, hi = _stored_range(bs, pr)
        value = int(ds.PixelPaddingValue)
        if not lo <= value <= hi:
            del ds.PixelPaddingValue
            if "PixelPaddingRangeLimit" in ds:
                del ds.PixelPaddingRangeLimit
        else:
            ds["PixelPaddingValue"].VR = "SS" if pr else "US"
            if "PixelPaddingRangeLimit" in ds:
                ds["PixelPaddingRangeLimit"].VR = "SS" if pr else "US"
    data = np.ascontiguousarray(pixels).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OB" if ba <= 8 else "OW", data)
