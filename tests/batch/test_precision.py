"""``medsr batch --precision`` (as ``medsr upscale --precision``), and what a batch says when there
is nothing to do; ``--degradation default`` as ``medsr upscale`` takes it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import typer
from typer.testing import CliRunner

import medsr
from medsr.batch import read_report, run_batch
from medsr.image import MedImage
from medsr.io.sidecar import read_sidecar
from tests._entry import run_medsr
from tests.conftest import cli_app, corpus_path


def medsr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a process of its own (exit status and stderr as a user sees
    them; :func:`tests._entry.run_medsr`)."""
    return run_medsr(*args)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A 32×32 CT DICOM and a 32×32 PNG (tiny: bf16 is emulated, and slow, on some CPUs)."""
    from PIL import Image

    root = tmp_path / "in"
    rng = np.random.default_rng(3)
    ct = MedImage(
        rng.normal(40, 200, (1, 32, 32)).astype(np.float32),
        spacing=(1.0, 0.7, 0.7), modality="CT", units="HU",
    )  # fmt: skip
    medsr.save_image(ct, root / "ct.dcm")
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(root / "slice.png")
    return root


def _app() -> typer.Typer:
    from medsr.batch.cli import register

    return cli_app(register)


def test_precision_reaches_the_model_and_every_output_records_it(tiny: Path, tmp_path: Path):
    """--precision bf16: the local model stage runs bf16 and each output's derivation says so
    (the JSON sidecar and the DICOM DerivationDescription), as `medsr upscale --precision bf16`;
    a rerun in fp32 is another setting, so it redoes the items."""
    out = tmp_path / "out"
    res = CliRunner().invoke(
        _app(),
        ["batch", str(tiny), str(out), "-m", "fast-x2", "--threads", "1", "--precision", "bf16",
         "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{") :])
    assert data["precision"] == "bf16" and data["counts"]["ok"] == 2, data
    assert read_sidecar(out / "slice.png")["derivation"]["precision"] == "bf16"
    assert "precision bf16" in pydicom.dcmread(out / "ct.dcm").DerivationDescription
    # the same numbers as the single-file pipeline in bf16
    ref = tmp_path / "ref.png"
    medsr.upscale_file(tiny / "slice.png", ref, model="fast-x2", precision="bf16")
    np.testing.assert_array_equal(
        medsr.load_image(out / "slice.png").array, medsr.load_image(ref).array
    )
    again = run_batch(tiny, out, model="fast-x2", workers=1, threads=1)
    assert again.counts["ok"] == 2 and not again.counts.get("skipped"), again.counts
    assert again.precision == "fp32"
    assert read_sidecar(out / "slice.png")["derivation"]["precision"] == "fp32"


def test_ray_actors_build_their_upscaler_with_the_precision():
    """The Ray engine's model actor (constructed as Ray Data constructs it) runs the precision
    asked for; ``tests/batch/test_ray.py`` runs it on a private Ray."""
    from medsr.batch.ray_engine import UpscaleActor

    actor = UpscaleActor("fast-x2", 2, "cpu", None, 1, precision="bf16")
    try:
        assert actor.upscaler.precision == "bf16"
    finally:
        actor.reader.close()


@pytest.mark.parametrize("value", ["fp64", "half"])
def test_bad_precision_is_one_error_line_before_any_work(tiny: Path, tmp_path: Path, value: str):
    out = tmp_path / "out"
    res = medsr_cli("batch", str(tiny), str(out), "-m", "fast-x2", "--precision", value)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: precision must be one of"), lines
    assert not out.exists()  # nothing written, not even the report


def test_fp16_on_a_cpu_is_refused_before_any_work(tiny: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU runs fp16")
    from medsr.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="fp16 runs on a CUDA GPU only"):
        run_batch(tiny, tmp_path / "out", model="fast-x2", device="cpu", precision="fp16")
    assert not (tmp_path / "out").exists()


def test_empty_folder_warns_once_and_exits_0(tmp_path: Path):
    """A folder with nothing to process: one ``warning:`` line naming it (a wrong path looks the
    same as an empty watch folder), exit status 0; a manifest that lists nothing says so."""
    empty = tmp_path / "incoming"
    empty.mkdir()
    res = medsr_cli("batch", str(empty), str(tmp_path / "out"), "-m", "bicubic")
    assert res.returncode == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and str(empty) in warned[0] and "no images" in warned[0], res.stderr
    assert "0 ok, 0 failed, 0 skipped" in res.stdout
    manifest = tmp_path / "todo.csv"
    manifest.write_text("input\n")
    with pytest.warns(UserWarning, match=r"the manifest .*todo\.csv' lists no inputs"):
        summary = run_batch(manifest, tmp_path / "out2", model="bicubic")
    assert summary.counts == {} or not any(summary.counts.values())


def test_a_folder_of_non_images_does_not_warn(tmp_path: Path):
    """Skipped items are reported (with their reason): no 'nothing found' warning."""
    import warnings

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = run_batch(tmp_path / "in", tmp_path / "out", model="bicubic")
    assert summary.counts.get("skipped") == 1


def test_degradation_default_as_upscale_takes_it(tmp_path: Path):
    """``--degradation default`` (the modality's usual physics, stated as known): `medsr batch
    --help` names it as `medsr upscale --help` does, and an MR item gets what `medsr upscale
    --degradation default` writes (k-space physics) — also when planes of several items share a
    forward pass (the default on CUDA), which ran them with the batch's bicubic base."""
    from medsr.batch.state import run_fingerprint
    from medsr.cli import app

    batch = typer.main.get_command(app).commands["batch"]  # type: ignore[attr-defined]
    [option] = [p for p in batch.params if "--degradation" in p.opts]
    assert "default (each input's modality's usual physics, stated as known" in option.help
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(corpus_path("MR_small.dcm"), root / "mr.dcm")
    summary = run_batch(
        root, tmp_path / "out", model="fast-x2", workers=1, threads=1, degradation="default",
        batch_across_items=True,
    )  # fmt: skip
    assert [r["status"] for r in read_report(summary.report)] == ["ok"]
    ref = tmp_path / "ref.dcm"
    medsr.upscale_file(root / "mr.dcm", ref, model="fast-x2", degradation="default")
    got = pydicom.dcmread(tmp_path / "out" / "mr.dcm")
    want = pydicom.dcmread(ref)
    assert "kspace" in got.DerivationDescription
    np.testing.assert_array_equal(got.pixel_array, want.pixel_array)
    # no model named: MR items under `default` run the k-space default, whose weights are
    # part of the resume key as under `kspace` and `auto`
    assert "|kspace-model=" in run_fingerprint(None, 2, degradation="default")
