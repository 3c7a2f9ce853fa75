"""The medsr web service: a REST API and a single-page viewer, served by one FastAPI app.

``create_app(settings)`` builds the app from the parts in this package:

* :mod:`~medsr.service.settings` — :class:`Settings` (what ``medsr serve`` configures);
* :mod:`~medsr.service.service` — :class:`Service`: storage, bounded job queue, model catalog
  (:mod:`~medsr.service.catalog`), upload decoder (:mod:`~medsr.service.decode`), retention;
* :mod:`~medsr.service.routes` — the routers: ``jobs``, ``models`` (+ info), ``health``, ``pages``;
* :mod:`~medsr.service.schemas` — the pydantic response models of the OpenAPI schema;
* :mod:`~medsr.service.security` — bearer token and upload-size guards (before the body is read);
* :mod:`~medsr.service.server` — uvicorn limits for ``medsr serve`` (slow clients, shutdown).

Endpoints (all JSON errors are ``{"detail": …, "type": …}``):

* ``POST /api/v1/jobs`` — multipart ``file`` (DICOM file, zip of a DICOM series, NIfTI, PNG,
  TIFF) plus ``model``, ``scale``, ``mode`` (``in-plane`` | ``through-plane`` | ``zero-shot``),
  ``consistency``, ``degradation``, ``modality``, ``series`` (DICOM: the stack ``KEY:N``, or
  ``KEY:all`` for all time points / cardiac phases, as ``--series``). The upload is
  size-limited (413), sniffed from its bytes (415), decoded under a time limit (422 with the
  reader's message when corrupt; with ``stacks``, the choices, for a series of several stacks
  and none chosen) and queued; the answer is ``202`` with the job.
* ``GET /api/v1/jobs/{id}`` — state, stage, progress, error, geometry, model card, metrics.
* ``GET /api/v1/jobs/{id}/result`` — the result in the upload's format (a zip for a series).
* ``GET /api/v1/jobs/{id}/preview?which=&slice=&window=`` — a windowed PNG for the viewer.
* ``DELETE /api/v1/jobs/{id}`` — delete the job's files now.
* ``GET /api/v1/models``, ``GET /api/v1/info``, ``GET /healthz``, ``/docs``, ``/openapi.json``.

With a token configured every ``/api/`` request needs ``Authorization: Bearer <token>`` (401
otherwise, checked before the body is read). Job folders are deleted ``retention_s`` after the job
finishes, and all of them on shutdown. Logs name jobs by id and series by a hash, never by file
name or header value.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import medsr
from medsr.errors import MedSRError
from medsr.service.catalog import SELFSUP_CARDS, ModelCatalog, selfsup_function
from medsr.service.jobs import (
    MEDIA_TYPES,
    MODES,
    Job,
    JobNotFoundError,
    JobNotReadyError,
    JobQueue,
    QueueFullError,
    image_info,
    new_job_id,
    process,
)
from medsr.service.routes import health, jobs, models, pages
from medsr.service.routes.pages import STATIC_DIR
from medsr.service.schemas import (
    ErrorBody,
    Health,
    ImageInfo,
    JobError,
    JobOut,
    ModelCard,
    ServiceInfo,
)
from medsr.service.security import (
    BearerTokenMiddleware,
    UploadLimitMiddleware,
    UploadTooLargeError,
    auth,
    too_large_response,
)
from medsr.service.service import JobRequest, Service
from medsr.service.settings import Settings

log = logging.getLogger("medsr.service")

__all__ = [
    "MEDIA_TYPES",
    "MODES",
    "SELFSUP_CARDS",
    "STATIC_DIR",
    "BearerTokenMiddleware",
    "ErrorBody",
    "Health",
    "ImageInfo",
    "Job",
    "JobError",
    "JobNotFoundError",
    "JobNotReadyError",
    "JobOut",
    "JobQueue",
    "JobRequest",
    "ModelCard",
    "ModelCatalog",
    "QueueFullError",
    "Service",
    "ServiceInfo",
    "Settings",
    "UploadLimitMiddleware",
    "UploadTooLargeError",
    "auth",
    "create_app",
    "image_info",
    "new_job_id",
    "process",
    "selfsup_function",
]


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    @app.exception_handler(MedSRError)
    async def _medsr_error(_: Request, exc: MedSRError) -> JSONResponse:
        if exc.http_status == 413 and isinstance(exc, UploadTooLargeError):
            return too_large_response(settings.max_upload_mb)
        headers = {"Retry-After": "30"} if exc.http_status == 503 else None
        body: dict[str, object] = {"detail": str(exc), "type": type(exc).__name__}
        stacks = getattr(exc, "stacks", None)
        if stacks:  # a DICOM series of several stacks: the choices (send one as `series`)
            body["stacks"] = stacks
        return JSONResponse(
            body,
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
            msg = str(err.get("msg", "invalid"))
            parts.append(f"{loc}: {msg}" if loc else msg)
        return JSONResponse(
            {"detail": "; ".join(parts) or "invalid request", "type": "InvalidParameterError"},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # a streamed (chunked) body past the limit
            return too_large_response(settings.max_upload_mb)
        return JSONResponse(
            {"detail": str(exc.detail), "type": "HTTPError"},
            status_code=exc.status_code,
            headers=exc.headers,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app (API + page) for ``settings`` (checked first: a value the service
    cannot run with is one :class:`~medsr.errors.InvalidParameterError`, not a failure later)."""
    settings = settings or Settings()
    settings.check()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        from medsr.inference.memory import retain_freed_memory

        # a server process runs medsr's jobs, however it was started (``medsr serve`` or an
        # ASGI server given create_app): freed tensors serve the next plane
        retain_freed_memory()
        service.start()
        where = "inside --work-dir" if settings.work_dir is not None else "temporary"
        log.info(
            "medsr service ready (job files in a private folder, %s, removed on exit; "
            "retention %.0f s)",
            where,
            settings.retention_s,
        )
        try:
            yield
        finally:
            service.stop()

    docs_static = pages.swagger_static()
    app = FastAPI(
        title="medsr",
        version=medsr.__version__,
        summary="Faithful super-resolution for medical images",
        description=(
            "Upload a DICOM file, a zip of a DICOM series, NIfTI, PNG or TIFF; follow the job; "
            "download the result in the same format. Images are deleted after the retention period."
        ),
        lifespan=lifespan,
        docs_url=None if docs_static else "/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    # added last = outermost: the token is checked first, then the size, before any body byte
    app.add_middleware(
        UploadLimitMiddleware, max_body=settings.max_body_bytes, limit_mb=settings.max_upload_mb
    )
    if settings.token:
        app.add_middleware(BearerTokenMiddleware, token=settings.token)
    _install_error_handlers(app, settings)
    for router in (jobs.router, models.router, health.router):
        app.include_router(router)
    pages.install(app, docs_static)
    return app
