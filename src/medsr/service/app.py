"""The medsr web service: a REST API and a single-page viewer, served by one FastAPI app.

``create_app(settings)`` builds the app. Endpoints (all JSON errors are ``{"detail": …}``):

* ``POST /api/v1/jobs`` — multipart ``file`` (DICOM file, zip of a DICOM series, NIfTI, PNG,
  TIFF) plus ``model``, ``scale`` and ``mode`` (``in-plane`` | ``through-plane`` | ``zero-shot``).
  The upload is size-limited (413), sniffed from its bytes (415), parsed (422 with the reader's
  message when corrupt) and queued; the answer is ``202`` with the job.
* ``GET /api/v1/jobs/{id}`` — state, stage, progress, error, geometry, model card, metrics.
* ``GET /api/v1/jobs/{id}/result`` — the result in the upload's format (a zip for a series).
* ``GET /api/v1/jobs/{id}/preview?which=&slice=&window=`` — a windowed PNG for the viewer.
* ``DELETE /api/v1/jobs/{id}`` — delete the job's files now.
* ``GET /api/v1/models``, ``GET /api/v1/info``, ``GET /healthz``, ``/docs``, ``/openapi.json``.

With a token configured every ``/api/`` request needs ``Authorization: Bearer <token>`` (401
otherwise, checked before the body is read). Job folders are deleted ``retention_s`` after the job
finishes. Logs name jobs by id and series by a hash, never by file name or header value.
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import medsr
from medsr.errors import (
    CorruptInputError,
    InvalidParameterError,
    MedSRError,
    UnsupportedFormatError,
)
from medsr.inference.predictor import SCALES
from medsr.models.pretrained import WEIGHTS_DIR
from medsr.reports.render import CT_WINDOWS
from medsr.service.jobs import (
    MEDIA_TYPES,
    MODES,
    Job,
    JobNotReadyError,
    JobQueue,
    QueueFullError,
    describe,
    new_job_id,
    process,
)
from medsr.service.storage import (
    Storage,
    ZipLimits,
    is_zip,
    safe_extract_zip,
    safe_filename,
    safe_stem,
)

log = logging.getLogger("medsr.service")

STATIC_DIR = Path(__file__).parent / "static"
_ACCEPTED = {"dicom", "nifti", "png", "tiff"}
_MULTIPART_SLACK = 64 * 1024  # multipart headers and form fields around the file


@dataclass
class Settings:
    """Everything ``medsr serve`` can configure."""

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
    #: folders searched for ``*.safetensors`` models (with their model cards)
    weights_dirs: tuple[Path, ...] = field(default_factory=lambda: (WEIGHTS_DIR,))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024**2)

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_total_bytes=int(self.zip_max_total_mb * 1024**2),
            max_files=self.zip_max_files,
            max_ratio=self.zip_max_ratio,
        )


# ====================================================================== response models
class ErrorBody(BaseModel):
    detail: str = Field(description="What went wrong, in words a user can act on.")
    type: str | None = Field(None, description="Error class (e.g. UnsupportedFormatError).")


class ImageInfo(BaseModel):
    modality: str
    shape_zyx: list[int]
    spacing_mm_zyx: list[float]
    channels: str
    units: str
    min: float
    max: float
    format: str | None = None
    filename: str | None = None
    size_bytes: int | None = None


class JobError(BaseModel):
    status: int
    type: str
    message: str


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed"]
    stage: str
    progress: float = Field(ge=0, le=1)
    mode: str
    model: str
    scale: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    input: ImageInfo
    output: ImageInfo | None = None
    window: list[float] = Field(
        description="Default display window (centre, width) in the image's units."
    )
    model_card: dict[str, Any]
    metrics: dict[str, Any]
    maps: list[str] = Field(description="Extra preview layers (e.g. consistency, uncertainty).")
    safeguards: dict[str, Any] = Field(
        default_factory=dict,
        description="Fidelity summary: consistency error, uncertainty, out-of-distribution check, warnings.",
    )
    provenance: dict[str, Any] = Field(
        default_factory=dict,
        description="medsr version, model name and checksum, scale, degradation assumed, consistency setting.",
    )
    error: JobError | None = None
    links: dict[str, str]


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    learned: bool
    description: str = ""
    scales: list[int]


class ServiceInfo(BaseModel):
    version: str
    max_upload_mb: float
    retention_s: float
    scales: list[int]
    modes: dict[str, bool]
    window_presets: dict[str, list[float]]
    auth_required: bool


class Health(BaseModel):
    status: str
    version: str
    jobs_pending: int
    max_pending: int


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Malformed request (e.g. a broken multipart body).",
        401: "Missing or wrong bearer token.",
        404: "Unknown job (or expired).",
        409: "The job has not finished.",
        413: "Upload or archive too large.",
        415: "Unsupported file format.",
        422: "Invalid parameter or corrupt data.",
        503: "Queue full; try again later.",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# ====================================================================== the service object
class Service:
    """State shared by the endpoints: storage, job queue, models, clean-up thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stop = threading.Event()
        self._cleaner: threading.Thread | None = None
        self._open()

    def _open(self) -> None:
        self.storage = Storage(self.settings.work_dir)
        self.queue = JobQueue(workers=self.settings.workers, max_pending=self.settings.max_pending)
        for orphan in self.storage.orphans(set()):  # left by an earlier run in the same folder
            self.storage.remove(orphan)
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the clean-up thread (again, after :meth:`stop`, with a fresh queue and folder)."""
        if self._closed:
            self._open()
        if self._cleaner is None or not self._cleaner.is_alive():
            self._stop.clear()
            self._cleaner = threading.Thread(
                target=self._clean_loop, name="medsr-cleanup", daemon=True
            )
            self._cleaner.start()

    def stop(self) -> None:
        """Cancel queued jobs, stop the threads and delete every job's files."""
        self._stop.set()
        self.queue.shutdown(wait=False)
        if self._cleaner is not None:
            self._cleaner.join(timeout=5)
        self.storage.close()
        self._closed = True

    def _clean_loop(self) -> None:
        period = min(60.0, max(0.5, self.settings.retention_s / 4))
        while not self._stop.wait(period):
            try:
                self.cleanup_expired()
            except Exception as exc:  # never let clean-up kill the thread
                log.error("clean-up failed: %s", type(exc).__name__)

    def cleanup_expired(self, now: float | None = None) -> int:
        """Delete finished jobs older than the retention period; return how many."""
        now = time.time() if now is None else now
        removed = 0
        for job in self.queue.jobs():
            if (
                job.finished
                and job.finished_at is not None
                and job.finished_at + self.settings.retention_s <= now
            ):
                self.delete(job.id)
                removed += 1
        if removed:
            log.info("retention: deleted %d expired job(s)", removed)
        return removed

    def delete(self, job_id: str) -> None:
        self.queue.pop(job_id)
        self.storage.remove(job_id)

    # ------------------------------------------------------------------ models
    def models(self) -> dict[str, dict[str, Any]]:
        return _models(tuple(str(d) for d in self.settings.weights_dirs))

    def resolve_model(self, name: str, scale: int) -> tuple[dict[str, Any], str | None]:
        """The model card and (for learned models) the weights path for ``name``."""
        models = self.models()
        card = models.get(name.strip().lower()) or models.get(name.strip())
        if card is None:
            raise InvalidParameterError(
                f"unknown model {name!r}; available: {', '.join(sorted(models))}"
            )
        if scale not in card["scales"]:
            raise InvalidParameterError(
                f"model {card['name']!r} works at ×{', ×'.join(map(str, card['scales']))}, not ×{scale}"
            )
        public = {k: v for k, v in card.items() if k != "_path"}
        return public, card.get("_path")


@lru_cache(maxsize=8)
def _models(weights_dirs: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from medsr.models.registry import get_model_class, list_models

    out: dict[str, dict[str, Any]] = {}
    for name in list_models(learned=False):
        doc = (get_model_class(name).__doc__ or "").strip()
        lines = [ln.strip() for ln in doc.splitlines() if ln.strip()]
        card = {
            "name": name,
            "kind": "interpolator",
            "learned": False,
            "description": lines[0] if lines else "",
            "scales": list(SCALES),
        }
        if len(lines) > 1:
            card["reference"] = " ".join(lines[1:])[:300]
        out[name] = card
    for folder in weights_dirs:
        d = Path(folder)
        if not d.is_dir():
            continue
        from medsr.models.weights import read_card

        for path in sorted(d.glob("*.safetensors")):
            try:
                card = read_card(path)
            except MedSRError:
                log.warning("skipping unreadable weights file in a models folder")
                continue
            name = str(card.get("name") or path.stem)
            public = {
                k: v
                for k, v in card.items()
                if k not in ("weights", "kwargs") and not k.startswith("_")
            }
            public.update(
                name=name,
                kind=str(card.get("kind") or "super-resolution"),
                learned=True,
                description=str(
                    card.get("description")
                    or f"{card.get('architecture', 'network')} ×{card.get('scale')}"
                ),
                scales=[int(card.get("scale", 2))],
                _path=str(path),
            )
            out[name] = public
    return out


def selfsup_function(mode: str) -> Callable[..., Any] | None:
    """``medsr.selfsup``'s function for ``mode`` when this installation has it."""
    name = {"through-plane": "through_plane_upscale", "zero-shot": "zero_shot_upscale"}.get(mode)
    if name is None:
        return None
    try:
        module = importlib.import_module("medsr.selfsup")
    except ImportError:
        return None
    fn = getattr(module, name, None)
    return fn if callable(fn) else None


_SELFSUP_CARDS = {
    "through-plane": {
        "name": "through-plane",
        "kind": "self-supervised",
        "learned": True,
        "description": "Through-plane super-resolution learned from the volume's own in-plane detail.",
    },
    "zero-shot": {
        "name": "zero-shot",
        "kind": "self-supervised",
        "learned": True,
        "description": "Zero-shot super-resolution: a small network trained on the image itself (ZSSR).",
    },
}


# ====================================================================== middleware
class BearerTokenMiddleware:
    """Refuse ``/api/`` requests without the bearer token, before any body is read."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            given = b""
            for key, value in scope.get("headers", []):
                if key == b"authorization":
                    given = value
                    break
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {
                        "detail": "this server needs an access token (Authorization: Bearer …)",
                        "type": "Unauthorized",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


_bearer = HTTPBearer(auto_error=False, description="Only when the server was started with --token.")


def auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Documents the bearer scheme in OpenAPI; the check itself is BearerTokenMiddleware's."""


class _PageFiles(StaticFiles):
    """The page's static files, with the same security headers as the page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(_PAGE_HEADERS)
        return response


# ====================================================================== helpers
def _ts(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def _job_out(job: Job, retention_s: float) -> JobOut:
    base = f"/api/v1/jobs/{job.id}"
    links = {"self": base, "preview": f"{base}/preview"}
    if job.state == "done":
        links["result"] = f"{base}/result"
        if job.sidecar_path is not None:
            links["sidecar"] = f"{base}/result?part=sidecar"
    output = None
    if job.output_info is not None:
        output = ImageInfo(**job.output_info, format=job.input_format, filename=job.result_name)
    return JobOut(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        stage=job.stage,
        progress=job.progress,
        mode=job.mode,
        model=job.model,
        scale=job.scale,
        created_at=_ts(job.created_at),  # type: ignore[arg-type]
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        expires_at=_ts(job.finished_at + retention_s) if job.finished_at else None,
        input=ImageInfo(**job.input_info),
        output=output,
        window=[float(job.window[0]), float(job.window[1])],
        model_card=job.model_card,
        metrics=job.metrics,
        maps=list(job.maps),
        safeguards=job.safeguards,
        provenance=job.provenance,
        error=JobError(**job.error) if job.error else None,
        links=links,
    )


def _save_upload(upload: UploadFile, target: Path, limit: int) -> int:
    size = 0
    src = upload.file
    src.seek(0)
    with open(target, "wb") as out:
        while chunk := src.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise _TooLarge(
                    f"the upload is larger than this server's limit of {limit / 1024**2:.0f} MB"
                )
            out.write(chunk)
    return size


class _TooLarge(MedSRError):
    http_status = 413


def _window(spec: str, job: Job) -> tuple[float, float]:
    s = spec.strip().lower()
    if s in ("", "auto", "default"):
        return job.window
    if s in CT_WINDOWS:
        return CT_WINDOWS[s]
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*", s)
    if m:
        centre, width = float(m.group(1)), float(m.group(2))
        if width > 0 and math.isfinite(centre) and math.isfinite(width):
            return centre, width
    raise InvalidParameterError(
        f"window must be auto, {', '.join(CT_WINDOWS)}, or 'centre,width' (e.g. 40,400); got {spec!r}"
    )


def _map_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


# ====================================================================== the app
def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app (API + page) for ``settings``."""
    from medsr.reports.render import to_png_bytes, window_to_uint8

    settings = settings or Settings()
    service = Service(settings)
    upload_limit = settings.max_upload_bytes

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        service.start()
        log.info(
            "medsr service ready (work dir is private; retention %.0f s)", settings.retention_s
        )
        try:
            yield
        finally:
            service.stop()

    swagger = importlib.util.find_spec("swagger_ui")
    swagger_static = Path(swagger.origin).parent / "static" if swagger and swagger.origin else None
    offline_docs = (
        swagger_static is not None and (swagger_static / "swagger-ui-bundle.js").is_file()
    )

    app = FastAPI(
        title="medsr",
        version=medsr.__version__,
        summary="Faithful super-resolution for medical images",
        description=(
            "Upload a DICOM file, a zip of a DICOM series, NIfTI, PNG or TIFF; follow the job; "
            "download the result in the same format. Images are deleted after the retention period."
        ),
        lifespan=lifespan,
        docs_url=None if offline_docs else "/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    if settings.token:
        app.add_middleware(BearerTokenMiddleware, token=settings.token)

    # ---------------------------------------------------------------- error handlers
    @app.exception_handler(MedSRError)
    async def _medsr_error(_: Request, exc: MedSRError) -> JSONResponse:
        headers = {"Retry-After": "30"} if exc.http_status == 503 else None
        return JSONResponse(
            {"detail": str(exc), "type": type(exc).__name__},
            status_code=exc.http_status,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(
                str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "form")
            )
            parts.append(
                f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))
            )
        return JSONResponse(
            {"detail": "; ".join(parts) or "invalid request", "type": "InvalidParameterError"},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 413:
            detail = (
                f"the upload is larger than this server's limit of {settings.max_upload_mb:.0f} MB"
            )
        return JSONResponse(
            {"detail": detail, "type": "HTTPError"},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    # ---------------------------------------------------------------- jobs
    @app.post(
        "/api/v1/jobs",
        status_code=202,
        response_model=JobOut,
        responses=_errors(400, 401, 413, 415, 422, 503),
        dependencies=[Depends(auth)],
        max_body_size=upload_limit + _MULTIPART_SLACK,
        tags=["jobs"],
        summary="Upload an image and start a job",
    )
    def create_job(
        file: Annotated[
            UploadFile,
            File(
                description="DICOM file, zip of a DICOM series, NIfTI (.nii/.nii.gz), PNG or TIFF."
            ),
        ],
        model: Annotated[
            str,
            Form(
                description="Model name (see /api/v1/models); ignored for self-supervised modes.",
                max_length=200,
            ),
        ] = "bicubic",
        scale: Annotated[int, Form(description="Factor: 2, 3 or 4 (through-plane: along z).")] = 2,
        mode: Annotated[
            str, Form(description="in-plane, through-plane or zero-shot.", max_length=40)
        ] = "in-plane",
        consistency: Annotated[
            str,
            Form(
                description="in-plane: 'on' projects the result onto agreement with the input "
                "(data consistency), 'off' only measures it.",
                max_length=8,
            ),
        ] = "off",
    ) -> JSONResponse:
        if service.queue.pending >= settings.max_pending:  # fail fast, before parsing the upload
            raise QueueFullError(
                f"the server is busy ({service.queue.pending} jobs queued or running); try again in a minute"
            )
        consistency = consistency.strip().lower()
        if consistency not in ("on", "off"):
            raise InvalidParameterError(f"consistency must be on or off; got {consistency!r}")
        mode = mode.strip().lower()
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if scale not in SCALES:
            raise InvalidParameterError(
                f"scale must be one of {', '.join(map(str, SCALES))}; got {scale}"
            )
        selfsup = None
        model_path = None
        if mode == "in-plane":
            card, model_path = service.resolve_model(model, scale)
            model = card["name"]
        else:
            selfsup = selfsup_function(mode)
            if selfsup is None:
                raise InvalidParameterError(
                    f"mode {mode!r} is not available in this version of medsr"
                )
            card = {**_SELFSUP_CARDS[mode], "scales": list(SCALES)}
            model = mode

        job_id = new_job_id()
        job_dir = service.storage.create(job_id)
        display = safe_stem(file.filename)
        try:
            job = _prepare(job_id, job_dir, file, display, mode, model, scale, card)
            image = job.options.pop("image")
            job.options["consistency"] = consistency
            service.queue.submit(
                job,
                lambda j: process(
                    j,
                    image,
                    selfsup=selfsup,
                    zero_shot_budget_s=settings.zero_shot_budget_s,
                    model_path=model_path,
                ),
            )
        except MedSRError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            message = str(exc).replace(str(job_dir) + "/", "").replace(str(job_dir), "")
            shown = safe_filename(file.filename)
            for internal in (
                "upload",
                "input",
                "input.dcm",
                "input.nii",
                "input.nii.gz",
                "input.png",
                "input.tif",
            ):
                message = message.replace(f"'{internal}'", f"'{shown}'")
            log.info("upload rejected: %s", type(exc).__name__)
            raise _reraise(exc, message) from None
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        body = _job_out(job, settings.retention_s).model_dump(mode="json")
        return JSONResponse(body, status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})

    def _prepare(
        job_id: str,
        job_dir: Path,
        file: UploadFile,
        display: str,
        mode: str,
        model: str,
        scale: int,
        card: dict[str, Any],
    ) -> Job:
        from medsr.io import load_image, sniff_format
        from medsr.reports.render import default_window

        upload = job_dir / "upload"
        size = _save_upload(file, upload, upload_limit)
        if size and is_zip(upload):
            safe_extract_zip(upload, job_dir / "input", settings.zip_limits)
            upload.unlink()
            fmt, source = "series", job_dir / "input"
        else:
            fmt = sniff_format(upload)  # 415 for anything else, 422 when empty
            if fmt not in _ACCEPTED:
                raise UnsupportedFormatError(
                    f"'{safe_filename(file.filename)}' is not a format the web service accepts (DICOM, zip of a DICOM series, NIfTI, PNG, TIFF)"
                )
            if fmt == "nifti":
                with open(upload, "rb") as fh:
                    fmt = "nifti-gz" if fh.read(2) == b"\x1f\x8b" else "nifti"
            suffix = {
                "dicom": ".dcm",
                "nifti": ".nii",
                "nifti-gz": ".nii.gz",
                "png": ".png",
                "tiff": ".tif",
            }[fmt]
            source = job_dir / f"input{suffix}"
            upload.rename(source)
        try:
            image = load_image(source)
        except (MedSRError, MemoryError):
            raise
        except Exception as exc:  # a reader bug must not become a 500 for a bad upload
            raise CorruptInputError(
                f"'{safe_filename(file.filename)}' could not be read ({type(exc).__name__})"
            ) from None
        if mode == "through-plane" and not image.is_volume:
            raise InvalidParameterError(
                "through-plane super-resolution needs a volume (more than one slice)"
            )
        z, y, x = image.spatial_shape
        out_vox = image.num_channels * z * y * x * scale**2
        if out_vox > settings.max_output_megavoxels * 1e6:
            raise InvalidParameterError(
                f"the result would have {out_vox / 1e6:.0f} million voxels, more than this server allows "
                f"({settings.max_output_megavoxels:.0f} million); use a smaller scale or the command line"
            )
        np.save(job_dir / "input.npy", image.array)
        info = describe(image)
        info.update(format=fmt, filename=safe_filename(file.filename), size_bytes=size)
        job = Job(
            id=job_id,
            dir=job_dir,
            mode=mode,
            model=model,
            scale=scale,
            filename=display,
            input_format=fmt,
            input_info=info,
            window=default_window(image),
            model_card=card,
        )
        job.options["image"] = image
        log.info(
            "job %s queued: format=%s modality=%s shape=%s series=%s mode=%s model=%s scale=%d",
            job_id,
            fmt,
            image.modality,
            "x".join(map(str, image.spatial_shape)),
            _series_hash(image),
            mode,
            model,
            scale,
        )
        return job

    @app.get(
        "/api/v1/jobs/{job_id}",
        response_model=JobOut,
        responses=_errors(401, 404, 422),
        dependencies=[Depends(auth)],
        tags=["jobs"],
        summary="Job state, progress and results",
    )
    def get_job(job_id: str) -> JobOut:
        return _job_out(service.queue.get(_check_id(job_id)), settings.retention_s)

    @app.delete(
        "/api/v1/jobs/{job_id}",
        status_code=204,
        responses=_errors(401, 404, 409, 422),
        dependencies=[Depends(auth)],
        tags=["jobs"],
        summary="Delete a job and its files now",
    )
    def delete_job(job_id: str) -> Response:
        job = service.queue.get(_check_id(job_id))
        if job.state == "running":
            raise JobNotReadyError("the job is running; delete it once it has finished")
        service.delete(job.id)
        log.info("job %s deleted on request", job.id)
        return Response(status_code=204)

    @app.get(
        "/api/v1/jobs/{job_id}/result",
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "The result file."},
            **_errors(401, 404, 409, 422),
        },
        response_class=Response,
        dependencies=[Depends(auth)],
        tags=["jobs"],
        summary="Download the result (same format as the upload; a zip for a series)",
    )
    def get_result(
        job_id: str,
        part: Annotated[
            Literal["image", "sidecar"],
            Query(
                description="image, or the JSON sidecar (spacing, units) written beside PNG/TIFF/NIfTI results."
            ),
        ] = "image",
    ) -> Response:
        job = service.queue.get(_check_id(job_id))
        if job.state != "done" or job.result_path is None:
            raise JobNotReadyError(
                f"the job is {job.state}; there is no result yet"
                if job.state != "failed"
                else "the job failed; there is no result"
            )
        headers = {"Cache-Control": "no-store"}
        if part == "sidecar":
            if job.sidecar_path is None:
                raise JobNotReadyError("this result has no sidecar")
            return FileResponse(
                job.sidecar_path,
                media_type="application/json",
                filename=job.sidecar_path.name,
                headers=headers,
            )
        return FileResponse(
            job.result_path,
            media_type=MEDIA_TYPES[job.input_format],
            filename=job.result_name,
            headers=headers,
        )

    @app.get(
        "/api/v1/jobs/{job_id}/preview",
        responses={
            200: {"content": {"image/png": {}}, "description": "A windowed PNG of one slice."},
            **_errors(401, 404, 409, 422),
        },
        response_class=Response,
        dependencies=[Depends(auth)],
        tags=["jobs"],
        summary="PNG of one slice for the viewer",
    )
    def get_preview(
        job_id: str,
        which: Annotated[
            str,
            Query(
                description="input, output, or a map name listed in the job's maps.", max_length=40
            ),
        ] = "output",
        slice_index: Annotated[
            int | None,
            Query(alias="slice", description="Slice index in that image (default: middle)."),
        ] = None,
        window: Annotated[
            str,
            Query(
                description="auto, soft-tissue, lung, bone, brain, or 'centre,width'.",
                max_length=60,
            ),
        ] = "auto",
        max_size: Annotated[
            int, Query(ge=64, le=8192, description="Longest side of the PNG (downsampled beyond).")
        ] = 2048,
    ) -> Response:
        job = service.queue.get(_check_id(job_id))
        if which == "input":
            path = job.dir / "input.npy"
        elif which == "output" or which in job.maps:
            if job.state != "done":
                raise JobNotReadyError(f"the job is {job.state}; the {which} is not available yet")
            path = job.dir / ("output.npy" if which == "output" else f"map_{which}.npy")
        else:
            raise InvalidParameterError(
                f"which must be input, output{''.join(', ' + m for m in job.maps)}; got {which!r}"
            )
        win = _window(window, job)
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise JobNotReadyError("the job's files were deleted") from None
        color = job.input_info.get("channels") == "RGB" and which in ("input", "output")
        if arr.ndim == 4:  # (C, Z, Y, X): colour, or time (first frame shown)
            arr = arr if color else arr[0]
        n = arr.shape[-3]
        k = n // 2 if slice_index is None else slice_index
        if not 0 <= k < n:
            raise InvalidParameterError(f"slice must be between 0 and {n - 1}; got {k}")
        plane = np.asarray(arr[:, k] if arr.ndim == 4 else arr[k], dtype=np.float32)
        if which in ("input", "output"):
            pixels = window_to_uint8(plane, win)
        else:
            hi = float(np.percentile(plane, 99.5)) if plane.size else 1.0
            idx = np.clip(plane / max(hi, 1e-6) * 255, 0, 255).astype(np.uint8)
            pixels = _lut()[idx]
        h, w = pixels.shape[:2]
        size = None
        if max(h, w) > max_size:
            f = max_size / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))
        png = _png(pixels, size, to_png_bytes)
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "no-store", "X-Slices": str(n)}
        )

    # ---------------------------------------------------------------- models, info, health
    @app.get(
        "/api/v1/models",
        response_model=list[ModelCard],
        responses=_errors(401),
        dependencies=[Depends(auth)],
        tags=["models"],
        summary="Model cards of the models this server runs",
    )
    def get_models() -> list[dict[str, Any]]:
        cards = [{k: v for k, v in c.items() if k != "_path"} for c in service.models().values()]
        for mode, c in _SELFSUP_CARDS.items():
            if selfsup_function(mode) is not None:
                cards.append({**c, "scales": list(SCALES)})
        return cards

    @app.get(
        "/api/v1/info",
        response_model=ServiceInfo,
        responses=_errors(401),
        dependencies=[Depends(auth)],
        tags=["service"],
        summary="Limits and options of this server",
    )
    def get_info() -> ServiceInfo:
        return ServiceInfo(
            version=medsr.__version__,
            max_upload_mb=settings.max_upload_mb,
            retention_s=settings.retention_s,
            scales=list(SCALES),
            modes={m: m == "in-plane" or selfsup_function(m) is not None for m in MODES},
            window_presets={k: list(v) for k, v in CT_WINDOWS.items()},
            auth_required=bool(settings.token),
        )

    @app.get("/healthz", response_model=Health, tags=["service"], summary="Liveness")
    def healthz() -> Health:
        return Health(
            status="ok",
            version=medsr.__version__,
            jobs_pending=service.queue.pending,
            max_pending=settings.max_pending,
        )

    # ---------------------------------------------------------------- page and docs
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(
            (STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=_PAGE_HEADERS
        )

    app.mount("/static", _PageFiles(directory=STATIC_DIR), name="static")
    if offline_docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-static", StaticFiles(directory=swagger_static), name="docs-static")

        @app.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title="medsr API",
                swagger_js_url="/docs-static/swagger-ui-bundle.js",
                swagger_css_url="/docs-static/swagger-ui.css",
                swagger_favicon_url="/docs-static/favicon-32x32.png",
            )

    return app


def _reraise(exc: MedSRError, message: str) -> MedSRError:
    """A copy of ``exc`` (same class, same HTTP status) with ``message``."""
    try:
        new = type(exc)(message)
    except TypeError:
        new = MedSRError(message)
        new.http_status = exc.http_status
    return new


def _check_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        from medsr.service.jobs import JobNotFoundError

        raise JobNotFoundError("no such job (job ids are 32 hexadecimal characters)")
    return job_id


def _series_hash(image: Any) -> str:
    datasets = image.meta.get("datasets") or []
    uid = getattr(datasets[0], "SeriesInstanceUID", None) if datasets else None
    if not uid:
        return "-"
    from medsr.io.dicom import series_key

    return series_key(str(uid))


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    return _map_lut()


def _png(pixels: np.ndarray, size: tuple[int, int] | None, encode: Callable[..., bytes]) -> bytes:
    if size is None:
        return encode(pixels)
    from PIL import Image

    im = Image.fromarray(pixels).resize(size, Image.Resampling.BOX)
    return encode(np.asarray(im))
