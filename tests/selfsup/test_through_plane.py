"""Through-plane (SMORE-like) zero-shot SR and z interpolation: geometry, DICOM, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.errors import InvalidParameterError, MedSRError
from medsr.image import MedImage, affine_from_spacing
from medsr.io import load_image, save_image
from medsr.models import create_model
from medsr.selfsup import interpolate_z, through_plane_upscale
from medsr.selfsup.through_plane import slice_thickness_mm
from tests.conftest import short_cine

QUICK = {
    "budget_s": None,
    "epochs": 1,
    "patches_per_epoch": 8,
    "batch_size": 4,
    "progress": False,
    "model_kwargs": {"num_features": 8},
}


def _volume(z=6, y=24, x=20, spacing=(4.0, 1.0, 1.0)) -> MedImage:
    zz, yy, xx = np.mgrid[:z, :y, :x]
    arr = (100 + 40 * np.sin(yy / 3.0 + zz / 2.0) * np.cos(xx / 4.0)).astype(np.float32)
    aff = affine_from_spacing(spacing, origin=(10.0, -20.0, 33.0))
    aff[:3, :3] = (
        np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) @ aff[:3, :3]
    )  # oblique-ish
    return MedImage(arr, spacing=spacing, affine=aff, modality="MR", meta={"format": "nifti"})


def _check_same_field_of_view(out: MedImage, image: MedImage) -> None:
    np.testing.assert_allclose(out.world_center(), image.world_center(), atol=1e-9)
    # the outer faces of the first/last voxels stay where they were (cell-centred)
    for idx_out, idx_in in (((-0.5, -0.5, -0.5), (-0.5, -0.5, -0.5)),):
        np.testing.assert_allclose(
            out.world_coordinate(idx_out), image.world_coordinate(idx_in), atol=1e-9
        )
    np.testing.assert_allclose(
        out.affine[:3, :2], image.affine[:3, :2], atol=1e-12
    )  # in-plane untouched
    direction = image.affine[:3, 2] / np.linalg.norm(image.affine[:3, 2])
    np.testing.assert_allclose(out.affine[:3, 2], direction * out.spacing[0], atol=1e-12)


def test_integer_ratio_gives_isotropic_volume_with_same_field_of_view():
    image = _volume()
    out = through_plane_upscale(image, **QUICK)
    assert out.spatial_shape == (24, 24, 20)
    np.testing.assert_allclose(out.spacing, (1.0, 1.0, 1.0))
    _check_same_field_of_view(out, image)
    d = out.meta["derivation"]
    assert d["axes"] == "through-plane (z)" and d["scale"] == 4 and d["training"]["factor"] == 4
    assert d["training"]["slice_thickness_mm"] == 4.0  # no header thickness: the slice spacing
    assert image.array.min() <= out.array.min() and out.array.max() <= image.array.max()


@pytest.mark.parametrize(
    ("spacing_z", "target", "slices"), [(2.5, None, 15), (2.5, 0.8, 19), (4.0, 2.0, 12)]
)
def test_non_integer_ratios_and_target_spacing(spacing_z, target, slices):
    image = _volume(spacing=(spacing_z, 1.0, 1.0))
    out = through_plane_upscale(image, target_spacing=target, **QUICK)
    assert out.spatial_shape[0] == slices
    np.testing.assert_allclose(out.spacing[0], 6 * spacing_z / slices)
    _check_same_field_of_view(out, image)
    lin = interpolate_z(image, target_spacing=target, mode="linear")
    assert lin.spatial_shape == out.spatial_shape
    np.testing.assert_allclose(lin.affine, out.affine)


def test_interpolate_z_reproduces_linear_ramps_and_constants():
    z = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((1, 5, 4), np.float32)
    image = MedImage(z, spacing=(3.0, 1.0, 1.0))
    lin = interpolate_z(image, mode="linear")
    t = (np.arange(18) + 0.5) / 3 - 0.5  # cell-centred positions in input slices
    inner = slice(2, 16)
    np.testing.assert_allclose(lin.array[inner, 0, 0], t[inner], atol=1e-5)
    cub = interpolate_z(image, mode="cubic")  # the registered bicubic model, along z only
    bicubic = create_model("bicubic", scale=3)(
        torch.from_numpy(z[:, 0, 0]).view(1, 1, 6, 1).expand(1, 1, 6, 3)
    )
    np.testing.assert_allclose(cub.array[:, 0, 0], bicubic[0, 0, :, 0].numpy(), atol=1e-5)
    flat = interpolate_z(
        MedImage(np.full((4, 5, 5), 7.0, np.float32), spacing=(2, 1, 1)), mode="cubic"
    )
    np.testing.assert_allclose(flat.array, 7.0, atol=1e-5)
    assert lin.meta["derivation"]["model"] == "linear-z"


def test_dicom_series_slice_positions_round_trip(tmp_path, corpus):
    image = load_image(corpus("emri_small.dcm"))  # 10 slices, 1.2 mm, in-plane 1 mm
    out = through_plane_upscale(image, target_spacing=0.6, **QUICK)
    assert out.spatial_shape == (20, 64, 64)
    written = save_image(out, tmp_path / "series", overwrite=False)
    back = load_image(written)
    assert back.spatial_shape == (20, 64, 64)
    np.testing.assert_allclose(back.spacing, (0.6, 1.0, 1.0), atol=1e-4)
    np.testing.assert_allclose(back.world_center(), image.world_center(), atol=1e-3)
    np.testing.assert_allclose(back.affine, out.affine, atol=1e-4)


def test_slice_thickness_from_the_header_is_the_spacing_after_resampling():
    """Resampled along z, the slices are new: the nominal thickness of contiguous slices (their
    spacing, as the DICOM writer states it), not the source's thickness × the zoom."""
    import pydicom

    ds = pydicom.Dataset()
    ds.SliceThickness = "3.0"
    meta = {"format": "dicom", "datasets": [ds], "source_spacing": (2.0, 1.0, 1.0)}
    image = MedImage(np.zeros((4, 8, 8), np.float32), spacing=(2.0, 1.0, 1.0), meta=meta)
    assert slice_thickness_mm(image) == 3.0
    assert slice_thickness_mm(image.replace(spacing=(8.0, 1.0, 1.0))) == 8.0  # 4x coarser grid
    assert slice_thickness_mm(MedImage(np.zeros((2, 4, 4), np.float32))) is None


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (MedImage(np.zeros((1, 16, 16), np.float32)), {}, "single 2-D slice"),
        (_volume(spacing=(1.0, 1.0, 1.0)), {}, "no coarser"),
        (_volume(), {"target_spacing": 5.0}, "no coarser"),
        (_volume(), {"target_spacing": -1}, "more than 0"),
        (_volume(), {"budget_s": 0}, "more than 0"),
        (_volume(), {"slice_thickness": 0}, "more than 0"),
        (_volume(), {"profile": "sinc"}, "profile"),
        (_volume(), {"model": "residual5", "prior": None}, "interpolator-1d"),
        (_volume(z=4, y=6, x=6), {}, "too small"),
    ],
)
def test_bad_inputs_raise_clear_errors(image, kwargs, match):
    with pytest.raises(MedSRError, match=match):
        through_plane_upscale(image, **{"budget_s": 1.0, "progress": False, **kwargs})


def test_interpolate_z_errors():
    with pytest.raises(InvalidParameterError, match="single 2-D slice"):
        interpolate_z(MedImage(np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(InvalidParameterError, match="no coarser"):
        interpolate_z(_volume(spacing=(1.0, 1.0, 1.0)))
    with pytest.raises(InvalidParameterError, match="mode"):
        interpolate_z(_volume(), mode="spline")


def test_dicom_single_frame_series_gets_new_slice_positions(tmp_path):
    import pydicom

    from medsr.io.dicom import write_dicom

    source_dir = write_dicom(_volume(), tmp_path / "src")
    source = load_image(source_dir)  # 6 single-frame files, 4 mm apart
    out = through_plane_upscale(source, target_spacing=2.0, **QUICK)
    written = save_image(out, tmp_path / "dst")
    files = sorted(written.iterdir())
    assert len(files) == 12
    ipp = np.array([[float(v) for v in pydicom.dcmread(f).ImagePositionPatient] for f in files])
    steps = np.linalg.norm(np.diff(ipp, axis=0), axis=1)
    np.testing.assert_allclose(steps, 2.0, atol=1e-4)
    # nominal thickness: 4 mm slices (the source's SliceThickness = its spacing) made 2 mm
    assert float(pydicom.dcmread(sorted(source_dir.iterdir())[0]).SliceThickness) == 4.0
    assert float(pydicom.dcmread(files[0]).SliceThickness) == pytest.approx(2.0)
    back = load_image(written)
    np.testing.assert_allclose(back.spacing, (2.0, 1.0, 1.0), atol=1e-4)
    np.testing.assert_allclose(back.world_center(), source.world_center(), atol=1e-3)


@pytest.mark.slow
def test_zero_shot_through_plane_beats_linear_z_on_a_corpus_volume(corpus):
    from medsr.degradations import degrade_image
    from medsr.metrics import data_range_for, psnr3d

    ref = load_image(corpus("anatomical.nii"))  # 25 × 41 × 33, 2 mm isotropic
    ref = ref.replace(array=np.ascontiguousarray(ref.array[:24]))
    thick = degrade_image(ref, "thick-slice", 4)  # 6 slices of 8 mm, Gaussian FWHM 8 mm
    kwargs = {"budget_s": None, "epochs": 1, "patches_per_epoch": 800, "progress": False}
    sr = through_plane_upscale(thick, target_spacing=2.0, clip=False, **kwargs)
    lin = interpolate_z(thick, target_spacing=2.0)
    dr = data_range_for(ref)
    inner = slice(4, 20)
    gain = psnr3d(sr.array[inner], ref.array[inner], dr) - psnr3d(
        lin.array[inner], ref.array[inner], dr
    )
    assert gain > 0.3, gain


def test_consistency_on_reproduces_the_measured_thick_slices():
    from medsr.degradations import thick_slice

    image = _volume()  # 6 slices of 4 mm -> 24 slices of 1 mm: n_out == f·Z, no resampling
    measured = torch.from_numpy(image.array)[None]  # (1, Z, Y, X)

    def residual(out: MedImage) -> float:
        thin = torch.from_numpy(out.array)[None].permute(0, 3, 1, 2)  # z on axis -2
        thick = thick_slice(thin, 4, profile="gaussian", thickness=4.0, axis=-2)
        return float((thick.permute(0, 2, 3, 1) - measured).abs().max())

    off = through_plane_upscale(image, **QUICK)
    on = through_plane_upscale(image, consistency=True, **QUICK, clip=False)
    rng = float(image.array.max() - image.array.min())
    d = on.meta["derivation"]["consistency"]
    assert d["setting"] == "on" and d["converged"] is True
    assert residual(on) < 2e-3 * rng < residual(off)
    assert off.meta["derivation"]["consistency"] == {"setting": "off", "applied": False}


@pytest.mark.parametrize("target", [1.5, 0.7])  # 16 and 34 slices: not the network's 2·6 or 4·6
def test_consistency_on_holds_on_the_written_grid_after_resampling(target):
    """The projection acts on the output's own grid, after the resampling to the target spacing:
    the written output, made thick with the profile, reproduces the measured slices (it used to
    be projected on the network's f·Z grid, and the final resampling undid part of it)."""
    from medsr.degradations.thick_slice import thick_slice_matrix

    image = _volume()
    rng = float(image.array.max() - image.array.min())

    def residual(out: MedImage) -> float:
        w = thick_slice_matrix(6, out.spatial_shape[0], profile="gaussian", thickness=1.0)
        thick = np.einsum("zn,nyx->zyx", w, out.array.astype(np.float64))
        return float(np.abs(thick - image.array).max())

    off = through_plane_upscale(image, target_spacing=target, **QUICK, clip=False)
    on = through_plane_upscale(image, target_spacing=target, consistency=True, **QUICK, clip=False)
    assert on.spatial_shape[0] == off.spatial_shape[0] == round(24 / target)
    d = on.meta["derivation"]["consistency"]
    assert d["applied"] is True and d["converged"] is True and d["residual_max"] < 1e-5
    assert residual(on) < 1e-4 * rng < 1e-2 * rng < residual(off)


@pytest.mark.parametrize("kind", ["ct-fill", "dicom-padding"])
def test_no_data_is_kept_exact_and_never_read_as_signal(kind):
    """A CT's fill outside the scan circle (−3024 HU, no header entry) or a DICOM
    PixelPaddingValue: the output keeps those voxels exact (the network used to draw values up to
    140 HU above the fill into them), and no measured voxel is pulled below the darkest measured
    value by the padding (the clip reads measured values only)."""
    rng = np.random.default_rng(3)
    z, h, w = 6, 40, 36
    zz, yy, xx = np.mgrid[:z, :h, :w]
    arr = 300 * np.sin(yy / 3.0 + zz / 2.0) * np.cos(xx / 4.0) + rng.normal(0, 5, (z, h, w))
    arr = arr.astype(np.float32)
    circle = (yy[0] - h / 2 + 0.5) ** 2 + (xx[0] - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    if kind == "ct-fill":
        arr[:, ~circle] = -3024.0
        image = MedImage(arr, spacing=(4.0, 1.0, 1.0), modality="CT", units="HU")
        fill = -3024.0
    else:
        arr[:, ~circle] = -2000.0
        image = MedImage(
            arr,
            spacing=(4.0, 1.0, 1.0),
            modality="MR",
            meta={"padding": {"value": -2000.0, "range_limit": None}},
        )
        fill = -2000.0
    out = through_plane_upscale(image, maps=True, **QUICK)
    pad = np.broadcast_to(~circle, out.array.shape)
    assert (out.array[pad] == np.float32(fill)).all()
    assert out.array[~pad].min() >= arr[:, circle].min() - 1e-3
    assert (out.meta["maps"]["uncertainty"][pad] == 0).all()


def test_time_frames_are_not_slices_to_interpolate_between(tmp_path):
    """A cine's frames are time points (Frame Increment Pointer → FrameTime): through-plane
    super-resolution used to make new "slices" between them (inventing instants) with a z spacing
    that is a placeholder; now it is refused with one error line. Frames of unstated kind are
    taken for slices with a warning."""
    from medsr.errors import MedSRWarning
    from medsr.image import MedImage
    from medsr.io import load_image

    cine = load_image(short_cine(tmp_path))  # the corpus cine's header, 4 of its frames
    assert cine.meta["frame_axis"]["kind"] == "time"
    with pytest.raises(InvalidParameterError, match="frames are not slices: 4 time frames"):
        through_plane_upscale(cine, **QUICK)
    grey = MedImage(
        np.random.default_rng(0).normal(100, 10, (4, 32, 32)).astype(np.float32),
        spacing=(1.0, 0.5, 0.5),
        meta={"frame_axis": {"kind": "unknown", "describe": "4 frames of unstated kind"}},
    )
    with pytest.warns(MedSRWarning, match="takes the frames for slices"):
        through_plane_upscale(grey, **QUICK)
    from medsr.interpolation.core import interpolate_slices

    timed = grey.replace(meta={"frame_axis": {"kind": "time", "describe": "4 time frames"}})
    with pytest.raises(InvalidParameterError, match="frames are not slices: 4 time frames"):
        interpolate_slices(timed, "linear", 2)
    assert interpolate_slices(timed, "linear", 2, axis="y").spatial_shape == (4, 64, 32)


def test_a_series_gets_each_frames_own_uncertainty_map(tmp_path):
    """A 4-D series' through-plane uncertainty map is ``(T, Z, Y, X)``, each frame's own (it
    was one ``(Z, Y, X)`` map, the mean over the frames that hold data at each voxel; before
    that write_maps refused the 4-D map), written as a 4-D NIfTI with NaN where that frame
    holds no data."""
    import nibabel as nib

    from medsr.safeguards.maps import write_maps

    vol = _volume().array
    series = np.stack([vol, vol[::-1] * 0.5 + 60]).astype(np.float32)
    no_data = np.zeros(series.shape, bool)
    no_data[:, :, :, :3] = True  # every frame
    no_data[0, :, :6, 8:] = True  # frame 0 only
    image = MedImage(
        np.where(no_data, 0, series),
        spacing=(4.0, 1.0, 1.0),
        channels="time",
        meta={"nonfinite_mask": no_data},
    )
    out = through_plane_upscale(image, maps=True, **QUICK)
    u = out.meta["maps"]["uncertainty"]
    assert u.shape == out.array.shape == (2, *out.spatial_shape)
    written = write_maps(out.meta["maps"], tmp_path / "maps", like=out)
    stored = nib.load(str(written["uncertainty"][0])).get_fdata().transpose(3, 2, 1, 0)
    nowhere = np.zeros(u.shape, bool)
    nowhere[:, :, :, :3] = True
    nowhere[0, :, :6, 8:] = True
    np.testing.assert_array_equal(np.isnan(stored), nowhere)
    assert (u[1, :, :6, 8:] > 0).mean() > 0.5  # frame 1's own spread there
    assert not u[0, :, :6, 8:].any()  # frame 0 held no data there: nothing estimated
