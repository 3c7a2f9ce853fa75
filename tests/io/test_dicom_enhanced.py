"""Issue 22, items 12-14: derived Enhanced CT / Enhanced MR objects are as valid as their source.

The sources are synthetic (tests/io/enhanced.py) and pass dciodvfy without errors, so every
error on a derived copy would be one medsr introduced. Checked: a supplemental palette (12 new
errors before the fix), the MR attributes allowed on ORIGINAL images only (17), the derivation
in the functional groups instead of the top level (warnings), and the frames in the source's
order (they came out sorted ascending).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsr.image import MedImage
from medsr.io.dicom import read_dicom, write_dicom
from tests.io.conftest import dciodvfy_errors, dicom_corpus_path
from tests.io.enhanced import MR_PULSE_SEQUENCE, emri_pixels, enhanced_ct, enhanced_mr, save

needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy not installed"
)

SOURCES = {
    "ct": lambda: enhanced_ct(),
    "ct-palette": lambda: enhanced_ct(palette=True),
    "ct-descending": lambda: enhanced_ct(descending=True),
    "ct-synchronization": lambda: enhanced_ct(synchronization=True),
    "mr-pulse-sequence": lambda: enhanced_mr(),
    "mr-synchronization-descending": lambda: enhanced_mr(synchronization=True, descending=True),
    "mr-emri": lambda: enhanced_mr(pixels=emri_pixels()),  # real head MR pixels, 10 x 64²
    "ct-emri": lambda: enhanced_ct(pixels=emri_pixels() - 1000),
}


def _in_plane_x2(image: MedImage) -> MedImage:
    sr = image.resampled(np.repeat(np.repeat(image.array, 2, axis=-1), 2, axis=-2), "x2 in-plane")
    return sr.replace(meta={**sr.meta, "derivation": {"method": "test", "scale": 2}})


def _through_plane_x2(image: MedImage) -> MedImage:
    return image.resampled(np.repeat(image.array, 2, axis=0), "x2 through-plane")


def _derived(tmp_path: Path, name: str, upscale=_in_plane_x2) -> tuple[Path, Path]:
    src = save(SOURCES[name](), tmp_path / f"{name}.dcm")
    return src, write_dicom(upscale(read_dicom(src)), tmp_path / f"{name}_out.dcm")


def _frame_items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every item of a ...FrameTypeSequence in the shared and per-frame functional groups."""
    groups = [*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence]
    return [
        item
        for group in groups
        for elem in group
        if elem.keyword.endswith("FrameTypeSequence")
        for item in elem.value
    ]


def _z(ds: pydicom.Dataset) -> list[float]:
    return [
        float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        for item in ds.PerFrameFunctionalGroupsSequence
    ]


def _content(ds: pydicom.Dataset, key: str) -> list[object]:
    return [item.FrameContentSequence[0][key].value for item in ds.PerFrameFunctionalGroupsSequence]


@needs_dciodvfy
@pytest.mark.parametrize("name", list(SOURCES))
@pytest.mark.parametrize("upscale", [_in_plane_x2, _through_plane_x2], ids=["xy", "z"])
def test_derived_enhanced_object_has_no_new_dciodvfy_errors(tmp_path, name, upscale):
    src, out = _derived(tmp_path, name, upscale)
    assert dciodvfy_errors(src) == set()  # the synthetic source is valid: any error is medsr's
    assert dciodvfy_errors(out) == set()


def test_dropped_palette_makes_the_presentation_monochrome(tmp_path):
    src, out = _derived(tmp_path, "ct-palette")
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    assert before.PixelPresentation == "COLOR" and "RedPaletteColorLookupTableData" in before
    assert after.PixelPresentation == "MONOCHROME"
    assert {item.PixelPresentation for item in _frame_items(after)} == {"MONOCHROME"}
    assert not [elem.keyword for elem in after if "PaletteColorLookupTable" in elem.keyword]
    np.testing.assert_array_equal(read_dicom(out).array[:, ::2, ::2], read_dicom(src).array)


def test_derived_mr_has_no_attributes_reserved_for_original_images(tmp_path):
    src, out = _derived(tmp_path, "mr-pulse-sequence")
    after = pydicom.dcmread(out)
    assert list(after.ImageType[:2]) == ["DERIVED", "PRIMARY"]
    assert {item.FrameType[0] for item in _frame_items(after)} == {"DERIVED"}
    reserved = [*MR_PULSE_SEQUENCE, "BulkMotionCompensationTechnique"]
    assert all(key in pydicom.dcmread(src) for key in reserved)
    assert [key for key in reserved if key in after] == []
    assert after.MagneticFieldStrength == 1.5 and after.ResonantNucleus == "1H"  # still allowed


def test_derivation_is_in_the_shared_functional_group(tmp_path):
    src, out = _derived(tmp_path, "ct")
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    for key in ("DerivationDescription", "DerivationCodeSequence", "SourceImageSequence"):
        assert key not in after
    assert all("DerivationImageSequence" not in f for f in after.PerFrameFunctionalGroupsSequence)
    (derivation,) = after.SharedFunctionalGroupsSequence[0].DerivationImageSequence
    assert "medsr" in derivation.DerivationDescription
    assert derivation.DerivationCodeSequence[0].CodeValue == "113085"
    (source,) = derivation.SourceImageSequence
    assert source.ReferencedSOPInstanceUID == before.SOPInstanceUID
    assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    (evidence,) = after.SourceImageEvidenceSequence
    assert evidence.StudyInstanceUID == before.StudyInstanceUID
    sop = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert sop.ReferencedSOPInstanceUID == before.SOPInstanceUID
    (series,) = after.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == before.SeriesInstanceUID != after.SeriesInstanceUID
    assert "medsr" in after.ContributingEquipmentSequence[-1].Manufacturer


@pytest.mark.parametrize("name", ["ct-descending", "mr-synchronization-descending", "ct"])
def test_frames_keep_the_source_order(tmp_path, name):
    src, out = _derived(tmp_path, name)
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    assert _z(after) == pytest.approx(_z(before))
    for key in ("InStackPositionNumber", "DimensionIndexValues"):
        assert _content(after, key) == _content(before, key)
    np.testing.assert_array_equal(after.pixel_array[:, ::2, ::2], before.pixel_array)
    image, back = read_dicom(src), read_dicom(out)  # geometry: same volume, sorted alike
    np.testing.assert_allclose(back.world_center(), image.world_center(), atol=1e-4)
    np.testing.assert_array_equal(back.array[:, ::2, ::2], image.array)


def test_through_plane_frames_run_in_the_source_direction(tmp_path):
    src, out = _derived(tmp_path, "ct-descending", _through_plane_x2)
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    z = _z(after)
    assert len(z) == 2 * len(_z(before)) and z == sorted(z, reverse=True)  # source: descending
    instack = _content(after, "InStackPositionNumber")
    assert instack == list(range(len(z), 0, -1))  # numbered along the stack, as in the source
    assert _content(after, "DimensionIndexValues") == instack
    image, back = read_dicom(src), read_dicom(out)
    np.testing.assert_allclose(back.world_center(), image.world_center(), atol=1e-4)
    np.testing.assert_array_equal(back.array, np.repeat(image.array, 2, axis=0))


@pytest.mark.parametrize("name", ["ct", "mr-pulse-sequence"])
def test_derived_pixel_contrast_is_resampled(tmp_path, name):
    """Image Type and Frame Type Value 4 (Derived Pixel Contrast) kept the source's NONE, "not a
    calculated image" (PS3.3 C.8.16.1.4, required for ORIGINAL images): a derived output now
    says RESAMPLED."""
    _, out = _derived(tmp_path, name)
    after = pydicom.dcmread(out)
    assert after.ImageType[3] == "RESAMPLED"
    assert {item.FrameType[3] for item in _frame_items(after)} == {"RESAMPLED"}


def _measures(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def _gapped_mr(tmp_path: Path) -> Path:
    """The synthetic Enhanced MR (frames 2 mm apart) stating 1.5 mm slices and a 0.5 mm
    SpacingBetweenSlices (a vendor's gap, not the position step)."""
    ds = enhanced_mr()
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.SliceThickness, measures.SpacingBetweenSlices = "1.5", "0.5"
    return save(ds, tmp_path / "gapped.dcm")


def test_in_plane_output_copies_the_source_spacing_between_slices(tmp_path):
    """Pixel Measures of an in-plane output: the source's slices, its SpacingBetweenSlices as
    stated (it was rewritten to the position step, 0.5 -> 2.0); new slices get the grid's."""
    src = _gapped_mr(tmp_path)
    image = read_dicom(src)
    assert image.spacing[0] == pytest.approx(2.0)
    in_plane = write_dicom(_in_plane_x2(image), tmp_path / "x2.dcm")
    assert str(_measures(in_plane).SpacingBetweenSlices) == "0.5"
    through = write_dicom(_through_plane_x2(image), tmp_path / "z2.dcm")
    assert float(_measures(through).SpacingBetweenSlices) == pytest.approx(1.0)


def test_new_frames_state_their_spacing_as_nominal_thickness(tmp_path):
    """Pixel Measures SliceThickness of a through-plane output: the frames' spacing (1 mm for
    1.5 mm frames 2 mm apart made 2x denser; it was 1.5 / 2 = 0.75 mm, a gap between frames that
    have none), as for an invalid source thickness; in-plane outputs keep the source's."""
    src = _gapped_mr(tmp_path)
    image = read_dicom(src)
    in_plane = write_dicom(_in_plane_x2(image), tmp_path / "x2.dcm")
    assert str(_measures(in_plane).SliceThickness) == "1.5"
    through = write_dicom(_through_plane_x2(image), tmp_path / "z2.dcm")
    assert float(_measures(through).SliceThickness) == pytest.approx(1.0)


def test_per_frame_rescale_is_not_clipped(tmp_path):
    """Frames with their own Pixel Value Transformation (each slope filling int16 with that
    frame's maximum): a frame interpolated between a cold and a hot one was clipped to the cold
    frame's maximum; its own slope now grows, in its own functional group."""
    ds = enhanced_ct()
    n = int(ds.NumberOfFrames)
    maxima = [100.0 * 4**k for k in range(n)]
    hot = np.rint(np.linspace(0, 32767, 256)).reshape(16, 16).astype(np.int16)
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    for item, top in zip(ds.PerFrameFunctionalGroupsSequence, maxima, strict=True):
        transform = pydicom.Dataset()
        transform.RescaleIntercept, transform.RescaleSlope = 0, f"{top / 32767:.8g}"
        transform.RescaleType = "HU"
        item.PixelValueTransformationSequence = pydicom.Sequence([transform])
    ds.PixelRepresentation = 1
    ds.PixelData = np.stack([hot] * n).astype("<i2").tobytes()
    img = read_dicom(save(ds, tmp_path / "src.dcm"))
    np.testing.assert_allclose(img.array.max(axis=(1, 2)), maxima, rtol=1e-6)
    zup = np.repeat(img.array, 2, axis=0)
    zup[1::2][:-1] = (img.array[:-1] + img.array[1:]) / 2  # between frame k and k + 1
    back = read_dicom(write_dicom(img.resampled(zup, "x2 through-plane"), tmp_path / "o.dcm"))
    items = back.meta["datasets"][0].PerFrameFunctionalGroupsSequence
    for k, item in enumerate(items):
        step = float(item.PixelValueTransformationSequence[0].RescaleSlope)
        np.testing.assert_allclose(back.array[k], zup[k], atol=step / 2 + 1e-3)


@pytest.mark.parametrize("name", ["mr-emri", "ct-emri"])
def test_real_pixel_enhanced_geometry_reads_back(tmp_path, name):
    """A well-formed Enhanced MR/CT of real pixels (emri_small's 10 frames of 64²), upscaled x2
    in-plane and through-plane: Pixel Measures, per-frame positions, frame count, stack numbers
    and derivation as the new grid has them, and medsr reads the same volume back."""
    src = save(SOURCES[name](), tmp_path / "src.dcm")
    image = read_dicom(src)
    sz, sy, sx = image.spacing
    before = pydicom.dcmread(src)
    for upscale, (fz, fy) in ((_in_plane_x2, (1, 2)), (_through_plane_x2, (2, 1))):
        out = write_dicom(upscale(image), tmp_path / f"{upscale.__name__}.dcm")
        after, back = pydicom.dcmread(out), read_dicom(out)
        n = int(before.NumberOfFrames) * fz
        assert int(after.NumberOfFrames) == len(after.PerFrameFunctionalGroupsSequence) == n
        assert (after.Rows, after.Columns) == (before.Rows * fy, before.Columns * fy)
        m = after.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert [float(v) for v in m.PixelSpacing] == pytest.approx([sy / fy, sx / fy])
        assert float(m.SliceThickness) == float(m.SpacingBetweenSlices) == pytest.approx(sz / fz)
        assert np.diff(_z(after)) == pytest.approx([sz / fz] * (n - 1))
        assert _content(after, "InStackPositionNumber") == list(range(1, n + 1))
        assert _content(after, "DimensionIndexValues") == list(range(1, n + 1))
        (derivation,) = after.SharedFunctionalGroupsSequence[0].DerivationImageSequence
        assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == before.SOPInstanceUID
        assert back.spacing == pytest.approx((sz / fz, sy / fy, sx / fy))
        np.testing.assert_allclose(back.world_center(), image.world_center(), atol=1e-4)


@pytest.mark.parametrize("name", ["ct", "ct-descending"])
def test_through_plane_ct_position_follows_each_frame(tmp_path, name):
    """CT Position per frame (Table Position, reconstruction target and data collection
    centres) of a through-plane output was its nearest source frame's: two new frames 1.25 mm
    apart both said table 0.0, centre z 0.0. Each now moves with its plane (the synthetic
    source's table position is its frame's z)."""
    _, out = _derived(tmp_path, name, _through_plane_x2)
    after = pydicom.dcmread(out)
    z = _z(after)
    assert len(set(z)) == len(z) == 8
    for item, zf in zip(after.PerFrameFunctionalGroupsSequence, z, strict=True):
        ct = item.CTPositionSequence[0]
        assert float(ct.TablePosition) == pytest.approx(zf)
        assert [float(v) for v in ct.ReconstructionTargetCenterPatient] == pytest.approx([0, 0, zf])
        assert [float(v) for v in ct.DataCollectionCenterPatient] == pytest.approx([0, 0, zf])


@needs_dciodvfy
@pytest.mark.parametrize("upscale", [_in_plane_x2, _through_plane_x2], ids=["xy", "z"])
def test_enhanced_source_without_functional_groups_gets_none(tmp_path, upscale):
    """pydicom's emri_small.dcm: an Enhanced MR without any functional group (and no geometry).
    Its output held a Shared Functional Groups Sequence with the derivation only, and dciodvfy
    required every macro of one: 6 new errors (Pixel Measures, Plane Position, Plane
    Orientation, Frame Anatomy, Pixel Value Transformation, MR Image Frame Type). It now gets no
    functional group (a complete set would state a geometry the source does not have), its
    derivation at the top level as in a classic image: no new error."""
    src = dicom_corpus_path("emri_small.dcm")
    image = read_dicom(src)
    out = write_dicom(upscale(image), tmp_path / "out.dcm")
    assert dciodvfy_errors(out) <= dciodvfy_errors(src)
    after = pydicom.dcmread(out)
    assert "SharedFunctionalGroupsSequence" not in after
    assert "PerFrameFunctionalGroupsSequence" not in after
    assert "medsr" in after.DerivationDescription
    source = after.SourceImageSequence[0]
    assert source.ReferencedSOPInstanceUID == pydicom.dcmread(src).SOPInstanceUID
    assert list(after.ImageType[:2]) == ["DERIVED", "PRIMARY"]
    back = read_dicom(out)
    assert back.spatial_shape == upscale(image).spatial_shape
    np.testing.assert_allclose(back.array, upscale(image).array, atol=1.0)
