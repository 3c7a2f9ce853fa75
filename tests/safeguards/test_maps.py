"""Uncertainty from test-time augmentation, map summaries, writing maps beside outputs."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

import medsr
from medsr.image import MedImage
from medsr.safeguards import summarize_map, uncertainty_map, write_maps
from medsr.safeguards.maps import DIHEDRAL, dihedral, dihedral_inverse, tta_statistics


def test_dihedral_group_round_trips(rng):
    a = rng.normal(size=(2, 5, 7))
    seen = set()
    for k, flip in DIHEDRAL:
        t = dihedral(a, k, flip)
        np.testing.assert_array_equal(dihedral_inverse(t, k, flip), a)
        seen.add(t.tobytes())
    assert len(DIHEDRAL) == 8 and len(seen) == 8


def test_interpolators_are_equivariant_learned_models_are_not(mr_small, mr_weights):
    small = mr_small.replace(array=mr_small.array[:, :32, :24])
    assert uncertainty_map(small, 2, "bicubic").max() < 1e-3
    std = uncertainty_map(small, 2, str(mr_weights))
    assert std.shape == (1, 64, 48) and std.max() > 1.0


def test_identity_output_is_plain_upscale_and_samples_hook(mr_small):
    small = mr_small.replace(array=mr_small.array[:, :16, :16])
    rng = np.random.default_rng(0)

    def sampler(im: MedImage) -> MedImage:
        out = medsr.upscale(im, 2, "bicubic")
        return out.replace(array=out.array + rng.normal(0, 5.0, out.array.shape).astype(np.float32))

    sr, std, info = tta_statistics(small, 2, "bicubic", tta=False, samples=64, sampler=sampler)
    np.testing.assert_array_equal(sr.array, medsr.upscale(small, 2, "bicubic").array)
    assert info["samples"] == 64 and abs(float(std.mean()) - 5.0) < 0.5
    _, none, info = tta_statistics(small, 2, "bicubic", tta=False, samples=3)
    assert none is None and "deterministic" in info["samples_skipped"]


def test_summary_numbers():
    v = np.zeros((1, 10, 10), np.float32)
    v[0, 0, :5] = 10.0
    s = summarize_map(v, data_range=100.0, threshold_rel=0.05, units="HU")
    assert s["max"] == 10 and s["max_rel"] == 0.1 and s["threshold"] == 5.0
    assert s["frac_above"] == 0.05 and s["mean"] == pytest.approx(0.5) and s["units"] == "HU"
    json.dumps(s)


def test_write_maps_png_nifti_and_lr_grid(tmp_path, rng):
    img = MedImage(
        rng.uniform(0, 50, (1, 6, 8)).astype(np.float32), spacing=(1, 0.5, 0.5), modality="MR"
    )
    sr = medsr.upscale(img, 2, "bicubic")
    maps = {
        "consistency": rng.uniform(0, 3, (1, 12, 16)),
        "consistency_lr": rng.uniform(0, 3, (1, 6, 8)),
    }
    out = write_maps(maps, tmp_path / "m", like=sr, summary={"a": np.float32(1.5)})
    assert [p.name for p in out["consistency"]] == ["consistency.png"]
    back = medsr.load_image(out["consistency"][0])
    np.testing.assert_allclose(back.array, maps["consistency"], atol=3 / 65535 * 2)
    assert back.spacing == sr.spacing
    lr_back = medsr.load_image(out["consistency_lr"][0])
    assert lr_back.spacing == pytest.approx(img.spacing)
    assert json.loads((tmp_path / "m" / "summary.json").read_text()) == {"a": 1.5}
    side = json.loads((tmp_path / "m" / "consistency.json").read_text())
    assert side["derivation"]["method"].startswith("consistency error map")
    vol = MedImage(rng.uniform(0, 5, (3, 4, 4)).astype(np.float32))
    out = write_maps({"uncertainty": vol.array}, tmp_path / "v", like=vol)
    assert out["uncertainty"][0].name == "uncertainty.nii.gz"
    with pytest.raises(medsr.MedSRError):
        write_maps({"uncertainty": vol.array}, tmp_path / "v", like=vol)  # no overwrite
    with pytest.raises(medsr.MedSRError, match="shape"):
        write_maps({"bad": np.zeros((2, 4, 4))}, tmp_path / "w", like=vol)


def test_write_maps_dicom_series(tmp_path, ct_small):
    from tests.io.conftest import dciodvfy_errors

    sr = medsr.upscale(ct_small, 2, "bicubic")
    cmap = np.linspace(0, 12.5, 256 * 256, dtype=np.float32).reshape(1, 256, 256)
    umap = np.full((1, 256, 256), 3e-4, np.float32)
    umap[0, 0, 0] = 0
    out = write_maps({"consistency": cmap, "uncertainty": umap}, tmp_path, like=sr)
    src_errors = dciodvfy_errors(ct_small.meta["source_paths"][0])
    for name, values in (("consistency", cmap), ("uncertainty", umap)):
        _, series = out[name]
        f = next(series.glob("*.dcm"))
        ds = pydicom.dcmread(f)
        assert name in ds.SeriesDescription and ds.ImageType[0] == "DERIVED"
        assert "map" in ds.DerivationDescription
        assert ds.StudyInstanceUID == ct_small.meta["datasets"][0].StudyInstanceUID
        assert float(ds.WindowWidth) > 0
        back = medsr.load_image(f)
        np.testing.assert_allclose(back.array, values, atol=max(values.max(), 1) / 65535 * 1.01)
        assert back.spacing == pytest.approx(sr.spacing)
        assert dciodvfy_errors(f) <= src_errors


def test_ensemble_mean_is_the_same_with_or_without_the_spread(rng):
    """``ensemble=True``: the float32 sum (no spread) and the Welford mean (with it) give the
    same mean, whatever order the transforms are given in (the identity need not come first)."""
    img = MedImage(rng.normal(100, 20, (1, 12, 10)).astype(np.float32), modality="MR")

    def runner(im: MedImage) -> MedImage:  # not symmetric: a ramp along the last axis
        a = im.array
        return im.replace(
            array=(np.repeat(np.repeat(a, 2, -2), 2, -1) + np.arange(a.shape[-1] * 2)).astype(
                np.float32
            )
        )

    for order in ([(2, False), (0, False), (1, True)], None):
        lean, none, info = tta_statistics(
            img, 2, runner=runner, transforms=order, ensemble=True, spread=False
        )
        full, std, _ = tta_statistics(img, 2, runner=runner, transforms=order, ensemble=True)
        assert none is None and std is not None and info["ensemble"].startswith("mean of")
        np.testing.assert_allclose(lean.array, full.array, rtol=1e-6, atol=1e-4)


def test_dicom_maps_have_their_own_series_numbers(tmp_path):
    """The derived series and its consistency/uncertainty map series had one SeriesNumber (source
    + 1000): a PACS list could not tell them apart. Now + 1000, + 1001, + 1002 (and the error
    bound map, session 29: + 1003)."""
    import pydicom

    from medsr.pipeline import upscale_file
    from tests.conftest import corpus_path

    src = corpus_path("CT_small.dcm")
    upscale_file(src, tmp_path / "out", model="bicubic", maps_dir=tmp_path / "maps")
    base = int(pydicom.dcmread(src).SeriesNumber)
    numbers = {
        p.parent.name: int(pydicom.dcmread(p).SeriesNumber)
        for p in [*tmp_path.glob("out/*.dcm"), *tmp_path.glob("maps/*_dicom/*.dcm")]
    }
    assert numbers == {
        "out": base + 1000,
        "consistency_dicom": base + 1001,
        "uncertainty_dicom": base + 1002,
        "error_bound_dicom": base + 1003,
    }


def test_colour_consistency_map_says_it_is_the_channel_mean(tmp_path):
    """An RGB image's one consistency map is the mean |error| over its channels while the
    summary's max/p99 are over every channel value (a trial read 50.1 against 81.0 as a
    contradiction): the summary now says what the map is; the means agree."""
    from PIL import Image

    import medsr
    from medsr.pipeline import upscale_file

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "rgb.png")
    upscale_file(
        tmp_path / "rgb.png", tmp_path / "out.png", model="bicubic", maps_dir=tmp_path / "maps"
    )
    cons = json.loads((tmp_path / "maps" / "summary.json").read_text())["consistency"]
    assert "mean of |error| over the colour channels" in cons["map"]
    cmap = medsr.load_image(tmp_path / "maps" / "consistency.png").array
    assert float(cmap.mean()) == pytest.approx(cons["error"]["mean"], rel=2e-3)


# ---------------------------------------------------------------- maps are labelled as maps
def _map_series(out: dict, name: str) -> pydicom.Dataset:
    _, series = out[name]
    return pydicom.dcmread(next(series.glob("*.dcm")))


def test_ct_map_series_cannot_pass_for_a_ct_image(tmp_path, ct_small):
    """A CT's consistency/uncertainty map series was CT Image Storage with no Rescale Type (in
    that IOD: Hounsfield units), Image Type DERIVED\\SECONDARY\\AXIAL and the derivation code of
    the upscaled image: a map of HU errors read as a CT, told apart only by its description.
    Now Rescale Type US, an Image Type value naming the map, its own derivation code, and a
    derivation text saying what the values are, in which units; no new dciodvfy error."""
    from tests.io.conftest import dciodvfy_errors

    sr = medsr.upscale(ct_small, 2, "bicubic")
    maps = {
        "consistency": np.full((1, 256, 256), 4.0, np.float32),
        "uncertainty": np.ones((1, 256, 256), np.float32),
    }
    maps["consistency"][0, :8] = 0.0
    out = write_maps(maps, tmp_path, like=sr)
    src_errors = dciodvfy_errors(ct_small.meta["source_paths"][0])
    for name, label, code, values in (
        ("consistency", "CONSISTENCY MAP", "113062", "absolute error in HU"),
        ("uncertainty", "UNCERTAINTY MAP", "113061", "standard deviation in HU"),
    ):
        ds = _map_series(out, name)
        assert ds.RescaleType == "US"  # not HU (its absence in CT Image Storage means HU)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", label]
        assert [c.CodeValue for c in ds.DerivationCodeSequence] == [code, "113085"]
        assert (
            values in ds.DerivationDescription
            and "not a measured CT image" in ds.DerivationDescription
        )
        assert ds.SOPClassUID == ct_small.meta["datasets"][0].SOPClassUID  # overlays its series
        assert dciodvfy_errors(next(out[name][1].glob("*.dcm"))) <= src_errors
    output = pydicom.dcmread(next(iter(sorted(tmp_path.glob("consistency_dicom/*.dcm")))))
    assert output.PatientID == ct_small.meta["datasets"][0].PatientID


@pytest.mark.parametrize("kind", ["mr", "ct"])
def test_enhanced_map_series_scaling_is_in_the_functional_groups(tmp_path, kind):
    """An Enhanced MR/CT map series wrote its Rescale Slope/Intercept and window at the top level,
    while the functional groups kept the source's (slope 1, intercept 0; window 40/400), which
    readers use first: medsr itself read a 0-148 map back as 0-65535. Its Image Type kept the
    source's PRIMARY\\...\\NONE ("not a calculated image"). Now the functional groups carry the
    map's scaling and window, Image and Frame Type Value 4 its Derived Pixel Contrast
    (SUBTRACTION, STD_DEVIATION; Value 2 stays PRIMARY, the IODs' only Enumerated Value), and
    dciodvfy finds no error nor new warning on it."""
    import shutil

    from medsr.io.dicom import read_dicom
    from tests.io.conftest import dciodvfy_errors
    from tests.io.enhanced import enhanced_ct, enhanced_mr, save

    src = save(enhanced_mr() if kind == "mr" else enhanced_ct(), tmp_path / "src.dcm")
    image = read_dicom(src)
    sr = medsr.upscale(image, 2, "bicubic")
    shape = sr.spatial_shape
    cmap = np.linspace(0, 147.9, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    umap = np.linspace(0, 0.4, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    out = write_maps({"consistency": cmap, "uncertainty": umap}, tmp_path / "maps", like=sr)
    for name, values, contrast in (
        ("consistency", cmap, "SUBTRACTION"),
        ("uncertainty", umap, "STD_DEVIATION"),
    ):
        path = out[name][1]
        files = [path] if path.is_file() else sorted(path.glob("*.dcm"))
        ds = pydicom.dcmread(files[0])
        (transform,) = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
        assert float(transform.RescaleSlope) != 1.0 and "RescaleSlope" not in ds
        assert transform.RescaleType == ("HU" if kind == "ct" else "US")  # Enhanced CT: HU only
        (voi,) = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence
        assert float(voi.WindowWidth) < 400 and "WindowCenter" not in ds
        assert all("PixelValueTransformationSequence" not in f and "FrameVOILUTSequence" not in f
                   for f in ds.PerFrameFunctionalGroupsSequence)  # fmt: skip
        assert list(ds.ImageType) == ["DERIVED", "PRIMARY", ds.ImageType[2], contrast]
        group = "MRImageFrameTypeSequence" if kind == "mr" else "CTImageFrameTypeSequence"
        assert ds.SharedFunctionalGroupsSequence[0][group][0].FrameType[3] == contrast
        back = medsr.load_image(files[0])
        np.testing.assert_allclose(back.array, values, atol=values.max() / 65535 * 1.01)
        if shutil.which("dciodvfy"):
            assert dciodvfy_errors(files[0]) == set()


def test_map_of_an_8_bit_ultrasound_is_8_bit(tmp_path):
    """A map of an 8-bit ultrasound image was written with 16 bits: US Image Storage allows 8
    only (3 dciodvfy errors: Bits Allocated, Bits Stored, High Bit)."""
    import shutil

    from tests.conftest import corpus_path
    from tests.io.conftest import dciodvfy_errors

    src = corpus_path("JPGLosslessP14SV1_1s_1f_8b.dcm")
    image = medsr.load_image(src)
    values = np.linspace(0, 30.0, image.array.size, dtype=np.float32).reshape(image.array.shape)
    out = write_maps({"consistency": values}, tmp_path, like=image)
    f = next(out["consistency"][1].glob("*.dcm"))
    ds = pydicom.dcmread(f)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    np.testing.assert_allclose(medsr.load_image(f).array, values, atol=30.0 / 255 * 0.51)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(f) <= dciodvfy_errors(src)


def test_nifti_map_description_says_it_is_a_map(tmp_path, rng):
    """A NIfTI map's header description was the output's ("medsr derived: bicubic x2"): a viewer
    showing it could not tell the map from the upscaled image."""
    import nibabel as nib

    vol = MedImage(rng.uniform(0, 5, (3, 4, 4)).astype(np.float32), modality="CT", units="HU")
    sr = medsr.upscale(vol, 2, "bicubic")
    out = write_maps({"uncertainty": np.zeros(sr.spatial_shape, np.float32)}, tmp_path, like=sr)
    descrip = nib.load(out["uncertainty"][0]).header["descrip"].item().decode()
    assert descrip.startswith("medsr uncertainty map (HU)") and "bicubic" in descrip
    side = json.loads((tmp_path / "uncertainty.json").read_text())
    assert "standard deviation in HU" in side["derivation"]["method"]


def _mr_series(tmp_path, n: int = 3):
    """``n`` MR slices (MR_small's header, 4 mm apart): MR Image Storage, no Modality LUT."""
    from pydicom.uid import generate_uid

    from tests.conftest import corpus_path
    from tests.io.conftest import make_ct_slice, write_series

    template = pydicom.dcmread(corpus_path("MR_small.dcm"))
    uid = generate_uid()
    pixels = template.pixel_array.astype(np.int16)
    slices = [
        make_ct_slice(
            template,
            pixels=pixels + 10 * k,
            ipp=(0.0, 0.0, 4.0 * k),
            series_uid=uid,
            instance=k + 1,
        )
        for k in range(n)
    ]
    return write_series(tmp_path / "mr", slices)


def _rescale_warnings(path) -> list[str]:
    import subprocess

    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [
        line
        for line in (proc.stderr + proc.stdout).splitlines()
        if "Rescale" in line or "Modality LUT" in line or "RealWorld" in line
    ]


@pytest.mark.parametrize("source", ["mr-series", "JPGLosslessP14SV1_1s_1f_8b.dcm"])
def test_mr_and_us_maps_give_their_values_by_a_real_world_value_mapping(tmp_path, source):
    """MR Image and US Image have no Modality LUT Module: the maps' Rescale Slope/Intercept/Type
    drew dciodvfy's 'Attribute is not present in standard DICOM IOD' (3 warnings) and, for MR,
    'Non-identity Modality LUT Module ... not expected ... may cause windowing problems' (2). Now
    a Real World Value Mapping (one linear item over the stored range, UCUM units), the display
    window on the stored values; medsr reads the map back in its values to within half a
    quantisation step, its window in them too, and an upscale of the map keeps them."""
    import shutil

    from medsr.io.dicom import read_dicom, write_dicom
    from tests.conftest import corpus_path
    from tests.io.conftest import dciodvfy_errors

    src = _mr_series(tmp_path) if source == "mr-series" else corpus_path(source)
    image = medsr.load_image(src)
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(0, 3.7, image.array.shape)).astype(np.float32)
    out = write_maps({"consistency": values}, tmp_path / "maps", like=image)
    files = sorted(out["consistency"][1].glob("*.dcm"))
    assert len(files) == image.spatial_shape[0]
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.6.1")
    assert not [k for k in ("RescaleSlope", "RescaleIntercept", "RescaleType") if k in ds]
    (mapping,) = ds.RealWorldValueMappingSequence
    top = (1 << int(ds.BitsStored)) - 1
    assert (mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped) == (
        0,
        top,
    )
    assert mapping.LUTLabel == "CONSISTENCY"
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "[arb'U]"
    step = float(mapping.RealWorldValueSlope)
    assert step == pytest.approx(float(np.ptp(values)) / top, rel=1e-6)
    back = medsr.load_image(out["consistency"][1])
    np.testing.assert_allclose(back.array, values, atol=step * 0.51)
    hi = float(np.percentile(values, 99.5))
    assert back.meta["window"] == pytest.approx((hi / 2, hi), rel=1e-4)  # in the map's values
    assert float(ds.WindowWidth) == pytest.approx(hi / step, rel=1e-4)  # on the stored values
    x2 = back.resampled(np.repeat(np.repeat(back.array, 2, axis=-1), 2, axis=-2))
    again = read_dicom(write_dicom(x2, tmp_path / "x2"))
    np.testing.assert_allclose(again.array, x2.array, atol=step * 0.01)  # the same stored values
    assert "RescaleSlope" not in again.meta["datasets"][0]
    assert again.meta["datasets"][0].RealWorldValueMappingSequence[0].RealWorldValueSlope == step
    if shutil.which("dciodvfy"):
        assert _rescale_warnings(files[0]) == []
        assert dciodvfy_errors(files[0]) <= dciodvfy_errors(
            sorted(src.glob("*.dcm"))[0] if src.is_dir() else src
        )


def test_an_mr_image_s_own_real_world_value_mapping_leaves_its_values_stored():
    """Only a map's mapping gives its values: an MR image keeps its stored values (its display
    window applies to them), whatever Real World Value Mapping it carries."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from medsr.io.dicom.header import _rescale, map_value_mapping

    ds = pydicom.dcmread(medsr_corpus("MR_small.dcm"))
    item = Dataset()
    item.RealWorldValueSlope, item.RealWorldValueIntercept = 0.5, 3.0
    ds.RealWorldValueMappingSequence = Sequence([item])
    assert map_value_mapping(ds) is None and _rescale(ds) == (1.0, 0.0)
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER", "CONSISTENCY MAP"]
    assert _rescale(ds) == (0.5, 3.0)
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, 0.0  # a Modality LUT wins
    assert _rescale(ds) == (2.0, 0.0)


def medsr_corpus(name: str):
    from tests.conftest import corpus_path

    return corpus_path(name)


def _dx_map(tmp_path):
    """A consistency map (values 0..8) of a DX radiograph — MONOCHROME1, Presentation LUT Shape
    INVERSE, a 64² crop of RG3_UNCR — written as a DICOM series: (its folder, its values)."""
    from tests.conftest import corpus_path

    ds = pydicom.dcmread(corpus_path("RG3_UNCR.dcm"))
    crop = ds.pixel_array[800:864, 800:864].copy()
    ds.Rows, ds.Columns = crop.shape
    ds.PixelData = crop.tobytes()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality, ds.PresentationLUTShape = "DX", "INVERSE"
    src = tmp_path / "dx.dcm"
    ds.save_as(src, enforce_file_format=True)
    image = medsr.load_image(src)
    values = np.linspace(0, 8.0, image.array.size, dtype=np.float32).reshape(image.array.shape)
    return write_maps({"consistency": values}, tmp_path / "m", like=image)["consistency"][1], values


def test_a_dx_map_keeps_the_identity_modality_lut_its_iod_requires(tmp_path):
    """The DX Image Module requires Rescale Slope 1 and Rescale Type US: a radiograph's map was
    written with Rescale Slope 0.0024 (dciodvfy: 'Unrecognized enumerated value <0.0024...> for
    value 1 of attribute <Rescale Slope>'). Its values are now given by a Real World Value
    Mapping over an identity Modality LUT, and medsr reads them back in the map's values."""
    import shutil

    from tests.io.conftest import dciodvfy_errors

    folder, values = _dx_map(tmp_path)
    (f,) = folder.glob("*.dcm")
    out = pydicom.dcmread(f)
    assert (float(out.RescaleSlope), float(out.RescaleIntercept), out.RescaleType) == (1, 0, "US")
    (mapping,) = out.RealWorldValueMappingSequence
    step = float(mapping.RealWorldValueSlope)
    assert step == pytest.approx(8.0 / ((1 << int(out.BitsStored)) - 1), rel=1e-6)
    np.testing.assert_allclose(medsr.load_image(folder).array, values, atol=step * 0.51)
    if shutil.which("dciodvfy"):
        assert not any("Rescale" in e for e in dciodvfy_errors(f)), dciodvfy_errors(f)


def test_a_map_of_a_monochrome1_radiograph_is_not_shown_as_a_negative(tmp_path):
    """A DX image is MONOCHROME1 with Presentation LUT Shape INVERSE; its map is written
    MONOCHROME2 and kept INVERSE: a viewer drew it as a negative (dciodvfy: 'Unrecognized
    enumerated value <INVERSE> for value 1 of attribute <Presentation LUT Shape>')."""
    import shutil

    from tests.io.conftest import dciodvfy_errors

    folder, values = _dx_map(tmp_path)
    (f,) = folder.glob("*.dcm")
    out = pydicom.dcmread(f)
    assert out.PhotometricInterpretation == "MONOCHROME2"
    assert out.PresentationLUTShape == "IDENTITY"
    center = float(np.percentile(values, 99.5)) / 2  # the map's own window, in its values
    assert medsr.load_image(f).meta["window"][0] == pytest.approx(center, rel=1e-3)
    # in the file on the stored values, which the identity Modality LUT a DX map has gives it
    step = float(out.RealWorldValueMappingSequence[0].RealWorldValueSlope)
    assert float(out.WindowCenter) == pytest.approx(center / step, rel=1e-3)
    if shutil.which("dciodvfy"):
        assert not any("Presentation LUT" in e for e in dciodvfy_errors(f))


def test_maps_on_the_input_grid_are_nan_where_the_input_held_no_data(tmp_path, rng):
    """A map on the input grid (``consistency_map(..., grid="lr")``, written as ``*_lr``) had no
    NaN record — the output's was for another grid — so it held 0 (no error: full trust) where
    nothing was measured. Now it is NaN there, as the output-grid maps are: from the output's
    record by whole blocks (in-plane), or from the input itself (``measured``: needed for a
    through-plane output, whose record keeps a slice only between two no-data slices)."""
    import nibabel as nib

    from medsr.safeguards.consistency import consistency_map

    nan = np.zeros((3, 8, 6), bool)
    nan[:, :2, :3] = True
    nan[1] = True  # a whole slice: kept through-plane only where its neighbours hold none
    values = rng.uniform(50, 100, nan.shape).astype(np.float32)
    arr = np.where(nan, np.nan, values)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), tmp_path / "in.nii.gz")
    lr = medsr.load_image(tmp_path / "in.nii.gz")
    sr = medsr.upscale(lr, 2, "bicubic")
    maps = {"consistency_lr": consistency_map(sr, lr, grid="lr")}
    for measured in (None, lr):
        out = write_maps(maps, tmp_path / f"m{measured is None}", like=sr, measured=measured)
        stored = nib.load(str(out["consistency_lr"][0])).get_fdata().transpose(2, 1, 0)
        np.testing.assert_array_equal(np.isnan(stored), nan)
    tall = lr.resampled(np.zeros((6, 8, 6), np.float32))  # a through-plane output's grid
    out = write_maps(maps, tmp_path / "z", like=tall, measured=lr)
    stored = nib.load(str(out["consistency_lr"][0])).get_fdata().transpose(2, 1, 0)
    np.testing.assert_array_equal(np.isnan(stored), nan)


def test_a_series_map_is_each_frame_own_with_no_data_where_it_holds_none(tmp_path, rng):
    """A 4-D series has a map per time frame, ``(T, Z, Y, X)``: each frame's own error and
    spread, NaN where that frame held no data (written as a 4-D NIfTI). It had one map, the
    mean over the frames that hold data at each pixel (before that over all of them, a
    no-data frame's 0 halving a 2-frame map there): a frame's map was another's where it
    held none, and their mean elsewhere. (The mean over the channels that hold data stays
    what a colour image's map is: :func:`mean_over_held`, below.)"""
    from medsr.io.padding import mean_over_held
    from medsr.pipeline import upscale_with_safeguards
    from medsr.safeguards.consistency import consistency_error

    values = rng.normal(100, 20, (2, 2, 12, 12)).astype(np.float32)
    frame0 = np.zeros(values.shape, bool)
    frame0[0, :, :4, :4] = True  # frame 0 only
    both = np.zeros(values.shape, bool)
    both[:, :, 8:, 8:] = True  # every frame
    no_data = frame0 | both
    series = MedImage(
        np.where(no_data, 0, values),
        spacing=(3.0, 1.0, 1.0),
        channels="time",
        meta={"nonfinite_mask": no_data},
    )
    sr, summary = upscale_with_safeguards(series, 2, "bicubic", maps=True, tta=True)
    err = np.abs(consistency_error(sr, series, summary["degradation"]["kind"], 2))
    err = np.repeat(np.repeat(err, 2, axis=-2), 2, axis=-1)  # as the map: on the output grid
    cmap = sr.meta["maps"]["consistency"]
    assert cmap.shape == (2, 2, 24, 24)
    np.testing.assert_allclose(cmap, err, rtol=1e-6)  # each frame's own
    out = write_maps(sr.meta["maps"], tmp_path / "maps", like=sr)
    import nibabel as nib

    for name in ("consistency", "uncertainty"):
        stored = nib.load(str(out[name][0])).get_fdata().transpose(3, 2, 1, 0)
        np.testing.assert_array_equal(
            np.isnan(stored), np.kron(no_data, np.ones((1, 1, 2, 2))).astype(bool)
        )
    v = np.array([[1.0, 4.0], [3.0, 8.0]], np.float32)
    held = np.array([[False, True], [False, False]])
    np.testing.assert_array_equal(mean_over_held(v, held), [2.0, 8.0])
    np.testing.assert_array_equal(mean_over_held(v, np.ones_like(held)), [0.0, 0.0])
    np.testing.assert_array_equal(mean_over_held(v, None), v.mean(axis=0))


def test_map_of_an_enhanced_object_without_functional_groups_adds_none(tmp_path):
    """pydicom's emri_small.dcm is an Enhanced MR without functional groups: its map series got
    a Shared Functional Groups Sequence holding only the derivation, the map's Pixel Value
    Transformation and window, and dciodvfy required the rest of one (5 new errors: Pixel
    Measures, Plane Position, Plane Orientation, Frame Anatomy, MR Image Frame Type). Now its
    scaling, window and derivation are at the top level, as the source's are, and read back."""
    import shutil

    from medsr.io.dicom import read_dicom
    from tests.io.conftest import dciodvfy_errors, dicom_corpus_path

    src = dicom_corpus_path("emri_small.dcm")
    image = read_dicom(src)
    sr = image.resampled(np.repeat(np.repeat(image.array, 2, axis=-1), 2, axis=-2), "x2")
    shape = sr.spatial_shape
    cmap = np.linspace(0, 147.9, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    out = write_maps({"consistency": cmap}, tmp_path / "maps", like=sr)
    path = out["consistency"][1]
    (f,) = [path] if path.is_file() else sorted(path.glob("*.dcm"))
    ds = pydicom.dcmread(f)
    assert "SharedFunctionalGroupsSequence" not in ds and "map" in ds.DerivationDescription
    np.testing.assert_allclose(read_dicom(f).array, cmap, atol=cmap.max() / 65535 * 1.01)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(f) <= dciodvfy_errors(src)
