"""ASGI guards in front of the app: the bearer token and the upload size, both checked before a
byte of the body is read; and the page's security headers.

* :class:`BearerTokenMiddleware` — every ``/api/`` request needs ``Authorization: Bearer
  <token>``; the scheme is case-insensitive (RFC 9110 §11.1: ``bearer`` and ``BEARER`` too), the
  token is compared in constant time. 401 JSON otherwise.
* :class:`UploadLimitMiddleware` — a request body larger than the limit gets one JSON 413,
  whether its ``Content-Length`` says so up front (answered before reading) or a chunked body
  grows past it while streaming.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medsr.errors import MedSRError

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def bearer_token(header: bytes | None) -> bytes | None:
    """The token of an ``Authorization`` header when its scheme is Bearer (any case)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


class BearerTokenMiddleware:
    """Refuse ``/api/`` requests without the bearer token, before any body is read."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            given = bearer_token(_header(scope, b"authorization")) or b""
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


class UploadTooLargeError(MedSRError):
    """The upload is larger than the server's ``--max-upload-mb``."""

    http_status = 413


def too_large_message(limit_mb: float) -> str:
    return f"the upload is larger than this server's limit of {limit_mb:g} MB"


def too_large_response(limit_mb: float) -> JSONResponse:
    """The one 413 answer (Content-Length, chunked body, or the file part itself)."""
    return JSONResponse(
        {"detail": too_large_message(limit_mb), "type": UploadTooLargeError.__name__},
        status_code=413,
        headers={"Connection": "close"},
    )


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI re-raises
    HTTPExceptions from body parsing, so the app's handler answers with the JSON 413)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="upload too large")


class UploadLimitMiddleware:
    """Bound every request body to ``max_body`` bytes; answer 413 JSON beyond it."""

    def __init__(self, app: ASGIApp, max_body: int, limit_mb: float):
        self.app = app
        self.max_body = max_body
        self.limit_mb = limit_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        try:
            length = int(declared) if declared is not None else None
        except ValueError:
            length = None
        if length is not None and length > self.max_body:
            await too_large_response(self.limit_mb)(scope, receive, send)
            return
        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await too_large_response(self.limit_mb)(scope, receive, send)


_bearer = HTTPBearer(auto_error=False, description="Only when the server was started with --token.")


def auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Documents the bearer scheme in OpenAPI; the check itself is BearerTokenMiddleware's."""


class PageFiles(StaticFiles):
    """The page's static files, with the same security headers as the page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response
