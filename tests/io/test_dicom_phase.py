"""MR phase images are refused, not interpolated: a phase wraps at ±π, and interpolation across a
wrap invents values that were never measured. Magnitude, real, imaginary and velocity images
interpolate like any image and are read as before.

Every phase image here is made from the real pixels of pydicom's ``MR_small.dcm`` (a head MR,
64²): its smoothed magnitude scaled to 3 turns plus a linear ramp, wrapped to (−π, π] and stored
as Siemens stores phase (12-bit 0..4095, Rescale Slope 2, Intercept −4096: −4096..4094 ↔ ±π).
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import gaussian_filter

import medsr
from medsr.errors import NotAnImageError
from tests._entry import run_medsr
from tests.conftest import file_digest
from tests.io.conftest import dicom_corpus_path
from tests.io.enhanced import emri_pixels, enhanced_mr, save

PHASE_ERROR = (
    r"it is an MR phase image .*wrap at ±π.*upscale the magnitude image, or unwrap the phase"
)


def siemens_phase(image_type: list[str] | None = None) -> Dataset:
    """MR_small with its pixels replaced by a wrapped phase, ``ORIGINAL\\PRIMARY\\P\\ND``."""
    ds = pydicom.dcmread(dicom_corpus_path("MR_small.dcm"))
    smooth = gaussian_filter(ds.pixel_array.astype(float), 2.0)
    y, x = np.mgrid[: smooth.shape[0], : smooth.shape[1]]
    phase = np.angle(np.exp(1j * (6 * np.pi * smooth / smooth.max() + 0.15 * x + 0.05 * y)))
    stored = np.round((phase + np.pi) / (2 * np.pi) * 4095).astype("<u2")
    ds.ImageType = image_type or ["ORIGINAL", "PRIMARY", "P", "ND"]
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -4096, "US"
    ds.PixelData = stored.tobytes()
    return ds


def test_siemens_phase_is_refused_by_upscale(tmp_path):
    """``medsr upscale phase.dcm out`` used to write a derived series still typed ``P`` whose
    values were interpolated across the wraps: with ``--model bicubic`` 201 of 16,384 output
    pixels next to a wrap lay more than 1 rad from every measured neighbour (39 by more than
    2 rad; the default model: 56 and 11) — a jump from +π to −π made into a ramp through 0. Now:
    one error line, exit 2, nothing written, the input untouched."""
    src = tmp_path / "phase.dcm"
    siemens_phase().save_as(src, enforce_file_format=True)
    before = file_digest(src)
    out = tmp_path / "out"
    res = run_medsr("upscale", str(src), str(out), "--model", "bicubic")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(
        "error: 'phase.dcm' cannot be super-resolved: it is an MR phase image "
        "(Image Type ORIGINAL\\PRIMARY\\P\\ND)"
    )
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and file_digest(src) == before


def test_a_series_folder_of_phase_slices_is_refused(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    siemens_phase().save_as(folder / "IM1.dcm", enforce_file_format=True)
    with pytest.raises(NotAnImageError, match="'IM1.dcm' cannot be super-resolved: " + PHASE_ERROR):
        medsr.load_image(folder)


def _ge(ds: Dataset, value: int) -> Dataset:
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", value)
    return ds


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "P", "FFE"]), id="philips-P"
        ),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"]),
            id="philips-phase-map",
        ),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["DERIVED", "PRIMARY", "PHASE"]), id="phase"
        ),
        pytest.param(
            lambda ds: (
                setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "OTHER"]),
                setattr(ds, "ComplexImageComponent", "PHASE"),
            ),
            id="complex-image-component",
        ),
        pytest.param(lambda ds: _ge(ds, 1), id="ge-private-phase"),
    ],
)
def test_every_way_of_saying_phase_is_refused(tmp_path, edit):
    ds = siemens_phase()
    edit(ds)
    path = tmp_path / "phase.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(NotAnImageError, match=PHASE_ERROR):
        medsr.load_image(path)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda ds: None, id="siemens-M"),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "R", "ND"]), id="real"
        ),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "IMAGINARY"]),
            id="imaginary",
        ),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "VELOCITY MAP", "PCA"]),
            id="velocity",
        ),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "PHASE CONTRAST M"]),
            id="phase-contrast-magnitude",
        ),
        pytest.param(lambda ds: _ge(ds, 0), id="ge-magnitude"),
        pytest.param(lambda ds: _ge(ds, 2), id="ge-real"),
        pytest.param(
            lambda ds: (
                setattr(ds, "Modality", "CT"),
                setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
            ),
            id="not-mr",
        ),
    ],
)
def test_magnitude_real_imaginary_velocity_are_read(tmp_path, edit):
    """Linear in the signal: interpolating them measures what lies between (a velocity map is
    linear too unless aliased, which no header says)."""
    ds = siemens_phase(["ORIGINAL", "PRIMARY", "M", "ND"])
    edit(ds)
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert medsr.load_image(path).array.shape == (1, 64, 64)


def _enhanced_with_phase_frame(tmp_path, frame: int):
    """An Enhanced MR of emri_small's real frames whose ``frame`` is typed PHASE per frame (the
    others MAGNITUDE), Complex Image Component MIXED at the top level."""
    ds = enhanced_mr(pixels=emri_pixels()[:4])
    shared_type = ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence
    del ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence
    ds.ComplexImageComponent = "MIXED"
    for k, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item = copy.deepcopy(shared_type)
        item[0].ComplexImageComponent = "PHASE" if k == frame else "MAGNITUDE"
        group.MRImageFrameTypeSequence = item
    return save(ds, tmp_path / "enhanced.dcm")


def test_enhanced_mr_with_a_phase_frame_is_refused(tmp_path):
    path = _enhanced_with_phase_frame(tmp_path, 2)
    with pytest.raises(NotAnImageError, match=r"PHASE of frame 2\): its values wrap"):
        medsr.load_image(path)
    # one magnitude frame of it is an image
    assert medsr.load_image(path, frame=0).array.shape[0] == 1
    with pytest.raises(NotAnImageError, match=r"PHASE of frame 2\)"):
        medsr.load_image(path, frame=2)


def test_enhanced_mr_typed_phase_for_every_frame_is_refused(tmp_path):
    ds = enhanced_mr(pixels=emri_pixels()[:4])
    ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0].ComplexImageComponent = "PHASE"
    path = save(ds, tmp_path / "enhanced.dcm")
    with pytest.raises(NotAnImageError, match="PHASE of every frame"):
        medsr.load_image(path)
    copy_dir = tmp_path / "series"
    copy_dir.mkdir()
    shutil.copy(path, copy_dir / "enhanced.dcm")
    with pytest.raises(NotAnImageError, match="PHASE of every frame"):
        medsr.load_image(copy_dir)


def siemens_velocity(sequence_name: str | None = "*fl2d1_v150in") -> Dataset:
    """MR_small as Siemens stores a phase-contrast velocity image: ``ORIGINAL\\PRIMARY\\P\\ND``
    like a wrapped phase, 12-bit 0..4095 with Rescale Slope 2, Intercept −4096 (±VENC over the
    stored range), the VENC (150 cm/s) and direction in the Sequence Name. Its pixels: a smooth
    flow made from MR_small's smoothed magnitude, within ±0.8 VENC (no aliasing)."""
    ds = siemens_phase()
    smooth = gaussian_filter(pydicom.dcmread(dicom_corpus_path("MR_small.dcm")).pixel_array, 2.0)
    flow = 0.8 * (2 * smooth / smooth.max() - 1)  # in units of VENC
    ds.PixelData = np.round((flow + 1) / 2 * 4095).astype("<u2").tobytes()
    if sequence_name is not None:
        ds.SequenceName = sequence_name
    return ds


def test_a_siemens_velocity_image_typed_p_is_read_and_upscaled(tmp_path):
    """Siemens types a phase-contrast velocity image ``P`` as it types a wrapped phase image, and
    the reader refused it ("it is an MR phase image (Image Type ORIGINAL\\PRIMARY\\P\\ND)"):
    but its values are a velocity, linear within ±VENC, like the velocity maps the reader
    reads. Its Sequence Name (``*fl2d1_v150in``: VENC 150 cm/s, through the plane) tells it
    apart: it is read and upscaled, its values kept (each 2×2 block of the ×2 output averages
    to the input pixel's velocity)."""
    src = tmp_path / "flow.dcm"
    siemens_velocity().save_as(src, enforce_file_format=True)
    before = file_digest(src)
    image = medsr.load_image(src)
    out = medsr.upscale_file(src, tmp_path / "out", model="bicubic", scale=2)
    up = medsr.load_image(out)
    assert up.array.shape == (1, 128, 128)
    blocks = up.array[0].reshape(64, 2, 64, 2).mean(axis=(1, 3))
    inner = (slice(2, -2), slice(2, -2))  # the border of a bicubic upscale leans on padding
    assert np.abs(blocks[inner] - image.array[0][inner]).max() < 0.02 * 8192
    assert file_digest(src) == before


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda ds: setattr(ds, "SequenceName", "fl3d1r_v150rl"), id="siemens-3d-rl"),
        pytest.param(lambda ds: setattr(ds, "SequenceName", "*fl2d1r3_v200fh"), id="siemens-fh"),
        pytest.param(
            lambda ds: setattr(ds, "ImageType", ["DERIVED", "PRIMARY", "P", "RETRO", "DIS2D"]),
            id="siemens-retro",
        ),
        pytest.param(
            lambda ds: (
                delattr(ds, "SequenceName"),
                setattr(ds, "VelocityEncodingDirection", [0.0, 0.0, 1.0]),
                setattr(ds, "VelocityEncodingMaximumValue", 150.0),
            ),
            id="velocity-encoding-attributes",
        ),
        pytest.param(
            lambda ds: (
                delattr(ds, "SequenceName"),
                setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "VELOCITY MAP", "P", "PCA"]),
            ),
            id="velocity-map-and-p",
        ),
        pytest.param(
            lambda ds: (
                delattr(ds, "SequenceName"),
                setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "P", "FLOW"]),
            ),
            id="flow-word",
        ),
    ],
)
def test_every_way_of_saying_velocity_reads_a_p_image(tmp_path, edit):
    ds = siemens_velocity()
    edit(ds)
    path = tmp_path / "flow.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert medsr.load_image(path).array.shape == (1, 64, 64)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(None, id="no-sequence-name"),
        pytest.param("*swi3d1r", id="siemens-swi"),
        pytest.param("*fm2d2r", id="siemens-field-map"),
        pytest.param("*fl2d1_v", id="no-venc"),
        pytest.param("*fl2d1r3", id="phase-contrast-magnitude-name"),
    ],
)
def test_a_p_image_without_a_velocity_cue_is_still_refused(tmp_path, name):
    """A Siemens ``P`` image whose Sequence Name states no VENC (SWI, a field map, none at all)
    is a wrapped phase: still refused."""
    path = tmp_path / "phase.dcm"
    siemens_velocity(name).save_as(path, enforce_file_format=True)
    with pytest.raises(NotAnImageError, match=PHASE_ERROR):
        medsr.load_image(path)


def test_enhanced_mr_phase_frame_with_its_own_velocity_encoding_is_read(tmp_path):
    """A frame typed PHASE whose own functional groups hold an MR Velocity Encoding Sequence is
    a velocity frame; a PHASE frame beside it without one is still refused."""
    path = _enhanced_with_phase_frame(tmp_path, 2)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.VelocityEncodingDirection = [0.0, 0.0, 1.0]
    item.VelocityEncodingMaximumValue = 150.0
    ds.PerFrameFunctionalGroupsSequence[2].MRVelocityEncodingSequence = [item]
    ds.save_as(path)
    assert medsr.load_image(path).array.shape[0] == 4
    assert medsr.load_image(path, frame=2).array.shape[0] == 1
    ds.PerFrameFunctionalGroupsSequence[1].MRImageFrameTypeSequence[
        0
    ].ComplexImageComponent = "PHASE"
    ds.save_as(path)
    with pytest.raises(NotAnImageError, match=r"PHASE of frame 1\)"):
        medsr.load_image(path)


def _ge_un(ds: Dataset, value: int) -> Dataset:
    """A GE image whose private image type and its creator arrive as UN (a PACS that converted
    the file from implicit to explicit VR without GE's private dictionary)."""
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.add_new(0x00430010, "UN", b"GEMS_PARM_01")
    ds.add_new(0x0043102F, "UN", value.to_bytes(2, "little", signed=True))
    return ds


@pytest.mark.parametrize("replace_un", [True, False], ids=["un-replaced", "un-kept"])
def test_a_ge_phase_image_type_stored_as_un_is_refused(tmp_path, monkeypatch, replace_un):
    """GE's private image type (0043,xx2F) stored as UN, with its creator: pydicom reads the
    bytes as the private dictionary's SS where it replaces UN by known VRs (its default); where
    that is off (``pydicom.config.replace_un_with_known_vr``, which a program embedding medsr
    may set) the value stayed bytes, the creator named no block, and the GE phase image was
    read as an image. Now refused either way, like the native SS; a magnitude (0) is read."""
    monkeypatch.setattr(pydicom.config, "replace_un_with_known_vr", replace_un)
    path = tmp_path / "phase.dcm"
    _ge_un(siemens_phase(), 1).save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path)[0x0043102F].VR == ("SS" if replace_un else "UN")
    with pytest.raises(NotAnImageError, match=r"GE image type \(0043,xx2F\) 1: phase\)"):
        medsr.load_image(path)
    magnitude = tmp_path / "magnitude.dcm"
    _ge_un(siemens_phase(["ORIGINAL", "PRIMARY", "M", "ND"]), 0).save_as(
        magnitude, enforce_file_format=True
    )
    assert medsr.load_image(magnitude).array.shape == (1, 64, 64)
