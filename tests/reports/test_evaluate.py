"""medsr evaluate / degrade: reports with real numbers, figures, CI of paired gains."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.errors import EmptyInputError, InvalidParameterError
from medsr.reports.evaluate import evaluate, paired_gain

runner = CliRunner()


def test_paired_gain_ci():
    rng = np.random.default_rng(0)
    base = rng.normal(30, 2, 50)
    mean, lo, hi = paired_gain(base + 1.0 + rng.normal(0, 0.1, 50), base)
    assert lo < 1.0 < hi and abs(mean - 1.0) < 0.05
    assert np.isnan(paired_gain(np.array([1.0]), np.array([0.0]))[1])


def test_evaluate_report(tmp_path, corpus):
    res = evaluate(
        [corpus("camera.png"), corpus("anatomical.nii")],
        models=["lanczos", "kspace", "nearest"],
        scale=2,
        out_dir=tmp_path / "ev",
        progress=False,
    )
    out = tmp_path / "ev"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["model"] for r in rows} == {"bicubic", "lanczos", "kspace", "nearest"}
    assert {"psnr", "ssim", "mse", "mae", "nrmse", "psnr_3d"} <= {r["metric"] for r in rows}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 2
    # nearest-neighbour is clearly worse than bicubic on smooth anatomy; the report says so
    assert summary["models"]["nearest"]["gain_psnr_vs_bicubic"]["mean"] < -0.5
    assert summary["models"]["bicubic"]["psnr"]["mean"] > 20
    html = (out / "report.html").read_text()
    assert "ΔPSNR vs bicubic" in html and "figures/" in html
    for r in res.images:
        for f in r.figures:
            assert (out / f).stat().st_size > 5000
    assert any("reformats" in f for r in res.images for f in r.figures)  # the volume got reformats


def test_kspace_wins_on_kspace_truncated_mr(tmp_path, corpus):
    """On MR-style data (central k-space kept) zero-filled k-space interpolation beats bicubic."""
    evaluate(
        [corpus("anatomical.nii")],
        models=["kspace"],
        scale=2,
        degradation="kspace",
        out_dir=tmp_path,
        progress=False,
        figures=False,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["models"]["kspace"]["gain_psnr_vs_bicubic"]["mean"] > 0.3  # measured: +0.53 dB


def test_evaluate_skips_bad_files_and_fails_when_nothing_left(tmp_path, corpus):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(EmptyInputError, match="no image could be evaluated"):
        evaluate([tmp_path / "data"], out_dir=tmp_path / "ev", progress=False)


def test_cli_evaluate_and_degrade(tmp_path, corpus):
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(corpus("camera.png")),
            "--scale",
            "4",
            "--models",
            "lanczos",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "lanczos" in res.output and (tmp_path / "ev" / "report.md").is_file()
    out = tmp_path / "lr.nii.gz"
    res = runner.invoke(
        app,
        [
            "degrade",
            str(corpus("anatomical.nii")),
            str(out),
            "--kind",
            "kspace",
            "--scale",
            "2",
            "--param",
            "window=hamming",
        ],
    )
    assert res.exit_code == 0, res.output
    hr, lr = medsr.load_image(corpus("anatomical.nii")), medsr.load_image(out)
    assert lr.spatial_shape[1:] == (hr.spatial_shape[1] // 2, hr.spatial_shape[2] // 2)
    assert lr.spacing[1:] == pytest.approx((hr.spacing[1] * 2, hr.spacing[2] * 2), rel=1e-5)


def test_cli_degrade_bad_param(tmp_path, corpus):
    from tests.test_cli import medsr as run

    res = run(
        "degrade",
        str(corpus("camera.png")),
        str(tmp_path / "o.png"),
        "--kind",
        "bicubic",
        "--param",
        "nonsense",
    )
    assert res.returncode == 2 and "key=value" in res.stderr
    res = run("degrade", str(corpus("camera.png")), str(tmp_path / "o.png"), "--kind", "warp-drive")
    assert res.returncode == 2 and "unknown degradation" in res.stderr


def test_cli_degrade_never_writes_over_its_input(tmp_path, corpus):
    """Inputs are never modified: ``degrade IN IN --overwrite`` is refused, as upscale refuses it."""
    import shutil

    from tests.test_cli import medsr as run

    src = tmp_path / "camera.png"
    shutil.copy(corpus("camera.png"), src)
    before = src.read_bytes()
    res = run("degrade", str(src), str(src), "--kind", "bicubic", "--overwrite")
    assert res.returncode == 2 and "must not be the input" in res.stderr
    assert res.stderr.strip().count("\n") == 0  # one error line
    assert src.read_bytes() == before


# ----------------------------------------------------------------------------- fidelity maps
MAP_METRICS = ("consistency_mae", "consistency_max", "uncertainty_mean")


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    from tests.safeguards.conftest import make_weights

    return str(
        make_weights(tmp_path_factory.mktemp("w") / "tiny-net.safetensors", modalities=("CT", "MR"))
    )


def _map_values(out, metric):
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    return {(r["image"], r["model"]): float(r["value"]) for r in rows if r["metric"] == metric}


def test_evaluate_measures_and_shows_fidelity_maps(tmp_path, corpus, tiny_net):
    out = tmp_path / "ev"
    res = evaluate(
        [corpus("CT_small.dcm"), corpus("MR_small.dcm")],
        models=["lanczos", tiny_net],
        scale=2,
        degradation="auto",
        out_dir=out,
        progress=False,
        device="cpu",
    )
    models = ("bicubic", "lanczos", tiny_net)
    for metric in (*MAP_METRICS, "maps_seconds"):
        values = _map_values(out, metric)
        assert set(values) == {
            (img, m) for img in ("CT_small.dcm", "MR_small.dcm") for m in models
        }, metric
        assert all(np.isfinite(v) and v >= 0 for v in values.values()), metric
    unc = _map_values(out, "uncertainty_mean")
    cons = _map_values(out, "consistency_mae")
    for img in ("CT_small.dcm", "MR_small.dcm"):
        # interpolators are equivariant (std ~ rounding); an untrained network is not
        assert unc[(img, "lanczos")] < 1e-3 < unc[(img, tiny_net)]
        assert 0 < cons[(img, "lanczos")] < cons[(img, tiny_net)]
        assert _map_values(out, "consistency_max")[(img, "bicubic")] >= cons[(img, "bicubic")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["consistency"] == "off" and summary["maps"] is True
    assert summary["consistency_degradation"] == {
        "CT_small.dcm": "ct-detector (sigma=1.0)",
        "MR_small.dcm": "kspace",
    }
    for m in models:  # a CT in HU and an MR in a.u.: no mean of an error across them
        assert summary["models"][m]["consistency_mae"]["mixed_units"] == ["HU", "a.u."]
        assert summary["models"][m]["maps_seconds_per_image"] >= 0
    html = (out / "report.html").read_text()
    assert "Fidelity to the input" in html and "TTA uncertainty" in html
    md = (out / "report.md").read_text()
    assert "## Fidelity to the input" in md
    figures = [f for r in res.images for f in r.figures]
    assert len(figures) == 2
    for f in figures:
        assert f'<img src="{f}"' in html
        assert (out / f).stat().st_size > 20000
        from PIL import Image

        with Image.open(
            out / f
        ) as im:  # five rows (images, zoom, |error|, consistency, uncertainty)
            assert im.height > 1.5 * 110 * 7.4


def test_evaluate_consistency_on_lowers_the_consistency_error(tmp_path, corpus, tiny_net):
    files = [corpus("CT_small.dcm"), corpus("MR_small.dcm")]
    common = {
        "models": ["lanczos", tiny_net],
        "scale": 2,
        "degradation": "auto",
        "progress": False,
        "figures": False,
        "device": "cpu",
    }
    evaluate(files, out_dir=tmp_path / "off", **common)
    evaluate(files, out_dir=tmp_path / "on", consistency="on", **common)
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["consistency"] == "on"
    for metric in ("consistency_mae", "consistency_max"):
        off, on = _map_values(tmp_path / "off", metric), _map_values(tmp_path / "on", metric)
        assert set(on) == set(off)
        for key in off:
            assert on[key] < 0.5 * off[key], (metric, key, on[key], off[key])
    # the projection changes the output, not the model: its uncertainty is the same
    assert _map_values(tmp_path / "on", "uncertainty_mean") == _map_values(
        tmp_path / "off", "uncertainty_mean"
    )
    with pytest.raises(InvalidParameterError, match="on' or 'off"):
        evaluate(files, out_dir=tmp_path / "x", consistency="sometimes", progress=False)


def test_evaluate_without_maps(tmp_path, corpus):
    evaluate(
        [corpus("MR_small.dcm")], models=["lanczos"], out_dir=tmp_path, progress=False, maps=False
    )
    metrics = {r["metric"] for r in csv.DictReader(open(tmp_path / "metrics.csv"))}
    assert not metrics & {*MAP_METRICS, "maps_seconds"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["maps"] is False and "consistency_mae" not in summary["models"]["lanczos"]
    assert "Fidelity to the input" not in (tmp_path / "report.html").read_text()


def test_cli_evaluate_maps_and_consistency_options(tmp_path, corpus):
    res = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(corpus("MR_small.dcm")),
            "--models",
            "lanczos",
            "--consistency",
            "on",
            "--no-maps",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["consistency"] == "on" and summary["maps"] is False


def test_a_series_folder_is_one_volume_in_plane(tmp_path, series_folder):
    """The slices of one series are one reference (n = 1), not independent samples."""
    res = evaluate(
        [series_folder], models=["lanczos"], out_dir=tmp_path / "ev", progress=False,
        figures=False, maps=False, max_slices=4,
    )  # fmt: skip
    assert [(r.name, r.shape[0]) for r in res.images] == [("series", 4)]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["models"]["lanczos"]["psnr"]["n"] == 1
    assert np.isnan(summary["models"]["lanczos"]["gain_psnr_vs_bicubic"]["ci95"][0])
    assert "1 reference image (the unit" in (tmp_path / "ev" / "report.md").read_text()


def test_a_series_folder_is_evaluated_through_plane(tmp_path, series_folder):
    res = evaluate(
        [series_folder], models=["linear-z", "cubic-z"], scale=2, degradation="thick-slice",
        out_dir=tmp_path / "ev", progress=False, figures=False,
    )  # fmt: skip
    assert [(r.name, r.shape[0]) for r in res.images] == [("series", 8)] and not res.skipped
    assert {"linear-z", "cubic-z"} <= set(res.images[0].metrics)


def test_cli_interpolation_reads_a_series_folder_as_one_volume(tmp_path, series_folder):
    res = runner.invoke(
        app,
        ["evaluate", "--interpolation", "--data", str(series_folder), "--scale", "2",
         "--models", "linear,cubic", "--out", str(tmp_path / "ev")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["n_images"] == 1 and not summary["skipped"]


@pytest.mark.parametrize(
    "bad",
    [
        ["--max-slices", "0"],
        ["--max-slices", "-3"],
        ["--models", "nope"],
        ["--device", "foo"],
        ["--models", ""],
        ["--models", "bicubic,,lanczos"],
        ["--degradation", "nope"],
        ["--degradation", "thick-slice", "--max-slices", "0"],
        ["--degradation", "thick-slice", "--device", "foo"],
        ["--degradation", "thick-slice", "--models", "linear-z,"],
        ["--interpolation", "--device", "foo"],
        ["--interpolation", "--models", ",linear"],
        ["--modality", "XYZ"],
        ["--degradation", "thick-slice", "--modality", "XYZ"],
        ["--interpolation", "--modality", "ct scan"],
    ],
)
def test_cli_evaluate_refuses_bad_options_before_writing(tmp_path, corpus, series_folder, bad):
    """A refused run is one ``error:`` line (exit 2, MedSRError, no traceback) and writes nothing."""
    from medsr.errors import MedSRError

    out = tmp_path / "ev"
    res = runner.invoke(
        app, ["evaluate", "--data", str(series_folder), *bad, "--out", str(out), "--no-maps"]
    )
    assert isinstance(res.exception, MedSRError), (res.exception, res.output)
    assert "\n" not in str(res.exception)
    assert not out.exists()


def test_cli_evaluate_max_slices_zero_is_one_error_line(tmp_path, corpus):
    from tests.test_cli import medsr as run

    res = run("evaluate", "--data", str(corpus("CT_small.dcm")), "--max-slices", "0",
              "--out", str(tmp_path / "ev"))  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "--max-slices" in res.stderr and not (tmp_path / "ev").exists()


def test_a_ct_fill_outside_the_scan_circle_is_not_scored(tmp_path, corpus):
    """CT_small with a −3024 HU fill outside a circle (as scanners write it): the report used to
    score the fill's smeared edge — bicubic 19.5 dB, `default-x2` 4 dB *below* it — now the fill
    is made again at the low resolution, left out of the scores, and the share scored is said."""
    import pydicom

    from medsr.reports.evaluate import measured_pixels

    ds = pydicom.dcmread(corpus("CT_small.dcm"))
    a = ds.pixel_array.astype(np.int32)
    h, w = a.shape
    yy, xx = np.mgrid[:h, :w]
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    a[~circle] = round((-3024 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
    ds.PixelData = a.astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(tmp_path / "ct_fill.dcm")
    res = evaluate(
        [tmp_path / "ct_fill.dcm"], models=["bicubic", "lanczos"], scale=2, out_dir=tmp_path / "ev",
        progress=False, maps=False,
    )  # fmt: skip
    (r,) = res.images
    assert 0.55 < r.scored < 0.65  # the circle holds 64 % of the pixels; its edge blocks are fill
    assert 28 < r.metrics["bicubic"]["psnr"] < r.metrics["lanczos"]["psnr"]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["scored"] == {"ct_fill.dcm": r.scored}
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "are not scored" in md and "| scored |" in md
    # the rule itself: the reference's fill, and the blocks of the degraded input's fill
    from medsr.degradations import degrade_image
    from medsr.io import load_image

    ref = load_image(tmp_path / "ct_fill.dcm")
    lr = degrade_image(ref, "bicubic", 2)
    keep = measured_pixels(ref, lr, 2)
    assert keep.shape == ref.array.shape and not keep[0][~circle].any()
    assert (
        measured_pixels(load_image(corpus("CT_small.dcm")), lr, 2) is not None
    )  # lr's fill counts


def test_one_model_named_twice_runs_once(tmp_path, corpus, monkeypatch):
    """Names the resolver reads as one model (any case; one weights file by two paths) are one
    row: before, BICUBIC and LANCZOS ran again beside bicubic and lanczos, each with its own row
    and gain."""
    import shutil

    from medsr.models.resolver import WEIGHTS_DIR

    shutil.copy(WEIGHTS_DIR / "fast-x2.safetensors", tmp_path / "mine.safetensors")
    monkeypatch.chdir(tmp_path)
    res = evaluate(
        [corpus("MR_small.dcm")],
        models=["BICUBIC", "Lanczos", "lanczos", "mine.safetensors",
                str(tmp_path / "mine.safetensors")],
        scale=2, out_dir=tmp_path / "ev", progress=False, figures=False, maps=False,
    )  # fmt: skip
    assert res.models == ["bicubic", "Lanczos", "mine.safetensors"]
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    assert {r["model"] for r in rows} == {"bicubic", "Lanczos", "mine.safetensors"}


def _nifti_ct_with_fill(folder, corpus, slices: int = 1):
    """CT_small.dcm (HU) as a NIfTI, which carries no modality, with a −3024 HU fill outside a
    circle as scanners write it: ``slices`` copies, each shifted a little. Returns the path and
    the in-circle mask."""
    import nibabel as nib

    from medsr.io import load_image

    a = load_image(corpus("CT_small.dcm")).array[0]
    h, w = a.shape
    yy, xx = np.mgrid[:h, :w]
    circle = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < (0.45 * h) ** 2
    vol = np.stack([np.where(circle, np.roll(a, k, axis=1), -3024) for k in range(slices)])
    path = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.int16).transpose(2, 1, 0), np.eye(4)), path)
    return path, circle


def test_modality_makes_a_nifti_ct_a_ct(tmp_path, corpus):
    """A NIfTI carries no modality: without ``modality`` the CT was degraded with bicubic under
    ``auto`` and its fill outside the scan circle was scored as signal (all pixels, the data range
    widened by the fill to 4191); ``modality="CT"`` (``--modality CT``) makes it a CT in HU, as
    ``medsr upscale --modality`` does: ct-detector physics, the fill left out, the range over data
    only, and summary.json records the modality and units per image and the stated one."""
    path, _ = _nifti_ct_with_fill(tmp_path, corpus)
    kw = {"models": ["bicubic"], "degradation": "auto", "progress": False, "figures": False,
          "maps": False}  # fmt: skip
    (plain,) = evaluate([path], out_dir=tmp_path / "plain", **kw).images
    assert (plain.modality, plain.degradation, plain.scored) == ("OT", "bicubic", 1.0)
    (ct,) = evaluate([path], out_dir=tmp_path / "ct", modality="ct", **kw).images
    assert (ct.modality, ct.units, ct.degradation) == ("CT", "HU", "ct-detector")
    assert 0.55 < ct.scored < 0.65 and ct.data_range < 2500  # the fill's edge is not scored
    summary = json.loads((tmp_path / "ct" / "summary.json").read_text())
    assert summary["images"][0]["modality"] == "CT" and summary["images"][0]["units"] == "HU"
    assert summary["reproduce"]["modality"] == "CT"
    assert (
        json.loads((tmp_path / "plain" / "summary.json").read_text())["reproduce"]["modality"]
        is None
    )
    assert "modality CT stated" in (tmp_path / "ct" / "report.md").read_text()


def test_modality_does_not_override_a_dicom_header(tmp_path, corpus):
    from medsr.errors import MedSRWarning

    with pytest.warns(MedSRWarning, match="header states modality CT"):
        res = evaluate(
            [corpus("CT_small.dcm")], models=["bicubic"], out_dir=tmp_path / "ev", modality="MR",
            progress=False, figures=False, maps=False,
        )  # fmt: skip
    assert res.images[0].modality == "CT"


def test_modality_reaches_the_through_plane_and_interpolation_paths(tmp_path, corpus):
    """Thick-slice and ``--interpolation`` evaluations state it too (a CT's data range over
    data, not the fill's −3024, and the record)."""
    from medsr.reports.interpolation import evaluate_interpolation

    path, _ = _nifti_ct_with_fill(tmp_path, corpus, slices=8)
    res = evaluate(
        [path], models=["linear-z"], scale=2, degradation="thick-slice", modality="CT",
        out_dir=tmp_path / "tp", progress=False, figures=False,
    )  # fmt: skip
    (r,) = res.images
    assert (r.modality, r.units) == ("CT", "HU") and r.data_range < 2500
    assert "low_band_rms" not in r.metrics["linear-z"]  # an in-plane measure (σ = 2·scale px)
    assert (
        json.loads((tmp_path / "tp" / "summary.json").read_text())["reproduce"]["modality"] == "CT"
    )
    summary = evaluate_interpolation(
        [path], ["linear"], factor=2, out_dir=tmp_path / "ip", modality="CT", figures=False
    )
    assert summary["images"][0]["modality"] == "CT" and summary["images"][0]["units"] == "HU"
    with pytest.raises(InvalidParameterError, match="modality"):
        evaluate_interpolation([path], ["linear"], out_dir=tmp_path / "bad", modality="XYZ")
    assert not (tmp_path / "bad").exists()


def test_cli_evaluate_modality(tmp_path, corpus):
    """``medsr evaluate --modality CT`` on a NIfTI CT; a bad code is one ``error:`` line, exit 2,
    and nothing is read or written."""
    from tests.test_cli import medsr as run

    path, _ = _nifti_ct_with_fill(tmp_path, corpus)
    res = runner.invoke(
        app,
        ["evaluate", "--data", str(path), "--degradation", "auto", "--models", "bicubic",
         "--no-maps", "--modality", "CT", "--out", str(tmp_path / "ev")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    image = json.loads((tmp_path / "ev" / "summary.json").read_text())["images"][0]
    assert image["modality"] == "CT" and image["scored"] < 0.7
    bad = run("evaluate", "--data", str(tmp_path / "missing.nii.gz"), "--modality", "XYZ",
              "--out", str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("error: modality must be one of CT") and "XYZ" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_evaluate_reports_the_low_and_high_band_of_the_error(tmp_path, corpus):
    """DESIGN.md and issue 20: next to PSNR/SSIM, per image, the low band (σ = 2·scale output px
    Gaussian low-pass of the error) and the high band (the rest), in the image's units — before,
    only benchmarks/faithful.py computed them. The values are medsr.metrics.band_rms2d's on the
    evaluated output, over the scored pixels."""
    from medsr.degradations import degrade_image
    from medsr.errors import MedSRWarning
    from medsr.inference.predictor import upscale
    from medsr.io import load_image
    from medsr.metrics import band_rms2d
    from medsr.reports.evaluate import measured_pixels
    from medsr.reports.inputs import reference_image

    path, _ = _nifti_ct_with_fill(tmp_path, corpus)
    with pytest.warns(MedSRWarning, match="header states modality MR"):  # the DICOM keeps it
        res = evaluate(
            [path, corpus("MR_small.dcm")], models=["lanczos"], degradation="bicubic",
            modality="CT", out_dir=tmp_path / "ev", progress=False, figures=False, maps=False,
        )  # fmt: skip
    ref = reference_image(load_image(corpus("MR_small.dcm")), 2)
    lr = degrade_image(ref, "bicubic", 2, generator=0)
    sr = upscale(lr, scale=2, model="lanczos", clip=False)
    low, high = band_rms2d(sr.array, ref.array, sigma=4.0, crop=2, mask=measured_pixels(ref, lr, 2))
    mr = res.images[1].metrics["lanczos"]
    assert mr["low_band_rms"] == pytest.approx(low.mean()) and mr["high_band_rms"] == pytest.approx(
        high.mean()
    )
    ct = res.images[0].metrics["bicubic"]  # the CT's fill is left out of the bands too
    assert 0 < ct["low_band_rms"] < ct["high_band_rms"] < 200
    rows = list(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))
    assert {(r["image"], r["model"]) for r in rows if r["metric"] == "low_band_rms"} == {
        (i, m) for i in ("ct.nii.gz", "MR_small.dcm") for m in ("bicubic", "lanczos")
    }
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    # a CT in HU and an MR in a.u.: per image only, no mean across them
    assert summary["models"]["lanczos"]["high_band_rms"]["mixed_units"] == ["HU", "a.u."]
    assert "σ = 2·scale = 4 output px" in summary["reproduce"]["metrics"]["bands"]
    md = (tmp_path / "ev" / "report.md").read_text()
    assert "| low_band_rms | high_band_rms |" in md.split("## Per modality")[0]
    assert "## Per image (low / high band error)" in md and "| ct.nii.gz | HU |" in md
    assert "Per image (low / high band error)" in (tmp_path / "ev" / "report.html").read_text()


def test_through_plane_scores_leave_a_ct_fill_out(tmp_path, corpus):
    """Thick-slice and ``--interpolation`` evaluations scored a CT's fill outside the scan circle
    (every method reproduces it exactly, which raised every PSNR: linear-z ~1.8 dB on a 16-slice
    CT_small volume); now, as in-plane, no data is not scored and the share scored is said."""
    from medsr.degradations import degrade_image
    from medsr.io import load_image
    from medsr.metrics import compute_metrics
    from medsr.modality import set_modality
    from medsr.reports.interpolation import evaluate_interpolation
    from medsr.selfsup import interpolate_z

    path, circle = _nifti_ct_with_fill(tmp_path, corpus, slices=8)
    res = evaluate(
        [path], models=["linear-z"], scale=2, degradation="thick-slice", modality="CT",
        out_dir=tmp_path / "tp", progress=False, figures=False,
    )  # fmt: skip
    (r,) = res.images
    assert 0.55 < r.scored < 0.7
    ref = set_modality(load_image(path), "CT")
    sr = interpolate_z(degrade_image(ref, "thick-slice", 2, generator=0), n_slices=8, mode="linear")
    pred, truth = sr.array[2:6], ref.array[2:6]
    kw = {"data_range": r.data_range, "crop": 2}
    masked = compute_metrics(pred, truth, mask=np.broadcast_to(circle, pred.shape), **kw)["psnr"]
    assert r.metrics["linear-z"]["psnr"] == pytest.approx(masked, abs=0.05)
    assert r.metrics["linear-z"]["psnr"] < compute_metrics(pred, truth, **kw)["psnr"] - 0.5
    assert "are not scored" in (tmp_path / "tp" / "report.md").read_text()
    summary = evaluate_interpolation(
        [path], ["linear"], factor=2, out_dir=tmp_path / "ip", modality="CT", figures=False
    )
    assert 0.55 < summary["images"][0]["scored"] < 0.7


@pytest.mark.parametrize("mode", [[], ["--degradation", "thick-slice"], ["--interpolation"]])
def test_cli_evaluate_refuses_a_report_inside_its_data_folder(tmp_path, series_folder, mode):
    """``medsr evaluate --data study --out study/ev`` wrote the report's figures (PNG) into the
    data folder, so the next evaluation of ``study`` scored them as references (2 images became
    4). The report folder inside a data folder is one error line (exit 2), before anything is
    read or written; the data folder is left as it was."""
    from medsr.errors import MedSRError

    before = sorted(p.name for p in series_folder.iterdir())
    out = series_folder / "ev"
    res = runner.invoke(
        app, ["evaluate", "--data", str(series_folder), *mode, "--out", str(out), "--no-maps"]
    )
    assert isinstance(res.exception, MedSRError), (res.exception, res.output)
    assert "inside the input folder" in str(res.exception) and "\n" not in str(res.exception)
    assert sorted(p.name for p in series_folder.iterdir()) == before
