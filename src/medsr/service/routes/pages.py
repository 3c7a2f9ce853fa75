"""The single-page viewer (``/``, ``/static``) and the API docs (``/docs``, offline when the
``swagger-ui-py`` package ships the Swagger UI files)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from medsr.service.security import PAGE_HEADERS, PageFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    return HTMLResponse(
        (STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS
    )


def swagger_static() -> Path | None:
    """The folder of a locally installed Swagger UI, if any."""
    spec = importlib.util.find_spec("swagger_ui")
    folder = Path(spec.origin).parent / "static" if spec and spec.origin else None
    return folder if folder is not None and (folder / "swagger-ui-bundle.js").is_file() else None


def install(app: FastAPI, docs_static: Path | None) -> None:
    """Add the page, its static files and (when ``docs_static``) the offline docs to ``app``."""
    app.include_router(router)
    app.mount("/static", PageFiles(directory=STATIC_DIR), name="static")
    if docs_static is None:
        return
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-static", StaticFiles(directory=docs_static), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="medsr API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )
