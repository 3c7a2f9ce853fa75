"""medsr evaluate / degrade: reports with real numbers, figures, CI of paired gains."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import medsr
from medsr.cli import app
from medsr.errors import EmptyInputError
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
    evaluate([corpus("anatomical.nii")], models=["kspace"], scale=2, degradation="kspace",
             out_dir=tmp_path, progress=False, figures=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["models"]["kspace"]["gain_psnr_vs_bicubic"]["mean"] > 0.3  # measured: +0.53 dB


def test_evaluate_skips_bad_files_and_fails_when_nothing_left(tmp_path, corpus):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(EmptyInputError, match="no image could be evaluated"):
        evaluate([tmp_path / "data"], out_dir=tmp_path / "ev", progress=False)


def test_cli_evaluate_and_degrade(tmp_path, corpus):
    res = runner.invoke(app, ["evaluate", "--data", str(corpus("camera.png")), "--scale", "4",
                              "--models", "lanczos", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "lanczos" in res.output and (tmp_path / "ev" / "report.md").is_file()
    out = tmp_path / "lr.nii.gz"
    res = runner.invoke(app, ["degrade", str(corpus("anatomical.nii")), str(out), "--kind", "kspace",
                              "--scale", "2", "--param", "window=hamming"])
    assert res.exit_code == 0, res.output
    hr, lr = medsr.load_image(corpus("anatomical.nii")), medsr.load_image(out)
    assert lr.spatial_shape[1:] == (hr.spatial_shape[1] // 2, hr.spatial_shape[2] // 2)
    assert lr.spacing[1:] == pytest.approx((hr.spacing[1] * 2, hr.spacing[2] * 2), rel=1e-5)


def test_cli_degrade_bad_param(tmp_path, corpus):
    from tests.test_cli import medsr as run

    res = run("degrade", str(corpus("camera.png")), str(tmp_path / "o.png"), "--kind", "bicubic", "--param", "nonsense")
    assert res.returncode == 2 and "key=value" in res.stderr
    res = run("degrade", str(corpus("camera.png")), str(tmp_path / "o.png"), "--kind", "warp-drive")
    assert res.returncode == 2 and "unknown degradation" in res.stderr
