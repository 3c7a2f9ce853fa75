"""DICOM reader and derived-series writer (package: ``read``, ``write``, ``derived``, ``geometry``,
``pixels``, ``header``).

Reading (:func:`read_dicom`) accepts one file (single- or multi-frame) or a folder holding one
series (files found recursively; non-DICOM files such as ``DICOMDIR`` or a readme are skipped).
A copy of an instance already read is left out; a series holding several stacks (a localizer
under the series' UID, echoes, time points) is read by its main stack when the others are
clearly not it, else only by choice (``KEY:N``; see :mod:`medsr.io.dicom.stacks`), or, for time
points and cardiac phases, all of them as one image over time (``KEY:all``: ``channels="time"``,
written back as one series, instances numbered time point by time point). Slices are sorted along the slice normal, checked for a consistent grid (orientation, size,
pixel spacing, even gaps) and stacked into a :class:`~medsr.image.MedImage`:

* pixels are decoded by pydicom (+ pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000, RLE); the
  Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence) is applied, so CT is in HU;
  a medsr trust map in an IOD without a Modality LUT (MR, US) gets its values from its Real World
  Value Mapping (:func:`~medsr.io.dicom.header.map_value_mapping`), as the writer encodes it;
* ``MONOCHROME1`` is inverted so that high values are bright (``meta["monochrome1_reflect"]``
  lets the writer restore it exactly); palette colour and YBR become RGB
  (``channels="RGB"``, array ``(3, Z, Y, X)``);
* DICOM geometry (LPS) becomes the RAS affine of the image (see :mod:`medsr.image`).

Writing (:func:`write_dicom`) produces a *derived* series that a PACS accepts beside the
original: new Series/SOP Instance UIDs, same Study and Frame of Reference, ``DERIVED\\SECONDARY``,
Derivation Description/Code and Source Image Sequence, geometry updated per slice from the
image's affine, pixels back in the source's stored units (uncompressed Explicit VR Little
Endian). An image that did not come from DICOM is written as Secondary Capture. An enhanced
multi-frame object stays one (``DERIVED\\PRIMARY``, frames in the source's order, the derivation
in the shared functional group; see :mod:`medsr.io.dicom.derived`).

``meta`` written by the reader (and used by the writer):

==========================  ================================================================
``format``                  ``"dicom"``
``datasets``                headers (pydicom Datasets without pixel data), in sorted slice
                            order; one dataset for a multi-frame object; for an image over
                            time (``KEY:all``) every time point's, time-major (so are
                            ``source_paths`` and ``source_positions``)
``time_points``             ``KEY:all`` only: what tells each time point apart (e.g.
                            ``cardiac phase 2 (trigger time ~50 ms)``)
``multiframe``              the source is one multi-frame object
``frame_order``             multi-frame only: source frame index of each slice of the array
``stored_dtype``            e.g. ``"uint16"``, ``"int16"``: the values read (``uint8`` for
                            palette colour, whose lookup table gives 8-bit RGB)
``source_dtype``            the pixel type the file stores (palette colour: its indices;
                            ``"float32"``/``"float64"`` for float pixel data)
``float_pixels``            ``"FloatPixelData"`` or ``"DoubleFloatPixelData"`` when the source
                            stores floats (a parametric map): the writer writes floats back
``read_as``                 how stored values became the array's, when not one to one
                            (palette colour), else None
``frame_axis``              multi-frame objects of several frames: what the frames are
                            (:func:`~medsr.io.dicom.geometry.frame_axis`: slices, time
                            frames of a cine, or frames of something else)
``bits_stored``, ``bits_allocated``, ``pixel_representation``
``photometric``             the source's Photometric Interpretation
``rescale``                 ``(slope, intercept)`` of the first slice (each slice's own values
                            stay in its header)
``monochrome1_reflect``     ``lo + hi`` of the output range when MONOCHROME1 was inverted
``modality_lut``            a Modality LUT Sequence was applied (the writer drops it)
``window``                  ``(center, width)`` in the image's units (after any MONOCHROME1
                            inversion), for viewers; ``None`` if the source had none
``transfer_syntax``         the source's transfer syntax UID
``lossy``                   ``{"method": ..., "ratio": ...}`` if the source was lossy-compressed
``source_paths``            files read, in slice order
``source_shape``, ``source_spacing``, ``source_affine``   geometry as read, so a writer can
                            map resampled slices back to source slices by world position
``spacing_source``          which attribute gave the in-plane spacing
``has_geometry``            the source had Image Orientation/Position (Patient)
``source_positions``        each slice's Image Position (Patient) as read (LPS mm, slice
                            order), or None: the affine is an even grid fitted to them, and an
                            output that keeps the source's slices keeps these positions
``padding``                 Pixel Padding Value / Range Limit in the image's units, or None
                            (see :mod:`medsr.io.padding`)
``header_warnings``         questionable header values that were ignored (also warned as
                            :class:`~medsr.errors.MedSRWarning`)
``reader_messages``         what pydicom logged or warned while reading (scrubbed), if any
==========================  ================================================================

The reader checks before it decodes: Rows × Columns × frames × samples against the pixel data
and against ``MEDSR_MAX_PIXELS`` (:mod:`medsr.io.limits`), and header values that would give a
meaningless image (non-finite, zero or negative spacing, degenerate orientation, a zero or
non-finite rescale) raise :class:`~medsr.errors.InvalidHeaderError`. Command-set (group 0000)
elements are dropped on read.
"""

from __future__ import annotations

from medsr.io.dicom.header import (
    MEDIA_STORAGE_DIRECTORY,
    SECONDARY_CAPTURE,
    SEGMENTATION_STORAGE,
    non_image_reason,
    scrub,
    series_key,
)
from medsr.io.dicom.read import dicom_volumes, read_dicom, strip_command_set
from medsr.io.dicom.write import write_dicom

# old private names, still imported by other packages (batch); prefer the public ones above
_scrub = scrub
_non_image_reason = non_image_reason

__all__ = [
    "MEDIA_STORAGE_DIRECTORY",
    "SECONDARY_CAPTURE",
    "SEGMENTATION_STORAGE",
    "dicom_volumes",
    "non_image_reason",
    "read_dicom",
    "scrub",
    "series_key",
    "strip_command_set",
    "write_dicom",
]
