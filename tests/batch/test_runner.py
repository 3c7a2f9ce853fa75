"""Running a batch: statuses, structure, report, resume after a kill, model change, CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medsr.batch import read_report, run_batch
from medsr.errors import InvalidParameterError, UnknownModelError
from medsr.image import MedImage
from medsr.inference.planes import PlaneUpscaler
from medsr.io import load_image
from tests._entry import run_medsr
from tests.conftest import corpus_path

REPO = Path(__file__).resolve().parents[2]


def _rows(report: Path) -> dict[str, dict[str, str]]:
    return {r["input"].split(" [")[0]: r for r in read_report(report)}


def _mtimes(out: Path) -> dict[str, int]:
    return {
        p.relative_to(out).as_posix(): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and not p.name.startswith("batch_")
    }


def test_statuses_structure_and_report(archive: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = run_batch(archive, out, model="bicubic", scale=2, workers=2)
    rows = _rows(summary.report)
    status = {k: r["status"] for k, r in rows.items()}
    expected = {
        "study1/ct/": "ok",
        "study1/mr/MR_small.dcm": "ok",
        "volumes/brain.nii.gz": "ok",
        "photos/slice.png": "ok",
        "broken/truncated.dcm": "failed",
        "notes.txt": "skipped",
    }
    if (archive / "seg").exists():
        expected["seg/liver.dcm"] = "skipped"
    assert status == expected
    assert summary.counts == {
        "ok": 4,
        "failed": 1,
        "skipped": 1 + (archive / "seg").exists(),
    }
    assert "truncated" in rows["broken/truncated.dcm"]["error"]
    assert rows["study1/ct/"]["output"] == "study1/ct"
    assert list(read_report(summary.report)[0]) == [
        "input", "output", "status", "seconds", "error", "kind", "finished_at", "warnings",
        "consistency_p99", "uncertainty_p99", "error_bound_p99", "units", "error_bound",
    ]  # fmt: skip
    assert all(float(r["seconds"]) >= 0 for r in rows.values())
    # folder structure and formats kept; geometry doubled
    ct = load_image(out / "study1" / "ct")
    assert ct.array.shape == (2, 256, 256)
    assert sorted(p.name for p in (out / "study1" / "ct").iterdir()) == [
        "IM00001.dcm",
        "IM00002.dcm",
    ]
    assert load_image(out / "study1" / "mr" / "MR_small.dcm").array.shape == (1, 128, 128)
    assert load_image(out / "volumes" / "brain.nii.gz").array.shape == (3, 20, 24)
    assert load_image(out / "photos" / "slice.png").array.shape == (1, 32, 40)
    assert not (out / "broken").exists() and not (out / "notes.txt").exists()


def test_rerun_skips_done_retries_failed_and_tracks_changes(archive: Path, tmp_path: Path):
    out = tmp_path / "out"
    run_batch(archive, out, model="bicubic", workers=1)
    before = _mtimes(out)
    # fix the broken file, change one input: only those two run again
    shutil.copy(corpus_path("CT_small.dcm"), archive / "broken" / "truncated.dcm")
    from PIL import Image

    Image.fromarray(np.full((16, 20), 7, np.uint8)).save(archive / "photos" / "slice.png")
    summary = run_batch(archive, out, model="bicubic", workers=1)
    status = {k: r["status"] for k, r in _rows(summary.report).items()}
    assert status["broken/truncated.dcm"] == "ok"
    assert status["photos/slice.png"] == "ok"
    for key in ("study1/ct/", "study1/mr/MR_small.dcm", "volumes/brain.nii.gz"):
        assert status[key] == "skipped"
    after = _mtimes(out)
    for name in ("study1/ct/IM00001.dcm", "study1/mr/MR_small.dcm", "volumes/brain.nii.gz"):
        assert after[name] == before[name]
    assert after["photos/slice.png"] != before["photos/slice.png"]
    # a deleted output is made again
    (out / "volumes" / "brain.nii.gz").unlink()
    summary = run_batch(archive, out, model="bicubic", workers=1)
    assert [r.label for r in summary.results if r.status == "ok"] == ["volumes/brain.nii.gz"]
    # another model re-processes everything
    summary = run_batch(archive, out, model="lanczos", workers=2)
    assert summary.counts["ok"] == 5 and summary.counts["failed"] == 0


def test_resume_redoes_outputs_that_are_not_what_was_written(tmp_path: Path):
    """Resume checks that an output is still what the batch wrote (its files' names, sizes and
    modification times), not only that it exists: a series output missing one slice and a
    truncated or replaced single-file output are written again, an intact one is skipped."""
    import json

    import nibabel as nib

    from tests.batch.conftest import make_ct_series

    src = tmp_path / "in"
    make_ct_series(src / "pat1" / "series1", n=3)
    shutil.copy(corpus_path("camera.png"), src / "camera.png")
    shutil.copy(corpus_path("anatomical.nii"), src / "anatomical.nii")
    out = tmp_path / "out"
    first = run_batch(src, out, model="bicubic", workers=1)
    assert first.counts == {"ok": 3, "failed": 0, "skipped": 0}
    series = out / "pat1" / "series1"
    names = sorted(p.name for p in series.iterdir())
    assert names == ["IM00001.dcm", "IM00002.dcm", "IM00003.dcm"]
    before = _mtimes(out)

    # another program deletes one instance of the written series and truncates a PNG output
    (series / "IM00002.dcm").unlink()
    png = out / "camera.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    summary = run_batch(src, out, model="bicubic", workers=1)
    rows = _rows(summary.report)
    assert {k: r["status"] for k, r in rows.items()} == {
        "pat1/series1/": "ok", "camera.png": "ok", "anatomical.nii": "skipped",
    }  # fmt: skip
    assert "up to date" in rows["anatomical.nii"]["error"]
    assert sorted(p.name for p in series.iterdir()) == names  # the whole series again
    assert load_image(series).array.shape == (3, 256, 256)
    assert load_image(png).array.shape == (1, 1024, 1024)
    assert _mtimes(out)["anatomical.nii"] == before["anatomical.nii"]  # not written again

    # a rerun finds everything as written
    summary = run_batch(src, out, model="bicubic", workers=1)
    assert summary.counts == {"ok": 0, "failed": 0, "skipped": 3}

    # an output replaced by other bytes of the same size is written again too
    nii = out / "anatomical.nii"
    data = nii.read_bytes()
    nii.write_bytes(data[:352] + bytes(len(data) - 352))  # header kept, voxels zeroed
    assert nii.stat().st_size == len(data)
    summary = run_batch(src, out, model="bicubic", workers=1)
    assert [r.label for r in summary.results if r.status == "ok"] == ["anatomical.nii"]
    assert np.asarray(nib.load(str(nii)).dataobj).any()

    # a journal written before output_files were recorded: existence is all it can check
    state = out / "batch_state.jsonl"
    recs = [json.loads(line) for line in state.read_text().splitlines()]
    assert all("output_files" in r for r in recs)
    state.write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "output_files"}) + "\n" for r in recs
    ))  # fmt: skip
    summary = run_batch(src, out, model="bicubic", workers=1)
    assert summary.counts == {"ok": 0, "failed": 0, "skipped": 3}


def test_weights_file_fingerprint(tmp_path: Path, archive: Path):
    from medsr.batch.state import model_fingerprint
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model

    card = {
        "architecture": "srcnn",
        "kwargs": {"scale": 2, "num_features": 4, "kernel_sizes": [3, 1, 3]},
        "scale": 2,
    }
    w = save_model(create_model("srcnn", **card["kwargs"]), tmp_path / "tiny.safetensors", card)
    fp = model_fingerprint(str(w), 2)
    assert fp.startswith("sha256:") and fp.endswith("|x2")
    save_model(create_model("srcnn", **card["kwargs"]), w, card)  # new random weights
    assert model_fingerprint(str(w), 2) != fp
    assert model_fingerprint("bicubic", 3) == "classical:bicubic|x3"


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from medsr.batch import run_batch

    done = []

    def stop_after_two(result):
        if result.status == "ok":
            done.append(result.key)
            if len(done) == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup at all

    if __name__ == "__main__":  # inputs are decoded in child processes, which import __main__
        run_batch(sys.argv[1], sys.argv[2], model="bicubic", workers=1, on_result=stop_after_two)
    """
)


def test_killed_batch_resumes_with_the_rest(archive: Path, tmp_path: Path):
    out = tmp_path / "out"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, str(script), str(archive), str(out)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    first = [r for r in read_report(out / "batch_report.csv") if r["status"] == "ok"]
    assert len(first) == 2  # the report was flushed as items finished
    before = _mtimes(out)
    summary = run_batch(archive, out, model="bicubic", workers=2)
    rows = _rows(summary.report)
    done_first = {r["input"].split(" [")[0] for r in first}
    for key in done_first:
        assert rows[key]["status"] == "skipped" and "up to date" in rows[key]["error"]
    rest = {
        "study1/ct/",
        "study1/mr/MR_small.dcm",
        "volumes/brain.nii.gz",
        "photos/slice.png",
    } - done_first
    assert len(rest) == 2
    for key in rest:
        assert rows[key]["status"] == "ok"
    after = _mtimes(out)
    for name, mtime in before.items():
        if not name.startswith("."):
            assert after[name] == mtime  # nothing finished before the kill was written again


def test_plane_upscaler_matches_predictor(tmp_path: Path, rng):
    from medsr.inference.predictor import upscale
    from medsr.models.registry import create_model
    from medsr.models.weights import save_model

    card = {
        "architecture": "srcnn",
        "kwargs": {"scale": 2, "num_features": 4, "kernel_sizes": [3, 1, 3]},
        "scale": 2,
        "normalization": {"kind": "minmax"},
    }
    weights = save_model(
        create_model("srcnn", **card["kwargs"]), tmp_path / "tiny.safetensors", card
    )
    vol = MedImage(
        array=rng.normal(50, 10, (11, 12, 9)).astype(np.float32), spacing=(3.0, 0.7, 0.7)
    )
    rgb = MedImage(
        array=rng.random((3, 1, 10, 8)).astype(np.float32), spacing=(1.0, 1.0, 1.0), channels="RGB"
    )
    for model in ("bicubic", str(weights)):
        up = PlaneUpscaler(model, 2, device="cpu")
        for image in (vol, rgb):
            ours, ref = up.upscale(image), upscale(image, 2, model, device="cpu")
            np.testing.assert_array_equal(ours.array, ref.array)
            assert ours.spacing == ref.spacing and ours.meta["derivation"] == ref.meta["derivation"]
    # planes of several images in one forward pass (the CUDA path), tested on CPU
    up = PlaneUpscaler("bicubic", 2, device="cpu", batch_size=5)
    a = MedImage(array=rng.random((3, 12, 9)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    jobs = [up.prepare(vol), up.prepare(a), up.prepare(rgb)]
    done = []
    while len(done) < 3:
        for job in up.run_many([j for j in jobs if j not in done]):
            done.append(job)
    for job, image in zip(jobs, (vol, a, rgb), strict=True):
        np.testing.assert_array_equal(
            up.finish(job).array, upscale(image, 2, "bicubic", device="cpu").array
        )


def test_batched_model_stage_gives_the_same_files(archive: Path, tmp_path: Path):
    a = run_batch(archive, tmp_path / "a", model="bicubic", workers=2)
    b = run_batch(
        archive, tmp_path / "b", model="bicubic", workers=2, batch_across_items=True, batch_size=3
    )
    assert a.counts == b.counts
    for name in ("volumes/brain.nii.gz", "photos/slice.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in ("study1/ct", "study1/mr/MR_small.dcm"):
        np.testing.assert_array_equal(
            load_image(tmp_path / "a" / name).array, load_image(tmp_path / "b" / name).array
        )


def test_bad_arguments_fail_before_any_work(archive: Path, tmp_path: Path):
    with pytest.raises(InvalidParameterError):
        run_batch(archive, tmp_path / "o", scale=5)
    with pytest.raises(UnknownModelError):
        run_batch(archive, tmp_path / "o", model="no-such-model")
    with pytest.raises(InvalidParameterError):
        run_batch(archive, tmp_path / "o", engine="spark")
    with pytest.raises(InvalidParameterError):
        run_batch(archive, tmp_path / "o", workers=0)
    with pytest.raises(InvalidParameterError):
        run_batch(archive, tmp_path / "o", threads=0)
    for bad in (0, -5):
        with pytest.raises(InvalidParameterError, match="batch size"):
            run_batch(archive, tmp_path / "o", model="bicubic", batch_size=bad)
    assert not (tmp_path / "o").exists()


def test_cli_rejects_a_batch_size_below_one(archive: Path, tmp_path: Path):
    """``--batch-size 0`` (or negative) is a bad command: one ``error:`` line, exit status 2,
    nothing written (it used to be accepted silently)."""
    for bad in ("0", "-5"):
        proc = run_medsr(
            "batch", str(archive), str(tmp_path / "o9"), "--model", "bicubic",
            "--batch-size", bad, "--no-progress",
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "batch size" in lines[0]
        assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o9").exists()


def test_output_dtype_reaches_nifti_items_only(tmp_path: Path):
    """An int16 NIfTI comes back int16 by default and float32 with ``output_dtype="float32"``
    (a new fingerprint: the item is written again); a PNG beside it is unaffected; a bad value
    fails before any work."""
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    data = np.random.default_rng(5).normal(0, 300, (16, 16, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(src / "ct.nii.gz"))
    shutil.copy(corpus_path("camera.png"), src / "camera.png")
    out = tmp_path / "out"
    run_batch(src, out, model="bicubic", workers=1)
    assert nib.load(str(out / "ct.nii.gz")).get_data_dtype() == np.dtype(np.int16)
    summary = run_batch(src, out, model="bicubic", workers=1, output_dtype="float32")
    assert {r.status for r in summary.results} == {"ok"}  # both written again
    assert nib.load(str(out / "ct.nii.gz")).get_data_dtype() == np.dtype(np.float32)
    assert load_image(out / "camera.png").meta["stored_dtype"] == "uint8"
    with pytest.raises(InvalidParameterError, match="output-dtype"):
        run_batch(src, tmp_path / "o2", model="bicubic", output_dtype="float16")
    assert not (tmp_path / "o2").exists()


def test_cli_command(archive: Path, tmp_path: Path):
    from medsr.batch.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "batch",
            str(archive),
            str(tmp_path / "out"),
            "--model",
            "bicubic",
            "--workers",
            "1",
            "--no-progress",
        ],
    )
    assert res.exit_code == 1, res.output  # one item failed
    assert "4 ok, 1 failed" in res.output
    (archive / "broken" / "truncated.dcm").unlink()
    res = runner.invoke(
        app,
        ["batch", str(archive), str(tmp_path / "out"), "-m", "bicubic", "--threads", "1", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert '"skipped"' in res.output


@pytest.mark.gpu
def test_cuda_batches_planes_across_items(archive: Path, tmp_path: Path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu = run_batch(archive, tmp_path / "cpu", model="bicubic", device="cpu")
    gpu = run_batch(archive, tmp_path / "gpu", model="bicubic", device="cuda", batch_size=4)
    assert gpu.counts == cpu.counts
    for name in ("study1/ct", "study1/mr/MR_small.dcm", "volumes/brain.nii.gz", "photos/slice.png"):
        a = load_image(tmp_path / "cpu" / name).array
        b = load_image(tmp_path / "gpu" / name).array
        np.testing.assert_allclose(a, b, rtol=0, atol=0.01 * float(np.ptp(a) or 1))  # rounding


def test_a_damaged_slice_of_a_series_is_named_as_the_file_it_is(tmp_path: Path):
    """A series whose slice ``y/b.dcm`` is cut short fails with that file's name (relative to the
    series' folder): the report named the batch's private link to it, ``'1_b.dcm'``, a file the
    user does not have."""
    from tests.conftest import make_ct_series

    paths = make_ct_series(tmp_path / "in", n=3, names=["x/a.dcm", "y/b.dcm", "y/c.dcm"])
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-2000])
    summary = run_batch(tmp_path / "in", tmp_path / "out", model="bicubic", workers=1)
    assert summary.counts == {"ok": 0, "failed": 1, "skipped": 0}
    (row,) = read_report(summary.report)
    assert row["status"] == "failed"
    assert re.fullmatch(
        r"truncated or corrupt DICOM: 'y/b\.dcm' ends \d+ bytes early", row["error"]
    )
