"""Batch outputs carry the safeguards of ``medsr upscale``: provenance, consistency, maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import medsr
from medsr.batch import read_report, run_batch
from medsr.errors import InvalidParameterError
from medsr.io import load_image
from medsr.io.sidecar import read_sidecar
from medsr.safeguards import consistency_error
from tests.conftest import cli_app, corpus_path

OUTPUTS = ("ct/CT_small.dcm", "mr/MR_small.dcm", "mr/MR_small.nii.gz")


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """CT_small.dcm and MR_small.dcm (+ MR_small as NIfTI, for the sidecar) in a folder."""
    root = tmp_path / "in"
    (root / "ct").mkdir(parents=True)
    (root / "mr").mkdir()
    shutil.copy(corpus_path("CT_small.dcm"), root / "ct" / "CT_small.dcm")
    shutil.copy(corpus_path("MR_small.dcm"), root / "mr" / "MR_small.dcm")
    medsr.save_image(medsr.load_image(corpus_path("MR_small.dcm")), root / "mr" / "MR_small.nii.gz")
    return root


def _error(out: Path, inp: Path) -> float:
    """Mean |D(SR) − input| of a written output (the modality's default D, as the batch assumes)."""
    return float(np.abs(consistency_error(load_image(out), load_image(inp), "auto", 2)).mean())


def test_outputs_record_provenance_and_consistency_lowers_the_error(small: Path, tmp_path: Path):
    off = run_batch(
        small, tmp_path / "off", model="bicubic", workers=1, threads=1, consistency="off"
    )
    on = run_batch(small, tmp_path / "on", model="bicubic", workers=1, threads=1, consistency="on")
    assert off.counts["ok"] == on.counts["ok"] == 3
    assert (off.consistency, on.consistency) == ("off", "on")
    for setting in ("off", "on"):
        for name in ("ct/CT_small.dcm", "mr/MR_small.dcm"):
            text = pydicom.dcmread(tmp_path / setting / name).DerivationDescription
            for needle in (
                f"medsr {medsr.__version__}",
                "model bicubic",
                "classical:bicubic",
                "scale x2",
                "assumed degradation",
                f"consistency {setting}",
            ):
                assert needle in text, (setting, name, needle, text)
        side = read_sidecar(tmp_path / setting / "mr" / "MR_small.nii.gz")
        prov = side["provenance"]
        assert prov["model"] == "bicubic" and prov["model_checksum"] == "classical:bicubic"
        assert prov["consistency"] == setting and prov["scale"] == 2
        assert prov["degradation"] == "kspace" and prov["medsr_version"] == medsr.__version__
        assert prov["safeguards"]["consistency"]["setting"] == setting
        assert "timing_ms" not in prov["safeguards"]  # reruns give identical sidecars
        assert side["derivation"]["consistency"] == setting
    # the projection lowers |D(SR) − input| of what is written (DICOM: after integer storage)
    for name in OUTPUTS:
        inp = small / name
        e_off, e_on = _error(tmp_path / "off" / name, inp), _error(tmp_path / "on" / name, inp)
        assert e_on < 0.5 * e_off, (name, e_on, e_off)
    # no maps unless asked
    assert off.maps_dir is None and not list(tmp_path.glob("*maps*"))


def test_maps_are_written_when_asked(small: Path, tmp_path: Path):
    maps = tmp_path / "maps"
    summary = run_batch(small, tmp_path / "out", model="lanczos", workers=2, maps_dir=maps)
    assert summary.counts["ok"] == 3 and summary.maps_dir == maps.resolve()
    for name in OUTPUTS:
        folder = maps / name
        suffix = ".png"  # every item is a single 2-D slice
        for m in ("consistency", "uncertainty"):
            assert (folder / f"{m}{suffix}").is_file(), (folder, m)
            assert (folder / f"{m}.json").is_file()
        data = json.loads((folder / "summary.json").read_text())
        assert data["consistency"]["setting"] == "auto" and not data["consistency"]["applied"]
        assert data["uncertainty"]["transforms"] == 8
        assert data["uncertainty"]["map"]["max"] < 1e-2  # an interpolator is equivariant
        if name.endswith(".dcm"):  # DICOM input: the maps also as a derived DICOM series
            assert sorted(p.name for p in (folder / "consistency_dicom").iterdir()) == [
                "IM00001.dcm"
            ]
        # the output's provenance carries the maps' summary
        out = tmp_path / "out" / name
        prov = (
            read_sidecar(out)["provenance"]
            if name.endswith(".nii.gz")
            else {"safeguards": None, "text": pydicom.dcmread(out).DerivationDescription}
        )
        if prov["safeguards"] is not None:
            assert (
                prov["safeguards"]["uncertainty"]["map"]["p99"] == data["uncertainty"]["map"]["p99"]
            )
        else:
            assert "TTA uncertainty" in prov["text"]
    # the report carries each item's trust numbers, those of its summary.json (it had none)
    rows = {r["input"]: r for r in read_report(summary.report)}
    for name in OUTPUTS:
        data, row = json.loads((maps / name / "summary.json").read_text()), rows[name]
        bound = data["error_bound"]
        assert bound["calibrated"], (name, bound)
        assert float(row["error_bound_p99"]) == pytest.approx(bound["map"]["p99"], rel=1e-5)
        assert f"k {bound['factor']:.6g}" in row["error_bound"] and "90%" in row["error_bound"]
        assert float(row["consistency_p99"]) == pytest.approx(
            data["consistency"]["error"]["p99"], rel=1e-5
        )
        assert float(row["uncertainty_p99"]) == pytest.approx(
            data["uncertainty"]["map"]["p99"], rel=1e-5, abs=1e-9
        )
        assert row["units"] == ("HU" if name.startswith("ct/") else bound["map"]["units"])
    # a rerun with the same settings is up to date; deleting a maps folder makes it run again
    again = run_batch(small, tmp_path / "out", model="lanczos", workers=1, maps_dir=maps)
    assert again.counts == {"ok": 0, "failed": 0, "skipped": 3}
    shutil.rmtree(maps / "mr" / "MR_small.nii.gz")
    again = run_batch(small, tmp_path / "out", model="lanczos", workers=1, maps_dir=maps)
    assert [r.label for r in again.results if r.status == "ok"] == ["mr/MR_small.nii.gz"]
    assert (maps / "mr" / "MR_small.nii.gz" / "summary.json").is_file()
    # another consistency setting re-processes everything
    again = run_batch(
        small, tmp_path / "out", model="lanczos", workers=1, maps_dir=maps, consistency="on"
    )
    assert again.counts["ok"] == 3
    assert (
        json.loads((maps / "ct" / "CT_small.dcm" / "summary.json").read_text())["consistency"][
            "setting"
        ]
        == "on"
    )


def test_cross_item_batches_give_the_same_provenance(small: Path, tmp_path: Path):
    a = run_batch(small, tmp_path / "a", model="bicubic", workers=1, consistency="on")
    b = run_batch(
        small, tmp_path / "b", model="bicubic", workers=1, consistency="on",
        batch_across_items=True, batch_size=3,
    )  # fmt: skip
    assert a.counts == b.counts
    for name in ("mr/MR_small.nii.gz", "mr/MR_small.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in ("ct/CT_small.dcm", "mr/MR_small.dcm"):
        da, db = pydicom.dcmread(tmp_path / "a" / name), pydicom.dcmread(tmp_path / "b" / name)
        assert da.PixelData == db.PixelData
        assert da.DerivationDescription == db.DerivationDescription


def test_bad_safeguard_options(small: Path, tmp_path: Path):
    with pytest.raises(InvalidParameterError, match="'auto', 'on' or 'off"):
        run_batch(small, tmp_path / "o", model="bicubic", consistency="sometimes")
    with pytest.raises(InvalidParameterError, match="maps folder"):
        run_batch(small, tmp_path / "o", model="bicubic", maps_dir=tmp_path / "o")
    with pytest.raises(InvalidParameterError, match="maps folder"):
        run_batch(small, tmp_path / "o", model="bicubic", maps_dir=small)
    with pytest.raises(InvalidParameterError, match="unknown degradation"):
        run_batch(small, tmp_path / "o", model="bicubic", degradation="foo")
    with pytest.raises(InvalidParameterError, match="modality must be one of"):
        run_batch(small, tmp_path / "o", model="bicubic", modality="XYZ")
    assert not (tmp_path / "o").exists()


def test_physics_and_modality_reach_every_output(small: Path, tmp_path: Path):
    """--degradation and --modality as in `medsr upscale`: k-space physics (base + projection)
    recorded in every output's provenance; the NIfTI gets the stated modality."""
    out = tmp_path / "o"
    summary = run_batch(
        small, out, model="default-x2", workers=1, threads=1, degradation="kspace", modality="MR"
    )
    assert summary.counts["ok"] == 3
    side = read_sidecar(out / "mr" / "MR_small.nii.gz")
    cons = side["provenance"]["safeguards"]
    assert cons["physics"] == "kspace" and cons["base_interpolator"] == "kspace"
    assert (
        cons["consistency"]["applied"] and side["provenance"]["consistency"] == "auto (projected)"
    )
    assert medsr.load_image(out / "mr" / "MR_small.nii.gz").modality == "MR"
    text = pydicom.dcmread(out / "ct" / "CT_small.dcm").DerivationDescription
    assert "kspace" in text and "sha256:" in text
    assert pydicom.dcmread(out / "ct" / "CT_small.dcm").Modality == "CT"  # a header keeps its own


def test_ensemble_reaches_every_output_and_the_resume_key(small: Path, tmp_path: Path):
    """--ensemble as in `medsr upscale`: every output is the mean over the 8 flips/rotations
    (its provenance and DICOM derivation say so, and it equals the single-file pipeline's);
    a rerun without it redoes the items (another setting, another output)."""
    from medsr.pipeline import upscale_with_safeguards

    out = tmp_path / "o"
    summary = run_batch(small, out, model="fast-x2", workers=1, threads=1, ensemble=True)
    assert summary.counts["ok"] == 3
    side = read_sidecar(out / "mr" / "MR_small.nii.gz")
    assert side["provenance"]["safeguards"]["ensemble"] == "mean of 8 flips/90-degree rotations"
    assert "self-ensemble" in pydicom.dcmread(out / "ct" / "CT_small.dcm").DerivationDescription
    ref, _ = upscale_with_safeguards(
        load_image(small / "mr" / "MR_small.nii.gz"), 2, "fast-x2", maps=False, tta=False, warn=False,
        ensemble=True,
    )  # fmt: skip
    # the NIfTI keeps the DICOM source's int16 storage: values rounded onto its integer grid
    np.testing.assert_allclose(
        load_image(out / "mr" / "MR_small.nii.gz").array, ref.array, atol=0.5 + 1e-3
    )
    again = run_batch(small, out, model="fast-x2", workers=1, threads=1)
    assert again.counts["ok"] == 3 and not again.counts.get("skipped")


def test_cli_consistency_and_maps(small: Path, tmp_path: Path):
    from medsr.batch.cli import register

    res = CliRunner().invoke(
        cli_app(register),
        [
            "batch", str(small), str(tmp_path / "out"), "-m", "bicubic", "--threads", "1",
            "--consistency", "on", "--maps", str(tmp_path / "maps"), "--json",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert data["consistency"] == "on" and data["maps_dir"] == str((tmp_path / "maps").resolve())
    assert (tmp_path / "maps" / "ct" / "CT_small.dcm" / "summary.json").is_file()
    rows = read_report(tmp_path / "out" / "batch_report.csv")
    assert "warnings" in rows[0] and all(r["status"] == "ok" for r in rows)
    text = pydicom.dcmread(tmp_path / "out" / "ct" / "CT_small.dcm").DerivationDescription
    assert "consistency on" in text


def test_the_report_says_why_an_item_has_no_error_bound(tmp_path: Path):
    """An image too small to calibrate one scale down has no error bound: the report says why
    (and without maps, it has the consistency error alone)."""
    from PIL import Image

    (tmp_path / "in").mkdir()
    ramp = (np.add.outer(np.arange(24), np.arange(24)) * 5).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "in" / "tiny.png")
    summary = run_batch(
        tmp_path / "in", tmp_path / "out", model="bicubic", workers=1, threads=1,
        maps_dir=tmp_path / "maps",
    )  # fmt: skip
    (row,) = read_report(summary.report)
    data = json.loads((tmp_path / "maps" / "tiny.png" / "summary.json").read_text())
    assert not data["error_bound"]["calibrated"]
    assert row["error_bound"] == f"none: {data['error_bound']['reason']}"
    assert "too small" in row["error_bound"] and row["error_bound_p99"] == ""
    plain = run_batch(tmp_path / "in", tmp_path / "plain", model="bicubic", workers=1, threads=1)
    (row,) = read_report(plain.report)
    assert float(row["consistency_p99"]) >= 0 and row["error_bound"] == row["uncertainty_p99"] == ""


def test_fidelity_warnings_reach_the_report(small: Path, tmp_path: Path):
    from tests.safeguards.conftest import make_weights

    weights = make_weights(tmp_path / "tiny-mr.safetensors")  # untrained, MR only
    summary = run_batch(small, tmp_path / "out", model=str(weights), workers=1)
    rows = {r["input"]: r for r in read_report(summary.report)}
    assert all(r["status"] == "ok" for r in rows.values())
    # its invented detail fails the self-check one scale down (and is scaled down, so the output
    # no longer contradicts the input)
    assert "self-check" in rows["mr/MR_small.dcm"]["warnings"]
    assert "out-of-distribution" in rows["ct/CT_small.dcm"]["warnings"]
    assert sum(1 for r in summary.results if r.warnings) == 3
    assert summary.to_dict()["warnings"] == 3


def test_resume_removes_temporaries_a_killed_run_left(small: Path, tmp_path: Path):
    """SIGKILL skips the atomic writer's clean-up: the next run (a resume) removes its leftovers."""
    import os
    import time

    out = tmp_path / "o"
    run_batch(small, out, model="bicubic", workers=1, threads=1, consistency="off")
    target = out / "mr" / "MR_small.nii.gz"
    # an atomic_file temporary and an atomic_dir one
    stale = [
        target.with_name(".MR_small.k3j_x9Q1.nii.gz"),
        target.with_name(".MR_small.nii.gz.abcdefgh"),
    ]
    for p in stale:
        p.write_bytes(b"partial")
        os.utime(p, (time.time() - 60, time.time() - 60))
    keep = target.with_name(".MR_small.notes.txt")  # not a temporary name: kept
    keep.write_text("mine")
    summary = run_batch(small, out, model="bicubic", workers=1, threads=1, consistency="off")
    assert summary.counts["skipped"] == 3
    assert not any(p.exists() for p in stale) and keep.exists()
