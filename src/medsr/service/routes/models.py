"""``GET /api/v1/models`` (the catalog's model cards) and ``GET /api/v1/info`` (limits, options)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

import medsr
from medsr.models.resolver import SCALES
from medsr.reports.render import CT_WINDOWS
from medsr.service.routes import ServiceDep
from medsr.service.schemas import ModelCard, ServiceInfo, error_responses
from medsr.service.security import auth

router = APIRouter(prefix="/api/v1", dependencies=[Depends(auth)])


@router.get(
    "/models",
    response_model=list[ModelCard],
    responses=error_responses(401),
    tags=["models"],
    summary="Model cards of the models this server runs",
)
def get_models(service: ServiceDep) -> list[dict[str, Any]]:
    return service.model_cards()


@router.get(
    "/info",
    response_model=ServiceInfo,
    responses=error_responses(401),
    tags=["service"],
    summary="Limits and options of this server",
)
def get_info(service: ServiceDep) -> ServiceInfo:
    settings = service.settings
    return ServiceInfo(
        version=medsr.__version__,
        max_upload_mb=settings.max_upload_mb,
        retention_s=settings.retention_s,
        scales=list(SCALES),
        modes=service.modes(),
        window_presets={k: list(v) for k, v in CT_WINDOWS.items()},
        auth_required=bool(settings.token),
    )
