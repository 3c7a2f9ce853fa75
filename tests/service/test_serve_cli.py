"""``medsr serve``: options reach the app's settings; loopback by default; no server started here."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("uvicorn")

from medsr.errors import InvalidParameterError
from medsr.service.cli import parse_duration, register


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def test_serve_defaults_and_options(monkeypatch, tmp_path):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
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
