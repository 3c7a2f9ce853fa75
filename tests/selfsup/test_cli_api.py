"""`medsr upscale --method zero-shot / --through-plane`, upscale_file, and `medsr evaluate` modes."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medsr.api import upscale_file
from medsr.cli import _parse_duration, app
from medsr.errors import InvalidParameterError
from medsr.io import load_image
from tests._entry import run_medsr

runner = CliRunner()


def _nifti_volume(path, z=6, y=20, x=18, spacing=(1.0, 1.0, 3.0)):
    zz, yy, xx = np.mgrid[:x, :y, :z]  # NIfTI stores (x, y, z)
    data = (100 + 50 * np.sin(xx / 3.0) * np.cos(yy / 4.0 + zz / 2.0)).astype(np.float32)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = (-9.0, 4.0, 12.0)
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def _medsr(*args: str) -> subprocess.CompletedProcess[str]:
    return run_medsr(*args, timeout=180)


def test_parse_duration():
    assert (
        _parse_duration("60s") == 60
        and _parse_duration("2m") == 120
        and _parse_duration("90") == 90
    )
    assert (
        _parse_duration("1m30s") == 90
        and _parse_duration("1h") == 3600
        and _parse_duration("0.5") == 0.5
    )
    for bad in ("0s", "-5", "abc", "10x", "", "1 2"):
        with pytest.raises(InvalidParameterError):
            _parse_duration(bad)


def test_cli_zero_shot_in_plane(tmp_path, corpus):
    out = tmp_path / "mr_x2.nii.gz"
    res = runner.invoke(
        app,
        [
            "upscale",
            str(corpus("MR_small.dcm")),
            str(out),
            "--method",
            "zero-shot",
            "--budget",
            "2s",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    image = load_image(out)
    assert image.spatial_shape == (1, 128, 128)
    np.testing.assert_allclose(image.spacing[1:], (0.15625, 0.15625), rtol=1e-5)
    sidecar = json.loads((tmp_path / "mr_x2.json").read_text())
    assert sidecar["derivation"]["method"] == "zero-shot self-supervised"


def test_cli_through_plane_nifti(tmp_path):
    src = _nifti_volume(tmp_path / "thick.nii.gz")
    out = tmp_path / "iso.nii.gz"
    res = runner.invoke(
        app,
        [
            "upscale",
            str(src),
            str(out),
            "--through-plane",
            "--adapt",
            "2",
            "--target-spacing",
            "1.5",
        ],
    )
    assert res.exit_code == 0, res.output
    before, after = load_image(src), load_image(out)
    assert after.spatial_shape == (12, 20, 18)
    np.testing.assert_allclose(after.spacing, (1.5, 1.0, 1.0), rtol=1e-5)
    np.testing.assert_allclose(after.world_center(), before.world_center(), atol=1e-4)


def test_cli_errors_exit_2_and_write_nothing(tmp_path, corpus):
    png = corpus("camera.png")
    cases = [
        (
            ["upscale", str(png), str(tmp_path / "a.png"), "--through-plane"],
            "2-D slice",
        ),
        (
            ["upscale", str(png), str(tmp_path / "a2.png"), "--through-plane", "--adapt", "-5"],
            "--adapt must be a whole number",
        ),
        (
            [
                "upscale",
                str(png),
                str(tmp_path / "a3.png"),
                "--through-plane",
                "--target-spacing",
                "0",
            ],
            "more than 0",
        ),
        (
            ["upscale", str(png), str(tmp_path / "a4.png"), "--through-plane", "--budget", "2s"],
            "--adapt STEPS",
        ),
        (["upscale", str(png), str(tmp_path / "a5.png"), "--adapt", "3"], "--through-plane only"),
        (
            [
                "upscale",
                str(png),
                str(tmp_path / "b.png"),
                "--method",
                "zero-shot",
                "--budget",
                "0s",
            ],
            "more than 0",
        ),
        (["upscale", str(png), str(tmp_path / "c.png"), "--method", "magic"], "method"),
        (["upscale", str(png), str(tmp_path / "d.png"), "--target-spacing", "1"], "through-plane"),
        (
            [
                "upscale",
                str(png),
                str(tmp_path / "e.png"),
                "--method",
                "zero-shot",
                "--init",
                "default",
                "--scale",
                "3",  # residual5-x2 ships; no residual5-x3 to start from
            ],
            "no default",
        ),
        (  # a classical interpolator has nothing to learn: it trained residual5 silently
            [
                "upscale",
                str(png),
                str(tmp_path / "f.png"),
                "--method",
                "zero-shot",
                "--model",
                "bicubic",
            ],
            "classical interpolator with nothing to learn",
        ),
    ]
    for args, match in cases:
        res = _medsr(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("error:") and match in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())


def test_upscale_file_api_options(tmp_path, corpus):
    with pytest.raises(InvalidParameterError, match="init"):
        upscale_file(corpus("MR_small.dcm"), tmp_path / "x.nii.gz", init="w.safetensors")
    with pytest.raises(InvalidParameterError, match="--init"):
        upscale_file(
            corpus("MR_small.dcm"), tmp_path / "x.nii.gz", method="zero-shot", model="w.safetensors"
        )
    written = upscale_file(
        corpus("MR_small.dcm"),
        tmp_path / "x.nii.gz",
        method="zero-shot",
        budget_s=None,
        epochs=1,
        patches_per_epoch=4,
        progress=False,
        model="vdsr",
        model_kwargs={"num_features": 8, "num_blocks": 3},
    )
    assert load_image(written).spatial_shape == (1, 128, 128)
    assert not list(tmp_path.glob("*.tmp*"))


def test_evaluate_through_plane_and_zero_shot_pseudo_model(tmp_path, corpus):
    from medsr.reports.evaluate import evaluate

    vol = _nifti_volume(tmp_path / "ref.nii.gz", z=16, y=24, x=24, spacing=(1.0, 1.0, 1.0))
    zs = {
        "budget_s": None,
        "epochs": 1,
        "patches_per_epoch": 8,
        "model_kwargs": {"num_features": 8},
    }
    res = evaluate(
        [vol],
        models=["bicubic", "lanczos", "zero-shot"],
        scale=4,
        degradation="thick-slice",
        out_dir=tmp_path / "tp",
        progress=False,
        zero_shot=zs,
    )
    assert res.baseline == "linear-z" and res.models == ["linear-z", "cubic-z", "zero-shot"]
    summary = json.loads((tmp_path / "tp" / "summary.json").read_text())
    assert "gain_psnr_3d_vs_linear-z" in summary["models"]["zero-shot"]
    assert any("lanczos" in name for name, _ in res.skipped)
    assert (tmp_path / "tp" / "figures" / "ref.nii.gz_reformats.png").exists()
    assert "linear-z" in (tmp_path / "tp" / "report.md").read_text()

    res2 = evaluate(
        [corpus("MR_small.dcm")],
        models=["zero-shot"],
        scale=2,
        degradation="bicubic",
        out_dir=tmp_path / "ip",
        progress=False,
        figures=False,
        zero_shot=zs,
    )
    assert res2.models == ["bicubic", "zero-shot"] and np.isfinite(
        res2.images[0].metrics["zero-shot"]["psnr"]
    )


def test_cli_evaluate_thick_slice(tmp_path):
    vol = _nifti_volume(tmp_path / "ref.nii.gz", z=12, y=20, x=20, spacing=(1.0, 1.0, 1.0))
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(vol),
            "--scale",
            "3",
            "--degradation",
            "thick-slice",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "linear-z" and set(summary["models"]) == {"linear-z", "cubic-z"}
    assert "ΔPSNR vs linear-z" in res.output


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_step_and_epoch_counts_are_clear_errors(value):
    """NaN/inf step or epoch counts (API callers) get medsr's error, not a ValueError."""
    from medsr.errors import InvalidParameterError
    from medsr.selfsup._fit import check_budget, check_positive_int, check_steps

    with pytest.raises(InvalidParameterError, match="whole number"):
        check_steps(value)
    with pytest.raises(InvalidParameterError, match="positive integer"):
        check_positive_int(value, "batch size")
    with pytest.raises(InvalidParameterError, match="positive integer"):
        check_budget(None, value)


def test_evaluate_through_plane_runs_a_shipped_slice_interpolator(tmp_path):
    """interp-cnn is one more method of the through-plane evaluator: the same thick input, the
    same grid and metrics as running it by hand."""
    from medsr.degradations import degrade_image
    from medsr.interpolation import interpolate_slices
    from medsr.metrics import data_range_for
    from medsr.reports.stats import slice_and_volume_metrics
    from medsr.reports.through_plane import evaluate_through_plane

    vol = _nifti_volume(tmp_path / "ref.nii.gz", z=16, y=24, x=24, spacing=(1.0, 1.0, 1.0))
    res = evaluate_through_plane(
        [vol], models=["interp-cnn", "default-x2"], scale=2, out_dir=tmp_path / "tp",
        device="auto", progress=False, figures=False,
    )  # fmt: skip
    assert res.models == ["linear-z", "interp-cnn"]
    assert any("default-x2" in name for name, _ in res.skipped)  # in-plane: not applicable
    ref = load_image(vol)
    sr = interpolate_slices(degrade_image(ref, "thick-slice", 2, generator=0), "interp-cnn", 2)
    keep = slice(2, 14)
    want = slice_and_volume_metrics(
        sr.array[keep], ref.array[keep], data_range_for(ref), 2, volume=True
    )
    got = res.images[0].metrics["interp-cnn"]
    assert got["psnr"] == pytest.approx(float(want["psnr"]), abs=1e-9)
    assert got["psnr"] != res.images[0].metrics["linear-z"]["psnr"]
    with pytest.raises(InvalidParameterError, match="unknown model 'interp-foo'"):
        evaluate_through_plane([vol], models=["interp-foo"], scale=2, out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before anything is written


#: a deterministic zero-shot run of a few patches (no time budget): fast, the same on any load
QUICK_ZS = {"budget_s": None, "epochs": 1, "patches_per_epoch": 4, "progress": False}


def test_zero_shot_file_writes_its_maps_and_honours_consistency(tmp_path, corpus):
    """``--maps`` and ``--consistency`` with ``--method zero-shot`` behave as with a model: the
    CLI printed "maps in DIR" and wrote no maps, and ``--consistency on`` was silently dropped
    (provenance: "off", no error measured)."""
    src = corpus("MR_small.dcm")
    out = upscale_file(
        src, tmp_path / "on.nii.gz", method="zero-shot", consistency="on",
        maps_dir=tmp_path / "maps", **QUICK_ZS,
    )  # fmt: skip
    assert (tmp_path / "maps" / "consistency.png").is_file()
    summary = json.loads((tmp_path / "maps" / "summary.json").read_text())
    cons = summary["consistency"]
    assert cons["setting"] == "on" and cons["applied"]
    assert cons["error"]["psnr_db"] > cons["error_before"]["psnr_db"]
    assert summary["training"]["steps"] == 1 and summary["training"]["reproducible"]
    side = json.loads((tmp_path / "on.json").read_text())
    assert side["provenance"]["consistency"] == "on"
    assert side["provenance"]["degradation"].startswith("kspace")  # MR's default, measured
    assert load_image(out).spatial_shape == (1, 128, 128)
    upscale_file(src, tmp_path / "auto.nii.gz", method="zero-shot", **QUICK_ZS)
    side = json.loads((tmp_path / "auto.json").read_text())
    assert side["provenance"]["consistency"] == "auto (measured only)"
    assert side["provenance"]["safeguards"]["consistency"]["error"]["psnr_db"] > 30


def test_a_zero_shot_rerun_gives_the_same_provenance_and_keeps_its_run_time_in_the_summary(
    tmp_path, corpus
):
    """The same input and settings once more: byte-identical provenance and derivation in the
    sidecar (the DICOM DerivationDescription's source), as a model's and the through-plane
    path's; the training's run time is in summary.json's ``timing_ms`` only (it was in both
    records as ``training.seconds``, so two runs of one command wrote different provenance)."""
    src = corpus("MR_small.dcm")
    sides, summaries = [], []
    for run in ("a", "b"):
        upscale_file(
            src, tmp_path / f"{run}.nii.gz", method="zero-shot", maps_dir=tmp_path / run,
            model_kwargs={"num_features": 8}, patch_size=32, **QUICK_ZS,
        )  # fmt: skip
        sides.append(json.loads((tmp_path / f"{run}.json").read_text()))
        summaries.append(json.loads((tmp_path / run / "summary.json").read_text()))
    for key in ("provenance", "derivation"):
        assert json.dumps(sides[0][key]) == json.dumps(sides[1][key]), key
    assert "seconds" not in json.dumps(sides[0]) and "timing_ms" not in json.dumps(sides[0])
    assert summaries[0]["timing_ms"]["training"] > 0
    assert "seconds" not in summaries[0]["training"] and summaries[0]["training"]["steps"] == 1


def test_zero_shot_budget_too_short_for_one_step_says_so(tmp_path, corpus):
    """A budget that ends before the first optimiser step gave plain cubic interpolation
    labelled as a zero-shot network, with no word; now a warning says so (and the record shows
    0 steps)."""
    res = runner.invoke(
        app,
        [
            "upscale", str(corpus("MR_small.dcm")), str(tmp_path / "o.nii.gz"),
            "--method", "zero-shot", "--budget", "0.000001", "--device", "cpu",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "warning: the training budget ran out before the network's first training step" in (
        res.stderr
    )
    assert "cubic interpolation" in res.stderr
    side = json.loads((tmp_path / "o.json").read_text())
    training = side["derivation"]["training"]
    assert training["steps"] == 0 and training["reproducible"] is False


def test_zero_shot_keeps_the_nan_of_a_npy_as_no_data(tmp_path):
    """A ``.npy`` with NaN (no data) was refused by zero-shot ("the image contains NaN or
    infinite values") while ``--method model`` keeps it; now each NaN pixel's block stays NaN
    and the rest is finite, within the measured range."""
    rng = np.random.default_rng(0)
    arr = (100 + 10 * rng.standard_normal((32, 32))).astype(np.float32)
    arr[:4, :6] = np.nan
    np.save(tmp_path / "in.npy", arr)
    before = (tmp_path / "in.npy").read_bytes()
    upscale_file(tmp_path / "in.npy", tmp_path / "out.npy", method="zero-shot", **QUICK_ZS)
    out = np.load(tmp_path / "out.npy")
    nan = np.zeros((64, 64), bool)
    nan[:8, :12] = True
    assert out.shape == (64, 64) and (np.isnan(out) == nan).all()
    assert np.nanmin(arr) <= out[~nan].min() and out[~nan].max() <= np.nanmax(arr)
    assert (tmp_path / "in.npy").read_bytes() == before


def test_zero_shot_warns_of_an_unstated_pixel_spacing_as_a_model_does(tmp_path, corpus):
    """An input without PixelSpacing (read as 1 mm) makes ``--method model`` warn that its
    DICOM output states none either; zero-shot wrote the same output without a word."""
    said: list[str] = []
    upscale_file(
        corpus("emri_small.dcm"), tmp_path / "o.nii.gz", method="zero-shot",
        warnings_out=said, **QUICK_ZS,
    )  # fmt: skip
    assert any("states no pixel spacing" in w for w in said), said
    said.clear()
    upscale_file(corpus("MR_small.dcm"), tmp_path / "p.nii.gz", method="zero-shot",
                 warnings_out=said, **QUICK_ZS)  # fmt: skip
    assert not any("pixel spacing" in w for w in said), said
