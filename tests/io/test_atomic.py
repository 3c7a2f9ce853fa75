"""Outputs: --overwrite replaces only what medsr wrote; an output that cannot be written (or an
input that cannot be read) is one error before any work (the CLI's exit status 2), never a
traceback after it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medsr.errors import InvalidParameterError, OutputExistsError, OutputWriteError
from medsr.io._atomic import SERIES_FILE, atomic_dir, atomic_file, check_output, series_file_name
from medsr.pipeline import check_paths
from tests.conftest import corpus_path, file_digest


def _cli(*args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from medsr.cli import main; main()", *args]
    if user:  # a user who may not write where root may (root ignores permissions)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


_MANY = """
import contextlib, io, json, sys
from medsr.cli import main
results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["medsr", *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def _cli_runs(*runs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """``medsr <args>`` for each of ``runs`` in turn through the real ``main()``, in one child
    process: each start of a CLI process (Python, torch, the pipeline) took 3-5 s on 2 cores."""
    cmd = [sys.executable, "-c", _MANY, json.dumps(runs)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return [
        subprocess.CompletedProcess(args, code, out, err)
        for args, (code, out, err) in zip(runs, json.loads(proc.stdout), strict=True)
    ]


@pytest.fixture
def dcm(tmp_path):
    src = tmp_path / "in.dcm"
    shutil.copy(corpus_path("CT_small.dcm"), src)
    return src


def test_overwrite_never_replaces_a_folder_of_other_files(dcm, tmp_path):
    """The folder-style output of a DICOM series must not wipe a folder medsr did not write."""
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "important.txt").write_text("keep")
    shutil.copy(dcm, data / "scan.dcm")
    res = _cli("upscale", str(dcm), str(data), "--model", "bicubic", "--overwrite")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "did not write" in res.stderr
    assert sorted(p.name for p in data.iterdir()) == ["important.txt", "scan.dcm"]


def test_overwrite_replaces_its_own_series_and_files(dcm, tmp_path):
    series, one = tmp_path / "series", tmp_path / "one.dcm"
    runs = [
        ["upscale", str(dcm), str(out), "--model", "bicubic", "--overwrite"]
        for _ in range(2)
        for out in (series, one)
    ]
    for res in _cli_runs(*runs):  # the same four runs, in the same order
        assert res.returncode == 0, res.stderr
    assert [p.name for p in series.iterdir()] == ["IM00001.dcm"] and one.is_file()


@pytest.mark.parametrize("existing", ["file", "folder", "fifo"])
def test_overwrite_refuses_the_wrong_kind_of_thing(tmp_path, existing):
    """A series never replaces a file; a file never replaces a folder or a special file (a
    device such as /dev/null, a FIFO)."""
    p = tmp_path / ("thing" if existing != "folder" else "thing.nii.gz")
    if existing == "file":
        p.write_text("notes")
    elif existing == "folder":
        p.mkdir()
    else:
        os.mkfifo(p)
    kind = "series" if existing == "file" else "file"
    with pytest.raises(InvalidParameterError):
        check_output(p, True, kind)
    with pytest.raises(OutputExistsError):
        check_output(p, False, kind)
    assert os.path.lexists(p)  # untouched


def test_series_folder_check_before_the_model_runs(dcm, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README").write_text("x")
    with pytest.raises(InvalidParameterError, match="did not write"):
        check_paths(dcm, tmp_path / "out", overwrite=True)
    (tmp_path / "out" / "README").unlink()
    (tmp_path / "out" / "IM00001.dcm").write_bytes(b"")
    assert check_paths(dcm, tmp_path / "out", overwrite=True) == tmp_path / "out"


def test_output_under_a_file_is_one_error(dcm, tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in ("afile/sub/out.dcm", "afile/out.nii.gz", "afile/series"):
        with pytest.raises(OutputWriteError, match="not a folder"):
            check_paths(dcm, tmp_path / out)
    for make in (atomic_file, atomic_dir):
        with pytest.raises(OutputWriteError), make(tmp_path / "afile" / "x.nii.gz"):
            pass


def test_a_write_that_fails_midway_is_one_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(OutputWriteError, match="No space left"):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "series"])
def test_any_failure_removes_the_temporary_and_only_oserror_is_reworded(tmp_path, kind):
    """One helper (_writing) for both atomic writers: the temporary goes whatever failed; an
    OSError is one OutputWriteError line, anything else (a bug, Ctrl-C) is raised as it is."""
    target = tmp_path / ("out.nii.gz" if kind == "file" else "series")
    opener = atomic_file if kind == "file" else atomic_dir
    for raised, expected in ((OSError(30, "Read-only file system"), OutputWriteError),
                             (KeyboardInterrupt(), KeyboardInterrupt), (ValueError("bug"), ValueError)):  # fmt: skip
        with pytest.raises(expected) as info:
            with opener(target) as tmp:
                (tmp / "IM00001.dcm" if kind == "series" else tmp).write_bytes(b"partial")
                raise raised
        assert list(tmp_path.iterdir()) == []
        if expected is OutputWriteError:
            assert str(info.value) == f"cannot write '{target}': Read-only file system"


@settings(max_examples=50, deadline=None)
@given(count=st.integers(1, 10**7), data=st.data())
def test_series_file_names_are_what_the_overwrite_check_recognises(count, data):
    """The DICOM writer's names of a series folder's files and the pattern --overwrite accepts
    as a previous medsr series come from one place (they were two spellings of one rule), and
    the names sort in slice order."""
    i = data.draw(st.integers(1, count))
    j = data.draw(st.integers(1, count))
    a, b = series_file_name(i, count), series_file_name(j, count)
    assert SERIES_FILE.match(a) and SERIES_FILE.match(b)
    assert (a < b) == (i < j) and len(a) == len(b)
    assert series_file_name(1, 3) == "IM00001.dcm"
    assert not SERIES_FILE.match("IM0001.dcm") and not SERIES_FILE.match("IM00001.dcm.bak")


AS_USER = os.name == "posix" and os.geteuid() == 0
NO_USER = os.name != "posix" or (AS_USER and shutil.which("setpriv") is None)


@pytest.fixture
def shared_dir():
    """A folder another user may enter (pytest's own are private to their owner)."""
    d = Path(tempfile.mkdtemp(prefix="medsr-perm-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    for p in d.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d)


@pytest.mark.skipif(NO_USER, reason="needs a user without write permission (setpriv as root)")
@pytest.mark.parametrize("out", ["ro/out.dcm", "ro/series", "ro/out.nii.gz", "ro/sub/out.dcm"])
def test_unwritable_output_folder_is_one_error_before_any_work(shared_dir, out):
    src = shared_dir / "in.dcm"
    shutil.copy(corpus_path("CT_small.dcm"), src)
    src.chmod(0o644)
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    before = file_digest(src)
    res = _cli("upscale", str(src), str(shared_dir / out), "--model", "bicubic", user=AS_USER)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: cannot write") and res.stderr.count("\n") == 1
    assert list(ro.iterdir()) == [] and file_digest(src) == before


@pytest.mark.skipif(NO_USER, reason="needs a user without read permission (setpriv as root)")
@pytest.mark.parametrize("hidden", ["folder", "file"])
def test_unreadable_input_is_one_error(shared_dir, hidden):
    d = shared_dir / "private"
    d.mkdir()
    src = d / "in.dcm"
    shutil.copy(corpus_path("CT_small.dcm"), src)
    (d if hidden == "folder" else src).chmod(0o700 if hidden == "folder" else 0o600)
    res = _cli("upscale", str(src), str(shared_dir / "out.dcm"), "--model", "bicubic", user=AS_USER)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert not (shared_dir / "out.dcm").exists()
