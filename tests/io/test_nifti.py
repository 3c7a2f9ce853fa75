"""NIfTI reader/writer: layout, geometry (cell-centred FOV), sform/qform, bad headers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from medsr.errors import CorruptInputError, EmptyInputError, OutputExistsError
from medsr.image import MedImage
from tests.conftest import file_digest


@pytest.mark.parametrize(
    "name,shape,channels",
    [
        ("anatomical.nii", None, None),
        ("example4d.nii.gz", None, "time"),
        ("standard.nii.gz", None, None),
        ("S0_10slices.nii.gz", None, "time"),
        ("aniso_vox.nii.gz", None, None),
    ],
)
def test_read_corpus_nifti(corpus, name, shape, channels):
    path = corpus(name)
    ref = nib.load(str(path))
    img = medsr.load_image(path)
    assert img.meta["format"] == "nifti"
    assert img.channels == channels
    data = np.asarray(ref.dataobj)
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    assert img.array.shape == tuple(reversed(data.shape))
    np.testing.assert_allclose(img.affine, ref.affine)
    # same voxel → same world coordinate
    x, y, z = 1, 2, 0
    np.testing.assert_allclose(
        img.world_coordinate((x, y, z)), nib.affines.apply_affine(ref.affine, (x, y, z))
    )


def test_round_trip_and_headers(tmp_path, corpus):
    src = corpus("anatomical.nii")
    before = file_digest(src)
    img = medsr.load_image(src)
    out = medsr.save_image(img, tmp_path / "a.nii.gz")
    back = nib.load(str(out))
    assert img.meta["stored_dtype"] == ">i2"  # big-endian int16: written back as (native) int16
    assert back.get_data_dtype() == np.dtype(np.int16)
    np.testing.assert_allclose(back.get_sform(), back.get_qform(), atol=1e-5)
    assert int(back.header["sform_code"]) == int(back.header["qform_code"]) > 0
    assert (back.dataobj.slope, back.dataobj.inter) == (1.0, 0.0)
    np.testing.assert_array_equal(medsr.load_image(out).array, img.array)
    assert file_digest(src) == before


def test_upscaled_nifti_keeps_field_of_view(tmp_path, corpus):
    img = medsr.load_image(corpus("aniso_vox.nii.gz"))
    sr = medsr.upscale(img, scale=2, model="bicubic")
    assert sr.spatial_shape == (
        img.spatial_shape[0],
        img.spatial_shape[1] * 2,
        img.spatial_shape[2] * 2,
    )
    assert sr.spacing[1:] == pytest.approx((img.spacing[1] / 2, img.spacing[2] / 2))
    assert sr.spacing[0] == pytest.approx(img.spacing[0])
    out = medsr.save_image(sr, tmp_path / "sr.nii")
    back = medsr.load_image(out)
    np.testing.assert_allclose(back.world_center(), img.world_center(), atol=1e-4)
    # the outer corners of the field of view (cell edges) stay where they were
    z, y, x = img.spatial_shape
    corner = img.world_coordinate((-0.5, -0.5, 0))
    np.testing.assert_allclose(back.world_coordinate((-0.5, -0.5, 0)), corner, atol=1e-4)
    np.testing.assert_allclose(
        back.world_coordinate((2 * x - 0.5, 2 * y - 0.5, z - 1)),
        img.world_coordinate((x - 0.5, y - 0.5, z - 1)),
        atol=1e-4,
    )


def test_single_slice_nifti_upscaled_in_plane(tmp_path):
    data = np.random.default_rng(0).random((20, 30, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.9, 3.0, 1.0])), str(tmp_path / "s.nii.gz"))
    img = medsr.load_image(tmp_path / "s.nii.gz")
    assert img.spatial_shape == (1, 30, 20)
    sr = medsr.upscale(img, scale=3, model="lanczos")
    out = medsr.save_image(sr, tmp_path / "o.nii.gz")
    assert nib.load(str(out)).shape == (60, 90, 1)


def test_corrupt_header(tmp_path):
    bad = tmp_path / "bad.nii"
    header = bytearray(nib.Nifti1Header().binaryblock)
    header[40:56] = b"\xff" * 16  # nonsense dims
    bad.write_bytes(bytes(header) + b"\x00" * 4)
    with pytest.raises(CorruptInputError):
        medsr.load_image(bad)


def test_truncated_nifti(tmp_path, corpus):
    src = corpus("anatomical.nii")
    bad = tmp_path / "trunc.nii"
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(CorruptInputError):
        medsr.load_image(bad)


def test_empty_file(tmp_path):
    (tmp_path / "e.nii").write_bytes(b"")
    with pytest.raises(EmptyInputError):
        medsr.load_image(tmp_path / "e.nii")


def test_no_overwrite(tmp_path):
    img = MedImage(np.zeros((2, 4, 4)))
    medsr.save_image(img, tmp_path / "x.nii")
    with pytest.raises(OutputExistsError):
        medsr.save_image(img, tmp_path / "x.nii")
    medsr.save_image(img, tmp_path / "x.nii", overwrite=True)


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    origin=st.tuples(*[st.floats(-200, 200)] * 3),
    scale=st.sampled_from([2, 3, 4]),
)
def test_geometry_round_trip_any_affine(tmp_path_factory, spacing, angles, origin, scale):
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", angles).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = origin
    data = np.random.default_rng(1).random((6, 5, 3)).astype(np.float32)
    d = tmp_path_factory.mktemp("h")
    nib.save(nib.Nifti1Image(data, affine), str(d / "in.nii"))
    img = medsr.load_image(d / "in.nii")
    sr = medsr.upscale(img, scale=scale, model="linear")
    back = medsr.load_image(medsr.save_image(sr, d / "out.nii"))
    np.testing.assert_allclose(back.world_center(), img.world_center(), atol=1e-3)
    np.testing.assert_allclose(back.spacing[1:], np.array(img.spacing[1:]) / scale, rtol=1e-5)


def _written_xforms(path):
    """(sform, sform_code, qform, qform_code) as a reader decodes them from the file."""
    header = nib.load(str(path)).header
    sform, qform = header.get_sform(), header.get_qform()
    return sform, int(header["sform_code"]), qform, int(header["qform_code"])


def _oblique(angles, spacing, origin, shear=(0.0, 0.0, 0.0), flip=False):
    """rotation · zooms · (unit upper-triangular shear) · optional flip of the third axis."""
    from scipy.spatial.transform import Rotation

    upper = np.eye(3)
    upper[0, 1], upper[0, 2], upper[1, 2] = shear
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles).as_matrix() @ np.diag(spacing) @ upper
    if flip:
        affine[:3, 2] *= -1
    affine[:3, 3] = origin
    return affine


@settings(max_examples=60, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    origin=st.tuples(*[st.floats(-300, 300)] * 3),
    shear=st.one_of(st.just((0.0, 0.0, 0.0)), st.tuples(*[st.floats(-1.0, 1.0)] * 3)),
    flip=st.booleans(),
    code=st.sampled_from([1, 2, 3, 4]),
)
def test_written_qform_is_the_sform_or_unset(
    tmp_path_factory, spacing, angles, origin, shear, flip, code
):
    """Any affine — oblique, flipped, sheared — is written as one geometry: the sform is the
    affine; the qform, where its code is non-zero, decodes to the sform (~1e-5 mm per voxel step
    and at the origin); a sheared affine, which no qform can hold, gets qform_code 0."""
    affine = _oblique(angles, spacing, origin, shear, flip)
    img = MedImage(np.zeros((3, 4, 5), np.float32), affine=affine, meta={"xform_code": code})
    path = medsr.save_image(img, tmp_path_factory.mktemp("q") / "o.nii")
    sform, sform_code, qform, qform_code = _written_xforms(path)
    assert sform_code == code
    np.testing.assert_allclose(sform, affine, rtol=1e-6, atol=1e-4)  # float32 storage
    if qform_code:
        assert qform_code == code
        np.testing.assert_allclose(qform, sform, rtol=0, atol=1e-5)
    if max(abs(v) for v in shear) > 1e-3:
        assert qform_code == 0
    np.testing.assert_allclose(medsr.load_image(path).affine, sform)


def test_oblique_affine_keeps_matching_qform_and_sform(tmp_path):
    affine = _oblique((0.3, -0.6, 0.9), (0.8, 0.9, 3.0), (-90.0, 120.5, -40.25), flip=True)
    img = MedImage(np.zeros((3, 4, 5), np.float32), affine=affine, meta={"xform_code": 1})
    out = medsr.save_image(img, tmp_path / "o.nii.gz")
    sform, sform_code, qform, qform_code = _written_xforms(out)
    assert sform_code == qform_code == 1
    np.testing.assert_allclose(qform, sform, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sform, affine, rtol=1e-6, atol=1e-5)


def test_sheared_nifti_upscaled_gets_no_conflicting_qform(tmp_path, corpus):
    """dipy's S0_10slices has a sheared sform (third column [30, 30, 32]) and qform_code 0: the
    output used to claim qform_code 2 with the nearest shear-free transform (third column
    [16.8, 16.8, 47.6]), a second geometry; it now keeps the sheared sform alone."""
    src = corpus("S0_10slices.nii.gz")
    img = medsr.load_image(src)
    sr = medsr.upscale(img, scale=2, model="linear")
    sform, sform_code, _, qform_code = _written_xforms(medsr.save_image(sr, tmp_path / "o.nii.gz"))
    assert qform_code == 0
    assert sform_code == int(nib.load(str(src)).header["sform_code"]) == 2
    np.testing.assert_allclose(sform, sr.affine, rtol=1e-6, atol=1e-4)
    # the sheared through-plane column is the source's
    np.testing.assert_allclose(sform[:3, 2], nib.load(str(src)).affine[:3, 2], atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "nifti2"])
def test_writer_bytes_are_nibabels(tmp_path, corpus, name, suffix):
    """medsr writes the voxels straight from memory (no per-slab copies); the file holds the
    bytes nibabel's own writer makes of the same image: header, extensions flag, padding and
    voxels (a 4-D series and a NIfTI-2 header included; .nii.gz compared inflated)."""
    import gzip

    from medsr.io import nifti

    if name == "nifti2":  # a NIfTI-2 header (its own size and offsets)
        src = nib.load(str(corpus("anatomical.nii")))
        path = tmp_path / "two.nii"
        nib.save(nib.Nifti2Image(np.asarray(src.dataobj), src.affine), str(path))
    else:
        path = corpus(name)
    image = medsr.load_image(path)
    image = image.replace(array=image.array + np.float32(0.25))  # not integer-valued
    ours = medsr.save_image(image, tmp_path / f"ours{suffix}", dtype="float32")
    captured = {}
    real = nifti._write_image

    def capture(img, voxels, fileobj, store=None):  # as medsr builds it, written by nibabel too
        captured["img"] = img
        real(img, voxels, fileobj, store)

    nifti._write_image = capture
    try:
        medsr.save_image(image, tmp_path / f"again{suffix}", dtype="float32")
    finally:
        nifti._write_image = real
    theirs = tmp_path / f"theirs{suffix}"
    nib.save(captured["img"], str(theirs))

    def content(path):
        data = path.read_bytes()
        return gzip.decompress(data) if suffix.endswith(".gz") else data

    assert content(ours) == content(theirs)
    assert isinstance(captured["img"], nib.Nifti2Image) == (name == "nifti2")
    back = nib.load(str(ours))
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(captured["img"].dataobj))


def _int_source(path, data, slope=None, inter=None):
    img = nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.0, 1.0]))
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return medsr.load_image(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(("slope", "inter"), [(None, None), (0.5, -1024.0)])
def test_integer_source_is_written_back_as_its_type(tmp_path, suffix, slope, inter):
    """An image read from an integer NIfTI goes back as that type with the source's scaling,
    each value rounded onto the source's grid; bytes as nibabel writes the rounded integers."""
    from medsr.io import nifti

    data = np.random.default_rng(3).normal(0, 600, (24, 20, 5)).astype(np.int16)
    image = _int_source(tmp_path / f"in{suffix}", data, slope, inter)
    s, b = slope or 1.0, inter or 0.0
    assert image.meta["nifti_scaling"] == (s, b)
    sr = image.replace(array=image.array + np.float32(0.3 * s))  # off the grid
    out = medsr.save_image(sr, tmp_path / f"out{suffix}")
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.dtype(np.int16)
    assert (back.dataobj.slope, back.dataobj.inter) == (s, b)
    want_int = np.rint((sr.array.astype(np.float64) - b) / s).astype(np.int16)
    np.testing.assert_array_equal(
        np.asarray(back.dataobj.get_unscaled()).transpose(2, 1, 0), want_int
    )
    np.testing.assert_allclose(medsr.load_image(out).array, sr.array, atol=s / 2 + 1e-4)
    import json

    side = json.loads(out.with_name(out.name.split(".")[0] + ".json").read_text())
    assert side["stored_as"] == {"dtype": "int16", "scl_slope": s, "scl_inter": b, "rounded": True}
    # the same bytes as nibabel's writer given those integers and the header medsr builds
    captured = {}
    real = nifti._write_image

    def capture(img, voxels, fileobj, store=None):
        captured["header"] = img.header.copy()
        real(img, voxels, fileobj, store)

    nifti._write_image = capture
    try:
        medsr.save_image(sr, tmp_path / f"again{suffix}")
    finally:
        nifti._write_image = real
    theirs = nib.Nifti1Image(want_int.transpose(2, 1, 0), back.affine, header=captured["header"])
    theirs.header.set_slope_inter(s, b)
    nib.save(theirs, str(tmp_path / f"theirs{suffix}"))
    import gzip

    def content(path):
        raw = path.read_bytes()
        return gzip.decompress(raw) if suffix.endswith(".gz") else raw

    assert content(out) == content(tmp_path / f"theirs{suffix}")


def test_float32_where_the_integer_type_cannot_hold_it(tmp_path):
    """Float sources, values beyond the type's range, non-finite values, other formats and
    ``dtype="float32"`` are written as float32 with the scaling reset; a bad dtype is an error."""
    from medsr.errors import InvalidParameterError

    data = np.random.default_rng(4).integers(0, 200, (16, 12, 3)).astype(np.uint8)
    image = _int_source(tmp_path / "u8.nii.gz", data)
    cases = {
        "kept": (image, None, np.uint8),
        "below": (image.replace(array=image.array - np.float32(3)), None, np.float32),
        "above": (image.replace(array=image.array + np.float32(60)), None, np.float32),
        "nan": (
            image.replace(
                array=np.where(image.array > 100, np.nan, image.array).astype(np.float32)
            ),
            None,
            np.float32,
        ),
        "asked": (image, "float32", np.float32),
        "unknown storage": (image.replace(meta={**image.meta, "format": "npy"}), None, np.float32),
    }
    for label, (img, dtype, want) in cases.items():
        out = medsr.save_image(img, tmp_path / f"{label.replace(' ', '_')}.nii.gz", dtype=dtype)
        back = nib.load(str(out))
        assert back.get_data_dtype() == np.dtype(want), label
        if want is np.float32:
            assert (back.dataobj.slope, back.dataobj.inter) == (1.0, 0.0), label
            side = (tmp_path / f"{label.replace(' ', '_')}.json").read_text()
            assert '"stored_as": {\n    "dtype": "float32"\n  }' in side, label
            np.testing.assert_array_equal(np.asarray(back.dataobj).transpose(2, 1, 0), img.array)
    with pytest.raises(InvalidParameterError, match="output dtype"):
        medsr.save_image(image, tmp_path / "bad.nii.gz", dtype="int8")


@settings(max_examples=25, deadline=None)
@given(
    dtype=st.sampled_from(["int16", "uint16", "int32", "uint8", "int8"]),
    slope=st.sampled_from([1.0, 0.25, 3.0, -2.0]),
    inter=st.sampled_from([0.0, -1024.0, 17.5]),
    offset=st.floats(-0.49, 0.49),
    seed=st.integers(0, 2**16),
)
def test_integer_storage_rounds_onto_the_source_grid(
    tmp_path_factory, dtype, slope, inter, offset, seed
):
    """Any integer type and scaling: the written value is the grid point nearest the output's
    (within half a step), the read-back range is the source type's, nothing is clipped."""
    d = tmp_path_factory.mktemp("grid")
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(seed)
    data = rng.integers(max(info.min, -3000) + 1, min(info.max, 3000), (9, 7, 2)).astype(dtype)
    image = _int_source(d / "in.nii", data, slope, inter)
    sr = image.replace(array=(image.array + np.float32(offset * abs(slope))).astype(np.float32))
    back = nib.load(str(medsr.save_image(sr, d / "out.nii")))
    assert back.get_data_dtype() == np.dtype(dtype)
    got = np.asarray(back.dataobj, dtype=np.float64).transpose(2, 1, 0)
    np.testing.assert_allclose(got, sr.array, atol=abs(slope) / 2 + 1e-3 * abs(slope) + 1e-4)
    k = (got - inter) / slope
    np.testing.assert_allclose(k, np.rint(k), atol=1e-6)


def test_dicom_and_raster_sources_keep_their_integer_storage(tmp_path, corpus):
    """A DICOM series with one Rescale Slope/Intercept goes to NIfTI as its stored type with that
    scaling (what dcm2niix writes), exactly; an inverted MONOCHROME1 with whole values too; a
    series whose slices rescale differently, a multi-frame object and colour are float32; an
    8-bit PNG stays 8-bit."""
    import copy

    ct = medsr.load_image(corpus("CT_small.dcm"))
    assert ct.meta["rescale"] == (1.0, -1024.0)
    back = nib.load(str(medsr.save_image(ct, tmp_path / "ct.nii.gz")))
    assert back.get_data_dtype() == np.dtype(np.int16)
    assert (back.dataobj.slope, back.dataobj.inter) == (1.0, -1024.0)
    np.testing.assert_array_equal(medsr.load_image(tmp_path / "ct.nii.gz").array, ct.array)

    rg = medsr.load_image(corpus("RG3_UNCR.dcm"))  # MONOCHROME1, inverted on read
    assert rg.meta["monochrome1_reflect"] is not None
    out = medsr.save_image(rg, tmp_path / "rg.nii.gz")
    assert nib.load(str(out)).get_data_dtype() == np.dtype(np.uint16)
    np.testing.assert_array_equal(medsr.load_image(out).array, rg.array)

    mixed = [copy.deepcopy(ds) for ds in ct.meta["datasets"]] * 2
    mixed[1].RescaleIntercept = "-1000"
    cases = {
        "mixed rescale": ct.replace(
            array=np.concatenate([ct.array] * 2), meta={**ct.meta, "datasets": mixed}
        ),
        "multi-frame": ct.replace(meta={**ct.meta, "multiframe": True}),
        "colour": medsr.load_image(corpus("OBXXXX1A.dcm")),
    }
    for label, img in cases.items():
        out = medsr.save_image(img, tmp_path / f"{label.replace(' ', '_')}.nii.gz")
        assert nib.load(str(out)).get_data_dtype() == np.dtype(np.float32), label

    cam = medsr.load_image(corpus("camera.png"))
    assert nib.load(str(medsr.save_image(cam, tmp_path / "cam.nii"))).get_data_dtype() == np.dtype(
        np.uint8
    )


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "finite"),
    [("int16", 1.0, -1024.0, True), ("uint8", 2.5, 0.0, True), ("int32", 1e36, 0.0, False),
     ("float32", 1.0, 0.0, False)],
)  # fmt: skip
def test_integer_voxels_skip_the_nonfinite_pass_only_when_they_cannot_overflow(
    tmp_path, dtype, slope, inter, finite
):
    """Scaled integers are finite float32 unless the scaling overflows float32: then (and for
    float data) the reader still looks, zeroes the non-finite voxels and records them."""
    from medsr.io.nifti import _always_finite

    assert _always_finite(np.dtype(dtype), slope, inter) is finite
    data = np.arange(24, dtype=dtype).reshape(4, 3, 2) * (1 if dtype != "int32" else 2**24)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(slope, inter)
    p = tmp_path / "v.nii.gz"
    nib.save(img, p)
    out = medsr.load_image(p)
    assert np.isfinite(out.array).all()
    expect = (data.astype(np.float64) * slope + inter).transpose(2, 1, 0)
    overflow = np.abs(expect) > np.finfo(np.float32).max
    if overflow.any():
        np.testing.assert_array_equal(out.meta["nonfinite_mask"], overflow)
        assert (out.array[overflow] == 0).all()
    else:
        assert "nonfinite_mask" not in out.meta
        np.testing.assert_allclose(out.array, expect.astype(np.float32), rtol=1e-6)


def _cell_centred(affine, zoom_xyz):
    """``affine`` on the grid ``zoom_xyz`` times finer (cell-centred: the field of view kept)."""
    f = np.asarray(zoom_xyz, dtype=float)
    out = np.array(affine, dtype=float)
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((1 / f - 1) / 2)
    out[:3, :3] = affine[:3, :3] / f
    return out


def _two_spaces(path, sform, sform_code, qform, qform_code, units="mm"):
    data = np.random.default_rng(5).integers(0, 500, (6, 5, 3)).astype(np.int16)
    img = nib.Nifti1Image(data, None)
    img.set_sform(sform, code=sform_code)
    img.set_qform(qform, code=qform_code)
    img.header.set_xyzt_units(units, "sec")
    nib.save(img, str(path))
    return nib.load(str(path))


@pytest.mark.parametrize(
    ("sform_code", "qform_code"), [(1, 4), (4, 1), (2, 1), (3, 2), (1, 1), (1, 0), (0, 1), (0, 0)]
)
def test_each_transform_keeps_its_code_and_space(tmp_path, sform_code, qform_code):
    """The output's sform is the geometry medsr read (nibabel's: the sform where its code is
    set, else the qform) with *that transform's* code, and a source qform of its own (both codes
    set) stays beside it with its code, moved with the grid. The codes used to be max(sform,
    qform, 1) for both: a scanner-space sform (1) beside an MNI qform (4) came out labelled MNI,
    the qform's own space was replaced by the sform's, and a file that stated no space (0, 0)
    came out claiming scanner coordinates."""
    sform = np.diag([0.8, 0.9, 3.0, 1.0])
    sform[:3, 3] = (-10.0, 20.0, 30.0)
    qform = _oblique((0.2, -0.4, 0.5), (0.8, 0.9, 3.0), (4.0, -5.0, 6.0), flip=True)
    src = _two_spaces(tmp_path / "in.nii", sform, sform_code, qform, qform_code)
    img = medsr.load_image(tmp_path / "in.nii")
    np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
    sr = medsr.upscale(img, scale=2, model="linear")
    out = nib.load(str(medsr.save_image(sr, tmp_path / "out.nii")))
    got_sform, got_sform_code, got_qform, got_qform_code = _written_xforms(tmp_path / "out.nii")
    used = sform_code or qform_code
    assert got_sform_code == used
    np.testing.assert_allclose(got_sform, _cell_centred(src.affine, (2, 2, 1)), atol=1e-4)
    if sform_code and qform_code:
        assert got_qform_code == qform_code
        np.testing.assert_allclose(got_qform, _cell_centred(qform, (2, 2, 1)), atol=1e-4)
    else:
        assert got_qform_code == used
        np.testing.assert_allclose(got_qform, got_sform, atol=1e-5)
    # what a reader takes from the file is the upscaled grid over the same field of view
    np.testing.assert_allclose(out.affine, sr.affine, atol=1e-4)
    np.testing.assert_allclose(medsr.load_image(tmp_path / "out.nii").affine, sr.affine, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    q_angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    flips=st.tuples(st.booleans(), st.booleans()),
    codes=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    scale=st.sampled_from([2, 3, 4]),
    through=st.booleans(),
)
def test_every_voxel_centre_of_both_transforms_after_upscaling(
    tmp_path_factory, angles, q_angles, spacing, flips, codes, scale, through
):
    """Any sform and qform (oblique, left-handed, codes 0–4), upscaled in-plane or along z: in
    each transform the file states, every output voxel centre lies where the cell-centred grid
    puts it (the first one moved by −(1 − 1/s)/2 of the old step along each upscaled axis), the
    orientation is the source's, and the header says the data are derived."""
    from medsr.image import MedImage

    sform = _oblique(angles, spacing, (-30.0, 12.5, 40.0), flip=flips[0])
    qform = _oblique(q_angles, spacing, (7.0, -3.0, 1.0), flip=flips[1])
    d = tmp_path_factory.mktemp("xf")
    src = _two_spaces(d / "in.nii", sform, codes[0], qform, codes[1])
    img = medsr.load_image(d / "in.nii")
    z, y, x = img.spatial_shape
    shape = (z * scale, y, x) if through else (z, y * scale, x * scale)
    zoom = (1, 1, scale) if through else (scale, scale, 1)
    sr = img.resampled(np.zeros(shape, np.float32), step="upscaled").replace(
        meta={**img.meta, "derivation": {"model": "linear", "scale": scale}}
    )
    assert isinstance(sr, MedImage)
    out = nib.load(str(medsr.save_image(sr, d / "out.nii")))
    header = out.header
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), -1)
    idx = idx.reshape(-1, 3).astype(float)
    before = (idx + 0.5) / np.asarray(zoom, dtype=float) - 0.5  # the same point, old indices
    spaces = [(header.get_sform(), src.affine, int(header["sform_code"]))]
    if codes[0] and codes[1]:
        assert int(header["qform_code"]) == codes[1]
        spaces.append((header.get_qform(), qform, codes[1]))
    for written, old, _ in spaces:
        np.testing.assert_allclose(
            nib.affines.apply_affine(written, idx),
            nib.affines.apply_affine(old, before),
            atol=1e-3,
        )
        assert nib.aff2axcodes(written) == nib.aff2axcodes(old)
    assert int(header["sform_code"]) == (codes[0] or codes[1])
    assert bytes(header["descrip"]).startswith(b"medsr derived")


@pytest.mark.parametrize(("units", "mm"), [("mm", 1.0), ("micron", 1e-3), ("meter", 1e3),
                                           ("unknown", 1.0)])  # fmt: skip
def test_spatial_units_are_read_as_mm_and_written_back_in_the_source_unit(tmp_path, units, mm):
    """xyzt_units µm or m: the MedImage's spacing and affine are in mm (they were the header's
    numbers, called mm: a 0.8 µm voxel was said to be 0.8 mm, also in the sidecar's
    ``spacing_mm_zyx``), and the output is written in the source's unit, on the upscaled grid."""
    import json

    sform = _oblique((0.1, 0.2, -0.3), (0.8, 0.9, 3.0), (-10.0, 20.0, 30.0))
    src = _two_spaces(tmp_path / "in.nii", sform, 1, sform, 1, units=units)
    img = medsr.load_image(tmp_path / "in.nii")
    assert img.spacing == pytest.approx((3.0 * mm, 0.9 * mm, 0.8 * mm), rel=1e-6)
    scaled = np.array(src.affine)
    scaled[:3] *= mm
    np.testing.assert_allclose(img.affine, scaled, rtol=1e-6, atol=1e-9)
    sr = medsr.upscale(img, scale=2, model="linear")
    path = medsr.save_image(sr, tmp_path / "out.nii.gz")
    out = nib.load(str(path))
    assert out.header.get_xyzt_units() == (units, "sec")
    assert out.header.get_zooms() == pytest.approx((0.4, 0.45, 3.0), rel=1e-6)
    np.testing.assert_allclose(out.affine, _cell_centred(src.affine, (2, 2, 1)), atol=1e-4)
    assert int(out.header["qform_code"]) == 1
    np.testing.assert_allclose(out.header.get_qform(), out.affine, atol=1e-4)
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["spacing_mm_zyx"] == pytest.approx([3.0 * mm, 0.45 * mm, 0.4 * mm], rel=1e-6)
    np.testing.assert_allclose(medsr.load_image(path).affine, sr.affine, rtol=1e-6, atol=1e-6)


def test_intent_with_its_parameters_and_display_window_are_kept(tmp_path):
    """A statistic map keeps its intent *with* its parameters and name (the intent code used to
    be copied alone: a t map came out with 0 degrees of freedom and no name), and a valid
    display window (cal_min/cal_max, dropped before); a trust map written from it claims
    neither."""
    data = np.random.default_rng(6).normal(0, 2, (8, 6, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.9, 3.0, 1.0]))
    img.header.set_intent("t test", (12.0,), name="tstat")
    img.header["cal_min"], img.header["cal_max"] = -3.0, 4.5
    nib.save(img, str(tmp_path / "t.nii"))
    sr = medsr.upscale(medsr.load_image(tmp_path / "t.nii"), scale=2, model="linear")
    header = nib.load(str(medsr.save_image(sr, tmp_path / "o.nii"))).header
    assert header.get_intent() == ("t test", (12.0,), "tstat")
    assert (float(header["cal_min"]), float(header["cal_max"])) == (-3.0, 4.5)
    trust = sr.replace(meta={**sr.meta, "derivation": {"map": "consistency", "model": "linear"}})
    header = nib.load(str(medsr.save_image(trust, tmp_path / "m.nii"))).header
    assert header.get_intent() == ("none", (), "")
    assert (float(header["cal_min"]), float(header["cal_max"])) == (0.0, 0.0)


def test_nifti_pair_is_read_from_its_header(tmp_path):
    """A NIfTI .hdr/.img pair (SPM's layout) is read from its .hdr like a .nii (it was refused as
    "not a NIfTI image"); its .img alone names the header to give; a short .img is a truncated
    NIfTI; an Analyze 7.5 pair, which states no orientation, is refused saying so."""
    from medsr.errors import UnsupportedFormatError
    from tests.test_cli import medsr as medsr_cli

    affine = _oblique((0.2, 0.1, -0.3), (0.8, 0.9, 3.0), (-20.0, 5.0, 40.0), flip=True)
    data = np.random.default_rng(7).integers(-500, 1500, (10, 8, 3)).astype(np.int16)
    nib.save(nib.Nifti1Pair(data, affine), str(tmp_path / "pair.hdr"))
    before = {n: file_digest(tmp_path / n) for n in ("pair.hdr", "pair.img")}
    img = medsr.load_image(tmp_path / "pair.hdr")
    np.testing.assert_array_equal(img.array, data.transpose(2, 1, 0))
    np.testing.assert_allclose(img.affine, nib.load(str(tmp_path / "pair.hdr")).affine)
    sr = medsr.upscale(img, scale=2, model="linear")
    out = nib.load(str(medsr.save_image(sr, tmp_path / "o.nii.gz")))
    assert out.get_data_dtype() == np.dtype(np.int16)
    np.testing.assert_allclose(out.affine, _cell_centred(affine, (2, 2, 1)), atol=1e-4)
    assert {n: file_digest(tmp_path / n) for n in before} == before

    with pytest.raises(UnsupportedFormatError, match=r"give its header, 'pair\.hdr'"):
        medsr.load_image(tmp_path / "pair.img")
    res = medsr_cli("info", str(tmp_path / "pair.img"))
    assert res.returncode == 2 and res.stderr.startswith("error: 'pair.img' holds only the voxels")

    (tmp_path / "cut.hdr").write_bytes((tmp_path / "pair.hdr").read_bytes())
    (tmp_path / "cut.img").write_bytes((tmp_path / "pair.img").read_bytes()[:100])
    with pytest.raises(CorruptInputError, match="truncated"):
        medsr.load_image(tmp_path / "cut.hdr")

    nib.save(nib.AnalyzeImage(data, np.diag([0.8, 0.9, 3.0, 1.0])), str(tmp_path / "an.hdr"))
    with pytest.raises(UnsupportedFormatError, match=r"Analyze 7\.5 header, not NIfTI"):
        medsr.load_image(tmp_path / "an.hdr")


@pytest.mark.parametrize("intent", ["label", "neuroname"])
def test_label_map_is_refused_not_interpolated(tmp_path, corpus, intent):
    """A label map (NIFTI_INTENT_LABEL / NEURONAME: a segmentation, an atlas) is refused like a
    DICOM SEG, with one error line and exit 2: it used to be upscaled like an image and written
    back, still a label map, with labels no one drew (regions 0, 1, 2, 7 came out 0 to 7)."""
    from medsr.errors import NotAnImageError
    from tests.test_cli import medsr as medsr_cli

    anat = nib.load(str(corpus("anatomical.nii")))
    values = np.asarray(anat.dataobj)
    labels = np.digitize(values, [100, 2000, 10000]).astype(np.int16)
    labels[labels == 3] = 7
    img = nib.Nifti1Image(labels, anat.affine)
    img.header.set_intent(intent)
    path = tmp_path / "seg.nii.gz"
    nib.save(img, str(path))
    before = file_digest(path)
    with pytest.raises(NotAnImageError, match=r"label map .* nearest neighbour"):
        medsr.load_image(path)
    res = medsr_cli("upscale", str(path), str(tmp_path / "seg_x2.nii.gz"), "--model", "bicubic")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: 'seg.nii.gz' cannot be super-resolved: it is a label map")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "seg_x2.nii.gz").exists() and file_digest(path) == before


def _field_of(corpus, components: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth field of ``components`` values per voxel (mm) from anatomical.nii's real voxels:
    the gradient of its smoothed intensities, as a warp or a vector map would be."""
    from scipy.ndimage import gaussian_filter

    anat = nib.load(str(corpus("anatomical.nii")))
    smooth = gaussian_filter(np.asarray(anat.dataobj, dtype=np.float32), 2.0)
    grad = np.stack(np.gradient(smooth), -1)
    field = np.concatenate([grad] * 2, -1)[..., :components]
    return (field / np.abs(field).max() * 5.0).astype(np.float32), anat.affine


def test_a_warp_field_is_refused_not_super_resolved(tmp_path, corpus):
    """An FSL FNIRT warp (4-D, intent FSL_FNIRT_DISPLACEMENT_FIELD) used to be upscaled in-plane
    only, each component as a time point, through the default model (which added "detail" to a
    displacement field) and written back as a warp claiming the new values. Now: one error line,
    exit 2, nothing written."""
    from tests.test_cli import medsr as medsr_cli

    field, affine = _field_of(corpus, 3)
    img = nib.Nifti1Image(field, affine)
    img.header.set_intent(2006)
    path = tmp_path / "warp.nii.gz"
    nib.save(img, str(path))
    before = file_digest(path)
    res = medsr_cli("upscale", str(path), str(tmp_path / "warp_x2.nii.gz"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(
        "error: 'warp.nii.gz' cannot be super-resolved: it is not an image (NIfTI intent "
        "FSL_FNIRT_DISPLACEMENT_FIELD: each voxel holds a displacement"
    )
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "warp_x2.nii.gz").exists() and file_digest(path) == before


@pytest.mark.parametrize(
    ("intent", "components", "said"),
    [
        ("displacement vector", (3,), "DISPVECT: each voxel holds a displacement"),
        ("vector", (1, 3), "VECTOR: each voxel holds a vector"),  # 5-D, as ANTs writes
        ("symmetric matrix", (6,), "SYMMATRIX: each voxel holds a symmetric matrix"),
        ("symmetric matrix", (), "SYMMATRIX"),  # one component on its own is no image either
        ("quaternion", (4,), "QUATERNION"),
        ("fnirt cubic spline coef", (3,), "FSL_CUBIC_SPLINE_COEFFICIENTS: it holds the coeff"),
        ("node index", (), "NODE_INDEX"),
        ("ConnDenseScalar", (), r"CONNECTIVITY \(CIFTI-2\)"),
    ],
)
def test_fields_matrices_and_meshes_are_not_images(tmp_path, corpus, intent, components, said):
    from medsr.errors import NotAnImageError

    n = int(np.prod(components)) if components else 1
    field, affine = _field_of(corpus, n)
    img = nib.Nifti1Image(field.reshape(field.shape[:3] + components), affine)
    img.header.set_intent(intent)
    path = tmp_path / "field.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(NotAnImageError, match=f"not an image \\(NIfTI intent {said}"):
        medsr.load_image(path)


@pytest.mark.parametrize(
    ("intent", "params", "components"),
    [
        ("t test", (12.0,), ()),
        ("z score", (), ()),
        ("estimate", (), ()),
        ("dimensionless", (), ()),
        ("time series", (), (3,)),
        ("rgb vector", (), (3,)),
        ("topup field", (), ()),
    ],
)
def test_statistics_estimates_and_field_maps_are_images(
    tmp_path, corpus, intent, params, components
):
    """One value per voxel (a statistic, an estimate, a field map in Hz), or a colour per voxel:
    images, read as before."""
    n = int(np.prod(components)) if components else 1
    field, affine = _field_of(corpus, n)
    img = nib.Nifti1Image(field.reshape(field.shape[:3] + components), affine)
    img.header.set_intent(intent, params)
    path = tmp_path / "map.nii.gz"
    nib.save(img, str(path))
    assert medsr.load_image(path).array.shape[-3:] == (25, 41, 33)
