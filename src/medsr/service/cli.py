"""``medsr serve``: registered on the main Typer app by :func:`register` (imports stay lazy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: ``--log-level`` values (Python logging's levels, as uvicorn names them)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: uvicorn's exit status when the server did not start (its bind failed)
STARTUP_FAILURE = 3


def parse_duration(text: str) -> float:
    """``--retention``, ``--decode-timeout``, ``--shutdown-grace``: the one duration grammar
    (:func:`medsr.durations.parse_duration`)."""
    from medsr.durations import parse_duration as parse

    return parse(text, "duration")


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command(
        epilog=(
            "Examples: medsr serve ;  medsr serve --port 8080 --max-upload-mb 2048 --retention 30m ;  "
            "MEDSR_TOKEN=secret medsr serve --host 0.0.0.0"
        )
    )
    def serve(
        host: Annotated[
            str,
            typer.Option(
                "--host",
                help="Interface to bind; 127.0.0.1 keeps the server local to this machine.",
            ),
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8000,
        max_upload_mb: Annotated[
            float,
            typer.Option("--max-upload-mb", help="Largest accepted upload in MB (413 beyond)."),
        ] = 1024.0,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="MEDSR_TOKEN",
                help="Require 'Authorization: Bearer TOKEN' on the API (prefer the MEDSR_TOKEN variable: command lines are visible to other users).",
            ),
        ] = None,
        retention: Annotated[
            str,
            typer.Option(
                "--retention", help="How long finished jobs' files are kept: 90s, 30m, 2h, 1d."
            ),
        ] = "1h",
        work_dir: Annotated[
            Path | None,
            typer.Option(
                "--work-dir",
                help="Folder in which the job files' private folder (medsr-serve-*, removed on "
                "exit) is made; its own permissions are left as they are (default: the "
                "system's temporary folder).",
            ),
        ] = None,
        workers: Annotated[
            int, typer.Option("--workers", help="Jobs processed at the same time.")
        ] = 1,
        max_queue: Annotated[
            int,
            typer.Option("--max-queue", help="Jobs queued or running before new uploads get 503."),
        ] = 8,
        decode_timeout: Annotated[
            str,
            typer.Option(
                "--decode-timeout",
                help="Longest time an upload may take to read (it is decoded in a separate "
                "process, killed beyond; the upload gets 422): 30s, 2m.",
            ),
        ] = "60s",
        shutdown_grace: Annotated[
            str,
            typer.Option(
                "--shutdown-grace",
                help="On SIGTERM, how long open requests and running jobs may take to finish "
                "before they are stopped and every job's files deleted: 10s, 1m.",
            ),
        ] = "10s",
        log_level: Annotated[
            str, typer.Option("--log-level", help="debug, info, warning, error or critical.")
        ] = "info",
    ) -> None:
        """Serve the web page and REST API (upload, before/after viewer, download; docs at /docs)."""
        import logging

        from medsr.errors import InvalidParameterError, MedSRError

        try:
            import uvicorn

            from medsr.service.app import Settings, create_app
            from medsr.service.server import check_address, uvicorn_options
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise MedSRError(
                f"the web service needs the 'web' extra: pip install 'medsr[web]' ({exc.name} is missing)"
            ) from None

        # every option is checked before anything is announced or started: a bad value is one
        # ``error:`` line and exit status 2, never a traceback after the banner
        level = log_level.strip().lower()
        if level not in LOG_LEVELS:
            raise InvalidParameterError(
                f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}"
            )
        settings = Settings(
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            token=token or None,
            retention_s=parse_duration(retention),
            work_dir=work_dir,
            workers=workers,
            max_pending=max_queue,
            decode_timeout_s=parse_duration(decode_timeout),
            shutdown_grace_s=parse_duration(shutdown_grace),
        )
        settings.check()
        check_address(host, port)  # a busy port: one line now, not "ready" then a failure
        logging.basicConfig(
            level=getattr(logging, level.upper()),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if host not in ("127.0.0.1", "localhost", "::1") and not token:
            typer.echo(
                f"warning: binding {host} without --token: anyone who can reach this port can upload images",
                err=True,
            )
        typer.echo(
            f"medsr web page: http://{'[' + host + ']' if ':' in host else host}:{port}/   (API docs: /docs)"
        )
        # read deadlines, header size, connection limit, bounded shutdown: see medsr.service.server
        try:
            uvicorn.run(create_app(settings), log_level=level, **uvicorn_options(settings))
        except SystemExit as exc:
            if exc.code != STARTUP_FAILURE:
                raise
            # uvicorn did not start (its log line says why): the port taken between the check
            # and its bind, or the app's startup failing
            raise MedSRError(
                f"the web service could not start on {host}:{port} (see the log line above)"
            ) from None
