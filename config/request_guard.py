"""The limits every request meets before any route parses it (an ASGI middleware for each service).

In this order, for each HTTP request:

1. **Blocked?** A client address that failed authentication too often (see
   :mod:`config.auth_limiter`) gets 429 with ``Retry-After`` on every route that needs a credential.
2. **Authenticated?** The service's ``authenticate(scope)`` answers :data:`OPEN` (the route needs
   no credential: ``/healthz``, the balancer's logon routes …), a principal (stored as
   ``scope["state"]["principal"]`` — ``request.state.principal`` in a route), or
   :class:`Refused` → 401, counted as a failure and logged. Nothing of the body has been read.
3. **Body bounded.** A ``Content-Length`` above ``max_body_bytes`` is 413 at once; otherwise the
   body is read up to that limit — one byte more is 413 and the rest is never read.
4. **JSON strict.** A JSON body is parsed by :func:`config.strict_json.loads` (duplicate keys,
   ``NaN``, too deep → 422) before the route parses it again.

Routes then authorise (which role may do what: 403) with the principal in hand. Memory per request
is bounded by ``max_body_bytes``; memory per client by the limiter's bounds.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from config.api_errors import error_body
from config.auth_limiter import FailedAuthLimiter
from config.strict_json import StrictJsonError
from config.strict_json import loads as strict_loads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY = 1024 * 1024
log = logging.getLogger("crmcluster.security")


class _Open:
    def __repr__(self) -> str:
        return "OPEN"


#: ``authenticate`` answers this for a route that needs no credential.
OPEN: Any = _Open()


@dataclass(frozen=True)
class Refused:
    """No credential, or one that matches nothing: 401 (``reason`` is logged, never a token)."""

    reason: str
    message: str = "a valid bearer token is required (Authorization: Bearer <token>)"


Authenticate = Callable[[Scope], Awaitable[Any]]


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    raw = header(scope, b"authorization")
    if not raw:
        return None
    scheme, _, given = raw.decode("latin-1").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def is_loopback(scope: Scope) -> bool:
    """True when the request comes from this machine (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(client_address(scope)).is_loopback
    except ValueError:
        return False


def _is_json(scope: Scope) -> bool:
    raw = header(scope, b"content-type")
    if not raw:
        return False
    media = raw.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def send_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_body(code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """The ASGI middleware; ``app.add_middleware(RequestGuard, authenticate=…, limiter=…, …)``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        limiter: FailedAuthLimiter,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        service: str = "service",
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        principal = await self.authenticate(scope)
        if principal is not OPEN:
            blocked = self.limiter.blocked_for(client)
            if blocked is not None:
                await self._too_many(send, blocked)
                return
            if isinstance(principal, Refused):
                await self._refuse(scope, send, client, principal)
                return
            scope.setdefault("state", {})["principal"] = principal
        if not _has_body(scope):
            await self.app(scope, receive, send)  # a GET, an event stream: receive left to the route
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        if body and _is_json(scope):
            try:
                strict_loads(body)
            except StrictJsonError as exc:
                await send_error(send, 422, "invalid", f"body: {exc.msg}")
                return
            except json.JSONDecodeError as exc:
                await send_error(send, 422, "invalid", f"body: not JSON: {exc.msg} at {exc.pos}")
                return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, send: Send, client: str, refused: Refused) -> None:
        block = self.limiter.failed(client)
        log.warning(
            "%s: authentication failed from %s: %s %s (%s)",
            self.service,
            client,
            scope.get("method"),
            scope.get("path"),
            refused.reason,
        )
        if block is not None:
            log.warning(
                "%s: %s blocked for %.0fs after %d failed authentications",
                self.service,
                client,
                block,
                self.limiter.max_failures,
            )
            await self._too_many(send, block)
            return
        await send_error(send, 401, "unauthorized", refused.message, {"WWW-Authenticate": "Bearer"})

    async def _too_many(self, send: Send, seconds: float) -> None:
        await send_error(
            send,
            429,
            "too_many_failures",
            "too many failed authentications from this address; try again later",
            {"Retry-After": str(max(1, math.ceil(seconds)))},
        )

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body (at most ``max_body_bytes``), or None once an error has been answered."""
        limit = self.max_body_bytes
        length = header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "bad_request", "Content-Length must be a number")
                return None
            if int(length) > limit:
                await self._too_large(send)
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await send_error(
            send, 413, "too_large", f"the request body may be {self.max_body_bytes} bytes at most"
        )


def install_guard(app: Any, settings: Any, *, authenticate: Authenticate, service: str) -> FailedAuthLimiter:
    """Put a :class:`RequestGuard` in front of ``app`` (a Starlette/FastAPI app) with the limits of
    ``settings`` (:class:`~config.settings.CommonSettings`); the limiter is also
    ``app.state.auth_limiter`` (a sign-in form counts its failures there too)."""
    limiter = FailedAuthLimiter(
        max_failures=settings.auth_max_failures,
        window=settings.auth_failure_window,
        block=settings.auth_block_seconds,
    )
    app.state.auth_limiter = limiter
    app.add_middleware(
        RequestGuard,
        authenticate=authenticate,
        limiter=limiter,
        max_body_bytes=settings.max_body_bytes,
        service=service,
    )
    return limiter


def _has_body(scope: Scope) -> bool:
    length = header(scope, b"content-length")
    if length is not None:
        return length != b"0"
    return header(scope, b"transfer-encoding") is not None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then the client's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
