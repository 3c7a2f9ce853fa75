"""The error bound of an interpolated volume: calibrated one scale down, against a truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsr.degradations import degrade_image
from medsr.errors import InvalidParameterError
from medsr.image import MedImage
from medsr.interpolation.core import interpolation_uncertainty
from medsr.io import load_image
from medsr.safeguards.error_bound import COVERAGE
from tests.conftest import padded_ct

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def aniso_pair():
    """dipy's aniso_vox (never trained on by the shipped interpolator) as the truth, 24 slices
    on a 24² crop, and its ×2 Gaussian thick-slice degradation (``medsr evaluate
    --interpolation``'s protocol) as the input: 12 slices."""
    from tests.conftest import corpus_path

    ref = load_image(corpus_path("aniso_vox.nii.gz")).replace(modality="MR")
    ref = ref.replace(array=np.ascontiguousarray(ref.array[:, 17:41, 17:41]))
    thick = degrade_image(ref, "thick-slice", 2, generator=0, profile="gaussian", thickness=2)
    return ref, thick


@pytest.mark.parametrize("model", ["linear", "cubic"])
def test_the_bound_holds_for_most_voxels_of_a_volume_it_has_not_seen(aniso_pair, model):
    """``medsr interpolate --maps`` wrote only the TTA spread, 0 for the baselines and never
    checked against a truth. The bound, calibrated on the input made thick once more and
    interpolated back by the same model, holds for about 90 % of the truth's voxels."""
    ref, thick = aniso_pair
    out, std, summary = interpolation_uncertainty(thick, model, 2)
    bound = out.meta["maps"]["error_bound"]
    assert bound.shape == out.array.shape == ref.array.shape and bound.dtype == np.float32
    info = summary["error_bound"]
    assert info["calibrated"] and info["coverage"] == COVERAGE and info["factor"] > 0
    assert info["calibration"]["slices"] == "6 made 12"
    assert info["noise_sigma"]["mean"] > 0 and info["map"]["units"] == out.units
    assert "measured slices" in info["spread"]
    err = np.abs(out.array - ref.array)[2:-2]  # the ends repeat the end slices
    assert 0.8 <= np.mean(err <= bound[2:-2]) <= 0.99
    assert np.mean(err <= 2 * std[2:-2]) < 0.5  # the TTA spread alone: 0 for a baseline


def test_the_bound_follows_an_affine_intensity_change(aniso_pair):
    """Interpolation, noise and spread are in the image's units: ``a·x + b`` gives ``a·bound``."""
    _, thick = aniso_pair
    a, b = 12.0, -3000.0
    out, _, _ = interpolation_uncertainty(thick, "linear", 2, tta=False)
    out2, _, _ = interpolation_uncertainty(
        thick.replace(array=thick.array * a + b), "linear", 2, tta=False
    )
    bound, bound2 = out.meta["maps"]["error_bound"], out2.meta["maps"]["error_bound"]
    np.testing.assert_allclose(bound2, a * bound, rtol=1e-3, atol=1e-3 * a * float(bound.max()))


def test_no_data_gets_a_bound_of_zero_and_is_not_summarised():
    """A CT's fill outside the scan circle is kept exact: its bound is 0, the measured voxels'
    is not, the fill's −3024 step is no noise, and the summary is over the held voxels."""
    image, circle = padded_ct(16, 16)
    arr = image.array
    out, _, summary = interpolation_uncertainty(image, "cubic", 2, tta=False)
    bound = out.meta["maps"]["error_bound"]
    pad = np.broadcast_to(~circle, bound.shape)
    assert (bound[pad] == 0).all() and (bound[~pad] > 0).all()
    info = summary["error_bound"]
    assert info["noise_sigma"]["max"] < 50  # HU: the fill's step left out
    assert info["map"]["mean"] == pytest.approx(float(bound[~pad].mean()), rel=1e-5)
    assert info["map"]["data_range"] == pytest.approx(float(np.ptp(arr[:, circle])), rel=1e-5)


def test_along_y_and_too_few_slices():
    """Along y the bound is on the output's grid; five slices ×2 leave two one scale down: no
    bound, and the summary says why; ``error_bound=False`` does not try; an unknown spread is
    refused."""
    rng = np.random.default_rng(0)
    vol = MedImage(
        rng.normal(100, 5, (6, 10, 8)).astype(np.float32), spacing=(1.0, 3.0, 1.0), modality="MR"
    )
    out, _, summary = interpolation_uncertainty(vol, "linear", 2, axis="y", tta=False)
    assert out.meta["maps"]["error_bound"].shape == (6, 20, 8)
    assert summary["error_bound"]["calibration"]["slices"] == "5 made 10"
    few = vol.replace(array=vol.array[:, :5])
    out, _, summary = interpolation_uncertainty(few, "linear", 2, axis="y", tta=False)
    assert "maps" not in out.meta and summary["error_bound"]["calibrated"] is False
    assert "2; at least 3 needed" in summary["error_bound"]["reason"]
    _, _, summary = interpolation_uncertainty(vol, "linear", 2, tta=False, error_bound=False)
    assert "error_bound" not in summary
    with pytest.raises(InvalidParameterError, match="unknown spread"):
        interpolation_uncertainty(vol, "linear", 2, spread="edges")


def test_a_rerun_gives_the_same_record_and_keeps_its_run_time_in_timing_ms():
    """The same volume and settings twice: the same summary (``medsr interpolate --maps``'s
    summary.json) but for its ``timing_ms``; the bound's calibration time was in its record as
    ``error_bound.ms``, so two runs of one command wrote different records."""
    rng = np.random.default_rng(0)
    vol = MedImage(
        rng.normal(100, 5, (6, 10, 8)).astype(np.float32), spacing=(3.0, 1.0, 1.0), modality="MR"
    )
    runs = [interpolation_uncertainty(vol, "linear", 2, tta=False)[2] for _ in range(2)]
    assert runs[0]["timing_ms"]["error_bound"] >= 0 and "ms" not in runs[0]["error_bound"]
    same = [json.dumps({k: v for k, v in r.items() if k != "timing_ms"}) for r in runs]
    assert same[0] == same[1]


def test_cli_writes_the_error_bound_beside_the_uncertainty_map(tmp_path, aniso_pair):
    """``medsr interpolate --maps DIR``: error_bound.nii.gz on the output's grid and its record
    in summary.json."""
    import typer
    from typer.testing import CliRunner

    from medsr.interpolation.cli import register
    from medsr.io import save_image

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:
        pass

    src = save_image(aniso_pair[1], tmp_path / "thick.nii.gz")
    res = CliRunner().invoke(
        app,
        ["interpolate", str(src), str(tmp_path / "thin.nii.gz"), "--model", "linear",
         "--maps", str(tmp_path / "maps")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    bound = load_image(tmp_path / "maps" / "error_bound.nii.gz")
    out = load_image(tmp_path / "thin.nii.gz")
    assert bound.spatial_shape == out.spatial_shape
    np.testing.assert_allclose(bound.spacing, out.spacing, rtol=1e-5)
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    assert summary["error_bound"]["calibrated"] and summary["error_bound"]["factor"] > 0
    assert summary["timing_ms"]["error_bound"] >= 0
