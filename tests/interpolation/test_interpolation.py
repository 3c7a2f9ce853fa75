"""Slice interpolation (issue 8): geometry, tiny training of the three models, sampler, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.image import MedImage
from medsr.interpolation.core import (
    inserted_geometry,
    interpolate_slices,
    resolve_model,
    subsampled,
)
from medsr.interpolation.models import FAST_DDPM_NON_UNIFORM_10, fast_ddpm_timesteps
from medsr.interpolation.train import split_volumes, train_interpolator


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads spin on each other and
    a tiny UNet forward takes ~1.5 s instead of ~5 ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = {
    "interp-cnn": {"num_features": 8, "num_blocks": 1},
    "interp-gan": {"num_features": 8, "num_blocks": 1},
    "fast-ddpm": {"channels": [8, 16], "norm_num_groups": 4},
}


def _oblique_volume(z: int = 5, y: int = 12, x: int = 10) -> MedImage:
    rng = np.random.default_rng(0)
    aff = np.array([[0.0, 0.9, 0.3, -20.0], [1.1, 0.0, 0.0, 5.0], [0.0, -0.2, 3.0, 40.0], [0, 0, 0, 1]])
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    arr = 100 * np.sin(zz / 2 + yy / 3) + 50 * np.cos(xx / 4) + rng.normal(0, 1, (z, y, x))
    return MedImage(arr.astype(np.float32), spacing=(3.0067, 0.92, 1.1), affine=aff, modality="MR")


def _world(img: MedImage, idx_zyx: tuple[int, int, int]) -> np.ndarray:
    z, y, x = idx_zyx
    return img.world_coordinate((x, y, z))


@pytest.mark.parametrize("axis", ["z", "y", "x"])
@pytest.mark.parametrize("factor", [2, 4])
def test_inserted_geometry_keeps_original_slice_positions(axis, factor):
    img = _oblique_volume()
    a = "zyx".index(axis)
    shape = list(img.spatial_shape)
    shape[a] = (shape[a] - 1) * factor + 1
    out = inserted_geometry(img, np.zeros(shape, np.float32), axis, factor)
    assert out.spatial_shape == tuple(shape)
    assert out.spacing[a] == pytest.approx(img.spacing[a] / factor)
    for k in range(img.spatial_shape[a]):
        idx_old = [1, 2, 3]
        idx_old[a] = k
        idx_new = list(idx_old)
        idx_new[a] = k * factor
        np.testing.assert_allclose(_world(out, tuple(idx_new)), _world(img, tuple(idx_old)), atol=1e-9)
    # the last slice centre is unchanged too (same span, not the cell-centred field of view)
    with pytest.raises(ValueError):
        inserted_geometry(img, np.zeros(img.spatial_shape, np.float32), axis, factor)
    ref, sparse = subsampled(img, axis, factor)
    back = inserted_geometry(sparse, ref.array, axis, factor)
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-12)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_baselines_keep_acquired_slices_and_are_exact_on_linear_ramps(mode):
    z = np.arange(5, dtype=np.float32)[:, None, None] * 10 + np.zeros((5, 8, 8), np.float32)
    img = MedImage(z + 3, spacing=(4, 1, 1))
    out = interpolate_slices(img, mode, 4)
    assert out.spatial_shape == (17, 8, 8) and out.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(out.array[::4], img.array, atol=1e-3)
    if mode == "linear":
        np.testing.assert_allclose(out.array[:, 0, 0], np.arange(17) * 2.5 + 3, atol=1e-3)


def test_fast_ddpm_schedule_is_the_published_non_uniform_one():
    assert fast_ddpm_timesteps(10) == list(FAST_DDPM_NON_UNIFORM_10)
    assert sum(t >= 699 for t in FAST_DDPM_NON_UNIFORM_10) == 6
    assert len(fast_ddpm_timesteps(5)) == 5 and len(fast_ddpm_timesteps(10, "uniform")) == 10


def test_volume_wise_split_keeps_frames_together():
    train, test = split_volumes(["a", "b[0]", "b[1]", "c", "d"], held_out=0.25, seed=1)
    assert set(train).isdisjoint(test) and test
    assert ("b[0]" in train) == ("b[1]" in train)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("interp")
    vol = _oblique_volume(6, 16, 16)
    return {
        name: train_interpolator(name, [vol], 2, patch=16, batch_size=2, seed=0, out=root / f"{name}.safetensors", model_kwargs=kw)
        for name, kw in TINY.items()
    }


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_models_train_and_interpolate_with_correct_geometry(trained, name):
    from medsr.models.weights import read_card

    card = read_card(trained[name])
    assert card["architecture"] == name and card["normalization"]["kind"] == "percentile-per-volume"
    assert card["training"]["steps"] == 2
    img = _oblique_volume(4, 12, 10)
    out = interpolate_slices(img, str(trained[name]), 2)
    assert out.spatial_shape == (7, 12, 10)
    assert out.spacing == pytest.approx((img.spacing[0] / 2, *img.spacing[1:]))
    np.testing.assert_allclose(out.array[::2], img.array, rtol=1e-5, atol=1e-3)
    for k in range(4):
        np.testing.assert_allclose(_world(out, (2 * k, 0, 0)), _world(img, (k, 0, 0)), atol=1e-9)
    assert np.isfinite(out.array).all()


def test_diffusion_sampler_uses_exactly_the_configured_steps_and_is_seeded(trained):
    net, _ = resolve_model(str(trained["fast-ddpm"]))
    calls = []
    net.unet.register_forward_hook(lambda mod, inp, out: calls.append(int(inp[0].shape[0])))
    cond = torch.rand(2, 2, 11, 13)
    a = net.sample(cond, seed=3, samples=3)
    assert len(calls) == len(net.timesteps) == 10
    assert a.shape == (2, 1, 11, 13)
    b = net.sample(cond, seed=3, samples=3)
    c = net.sample(cond, seed=4, samples=3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    net.eta = 1.0  # stochastic (DDPM-like) updates: still seeded, still 10 evaluations
    calls.clear()
    assert torch.equal(net.sample(cond, seed=5), net.sample(cond, seed=5))
    assert len(calls) == 20


def test_cli_interpolates_a_tiny_nifti_and_rejects_bad_factor(tmp_path, trained):
    import nibabel as nib
    import typer
    from typer.testing import CliRunner

    from medsr.interpolation.cli import register

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command so Typer keeps sub-command names
        pass

    img = _oblique_volume(4, 12, 10)
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(img.array, (2, 1, 0)), img.affine), src)
    runner = CliRunner()
    dst = tmp_path / "out.nii.gz"
    res = runner.invoke(app, ["interpolate", str(src), str(dst), "--factor", "4", "--model", str(trained["interp-cnn"])])
    assert res.exit_code == 0, res.output
    out = nib.load(dst)
    assert out.shape == (10, 12, 13)
    np.testing.assert_allclose(out.affine[:3, 2], img.affine[:3, 2] / 4, atol=1e-5)
    np.testing.assert_allclose(out.affine[:3, 3], img.affine[:3, 3], atol=1e-4)
    res = runner.invoke(app, ["interpolate", str(src), str(tmp_path / "x.nii.gz"), "--factor", "3"])
    assert res.exit_code == 2
    assert not (tmp_path / "x.nii.gz").exists()
    res = runner.invoke(app, ["interpolate", str(src), str(dst), "--model", "linear"])
    assert res.exit_code == 2 and "error" in res.output  # exists, no --overwrite


def test_report_compares_models_on_dropped_slices(tmp_path, trained):
    from medsr.interpolation.evaluate import evaluate_interpolation

    vol = _oblique_volume(7, 12, 12)
    summary = evaluate_interpolation([vol], {"linear": "linear", "cubic": "cubic", "cnn": str(trained["interp-cnn"])}, 2, tmp_path / "rep")
    assert set(summary["models"]) == {"linear", "cubic", "cnn"}
    for m in summary["models"].values():
        assert m["psnr"] > 0 and np.isfinite(m["mse"]) and m["ms_per_slice"] >= 0
    for f in ("metrics.csv", "report.md", "report.html", "figures/volume0.png"):
        assert (tmp_path / "rep" / f).is_file()


@pytest.mark.parametrize("name", ["interp-cnn", "interp-gan", "interp-fast-ddpm"])
def test_configs_parse_and_build_their_model(name):
    from pathlib import Path

    from medsr.interpolation.config import load_config
    from medsr.models.registry import create_model, list_models

    cfg = load_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert not set(cfg["data"]["train"]) & set(cfg["data"]["test"])  # volume-wise split
    model = create_model(cfg["model"]["name"], **cfg["model"]["kwargs"])
    assert model.kind == "slice-interpolator"
    assert cfg["model"]["name"] in list_models(kind="slice-interpolator")
    assert cfg["model"]["name"] not in list_models()


def test_dicom_series_output_keeps_acquired_slice_positions(tmp_path):
    from medsr.io import load_image, save_image

    img = _oblique_volume(3, 12, 10)
    src = load_image(save_image(img, tmp_path / "src"))
    out = interpolate_slices(src, "linear", 2)
    back = load_image(save_image(out, tmp_path / "out"))
    assert back.spatial_shape == (5, 12, 10)
    for k in range(3):
        np.testing.assert_allclose(back.world_coordinate((2, 3, 2 * k)), src.world_coordinate((2, 3, k)), atol=1e-3)


def test_unknown_or_untrained_models_are_refused_clearly():
    from medsr.errors import InvalidParameterError

    img = _oblique_volume(3, 8, 8)
    with pytest.raises(InvalidParameterError, match="no trained weights"):
        interpolate_slices(img, "interp-gan", 2)
    with pytest.raises(InvalidParameterError, match="not a slice interpolator"):
        interpolate_slices(img, "bicubic", 2)
    with pytest.raises(InvalidParameterError, match="factor"):
        interpolate_slices(img, "linear", 3)


def test_cli_evaluate_interpolation(tmp_path):
    from typer.testing import CliRunner

    from medsr.cli import app
    from tests.conftest import corpus_path

    res = CliRunner().invoke(app, ["evaluate", "--interpolation", "--data", str(corpus_path("aniso_vox.nii.gz")),
                                   "--models", "linear,cubic", "--scale", "2", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "linear" in (tmp_path / "ev" / "report.md").read_text()
