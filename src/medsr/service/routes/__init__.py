"""The API's routers, one per concern: jobs, models (and service info), health, the page.

Endpoints reach the app's :class:`~medsr.service.service.Service` through :func:`get_service`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from medsr.service.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
