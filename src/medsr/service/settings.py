"""Everything ``medsr serve`` can configure, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    #: work directory for job folders (a private temporary folder when None)
    work_dir: Path | None = None
    workers: int = 1
    max_pending: int = 8
    #: zip extraction limits
    zip_max_total_mb: float = 4096.0
    zip_max_files: int = 5000
    zip_max_ratio: float = 200.0
    #: refuse jobs whose output would exceed this many voxels (memory)
    max_output_megavoxels: float = 1024.0
    zero_shot_budget_s: float = 120.0
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
