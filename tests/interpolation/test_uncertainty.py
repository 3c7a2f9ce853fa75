"""Uncertainty maps of slice interpolation: TTA spread, plus the sample spread of diffusion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.interpolation.core import (
    DIFFUSION_SAMPLES,
    interpolate_slices,
    interpolation_uncertainty,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _volume(z: int = 3, y: int = 8, x: int = 8) -> MedImage:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    arr = 100 * np.sin(zz / 2 + yy / 3) + 50 * np.cos(xx / 4) + rng.normal(0, 1, (z, y, x))
    return MedImage(arr.astype(np.float32), spacing=(3.0, 1.0, 1.0), modality="MR")


def _tiny(name: str):
    from medsr.models.registry import create_model

    torch.manual_seed(0)
    kw = (
        {"channels": [8, 16], "norm_num_groups": 4}
        if name == "fast-ddpm"
        else {"num_features": 8, "num_blocks": 1}
    )
    net = create_model(name, **kw).eval()
    net.card = {"architecture": name, "kwargs": kw}
    return net


def test_diffusion_map_includes_the_spread_of_seeded_samples():
    img = _volume()
    net = _tiny("fast-ddpm")
    assert net.stochastic and DIFFUSION_SAMPLES == 4
    out, std, summary = interpolation_uncertainty(img, net, 2, tta=False, seed=7)
    # the output is the plain interpolation; the map lives on its grid
    np.testing.assert_array_equal(out.array, interpolate_slices(img, net, 2, seed=7).array)
    assert std is not None and std.shape == out.spatial_shape == (6, 8, 8)
    assert std.mean() > 0  # cell-centred output: every slice is predicted
    unc = summary["uncertainty"]
    assert unc["stochastic"] and unc["samples"] == DIFFUSION_SAMPLES
    assert unc["sample_std_mean"] > 0 and unc["sample_std_max"] >= unc["sample_std_mean"]
    assert unc["map"]["over"] == "output slices" and unc["map"]["mean"] > 0
    assert summary["model"] == "fast-ddpm" and summary["factor"] == 2 and summary["axis"] == "z"
    json.dumps(summary)
    _, _, two = interpolation_uncertainty(img, net, 2, tta=False, samples=2)
    assert two["uncertainty"]["samples"] == 2


@pytest.mark.parametrize("name", ["linear", "interp-cnn"])
def test_deterministic_interpolators_draw_no_samples(name):
    img = _volume()
    model = name if name == "linear" else _tiny(name)
    out, std, summary = interpolation_uncertainty(img, model, 2)
    unc = summary["uncertainty"]
    assert not unc["stochastic"] and "samples" not in unc and "sample_std_mean" not in unc
    assert unc["transforms"] == 8 and std.shape == out.spatial_shape
    if name == "linear":  # equivariant: no spread
        assert float(std.max()) < 1e-3
    else:  # a random CNN is not equivariant: its TTA spread shows
        assert float(std.max()) > 0
    _, _, asked = interpolation_uncertainty(img, model, 2, tta=False, samples=3)
    assert asked["uncertainty"]["samples"] == 0 and "samples_skipped" in asked["uncertainty"]


def test_in_plane_slice_axes_keep_their_axis_under_tta():
    img = _volume(6, 3, 5)
    out, std, summary = interpolation_uncertainty(img, "cubic", 2, axis="y")
    assert summary["uncertainty"]["transforms"] == 4 and summary["axis"] == "y"
    assert std.shape == out.spatial_shape == (6, 6, 5)
    with pytest.raises(InvalidParameterError, match="samples"):
        interpolation_uncertainty(img, "linear", 2, samples=-1)


def test_cli_writes_the_uncertainty_map_and_summary(tmp_path):
    import typer
    from typer.testing import CliRunner

    from medsr.interpolation.cli import register
    from medsr.io import save_image
    from medsr.models.weights import save_model

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:
        pass

    net = _tiny("fast-ddpm")
    weights = save_model(net, tmp_path / "ddpm.safetensors", {**net.card, "name": "tiny-ddpm"})
    src = save_image(_volume(3, 8, 8), tmp_path / "in.nii.gz")
    res = CliRunner().invoke(
        app,
        ["interpolate", str(src), str(tmp_path / "out.nii.gz"), "--model", str(weights),
         "--maps", str(tmp_path / "maps")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "maps" / "uncertainty.nii.gz").is_file()
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    assert summary["uncertainty"]["samples"] == DIFFUSION_SAMPLES
    assert summary["uncertainty"]["sample_std_mean"] > 0
    assert summary["uncertainty"]["transforms"] == 8


def test_the_map_summary_is_over_the_voxels_that_hold_data():
    """A CT whose scan circle is filled with −3024 HU (a sixth of each slice): its output keeps
    the fill exact, so the map is 0 there — and the summary counted those zeros (mean 1.46 HU
    against 2.30 over the measured voxels, on the shipped interpolator) and took its range from
    the fill up (3212 HU against 339), so every ``*_rel`` entry and ``frac_above`` were ~10×
    too small (0 % above the threshold, 6 % in truth). Now both are over the voxels that hold
    data, as ``medsr upscale --maps`` summarises its maps."""
    from medsr.slice_grid import no_data_kept

    rng = np.random.default_rng(1)
    z, h, w = 4, 16, 16
    yy, xx = np.mgrid[:h, :w]
    arr = (100 * np.sin(yy / 3 + xx / 5) + rng.normal(0, 5, (z, h, w))).astype(np.float32)
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    arr[:, ~circle] = -3024.0
    img = MedImage(arr, spacing=(2.0, 1.0, 1.0), modality="CT", units="HU")
    _, std, summary = interpolation_uncertainty(img, _tiny("interp-cnn"), 2)
    kept = no_data_kept(arr == -3024.0, 2 * z, 0)
    assert kept.any() and float(std[kept].max()) == 0.0  # kept exact: no spread there
    held = std[~kept]
    m = summary["uncertainty"]["map"]
    measured = float(np.ptp(arr[:, circle]))
    assert m["data_range"] == pytest.approx(measured, rel=1e-5)
    assert m["mean"] == pytest.approx(float(held.mean()), rel=1e-4)
    assert m["p99"] == pytest.approx(float(np.percentile(held, 99)), rel=1e-4)
    thr = m["threshold_rel"] * measured
    assert m["frac_above"] == pytest.approx(float((held > thr).mean()), abs=1e-6)
    assert m["over"] == f"output slices, the {held.size} voxels that hold data"
