"""Uvicorn, configured for untrusted clients (``medsr serve``).

What is set, and why (uvicorn's own options first):

==================================  ==========================================================
``timeout_keep_alive=5``            an idle keep-alive connection is closed after 5 s
``h11_max_incomplete_event_size``   request line + headers may hold at most 16 KiB (431/400
                                    beyond; a client cannot grow a header buffer forever)
``limit_concurrency``               ``Settings.max_connections`` connections + requests in
                                    flight; beyond, uvicorn answers 503
``timeout_graceful_shutdown``       on SIGTERM/SIGINT uvicorn stops accepting at once and waits
                                    at most ``Settings.shutdown_grace_s`` for open requests;
                                    then the app's shutdown (:meth:`Service.stop`) gives running
                                    jobs the same grace and deletes every job's files
``http=guarded_protocol(...)``      uvicorn has no header or body read timeout, so a client
                                    that sends its headers a byte at a time (slowloris), or a
                                    body at a trickle, would hold its connection for ever: this
                                    h11 protocol closes a connection whose request headers are
                                    not complete within ``Settings.header_timeout_s`` (counted
                                    from the connection, or from the previous response), or
                                    whose body brings fewer than ``Settings.body_min_rate``
                                    bytes/s over any ``Settings.body_timeout_s`` window
==================================  ==========================================================

The app's own guards (token, upload size) are in :mod:`medsr.service.security`.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from medsr.errors import InvalidParameterError
from medsr.service.settings import Settings

#: bytes of request line + headers h11 buffers before refusing the request
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_S = 5


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with read deadlines for request headers and bodies."""

    header_timeout_s: float = 15.0
    body_timeout_s: float = 30.0
    body_min_rate: float = 1024.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = time.monotonic()  # for the next request's headers
        self._in_body = False
        self._window_start = self._waiting_since
        self._window_bytes = 0
        self._guard = None
        self._arm()

    def _arm(self) -> None:
        tick = min(self.header_timeout_s, self.body_timeout_s) / 4
        self._guard = self.loop.call_later(max(0.05, tick), self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.SEND_BODY:
            self._window_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is h11.SEND_BODY and not self._in_body:
            # the headers just completed: the body's first window starts now
            self._in_body = True
            self._window_start = time.monotonic()
            self._window_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = time.monotonic()
        self._in_body = False

    def _check(self) -> None:
        self._guard = None
        if self.transport.is_closing():
            return
        now = time.monotonic()
        state = self.conn.their_state
        responding = self.cycle is not None and not self.cycle.response_complete
        if state is h11.IDLE and not responding:
            if now - self._waiting_since > self.header_timeout_s:
                self._close("request headers not received in time")
                return
        elif state is h11.SEND_BODY and not self.flow.read_paused:
            if now - self._window_start >= self.body_timeout_s:
                if self._window_bytes < self.body_min_rate * self.body_timeout_s:
                    self._close("request body too slow")
                    return
                self._window_start, self._window_bytes = now, 0
        self._arm()

    def _close(self, why: str) -> None:
        self.logger.info("closing a slow connection: %s", why)
        self.transport.close()


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, body_min_rate: float
) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits (uvicorn takes a class)."""
    return type(
        "MedsrH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": float(header_timeout_s),
            "body_timeout_s": float(body_timeout_s),
            "body_min_rate": float(body_min_rate),
        },
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` (see the module docstring)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(
            settings.header_timeout_s, settings.body_timeout_s, settings.body_min_rate
        ),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_s)),
        "server_header": False,
        "lifespan": "on",
    }


def check_address(host: str, port: int) -> None:
    """Bind (without listening) every address uvicorn will listen on for ``host:port``, then let
    go; raise one :class:`~medsr.errors.InvalidParameterError` if one cannot be bound.

    uvicorn binds only after the app's startup has logged "service ready" and then exits with
    status 3 and a log line ("address already in use"); checking first lets ``medsr serve``
    say so in one ``error:`` line before it announces anything. The sockets are bound as asyncio
    binds them (``SO_REUSEADDR``, IPv6 only on IPv6 addresses), so a port that only has
    connections in TIME_WAIT counts as free, as it does for uvicorn.
    """
    where = f"{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise InvalidParameterError(
            f"--host {host!r} is not a name or address of this machine ({why})"
        ) from None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # an address family this machine has no support for: uvicorn skips it too
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise InvalidParameterError(_bind_error(exc, host, port, where)) from None


def _bind_error(exc: OSError, host: str, port: int, where: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is already in use (another server?); "
            "stop it or choose another --port"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need administrator "
            "rights); choose another --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: --host {host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"
