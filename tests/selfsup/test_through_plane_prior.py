"""Issue 21: the through-plane prior (edsr-1d, task through-plane), per-volume adaptation with a
step budget, slice-profile estimation, maps and provenance of `--through-plane` outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsr.degradations import degrade_image, thick_slice
from medsr.errors import MedSRError
from medsr.image import MedImage, affine_from_spacing
from medsr.models import create_model, list_models
from medsr.models.axial import cubic_upsample_axis
from medsr.models.resolver import list_pretrained, resolve_model
from medsr.selfsup import through_plane_upscale
from medsr.selfsup.slice_profile import default_profile, estimate_slice_profile
from medsr.selfsup.through_plane import PRIOR_FACTORS, network_factor, prior_name


def _smooth_field(shape=(64, 64, 64), sigma=1.5, seed=0) -> np.ndarray:
    """An isotropic random texture (Gaussian-filtered white noise): the same spectrum along
    every axis, as the slice-profile estimator assumes of anatomy."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), sigma).astype(np.float32) * 100 + 500


def _volume(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), modality="MR") -> MedImage:
    return MedImage(arr, spacing=spacing, affine=affine_from_spacing(spacing), modality=modality)


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("axis", [-2, -1])
@pytest.mark.parametrize("scale", [2, 4])
def test_edsr_1d_starts_as_cubic_interpolation_along_one_axis(scale, axis):
    torch.manual_seed(0)
    net = create_model("edsr-1d", scale=scale, axis=axis, num_features=8, num_blocks=2)
    x = torch.rand(2, 1, 10, 12)
    y = net(x)
    assert y.shape == ((2, 1, 10 * scale, 12) if axis == -2 else (2, 1, 10, 12 * scale))
    torch.testing.assert_close(y, cubic_upsample_axis(x, scale, axis))  # zero-initialised tail
    torch.nn.init.normal_(net.tail.weight, std=0.1)
    y.detach()
    out = net(x)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert "edsr-1d" in list_models(kind="interpolator-1d") and "edsr-1d" not in list_models()


def test_edsr_1d_sub_pixel_rows_follow_their_input_row():
    """Channel k of input row i becomes output row i·s + k: a residual at one input row only
    moves the output rows it produces."""
    net = create_model("edsr-1d", scale=2, num_features=4, num_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.2)
    x = torch.zeros(1, 1, 8, 6)
    base = net(x) - cubic_upsample_axis(x, 2)
    x2 = x.clone()
    x2[0, 0, 0, :] = 1.0  # a change in the first input row
    diff = (net(x2) - cubic_upsample_axis(x2, 2)) - base
    # 5 convolutions of 3x3 at the input resolution (head, 2 in the block, body end, tail)
    # reach 5 input rows: output rows of input rows 6... (rows 12...) do not move
    assert diff[0, 0, 12:].abs().max() == 0 and diff[0, 0, :2].abs().max() > 0


def test_network_factor_and_prior_names():
    assert network_factor(2.0) == 2 and network_factor(1.3) == 2 and network_factor(3.0) == 4
    assert network_factor(6.0) == 4
    assert [prior_name(f) for f in PRIOR_FACTORS] == ["tp-x2", "tp-x4"]


# ----------------------------------------------------------------------------- shipped priors
@pytest.mark.parametrize("factor", PRIOR_FACTORS)
def test_shipped_priors_are_listed_with_cards(factor):
    names = {m.name for m in list_pretrained(kind="through-plane")}
    assert prior_name(factor) in names
    m = resolve_model(prior_name(factor), kinds=("through-plane",))
    assert m.kind == "through-plane" and m.checksum.startswith("sha256:")
    assert m.card["architecture"] == "edsr-1d" and int(m.card["scale"]) == factor
    assert m.card.get("normalization")
    net = m.net
    x = torch.rand(1, 1, 12, 16)
    assert net(x).shape == (1, 1, 12 * factor, 16)


def test_prior_recovers_detail_cubic_misses():
    """On an isotropic texture made thick (Gaussian FWHM = spacing), the prior's output is
    closer to the truth than cubic interpolation along z."""
    from medsr.selfsup import interpolate_z

    ref = _volume(_smooth_field((48, 48, 48), sigma=1.2))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    cubic = interpolate_z(thick, n_slices=48, mode="cubic")
    sr = through_plane_upscale(thick, target_spacing=1.0, slice_thickness=2.0, progress=False)
    k = slice(4, -4)

    def err(a: MedImage) -> float:
        return float(np.sqrt(np.mean((a.array[k] - ref.array[k]) ** 2)))

    assert err(sr) < err(cubic)
    d = sr.meta["derivation"]
    assert d["method"] == "learned prior" and d["model"].startswith("tp-x2")
    assert d["model_checksum"].startswith("sha256:") and d["training"] is None
    assert d["slice_profile"] == {
        "slice_thickness_mm": 2.0,
        "profile": "gaussian",
        "source": "given",
    }


# ----------------------------------------------------------------------------- adaptation
def test_adaptation_is_reproducible_for_a_seed_and_counts_steps():
    ref = _volume(_smooth_field((24, 40, 40), sigma=1.2, seed=1))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    opts = {
        "target_spacing": 1.0,
        "adapt_steps": 3,
        "batch_size": 2,
        "patch_size": 16,
        "progress": False,
    }
    a = through_plane_upscale(thick, seed=3, **opts)
    b = through_plane_upscale(thick, seed=3, **opts)
    c = through_plane_upscale(thick, seed=4, **opts)
    np.testing.assert_array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)
    t = a.meta["derivation"]["training"]
    assert t["steps"] == 3 and t["seed"] == 3 and t["init"] == "tp-x2"
    assert a.meta["derivation"]["method"] == "learned prior + per-volume adaptation"


def test_without_a_prior_and_without_steps_it_is_cubic_interpolation():
    from medsr.selfsup import interpolate_z

    ref = _volume(_smooth_field((16, 24, 24), seed=2))
    thick = degrade_image(ref, "thick-slice", 2, generator=0)
    sr = through_plane_upscale(thick, target_spacing=1.0, prior=None, clip=False, progress=False)
    cubic = interpolate_z(thick, n_slices=16, mode="cubic")
    np.testing.assert_allclose(sr.array, cubic.array, atol=1e-3 * float(np.ptp(ref.array)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adapt_steps": -5}, "whole number"),
        ({"adapt_steps": 1.5}, "whole number"),
        ({"target_spacing": 0}, "more than 0"),
        ({"prior": "tp-x4", "target_spacing": 1.0}, "×2"),
        ({"prior": "default-x2"}, "through-plane"),
    ],
)
def test_bad_values_raise_one_clear_error(kwargs, match):
    thick = _volume(_smooth_field((8, 24, 24)), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(MedSRError, match=match):
        through_plane_upscale(thick, **{"progress": False, **kwargs})


# ----------------------------------------------------------------------------- slice profile
@pytest.mark.parametrize("rel", [0.6, 1.0, 1.4])
def test_slice_profile_estimate_finds_the_width_of_a_gaussian_profile(rel):
    ref = _volume(_smooth_field((96, 64, 64), sigma=1.0, seed=3))
    f = 4
    thick = degrade_image(ref, "thick-slice", f, generator=0, profile="gaussian", thickness=rel * f)
    est = estimate_slice_profile(thick, "gaussian")
    assert est["source"] == "estimated" and est["profile"] == "gaussian"
    assert abs(est["relative"] - rel) <= 0.3, est
    assert est["thickness_mm"] == pytest.approx(est["relative"] * thick.spacing[0])


def test_slice_profile_defaults_and_fallback():
    assert default_profile(_volume(np.zeros((2, 4, 4), np.float32), modality="CT")) == "box"
    assert default_profile(_volume(np.zeros((2, 4, 4), np.float32), modality="MR")) == "gaussian"
    small = _volume(_smooth_field((4, 16, 16)), spacing=(3.0, 1.0, 1.0))
    assert estimate_slice_profile(small)["thickness_mm"] is None  # too few slices to tell


def test_through_plane_records_an_estimated_profile_and_projects_only_when_known():
    ref = _volume(_smooth_field((64, 48, 48), sigma=1.0, seed=4))
    thick = degrade_image(ref, "thick-slice", 4, generator=0, profile="gaussian", thickness=4)
    # the simulation states the profile it applied (4 thin slices' FWHM): known physics
    stated = through_plane_upscale(thick, consistency="auto", progress=False)
    prof = stated.meta["derivation"]["slice_profile"]
    assert prof["source"] == "header" and prof["slice_thickness_mm"] == pytest.approx(
        4 * ref.spacing[0]
    )
    assert stated.meta["derivation"]["consistency"]["applied"] is True
    # without that statement (a file that does not carry it) the profile is estimated
    thick = thick.replace(meta={k: v for k, v in thick.meta.items() if k != "slice_thickness_mm"})
    est = through_plane_upscale(thick, consistency="auto", progress=False)
    prof = est.meta["derivation"]["slice_profile"]
    assert prof["source"] == "estimated" and prof["profile"] == "gaussian"
    assert est.meta["derivation"]["consistency"]["applied"] is False  # estimated: not projected
    given = through_plane_upscale(thick, consistency="auto", slice_thickness=16.0, progress=False)
    assert given.meta["derivation"]["consistency"]["applied"] is True


# ----------------------------------------------------------------------------- files, maps
def test_upscale_file_through_plane_writes_z_uncertainty_and_provenance(tmp_path):
    from medsr.api import upscale_file
    from medsr.io import load_image, save_image

    ref = _volume(_smooth_field((40, 32, 32), seed=5))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    src = save_image(thick, tmp_path / "thick.nii.gz")
    out = upscale_file(
        src, tmp_path / "iso.nii.gz", through_plane=True, maps_dir=tmp_path / "maps",
        adapt_steps=2, batch_size=2, patch_size=16, progress=False,
    )  # fmt: skip
    img = load_image(out)
    assert img.spatial_shape == (40, 32, 32)
    unc = load_image(tmp_path / "maps" / "uncertainty.nii.gz")
    assert unc.spatial_shape == img.spatial_shape and float(unc.array.min()) >= 0
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    assert summary["degradation"]["source"] == "estimated"
    assert summary["adaptation"]["steps"] == 2 and summary["uncertainty"]["map"]["max"] >= 0
    side = json.loads((tmp_path / "iso.json").read_text())
    prov = side["provenance"]
    assert prov["model_checksum"].startswith("sha256:") and "thick-slice" in prov["degradation"]
    assert side["derivation"]["slice_profile"]["source"] == "estimated"
    # the profile is the physics, said with where it came from (not "unknown", nor "physics
    # not stated" for why auto did not project it)
    assert summary["physics"] == "thick-slice (estimated from the volume)"
    assert prov["degradation"].endswith("(estimated from the volume)")
    assert prov["safeguards"]["physics"] == summary["physics"]
    assert "physics not stated" not in side["derivation"]["summary"]
    assert (
        "consistency auto (measured only: slice profile estimated from the volume, not stated "
        "(--slice-thickness states it))" in side["derivation"]["summary"]
    )


def test_through_plane_training_task_runs_and_exports_a_prior(tmp_path, corpus):
    """`task: through-plane` trains a one-axis network through the one Lightning trainer and
    exports weights the resolver lists as a through-plane model."""
    from medsr.training.config import config_from_dict
    from medsr.training.run import export, train

    cfg = config_from_dict(
        {
            "name": "tp-tiny",
            "task": "through-plane",
            "scale": 2,
            "model": {"name": "edsr-1d", "kwargs": {"num_features": 8, "num_blocks": 1}},
            "data": {
                "files": ["corpus:S0_10slices.nii.gz", "corpus:t1_coronal_slice.npy"],
                "val_files": ["corpus:aniso_vox.nii.gz"],
                "patch_size": 32,
                "patches_per_epoch": 32,
                "batch_size": 8,
                "val_slices_per_file": 1,
                "val_max_size": 64,
            },
            "normalization": {"default": {"kind": "minmax"}},
            "degradation": {
                "kind": "thick-slice",
                "params": {
                    "axis": -2,
                    "profile": {"choices": ["gaussian", "box"]},
                    "thickness": [1.0, 3.0],
                },
            },
            "optim": {"lr": 1e-3, "schedule": "constant"},
            "trainer": {"max_epochs": 1, "progress_bar": "none", "out_dir": str(tmp_path / "run")},
        }
    )
    result = train(cfg)
    assert result.global_step == 4
    assert "val/psnr_gain" in result.metrics  # over cubic along the rows
    path = export(
        result.best_checkpoint or result.out_dir / "checkpoints" / "last.ckpt",
        tmp_path / "tp.safetensors",
    )
    m = resolve_model(str(path), kinds=("through-plane",))
    assert m.kind == "through-plane"
    thick = _volume(_smooth_field((8, 24, 24)), spacing=(2.0, 1.0, 1.0))
    out = through_plane_upscale(thick, prior=str(path), progress=False)
    assert out.spatial_shape == (16, 24, 24)


def test_through_plane_task_needs_a_one_axis_network_and_degradation():
    from medsr.training.config import config_from_dict
    from medsr.training.factory import build_task

    base = {"task": "through-plane", "data": {"files": ["corpus:CT_small.dcm"]}}
    with pytest.raises(MedSRError, match="thick-slice"):
        config_from_dict({**base, "model": {"name": "edsr-1d"}})
    cfg = config_from_dict(
        {
            **base,
            "model": {"name": "edsr"},
            "degradation": {"kind": "thick-slice", "params": {"axis": -2}},
        }
    )
    with pytest.raises(MedSRError, match="one-axis"):
        build_task(cfg)


def test_thick_slice_pairs_shape():
    x = torch.rand(3, 1, 32, 20)
    assert thick_slice(x, 4, axis=-2, thickness=4).shape == (3, 1, 8, 20)


def test_upscale_file_through_plane_takes_a_factor_along_z(tmp_path):
    """``--scale`` with ``--through-plane`` is the factor along z (as the web service's
    through-plane jobs read it), where it was silently ignored (isotropic voxels whatever the
    factor); given with ``--target-spacing`` it is an error; without either, isotropic."""
    from medsr.api import upscale_file
    from medsr.errors import InvalidParameterError
    from medsr.io import load_image, save_image

    ref = _volume(_smooth_field((48, 16, 16), seed=6))
    thick = degrade_image(ref, "thick-slice", 4, generator=0)  # 12 slices, 4 mm apart
    src = save_image(thick, tmp_path / "thick.nii.gz")
    for scale, slices in ((2, 24), (3, 36), (None, 48)):
        out = upscale_file(
            src,
            tmp_path / f"z{scale}.nii.gz",
            scale=scale,
            through_plane=True,
            model="none",
            progress=False,
        )
        assert load_image(out).spatial_shape[0] == slices
    with pytest.raises(InvalidParameterError, match="not both"):
        upscale_file(src, tmp_path / "both.nii.gz", scale=2, target_spacing=1.0, through_plane=True)


# ------------------------------------------------- consistency of through-plane outputs, and its map
def test_through_plane_consistency_measures_the_output_as_written(tmp_path):
    """The summary's error and the consistency map are |thick-slice(output) − input| of the
    written output — after its resampling to the target spacing — with the recorded profile."""
    from medsr.api import upscale_file
    from medsr.degradations.thick_slice import thick_slice_matrix
    from medsr.io import load_image, save_image

    ref = _volume(_smooth_field((40, 32, 32), seed=5))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    src = save_image(thick, tmp_path / "thick.nii.gz")
    out = upscale_file(  # 20 slices of 2 mm → 53 of 0.75 mm: not a multiple of the network's ×4
        src, tmp_path / "iso.nii.gz", through_plane=True, target_spacing=0.75,
        slice_thickness=2.0, maps_dir=tmp_path / "maps", progress=False,
    )  # fmt: skip
    img, lr = load_image(out), load_image(src)
    cmap = load_image(tmp_path / "maps" / "consistency.nii.gz")
    assert img.spatial_shape == cmap.spatial_shape == (53, 32, 32)
    w = thick_slice_matrix(20, 53, profile="gaussian", thickness=1.0)  # 2 mm in 2 mm slices
    err = np.abs(np.einsum("zn,nyx->zyx", w, img.array.astype(np.float64)) - lr.array)
    nearest = np.minimum(((np.arange(53) + 0.5) * 20 / 53).astype(int), 19)
    np.testing.assert_allclose(cmap.array, err[nearest], atol=0.01)  # NIfTI storage rounding
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    cons = summary["consistency"]
    assert cons["applied"] is True and "2.0 mm (stated)" in cons["measured_with"]
    assert cons["error"]["p99"] == pytest.approx(np.percentile(err, 99), abs=0.01)
    assert cons["error"]["p99_rel"] < 0.05 and cons["exceeded"] is False
    side = json.loads((tmp_path / "iso.json").read_text())
    assert side["provenance"]["safeguards"]["consistency"]["error"]["p99"] == cons["error"]["p99"]


def test_through_plane_consistency_warns_on_an_output_that_disagrees_with_its_slices():
    """A through-plane output that does not reproduce its measured slices — here one off by 30 %
    of the range — is reported as in-plane: exceeded, a warning, and the error itself."""
    from medsr.pipeline import ConsistencyWarning, _through_plane_checked, through_plane_error
    from medsr.selfsup.through_plane import interpolate_z

    ref = _volume(_smooth_field((32, 24, 24), seed=6))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="box", thickness=2)
    cubic = interpolate_z(thick, n_slices=32, mode="cubic")
    prof = {"slice_thickness_mm": 2.0, "profile": "box", "source": "header"}
    cubic = cubic.replace(meta={**cubic.meta, "derivation": {"slice_profile": prof}})
    rng = float(thick.array.max() - thick.array.min())
    shifted = cubic.replace(array=cubic.array + np.float32(0.3 * rng))
    np.testing.assert_allclose(  # linear, and its rows sum to one: a shift is the error's shift
        through_plane_error(thick, shifted),
        through_plane_error(thick, cubic) + 0.3 * rng,
        atol=1e-3,
    )
    ok = _through_plane_checked(thick, cubic, maps=False)
    assert ok.meta["derivation"]["consistency"]["exceeded"] is False
    with pytest.warns(ConsistencyWarning, match="disagrees with the measured slices"):
        bad = _through_plane_checked(thick, shifted, maps=True)
    cons = bad.meta["derivation"]["consistency"]
    assert cons["exceeded"] is True and cons["cubic_p99_rel"] < 0.05
    assert cons["error"]["mean_rel"] == pytest.approx(0.3, abs=0.005)
    assert bad.meta["maps"]["consistency"].shape == (32, 24, 24)
