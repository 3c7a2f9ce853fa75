"""Issue 22: ``medsr batch`` decodes every input under a time limit (a child process per input,
the web service's mechanism), so a hanging or crashing reader costs one failed item, not the
batch."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import medsr.batch.runner as runner
from medsr.batch import run_batch
from medsr.errors import InvalidParameterError
from medsr.io.isolated import IsolatedReader
from tests.batch import _slow_readers
from tests.conftest import cli_app


@pytest.fixture
def hostile_reader(monkeypatch):
    """The batch's reader, with a loader that hangs on ``hang*`` and crashes on ``crash*``."""
    made: list[IsolatedReader] = []

    def make(timeout_s: float) -> IsolatedReader:
        made.append(IsolatedReader(timeout_s, loader=_slow_readers.hostile))
        return made[-1]

    monkeypatch.setattr(runner, "IsolatedReader", make)
    return made


def test_hanging_and_crashing_inputs_fail_alone(archive: Path, tmp_path: Path, hostile_reader):
    photo = archive / "photos" / "slice.png"
    shutil.copy(photo, archive / "photos" / "hang.png")
    shutil.copy(photo, archive / "photos" / "crash.png")
    t0 = time.monotonic()
    summary = run_batch(archive, tmp_path / "out", model="bicubic", workers=2, decode_timeout_s=2)
    assert time.monotonic() - t0 < 120  # without the limit it would never return
    rows = {r.label.split(" [")[0]: r for r in summary.results}
    hang, crash = rows["photos/hang.png"], rows["photos/crash.png"]
    assert hang.status == "failed"
    assert hang.error == (
        "'photos/hang.png' could not be read within 2 s (the decoding time limit); the file is "
        "probably malformed"
    )
    assert crash.status == "failed" and "could not be read (the reader crashed)" in crash.error
    assert rows["photos/slice.png"].status == "ok" and rows["study1/ct/"].status == "ok"
    assert summary.counts == {"ok": 4, "failed": 3, "skipped": 1 + (archive / "seg").exists()}
    assert not (tmp_path / "out" / "photos" / "hang.png").exists()
    [reader] = hostile_reader
    assert not reader._children  # every child was killed or has ended
    with pytest.raises(InvalidParameterError, match="decoding time limit"):
        run_batch(archive, tmp_path / "o", model="bicubic", decode_timeout_s=0)


def test_cli_decode_timeout_option(archive: Path, tmp_path: Path, hostile_reader):
    from medsr.batch.cli import register

    shutil.copy(archive / "photos" / "slice.png", archive / "photos" / "hang.png")
    app = cli_app(register)
    args = ["batch", str(archive), str(tmp_path / "out"), "-m", "bicubic", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--decode-timeout", "1500ms"])
    assert res.exit_code == 1, res.output  # items failed: the truncated file and the hang
    assert "4 ok, 2 failed" in res.output
    assert hostile_reader[-1].timeout_s == 1.5
    res = CliRunner().invoke(app, [*args, "--decode-timeout", "soon"])
    assert isinstance(res.exception, InvalidParameterError)  # medsr prints it as 'error: ...'
    assert "--decode-timeout 'soon' is not a duration" in str(res.exception)
