"""``GET /healthz``: liveness (never needs the token)."""

from __future__ import annotations

from fastapi import APIRouter

import medsr
from medsr.service.routes import ServiceDep
from medsr.service.schemas import Health

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz(service: ServiceDep) -> Health:
    return Health(
        status="ok",
        version=medsr.__version__,
        jobs_pending=service.queue.pending,
        max_pending=service.settings.max_pending,
    )
