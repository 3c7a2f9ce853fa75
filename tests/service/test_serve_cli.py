"""``medsr serve``: options reach the app's settings; loopback by default; a bad option or a busy
port is one ``error:`` line and exit status 2 before anything starts; no server started here."""

from __future__ import annotations

import socket
import subprocess

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("uvicorn")

from medsr.errors import InvalidParameterError
from medsr.service.cli import parse_duration, register
from tests._entry import run_medsr
from tests.conftest import cli_app


def _app() -> typer.Typer:
    return cli_app(register)


def test_serve_defaults_and_options(monkeypatch, tmp_path):
    import uvicorn

    import medsr.service.server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    # no socket is bound here (port 8000 may be taken on this machine; never bind 0.0.0.0)
    checked = []
    monkeypatch.setattr(medsr.service.server, "check_address", lambda *a: checked.append(a))
    monkeypatch.delenv("MEDSR_TOKEN", raising=False)
    runner = CliRunner()
    r = runner.invoke(_app(), ["serve"])
    assert r.exit_code == 0, r.output
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000
    # slow clients and shutdown are bounded (medsr.service.server documents each limit)
    from medsr.service.server import GuardedH11Protocol

    assert issubclass(kw["http"], GuardedH11Protocol) and kw["timeout_keep_alive"] == 5
    assert kw["h11_max_incomplete_event_size"] and kw["timeout_graceful_shutdown"] == 10
    assert kw["server_header"] is False
    settings = app.state.settings
    assert (
        settings.token is None and settings.retention_s == 3600 and settings.max_upload_mb == 1024
    )
    app.state.service.stop()

    r = runner.invoke(
        _app(),
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9123",
            "--max-upload-mb",
            "5",
            "--retention",
            "30m",
            "--work-dir",
            str(tmp_path / "w"),
            "--decode-timeout",
            "20s",
            "--shutdown-grace",
            "1m",
        ],
        env={"MEDSR_TOKEN": "tok"},
    )
    assert r.exit_code == 0, r.output
    app, kw = calls[-1]
    assert kw["host"] == "0.0.0.0" and kw["port"] == 9123
    s = app.state.settings
    assert (s.token, s.retention_s, s.max_upload_mb, s.work_dir) == ("tok", 1800, 5, tmp_path / "w")
    assert (s.decode_timeout_s, s.shutdown_grace_s) == (20, 60)
    assert kw["timeout_graceful_shutdown"] == 60
    app.state.service.stop()

    assert checked == [("127.0.0.1", 8000), ("0.0.0.0", 9123)]  # each address checked first

    r = runner.invoke(_app(), ["serve", "--host", "0.0.0.0"])
    assert "without --token" in r.output
    calls[-1][0].state.service.stop()
    assert "--max-upload-mb" in runner.invoke(_app(), ["serve", "--help"]).output


def test_parse_duration():
    assert parse_duration("90") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("1.5d") == 129600
    with pytest.raises(InvalidParameterError):  # one grammar, one error (exit 2 in the CLI)
        parse_duration("soon")


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``medsr serve`` through the real entry point (exit status and output as a user sees them);
    the timeout ends a server that would start instead of refusing its options."""
    return run_medsr("serve", *args, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "-1"], "--port must be between 1 and 65535, got -1"),
        (["--port", "70000"], "--port must be between 1 and 65535, got 70000"),
        (["--port", "0"], "--port must be between 1 and 65535, got 0"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--max-queue", "0"], "--max-queue must be at least 1, got 0"),
        (["--log-level", "foo"], "--log-level must be one of debug, info, warning, error"),
        (["--work-dir", "{file}"], "exists and is not a folder"),
        (["--work-dir", "{file}/sub"], "cannot be created"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be more than 0 MB"),
        (["--max-upload-mb", "-5"], "--max-upload-mb must be more than 0 MB"),
        (["--max-upload-mb", "nan"], "--max-upload-mb must be more than 0 MB"),
    ],
)
def test_bad_option_is_one_error_line_before_startup(args, expected, tmp_path):
    """Each used to be a traceback (port, workers, queue, log level, work dir) or a service that
    started and refused every upload (--max-upload-mb 0), after a banner announcing the URL."""
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    args = [a.format(file=file) for a in args]
    if "--port" not in args:  # should it start after all, not on a port someone else uses
        args += ["--port", str(_free_port())]
    r = _serve(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert expected in lines[0]
    assert r.stdout == ""  # nothing announced: no "medsr web page: http://…"


def test_busy_port_is_one_error_line_before_startup():
    """A second ``medsr serve`` on a port in use used to print its banner and "service ready",
    then uvicorn's ``ERROR: [Errno 98] address already in use`` and exit status 3."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _serve("--port", str(port))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is already in use (another "
        "server?); stop it or choose another --port"
    ]
    assert r.stdout == ""


def test_python_callers_get_the_same_checks(tmp_path):
    from medsr.service.app import Settings, create_app

    with pytest.raises(InvalidParameterError, match="--workers must be at least 1"):
        create_app(Settings(workers=0))
    with pytest.raises(InvalidParameterError, match="--max-upload-mb must be more than 0"):
        create_app(Settings(max_upload_mb=0, work_dir=tmp_path))


def test_port_taken_after_the_check_is_one_error(monkeypatch, tmp_path):
    """Should the port be taken between the check and uvicorn's bind, uvicorn's exit status 3
    becomes a medsr error (one ``error:`` line, exit status 2, in main())."""
    import medsr.service.server
    from medsr.errors import MedSRError

    monkeypatch.setattr(medsr.service.server, "check_address", lambda *a: None)  # the race
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = CliRunner().invoke(
            _app(), ["serve", "--port", str(port), "--work-dir", str(tmp_path / "w")]
        )
    assert isinstance(r.exception, MedSRError), r.output
    assert str(r.exception) == (
        f"the web service could not start on 127.0.0.1:{port} (see the log line above)"
    )
