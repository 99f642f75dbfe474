"""The logon routes, as a raw ASGI path in front of FastAPI (the hot path).

    GET  /{install}/                 -> 307 to the chosen server's logon page
    GET  /{install}/eware.dll/Logon  -> 307 (query string kept)
    POST /{install}/eware.dll/Logon  -> 307 (a 307 keeps a POST a POST; the browser re-sends the form)

The answer carries ``Location: {scheme}://{FQ entry}/{install}/eware.dll/Logon[?query]`` and
``X-CRM-Server: {server name}``. The install name is matched in any case and written lower-cased,
as Sage does. No database is touched: the pool answers from memory.

Safety rules this module keeps:

- **No open redirect**: the Location is built only from the configured FQ entry of a configured
  server and a fixed path; ``Host`` and ``X-Forwarded-*`` are never read. A query string that is
  not plain printable ASCII is refused (400), so nothing can be smuggled into the header.
- **Forms parsed safely**: a POST body is read up to ``max_form_bytes`` (413 beyond), only
  ``application/x-www-form-urlencoded`` is looked at, and only the user's logon name is decoded
  — ``EWARE_USERID``, the field Sage CRM's own logon form posts, or ``User_Logon`` (DESIGN.md's
  name, the ``Users`` column it matches; a name that is not printable is routed without
  stickiness) — the password is never decoded, logged or kept.
  Garbage gets a 4xx or is simply routed without stickiness; never a 500.
- No per-request logging here; uvicorn's access log is off unless ``access_log`` is set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from balancer.metrics import BalancerMetrics
from balancer.pool import ServerPool
from config.api_errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_QUERY_BYTES = 4096
MAX_FORM_FIELDS = 200
MAX_USER_LOGON = 255
#: The form fields naming the user, lower-cased: Sage CRM's logon page posts ``EWARE_USERID``
#: (with ``PASSWORD``); ``User_Logon`` is the name DESIGN.md gives the sticky field.
_USER_FIELDS = frozenset({"eware_userid", "user_logon"})
_FORM_TYPE = b"application/x-www-form-urlencoded"
_UNAVAILABLE_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Sage CRM unavailable</title></head>"
    b"<body><h1>Sage CRM is not available right now</h1>"
    b"<p>No CRM server can take your logon at the moment. Please try again in a few seconds.</p>"
    b"</body></html>"
)


_EMPTY_BODY: Message = {"type": "http.response.body", "body": b""}


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LogonRoute:
    """The raw ASGI handler of the logon routes. ``matches(path)`` tells the app when to use it."""

    def __init__(
        self,
        *,
        pool: ServerPool,
        metrics: BalancerMetrics,
        install: str,
        retry_after: int,
        max_form_bytes: int,
        clock: Callable[[], float],
        before_decide: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.clock = clock
        self.max_form_bytes = max_form_bytes
        self.before_decide = before_decide
        base = "/" + install.lower()
        self.logon_path = base + "/eware.dll/logon"
        self.paths = frozenset({base, base + "/", self.logon_path})
        self._retry_after = str(retry_after).encode()

    def matches(self, path: str) -> bool:
        return path.lower() in self.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        try:
            if method not in ("GET", "HEAD", "POST"):
                raise BadRequest(405, "method_not_allowed", f"{method} is not allowed here")
            query = scope.get("query_string", b"")
            if query and (len(query) > MAX_QUERY_BYTES or not _printable_ascii(query)):
                raise BadRequest(400, "bad_query", "the query string must be printable ASCII, 4 KiB at most")
            user_logon = None
            if method == "POST":
                if scope["path"].lower() != self.logon_path:
                    raise BadRequest(405, "method_not_allowed", "POST the logon form to eware.dll/Logon")
                body = await self._read_body(scope, receive)
                user_logon = _user_logon(scope, body)
        except BadRequest as exc:
            self.metrics.decisions["rejected"] += 1
            allow = b"GET, HEAD, POST" if scope["path"].lower() == self.logon_path else b"GET, HEAD"
            await _send_error(send, exc, allow=allow if exc.status == 405 else None)
            return
        started = time.perf_counter()
        if self.before_decide is not None:
            await self.before_decide()
        decision = self.pool.decide(user_logon, now=self.clock(), count_pending=method != "HEAD")
        if decision is None:
            self.metrics.decided("unavailable", started)
            await self._unavailable(send, head=method == "HEAD")
            return
        slot = decision.slot
        self.metrics.decided(decision.reason, started, slot.name)
        await send(slot.redirect_message(slot.location + b"?" + query) if query else slot.redirect_start)
        await send(_EMPTY_BODY)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_form_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    raise BadRequest(400, "bad_length", "Content-Length must be a number")
                if int(value) > limit:
                    raise BadRequest(413, "too_large", f"the logon form may be {limit} bytes at most")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "disconnected", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, "too_large", f"the logon form may be {limit} bytes at most")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _unavailable(self, send: Send, *, head: bool) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"retry-after", self._retry_after),
                    (b"cache-control", b"no-store"),
                    (b"content-length", str(len(_UNAVAILABLE_PAGE)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else _UNAVAILABLE_PAGE})


def _printable_ascii(data: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in data)


def _user_logon(scope: Scope, body: bytes) -> str | None:
    """The user named by an urlencoded logon form (``EWARE_USERID`` or ``User_Logon``, in any
    case), or None. Other fields are never decoded; two different names are refused."""
    content_type = b""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
            break
    if content_type != _FORM_TYPE or not body:
        return None
    fields = body.split(b"&")
    if len(fields) > MAX_FORM_FIELDS:
        raise BadRequest(400, "bad_form", f"the logon form may hold {MAX_FORM_FIELDS} fields at most")
    found: str | None = None
    for field in fields:
        raw_name, _, raw_value = field.partition(b"=")
        if len(raw_name) > 64:
            continue
        name = unquote_plus(raw_name.decode("latin-1"), errors="replace")
        if name.strip().lower() not in _USER_FIELDS:
            continue
        value = unquote_plus(raw_value.decode("latin-1"), errors="replace").strip()
        if len(value) > MAX_USER_LOGON:
            raise BadRequest(400, "bad_form", f"{name.strip()} may be 255 characters at most")
        if not value.isprintable():
            return None  # no user of Sage's has such a name: routed, without stickiness
        if not value:
            continue
        if found is not None and found.lower() != value.lower():
            raise BadRequest(400, "bad_form", "the form names two users (EWARE_USERID / User_Logon)")
        found = value
    return found or None


async def _send_error(send: Send, exc: BadRequest, *, allow: bytes | None) -> None:
    body = json.dumps(error_body(exc.code, exc.message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
