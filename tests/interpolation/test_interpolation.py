"""Slice interpolation (issues 8 and 19): the one through-plane grid, the three models trained
through the Lightning task, sampler, CLI, report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsr.image import MedImage
from medsr.interpolation.core import interpolate_slices, resolve_model
from medsr.models.slice import FAST_DDPM_NON_UNIFORM_10, fast_ddpm_timesteps
from medsr.selfsup import interpolate_z

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "interp-cnn": {"num_features": 8, "num_blocks": 1},
    "interp-gan": {"num_features": 8, "num_blocks": 1},
    "fast-ddpm": {"channels": [8, 16], "norm_num_groups": 4},
}


def _oblique_volume(z: int = 5, y: int = 12, x: int = 10) -> MedImage:
    rng = np.random.default_rng(0)
    aff = np.array(
        [[0.0, 0.9, 0.3, -20.0], [1.1, 0.0, 0.0, 5.0], [0.0, -0.2, 3.0, 40.0], [0, 0, 0, 1]]
    )
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    arr = 100 * np.sin(zz / 2 + yy / 3) + 50 * np.cos(xx / 4) + rng.normal(0, 1, (z, y, x))
    return MedImage(arr.astype(np.float32), spacing=(3.0067, 0.92, 1.1), affine=aff, modality="MR")


def _world(img: MedImage, idx_zyx: tuple[float, float, float]) -> np.ndarray:
    z, y, x = idx_zyx
    return img.world_coordinate((x, y, z))


def _mean_of_neighbours_cnn():
    """An interp-cnn whose residual body is zero: exactly the neighbours' mean (a linear midpoint)."""
    from medsr.models.registry import create_model

    net = create_model("interp-cnn", num_features=4, num_blocks=1).eval()
    last = net.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    net.card = {"architecture": "interp-cnn", "kwargs": {"num_features": 4, "num_blocks": 1}}
    return net


# ------------------------------------------------------------------ the grid rule
@pytest.mark.parametrize("axis", ["z", "y", "x"])
@pytest.mark.parametrize("factor", [2, 4])
def test_output_is_cell_centred_with_the_same_field_of_view(axis, factor):
    img = _oblique_volume()
    a = "zyx".index(axis)
    out = interpolate_slices(img, "linear", factor, axis=axis)
    shape = list(img.spatial_shape)
    shape[a] *= factor
    assert out.spatial_shape == tuple(shape)
    assert out.spacing[a] == pytest.approx(img.spacing[a] / factor)
    np.testing.assert_allclose(out.world_center(), img.world_center(), atol=1e-9)
    n = img.spatial_shape[a]
    for j in range(n * factor):  # output slice j sits at input index (j + ½)·N/n − ½
        idx_out = [1.0, 2.0, 3.0]
        idx_out[a] = j
        idx_in = list(idx_out)
        idx_in[a] = (j + 0.5) / factor - 0.5
        np.testing.assert_allclose(
            _world(out, tuple(idx_out)), _world(img, tuple(idx_in)), atol=1e-9
        )


@pytest.mark.parametrize("factor", [2, 4])
def test_baselines_are_the_through_plane_resampler(factor):
    img = _oblique_volume()
    for mode in ("linear", "cubic"):
        a = interpolate_slices(img, mode, factor)
        b = interpolate_z(img, n_slices=factor * img.spatial_shape[0], mode=mode)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-12)
    # a linear ramp along z is reproduced between the end slices (edges are replicated)
    ramp = np.arange(5, dtype=np.float32)[:, None, None] * 10 + np.zeros((5, 8, 8), np.float32)
    out = interpolate_slices(MedImage(ramp + 3, spacing=(4, 1, 1)), "linear", factor)
    pos = (np.arange(5 * factor) + 0.5) / factor - 0.5
    np.testing.assert_allclose(out.array[:, 0, 0], np.clip(pos, 0, 4) * 10 + 3, atol=1e-4)


@pytest.mark.parametrize("factor", [2, 4])
def test_a_midpoint_network_lands_on_the_same_grid_as_linear(factor):
    # a network predicting the neighbours' mean is a linear midpoint: nested midpoint insertion
    # must then give exactly linear resampling on the cell-centred grid
    img = _oblique_volume(6, 8, 8)
    net = _mean_of_neighbours_cnn()
    out = interpolate_slices(img, net, factor)
    lin = interpolate_slices(img, "linear", factor)
    np.testing.assert_allclose(out.array, lin.array, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out.affine, lin.affine, atol=1e-12)


def test_through_plane_upscale_uses_the_same_grid():
    from medsr.selfsup import through_plane_upscale

    img = _oblique_volume(4, 24, 20).replace(spacing=(2.2, 1.1, 1.1))
    img = img.replace(affine=np.diag([1.1, 1.1, 2.2, 1.0]))
    tp = through_plane_upscale(
        img, budget_s=None, epochs=1, patches_per_epoch=4, batch_size=4, progress=False,
        model_kwargs={"num_features": 4},
    )  # fmt: skip
    si = interpolate_slices(img, "linear", 2)
    assert tp.spatial_shape == si.spatial_shape == (8, 24, 20)
    np.testing.assert_allclose(tp.affine, si.affine, atol=1e-12)
    assert tp.spacing == pytest.approx(si.spacing)


def test_fast_ddpm_schedule_is_the_published_non_uniform_one():
    assert fast_ddpm_timesteps(10) == list(FAST_DDPM_NON_UNIFORM_10)
    assert sum(t >= 699 for t in FAST_DDPM_NON_UNIFORM_10) == 6
    assert len(fast_ddpm_timesteps(5)) == 5 and len(fast_ddpm_timesteps(10, "uniform")) == 10


def test_interpolators_are_registered_models_without_an_interpolation_import():
    import subprocess
    import sys

    from medsr.models import registry

    assert "medsr.models.slice" in registry._BUILTIN_MODULES
    assert not any(m.startswith("medsr.interpolation") for m in registry._BUILTIN_MODULES)
    code = (
        "import sys; from medsr.models.registry import list_models; "
        "names = list_models(kind='slice-interpolator'); "
        "assert names == ['fast-ddpm', 'interp-cnn', 'interp-gan'], names; "
        "assert not [m for m in sys.modules if m.startswith('medsr.interpolation')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------ training (Lightning)
def _recipe(name: str, files: list[str], val: list[str], out_dir: str) -> dict:
    d = {
        "name": f"tiny-{name}",
        "task": "slice-interpolation",
        "scale": 2,
        "model": {"name": name, "kwargs": TINY[name]},
        "data": {"files": files, "val_files": val, "patch_size": 16, "patches_per_epoch": 4,
                 "batch_size": 2, "val_slices_per_file": 2, "val_max_size": 32},
        "slices": {"axes": ["z", "y", "x"]},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "trainer": {"max_steps": 2, "max_epochs": -1, "progress_bar": "none",
                    "log_every_n_steps": 1, "out_dir": out_dir},
    }  # fmt: skip
    if name == "interp-gan":
        d["gan"] = {"discriminator": {"name": "patchgan", "kwargs": {"num_features": 8, "num_blocks": 2}},
                    "pixel_weight": 1.0, "adv_weight": 1e-3, "content_weight": 0.0}  # fmt: skip
        d["trainer"]["max_steps"] = 4  # manual optimisation: D and G steps both count
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The three tiny interpolators trained 2 steps each through `medsr train` / the Lightning
    task, exported to safetensors with their cards."""
    import yaml
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.io import save_image

    root = tmp_path_factory.mktemp("interp")
    train_vol = save_image(_oblique_volume(6, 16, 16), root / "train.nii.gz")
    val_vol = save_image(_oblique_volume(5, 20, 20), root / "val.nii.gz")
    runner = CliRunner()
    out = {}
    for name in TINY:
        recipe = root / f"{name}.yaml"
        recipe.write_text(
            yaml.safe_dump(_recipe(name, [str(train_vol)], [str(val_vol)], str(root / name)))
        )
        res = runner.invoke(app, ["train", str(recipe)])
        assert res.exit_code == 0, res.output
        weights = root / f"{name}.safetensors"
        res = runner.invoke(
            app, ["export", str(root / name / "checkpoints" / "last.ckpt"), str(weights)]
        )
        assert res.exit_code == 0, res.output
        out[name] = weights
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_models_train_export_and_interpolate(trained, name):
    from medsr.models.resolver import resolve_model as resolve_any
    from medsr.models.weights import read_card

    card = read_card(trained[name])
    assert card["architecture"] == name and card["kind"] == "slice-interpolator"
    assert card["task"] == "slice-interpolation" and card["scale"] == 2 and card["in_channels"] == 2
    assert card["normalization"] == {"kind": "percentile-per-volume", "low": 0.5, "high": 99.5}
    assert card["degradation"]["kind"] == "slice-removal"
    assert card["training_data"]["train_files"] == ["train.nii.gz"]
    assert card["training_data"]["val_files"] == ["val.nii.gz"]
    assert card["metrics"]["val_psnr_linear"] is not None and card["slices"]["axes"] == [
        "z",
        "y",
        "x",
    ]
    assert card["steps"] == (4 if name == "interp-gan" else 2)
    if name == "interp-gan":
        assert card["gan"]["discriminator_kwargs"]["in_channels"] == 3
    assert resolve_any(str(trained[name])).kind == "slice-interpolator"
    img = _oblique_volume(4, 12, 10)
    out = interpolate_slices(img, str(trained[name]), 2)
    assert out.spatial_shape == (8, 12, 10)
    assert out.spacing == pytest.approx((img.spacing[0] / 2, *img.spacing[1:]))
    np.testing.assert_allclose(out.affine, interpolate_slices(img, "linear", 2).affine, atol=1e-12)
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


def test_slice_datamodule_triplets_split_and_reproducibility(tmp_path):
    from medsr.training.config import config_from_dict
    from medsr.training.slices import SliceDataModule
    from tests.conftest import corpus_path

    files = [
        str(corpus_path(n)) for n in ("example4d.nii.gz", "S0_10slices.nii.gz", "anatomical.nii")
    ]
    d = _recipe("interp-cnn", files, [], str(tmp_path))
    d["data"]["val_fraction"] = 0.5
    d["slices"] = {"axes": ["z"], "percentiles": [1, 99]}
    dm = SliceDataModule(config_from_dict(d))
    dm.setup()
    train = {v.name for v in dm.train_volumes}
    val = {v.name for v in dm.val_volumes}
    assert train and val and not train & val
    frames = {"example4d.nii.gz[0]", "example4d.nii.gz[1]"}
    assert frames <= train or frames <= val  # the frames of one file stay together
    for v in dm.train_volumes:
        lo, hi = np.percentile(v.array, [1, 99])
        assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    ds = dm.train_dataset()
    a, b, c = ds[(0, 0, 3)], ds[(0, 0, 3)], ds[(1, 0, 3)]
    assert a["cond"].shape == (2, 16, 16) and a["target"].shape == (1, 16, 16)
    assert torch.equal(a["cond"], b["cond"]) and not torch.equal(a["cond"], c["cond"])
    info = dm.describe()
    assert info["normalization"]["kind"] == "percentile-per-volume" and info["axes"] == ["z"]


def test_recipes_validate_and_build_their_task():
    import warnings
    from pathlib import Path

    from medsr.training.config import load_config
    from medsr.training.factory import build_task
    from medsr.training.tasks import SliceInterpolationTask

    for p in sorted((Path(__file__).parents[2] / "configs").glob("interp-*.yaml")):
        cfg = load_config(p)
        assert cfg.task == "slice-interpolation" and cfg.scale == 2
        assert not {f.path for f in cfg.data.files} & {f.path for f in cfg.data.val_files}
        small = {"interp-cnn": TINY["interp-cnn"], "interp-gan": TINY["interp-gan"],
                 "fast-ddpm": TINY["fast-ddpm"]}[cfg.model.name]  # fmt: skip
        task = build_task(cfg.replace(model={"name": cfg.model.name, "kwargs": small}))
        assert isinstance(task, SliceInterpolationTask) and task.model.kind == "slice-interpolator"
        assert (cfg.gan is not None) == (cfg.model.name == "interp-gan")
        cond, target = torch.rand(2, 2, 32, 32), torch.rand(2, 1, 32, 32)
        if cfg.gan is None:  # (the adversarial task optimises manually: tested through train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # self.log without a Trainer
                loss = task.training_step({"cond": cond, "target": target}, 0)
            loss.backward()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale": 4}, "scale must be 2"),
        ({"normalization": {"kind": "minmax"}}, "slices.percentiles"),
        ({"degradation": "bicubic"}, "degradation does not apply"),
        ({"slices": {"axes": ["w"]}}, "slices.axes"),
        ({"slices": {"percentiles": [50, 10]}}, "slices.percentiles"),
    ],
)
def test_bad_slice_recipes_name_the_key(change, message):
    from medsr.errors import InvalidParameterError
    from medsr.training.config import config_from_dict

    d = {
        "task": "slice-interpolation",
        "model": {"name": "interp-cnn"},
        "data": {"files": ["a.nii"]},
    }
    with pytest.raises(InvalidParameterError, match=message):
        config_from_dict({**d, **change})
    with pytest.raises(InvalidParameterError, match="needs task: slice-interpolation"):
        config_from_dict({"model": {"name": "edsr"}, "data": {"files": ["a.nii"]}, "slices": {}})


def test_a_slice_task_refuses_an_in_plane_model():
    from medsr.errors import InvalidParameterError
    from medsr.training.config import config_from_dict
    from medsr.training.factory import build_task

    cfg = config_from_dict(
        {
            "task": "slice-interpolation",
            "model": {"name": "residual5"},
            "data": {"files": ["a.nii"]},
        }
    )
    with pytest.raises(InvalidParameterError, match="not a slice interpolator"):
        build_task(cfg)


# ------------------------------------------------------------------ CLI, report, DICOM, errors
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
    res = runner.invoke(
        app,
        ["interpolate", str(src), str(dst), "--factor", "4", "--model", str(trained["interp-cnn"])],
    )
    assert res.exit_code == 0, res.output
    out = nib.load(dst)
    assert out.shape == (10, 12, 16)
    np.testing.assert_allclose(out.affine[:3, 2], img.affine[:3, 2] / 4, atol=1e-5)
    # cell-centred: the origin moves by A·((1/4 − 1)/2) along z, the field of view stays
    np.testing.assert_allclose(
        out.affine[:3, 3], img.affine[:3, 3] - 0.375 * img.affine[:3, 2], atol=1e-4
    )
    res = runner.invoke(app, ["interpolate", str(src), str(tmp_path / "x.nii.gz"), "--factor", "3"])
    assert res.exit_code == 2
    assert not (tmp_path / "x.nii.gz").exists()
    res = runner.invoke(app, ["interpolate", str(src), str(dst), "--model", "linear"])
    assert res.exit_code == 2 and "error" in res.output  # exists, no --overwrite
    before = src.read_bytes()
    res = runner.invoke(
        app, ["interpolate", str(src), str(src), "--model", "linear", "--overwrite"]
    )
    assert res.exit_code == 2 and "must not be the input" in res.output
    assert src.read_bytes() == before  # inputs are never modified, --overwrite or not


def test_report_uses_the_one_report_writer(tmp_path, trained):
    import json

    from medsr.reports.interpolation import evaluate_interpolation

    vol = _oblique_volume(8, 24, 24)
    summary = evaluate_interpolation(
        [vol], {"cubic": "cubic", "cnn": str(trained["interp-cnn"])}, 2, tmp_path / "rep"
    )
    assert list(summary["models"]) == ["linear", "cubic", "cnn"]  # linear: the baseline
    assert summary["baseline"] == "linear" and summary["degradation"] == "thick-slice"
    for m in summary["models"].values():
        assert m["psnr"]["mean"] > 0 and np.isfinite(m["mse"]["mean"]) and "psnr_3d" in m
        assert "gain_psnr_vs_linear" in m
    for f in (
        "metrics.csv",
        "report.md",
        "report.html",
        "summary.json",
        "figures/volume0_reformats.png",
    ):
        assert (tmp_path / "rep" / f).is_file()
    assert (
        json.loads((tmp_path / "rep" / "summary.json").read_text())["models"].keys()
        == summary["models"].keys()
    )
    assert "Through-plane" in (tmp_path / "rep" / "report.md").read_text()
    # another slice axis: moved to z for the evaluation
    tall = _oblique_volume(16, 12, 20)
    ys = evaluate_interpolation(
        [vol, tall], ["cubic"], 2, tmp_path / "rep_y", axis="y", figures=False
    )
    assert ys["params"]["axis"] == "y" and set(ys["models"]) == {"linear", "cubic"}
    assert ys["n_images"] == 1 and "SSIM" in ys["skipped"][0]["reason"]  # vol: 8×24 slices


def test_dicom_series_output_follows_the_grid(tmp_path):
    from medsr.io import load_image, save_image

    img = _oblique_volume(3, 12, 10)
    src = load_image(save_image(img, tmp_path / "src"))
    out = interpolate_slices(src, "linear", 2)
    back = load_image(save_image(out, tmp_path / "out"))
    assert back.spatial_shape == (6, 12, 10)
    for j in range(6):
        np.testing.assert_allclose(
            back.world_coordinate((2, 3, j)),
            src.world_coordinate((2, 3, (j + 0.5) / 2 - 0.5)),
            atol=1e-3,
        )


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

    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--interpolation",
            "--data",
            str(corpus_path("aniso_vox.nii.gz")),
            "--models",
            "linear,cubic",
            "--scale",
            "2",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "cubic" in (tmp_path / "ev" / "report.md").read_text()


@pytest.mark.parametrize("axis", ["z", "y"])
def test_a_network_keeps_no_data_exact_and_never_reads_it(axis):
    """A CT's fill outside the scan circle (−3024 HU): the shipped interpolator used to draw values
    from −3474 to −2495 into it and to pull tissue beside it 390 HU below anything measured (the
    fill entered the per-volume normalisation and the network); now it is read as the darkest
    measured value and kept exact, along any axis."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    z, h, w = 12, 64, 64
    arr = gaussian_filter(rng.standard_normal((z, h, w)), 2.0).astype(np.float32) * 800
    yy, xx = np.mgrid[:h, :w]
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    arr[:, ~circle] = -3024.0
    if axis == "y":  # the same volume lying on its side: interpolate along y
        arr = np.ascontiguousarray(arr.transpose(1, 0, 2))
    img = MedImage(arr, spacing=(2.0, 2.0, 1.0), modality="CT", units="HU")
    out = interpolate_slices(img, "interp-cnn", 2, axis=axis)
    a = "zyx".index(axis)
    pad_in = arr == -3024.0
    pad_out = np.repeat(pad_in, 2, axis=a)  # the fill does not change along the interpolated axis
    assert (out.array[pad_out] == -3024.0).all()
    assert out.array[~pad_out].min() >= arr[~pad_in].min() - 1e-3


@pytest.mark.parametrize("model", ["linear", "interp-cnn"])
def test_nifti_nan_stays_nan_and_is_not_interpolated_as_zero(tmp_path, model):
    """``medsr interpolate`` of a NIfTI that is NaN outside its data: an output slice is NaN
    where the slices on both sides of it are (the slice grid's rule; it used to be written as
    0), and no measured voxel is blended with the 0 a NaN is read as (the baselines used to)."""
    import nibabel as nib
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.slice_grid import no_data_kept
    from tests.conftest import make_nan_nifti

    nonfinite = make_nan_nifti(tmp_path / "in.nii.gz")
    out = tmp_path / "out.nii.gz"
    res = CliRunner().invoke(
        app, ["interpolate", str(tmp_path / "in.nii.gz"), str(out), "--model", model]
    )
    assert res.exit_code == 0, res.output
    sr = np.asarray(nib.load(str(out)).dataobj).transpose(2, 1, 0)
    want = no_data_kept(nonfinite, 2 * nonfinite.shape[0], 0)
    np.testing.assert_array_equal(np.isnan(sr), want)
    assert 60 <= sr[~want].min() and sr[~want].max() <= 140


def test_a_sampling_seed_is_checked_as_the_degradations_noise_seed(tmp_path, trained):
    """`medsr interpolate --seed -1` (or a seed past 64 bits) was accepted without a word,
    though torch takes -s as 2**64 - 1 - s; and fast-ddpm with a seed near 2**64 - 1 ended in
    torch's 'Overflow when unpacking long long' (a traceback): the per-slice, per-pass and
    per-sample seeds seed + offset went past 64 bits. Now the seed is checked as `medsr
    degrade --seed` checks it (0 to 2**64 - 1, one `error:` line, exit 2, before the input is
    read) and every seed in that range works."""
    import nibabel as nib

    from medsr.errors import InvalidParameterError
    from medsr.interpolation.core import interpolation_uncertainty
    from tests.test_cli import medsr as run

    img = _oblique_volume(3, 12, 10)
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(img.array, (2, 1, 0)), img.affine), src)
    dst = tmp_path / "out.nii.gz"
    for bad in ("-1", str(2**64), "1.5"):
        res = run("interpolate", str(src), str(dst), "--model", "linear", "--seed", bad)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error: "), res.stderr
        assert not dst.exists()
    assert (
        "a sampling seed must be a whole number from 0 to"
        in run("interpolate", str(src), str(dst), "--seed", str(2**64)).stderr
    )
    for bad in (-1, 2**64, 1.5):
        with pytest.raises(InvalidParameterError, match="a sampling seed must be a whole number"):
            interpolate_slices(img, "linear", 2, seed=bad)
        with pytest.raises(InvalidParameterError, match="a sampling seed must be a whole number"):
            interpolation_uncertainty(img, "linear", 2, seed=bad)
    # the top of the range samples (x4: three passes, offsets past 2**64 wrap) and is seeded
    top = interpolate_slices(img, str(trained["fast-ddpm"]), 4, seed=2**64 - 1)
    again = interpolate_slices(img, str(trained["fast-ddpm"]), 4, seed=2**64 - 1)
    assert np.isfinite(top.array).all() and np.array_equal(top.array, again.array)
    _, std, summary = interpolation_uncertainty(
        img, str(trained["fast-ddpm"]), 2, seed=2**64 - 1, samples=2, tta=False
    )
    assert std is not None and summary["seed"] == 2**64 - 1


def test_cli_says_the_slice_spacing_of_a_tilted_stack_between_its_planes(tmp_path):
    """A CT series with a 20° gantry tilt, slices 2.5 mm apart (SpacingBetweenSlices 2.5): its
    step along the table is 2.66 mm long. `medsr interpolate --factor 2` wrote slices 1.25 mm
    apart (SpacingBetweenSlices 1.25) but printed "spacing (1.3302, …)", the step; now it
    prints the distance between the planes, as the header it wrote says."""
    import pydicom
    from typer.testing import CliRunner

    from medsr.cli import app
    from tests.conftest import make_tilted_ct_series

    src = make_tilted_ct_series(tmp_path / "tilted", gap=2.5, tilt_deg=20.0)
    out = tmp_path / "thin"
    res = CliRunner().invoke(app, ["interpolate", str(src), str(out), "--model", "linear"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {out} (12x24x24, spacing (1.25, 0.6615, 0.6615) mm)"
    written = {
        round(float(pydicom.dcmread(f, stop_before_pixels=True).SpacingBetweenSlices), 4)
        for f in out.iterdir()
    }
    assert written == {1.25}


def test_an_output_past_the_nifti1_axis_is_refused_before_the_work(tmp_path, monkeypatch):
    """16,400 slices ×2: 32,800 is more than a NIfTI-1 axis holds; the interpolation ran, then
    nibabel's HeaderDataError ended the command as a traceback. An output past the pixel
    ceiling (``MEDSR_MAX_PIXELS``) was computed in full: both are refused before the work, by
    the check medsr upscale makes (:func:`medsr.io.limits.check_output_size`)."""
    import nibabel as nib
    from typer.testing import CliRunner

    from medsr.errors import InputTooLargeError
    from medsr.interpolation.cli import register
    from medsr.io import save_image
    from tests.conftest import cli_app

    src = tmp_path / "tall.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 16400), np.int16), np.eye(4)), src)
    out = tmp_path / "out.nii"
    res = CliRunner().invoke(cli_app(register), ["interpolate", str(src), str(out), "-m", "linear"])
    assert res.exit_code == 2, res.output
    assert (
        "error: the output would be 32800 × 2 × 2 samples; a NIfTI-1 axis holds at most 32,767"
        in res.output
    )
    assert not out.exists()
    small = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 300), np.int16), np.eye(4)), small)
    monkeypatch.setenv("MEDSR_MAX_PIXELS", "2000")  # the input's 1,200 values pass; 2,400 do not
    res = CliRunner().invoke(
        cli_app(register), ["interpolate", str(small), str(out), "-m", "linear"]
    )
    assert res.exit_code == 2 and "error: the output would hold 2,400 values" in res.output
    assert not out.exists()
    image = MedImage(np.zeros((32768, 1, 1), np.float32), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(InputTooLargeError, match="NIfTI-1 axis"):  # the writer's own check
        save_image(image, tmp_path / "direct.nii")
    assert not (tmp_path / "direct.nii").exists()


def _ct_series(folder, levels=(0,), positions=4, size=12, **attrs):
    """One folder of DICOM CT series built from CT_small's header (tests.io.conftest): one
    series per ``levels`` entry, each ``positions`` slices 4 mm apart whose values are raised by
    that level. With ``phases`` (an int) in ``attrs`` the one series is a gated cardiac cine:
    each position at that many phases (TriggerTime ``40·k + 5·p`` ms, CardiacNumberOfImages),
    phase k's values scaled ``k + 1``× and raised ``300·k`` (a range of its own) and a corner
    stored −2000 = PixelPaddingValue (no data). Returns the folder and the series' keys."""
    import pydicom
    from pydicom.uid import generate_uid

    from medsr.io.dicom import series_key
    from tests.io.conftest import dicom_corpus_path, make_ct_slice, write_series

    template = pydicom.dcmread(dicom_corpus_path("CT_small.dcm"))
    phases = attrs.pop("phases", None)
    yy, xx = np.mgrid[:size, :size]
    datasets, keys = [], []
    for level in levels:
        uid = generate_uid()
        keys.append(series_key(uid))
        for k in range(phases or 1):
            for p in range(positions):
                pixels = (yy * 7 + xx * 3 + 40 * p) * (k + 1) + 1024 + 300 * k + level
                if phases:
                    pixels[:2, :3] = -2000
                ds = make_ct_slice(
                    template, pixels=pixels.astype(np.int16), ipp=(0, 0, 4.0 * p),
                    series_uid=uid, instance=len(datasets) + 1,
                )  # fmt: skip
                if phases:
                    ds.PixelPaddingValue = -2000
                    ds.TriggerTime = 40 * k + 5 * p
                    ds.CardiacNumberOfImages = phases
                datasets.append(ds)
    return write_series(folder, datasets), keys


def test_an_image_over_time_is_interpolated_time_point_by_time_point(tmp_path):
    """A cardiac cine read whole (``series_uid="KEY:all"``, ``(T, Z, Y, X)``) was refused
    ("slice interpolation takes one volume; this is an image over time"). Each phase is now
    interpolated on its own, never across time: exactly (to the bit) what interpolating that
    phase alone (``KEY:N``) gives — its padding, fill value and normalisation its own, although
    the phases' ranges differ — for the baseline and the shipped network; one image over
    time on the one grid comes back. Its uncertainty map and error bound are refused."""
    from medsr.io.dicom import read_dicom

    folder, (key,) = _ct_series(tmp_path / "cine", phases=3)
    image = read_dicom(folder, series_uid=f"{key}:all")
    assert image.channels == "time" and image.array.shape == (3, 4, 12, 12)
    phases = [read_dicom(folder, series_uid=f"{key}:{k + 1}") for k in range(3)]
    for model in ("linear", "interp-cnn"):
        timing: dict[str, float] = {}
        out = interpolate_slices(image, model, 2, timing=timing)
        assert out.channels == "time" and out.array.shape == (3, 8, 12, 12), model
        assert out.spacing == pytest.approx((2.0, 0.5, 0.5))
        np.testing.assert_allclose(out.affine, interpolate_slices(phases[0], model, 2).affine)
        alone = [interpolate_slices(phase, model, 2) for phase in phases]
        for k in range(3):
            np.testing.assert_array_equal(out.array[k], alone[k].array, err_msg=f"{model} {k}")
        assert (out.array[:, :, :2, :3] == image.array[:, :1, :2, :3]).all()  # padding exact
        assert timing["slices_predicted"] == 3 * (8 if model == "linear" else 9)  # 4 → 7 → 13
    # its maps are one volume's: refused, not a mean over the phases that bounds none of them
    from medsr.errors import InvalidParameterError
    from medsr.interpolation.core import calibrate_interpolation_bound, interpolation_uncertainty

    for maps in (interpolation_uncertainty, calibrate_interpolation_bound):
        with pytest.raises(InvalidParameterError, match=r"image over time \(3 time points"):
            maps(image, "linear", 2)


def test_cli_interpolates_a_cine_into_one_series_over_time(tmp_path):
    """`medsr interpolate CINE OUT --series KEY:all` writes ONE derived series of 3 phases × 8
    slices (as `medsr upscale --through-plane --series KEY:all` does): one Series Instance UID,
    instances numbered phase by phase, each slice's header from its own phase's nearest source
    slice (that phase's TriggerTime); read back whole, it is the interpolated image over time.
    `--maps` of an image over time is refused with one `error:` line (every map is one volume),
    nothing written."""
    import pydicom
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.io.dicom import read_dicom

    folder, (key,) = _ct_series(tmp_path / "cine", phases=3)
    out = tmp_path / "thin"
    res = CliRunner().invoke(
        app, ["interpolate", str(folder), str(out), "--series", f"{key}:all", "-m", "linear"]
    )
    assert res.exit_code == 0, res.output
    assert (
        res.output.strip() == f"wrote {out} (3 time points of 8x12x12, spacing (2.0, 0.5, 0.5) mm)"
    )
    written = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    assert len(written) == 24 and len({ds.SeriesInstanceUID for ds in written}) == 1
    assert [int(ds.InstanceNumber) for ds in written] == list(range(1, 25))
    assert [float(ds.TriggerTime) for ds in written] == [
        40 * k + 5 * p for k in range(3) for p in (0, 0, 1, 1, 2, 2, 3, 3)
    ]
    back = read_dicom(out, series_uid=":all")
    want = interpolate_slices(read_dicom(folder, series_uid=f"{key}:all"), "linear", 2)
    assert back.channels == "time" and back.array.shape == (3, 8, 12, 12)
    np.testing.assert_allclose(back.array, want.array, atol=0.5)  # stored as integers

    maps = tmp_path / "maps"
    res = CliRunner().invoke(
        app,
        ["interpolate", str(folder), str(tmp_path / "o2"), "--series", ":all", "--maps", str(maps)],
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "this is an image over time (3 time points of 4 slices)" in lines[0]
    assert "interpolate it without --maps, or read one time point (--series KEY:N" in lines[0]
    assert not (tmp_path / "o2").exists() and not maps.exists()


def test_a_4d_nifti_is_interpolated_time_point_by_time_point(tmp_path):
    """`medsr interpolate` of a 4-D NIfTI (a dynamic series over time) was refused; it writes a
    4-D NIfTI whose every time point is what interpolating that time point's 3-D volume gives
    (``test_an_image_over_time_is_refused_with_what_to_do`` asserted the refusal). A folder
    output (a DICOM series, which a NIfTI over time cannot become) is refused before the work,
    one `error:` line, as medsr upscale refuses it."""
    import nibabel as nib
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.io import load_image

    series = np.random.default_rng(0).normal(100, 10, (8, 8, 3, 2)).astype(np.float32)
    series[..., 1] = 3 * series[..., 1] + 500  # a time point of another range
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(series, affine), tmp_path / "dyn.nii.gz")
    out = tmp_path / "o.nii.gz"
    res = CliRunner().invoke(app, ["interpolate", str(tmp_path / "dyn.nii.gz"), str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().startswith(f"wrote {out} (2 time points of 6x8x8, spacing (2.0,")
    written = np.asarray(nib.load(out).dataobj)
    assert written.shape == (8, 8, 6, 2)
    for t in range(2):
        nib.save(nib.Nifti1Image(series[..., t], affine), tmp_path / f"t{t}.nii.gz")
        alone = interpolate_slices(load_image(tmp_path / f"t{t}.nii.gz"), "interp-cnn", 2)
        np.testing.assert_array_equal(written[..., t], alone.array.transpose(2, 1, 0))
    res = CliRunner().invoke(
        app, ["interpolate", str(tmp_path / "dyn.nii.gz"), str(tmp_path / "dcm"), "-m", "linear"]
    )
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: DICOM output supports grayscale or RGB images")
    assert not (tmp_path / "dcm").exists()


def test_cli_series_picks_one_of_two_series_to_interpolate(tmp_path):
    """A folder of two series: `medsr interpolate` refused it with "Choose one with --series
    KEY", an option it did not have ("No such option: --series"): a dead end. `--series`
    reads the one named, as `medsr upscale --series` does (the reader's one grammar: a key it
    does not hold is one `error:` line listing those it holds)."""
    from typer.testing import CliRunner

    from medsr.cli import app
    from medsr.io import load_image

    folder, keys = _ct_series(tmp_path / "two", levels=(0, 1000))
    res = CliRunner().invoke(app, ["interpolate", str(folder), str(tmp_path / "a"), "-m", "linear"])
    assert res.exit_code == 2 and "Choose one with --series KEY" in res.output, res.output
    for key, level in zip(keys, (0, 1000), strict=True):
        out = tmp_path / f"thin_{key}.nii.gz"
        res = CliRunner().invoke(
            app, ["interpolate", str(folder), str(out), "--series", key, "-m", "linear"]
        )
        assert res.exit_code == 0, res.output
        want = interpolate_slices(load_image(folder, series_uid=key), "linear", 2)
        np.testing.assert_allclose(load_image(out).array, want.array, atol=0.5)
        assert abs(float(want.array.mean()) - (level + 115)) < 1  # the series named
    res = CliRunner().invoke(
        app, ["interpolate", str(folder), str(tmp_path / "b"), "--series", "0badc0de"]
    )
    assert res.exit_code == 2, res.output
    assert res.output.strip() == (
        f"error: series '0badc0de' is not in 'two'; it holds: {keys[0]} (CT, 4 files); "
        f"{keys[1]} (CT, 4 files)"
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
