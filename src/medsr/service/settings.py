"""Everything ``medsr serve`` can configure, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medsr.durations import ZERO_SHOT_BUDGET_S
from medsr.errors import InvalidParameterError, positive_number
from medsr.service.storage import ZipLimits

#: multipart headers and form fields around the uploaded file
MULTIPART_SLACK = 64 * 1024


@dataclass
class Settings:
    """Options of the web service (``medsr serve --help`` documents the ones on the command line)."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: largest accepted upload (413 beyond it)
    max_upload_mb: float = 1024.0
    #: bearer token required on /api/ when set
    token: str | None = None
    #: seconds a finished job's files are kept
    retention_s: float = 3600.0
    #: folder in which the service makes its private folder of job files (the system's temporary
    #: folder when None); its permissions are left as they are (:class:`~.storage.Storage`)
    work_dir: Path | None = None
    workers: int = 1
    max_pending: int = 8
    #: zip extraction limits
    zip_max_total_mb: float = 4096.0
    zip_max_files: int = 5000
    zip_max_ratio: float = 200.0
    #: refuse jobs whose output would exceed this many voxels (memory)
    max_output_megavoxels: float = 1024.0
    #: training time of a zero-shot job that states none (``budget``): the command line's default
    zero_shot_budget_s: float = ZERO_SHOT_BUDGET_S
    #: most training time a zero-shot job may ask for (bounded work per job)
    max_zero_shot_budget_s: float = 600.0
    #: most per-volume adaptation steps a through-plane job may ask for (bounded work per job)
    max_adapt_steps: int = 2000
    #: offer medsr's shipped models (``medsr models``; ``default`` is default-x{scale})
    pretrained: bool = True
    #: extra folders searched for ``*.safetensors`` models (each with its model card)
    weights_dirs: tuple[Path, ...] = ()
    #: an upload is decoded in a separate process, killed after this many seconds (422)
    decode_timeout_s: float = 60.0
    #: on shutdown, running jobs get this long to finish (then their files are deleted anyway);
    #: uvicorn also waits at most this long for open connections
    shutdown_grace_s: float = 10.0
    #: a client must send a request's headers within this many seconds (slowloris)
    header_timeout_s: float = 15.0
    #: while a body is uploading, every window of this many seconds must bring at least
    #: ``body_min_rate`` bytes per second (slow-body attacks); the connection is closed otherwise
    body_timeout_s: float = 30.0
    body_min_rate: float = 1024.0
    #: connections + requests in flight before uvicorn answers 503
    max_connections: int = 256

    def check(self) -> None:
        """Raise one :class:`~medsr.errors.InvalidParameterError` for a value the service cannot
        run with, before anything starts (``medsr serve`` then prints one ``error:`` line).

        Without it each value failed where it was first used: a port out of range in uvicorn's
        bind (a traceback after the banner), zero workers in the job queue (ValueError), a work
        folder that is a file in the storage (FileExistsError), and an upload limit of 0 MB
        not at all: the service started and refused every upload with 413.
        """
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidParameterError(f"--port must be a whole number, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise InvalidParameterError(f"--port must be between 1 and 65535, got {self.port}")
        positive_number(self.max_upload_mb, "--max-upload-mb", "MB")
        if self.workers < 1:
            raise InvalidParameterError(f"--workers must be at least 1, got {self.workers}")
        if self.max_pending < 1:
            raise InvalidParameterError(f"--max-queue must be at least 1, got {self.max_pending}")
        positive_number(self.zero_shot_budget_s, "the zero-shot budget", "seconds")
        positive_number(self.max_zero_shot_budget_s, "the largest zero-shot budget", "seconds")
        if self.zero_shot_budget_s > self.max_zero_shot_budget_s:
            raise InvalidParameterError(
                f"the zero-shot budget ({self.zero_shot_budget_s:g} s) exceeds the largest a "
                f"job may ask for ({self.max_zero_shot_budget_s:g} s)"
            )
        if self.work_dir is not None:
            _check_work_dir(Path(self.work_dir))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024**2)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: the upload plus the multipart envelope around it."""
        return self.max_upload_bytes + MULTIPART_SLACK

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_total_bytes=int(self.zip_max_total_mb * 1024**2),
            max_files=self.zip_max_files,
            max_ratio=self.zip_max_ratio,
        )


def _check_work_dir(path: Path) -> None:
    """``--work-dir`` is a folder, or can be made one (its nearest existing parent is a folder
    this user may write in: :func:`medsr.io._atomic.check_writable`, as for every output)."""
    from medsr.errors import OutputWriteError
    from medsr.io._atomic import check_writable

    if path.exists() and not path.is_dir():
        raise InvalidParameterError(
            f"--work-dir '{path}' exists and is not a folder: give a folder (it is created "
            "if missing)"
        )
    try:
        check_writable(path)
    except OutputWriteError as exc:
        what = "is not writable" if path.exists() else "cannot be created"
        raise InvalidParameterError(f"--work-dir '{path}' {what}: {exc}") from None
