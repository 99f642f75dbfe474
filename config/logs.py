"""Logs: one line per event, JSON when not on a terminal, readable text on one (structlog).

Every service calls :func:`configure` once at start. All of crmcluster logs through the standard
library (``logging.getLogger("crmcluster.…")``); structlog's :class:`ProcessorFormatter` renders
each record — with the context bound to the current task — as

    {"event": "operation started", "level": "info", "logger": "crmcluster.agent.operations",
     "timestamp": "2026-11-28T10:00:00.123Z", "service": "agent", "node": "crm2",
     "request_id": "3f2a…", "run_id": "up-5c1d…", "op_id": "up-5c1d…:s12:1", "action": "stop_web"}

or, on a terminal, as ``2026-11-28T10:00:00Z [info] operation started  op_id=… run_id=…``.

**Context.** :func:`bind` adds fields to every line logged by the current asyncio task (and the
tasks it starts: they copy the context); :func:`bound` does it for a block. The controller binds
the request id of each API request, an upgrade run's id in its executor and each step's operation
id; it sends them to the agent with every call (headers named in :mod:`node_agent.protocol`), the
agent binds them to its own lines, so ``grep <op id>`` follows a step across machines.

Secrets never reach a line: the message and every field pass through
:func:`config.secrets.redact` last.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from typing import IO, Any, Literal

import structlog
from structlog.types import EventDict, Processor

from config.secrets import install_redaction, redact

LogFormat = Literal["auto", "json", "text"]

#: The context fields, in the order text lines show them.
CONTEXT_FIELDS = ("request_id", "run_id", "op_id", "job_id")


def _redact_fields(_logger: Any, _name: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def _utc_z(_logger: Any, _name: str, event: EventDict) -> EventDict:
    ts = event.get("timestamp")
    if isinstance(ts, str) and ts.endswith("+00:00"):
        event["timestamp"] = ts[:-6] + "Z"
    return event


def use_json(fmt: LogFormat, stream: IO[str]) -> bool:
    """``auto``: JSON unless ``stream`` is a terminal."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return fmt == "json"


def formatter(*, json: bool, static: Mapping[str, str] | None = None) -> logging.Formatter:
    """The formatter of every handler: stdlib records (and structlog's own) rendered as one line."""
    fixed = dict(static or {})

    def add_static(_logger: Any, _name: str, event: EventDict) -> EventDict:
        for key, value in fixed.items():
            event.setdefault(key, value)
        return event

    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        add_static,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _utc_z,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        final: list[Processor] = [structlog.processors.format_exc_info, _redact_fields, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
        final = [_redact_fields, renderer]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )


def configure(
    *,
    level: str = "info",
    fmt: LogFormat = "auto",
    service: str | None = None,
    static: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record of the process to ``stream`` (stderr), one line each; returns the
    handler. ``service`` and ``static`` (e.g. the agent's node name) are added to every line."""
    out = stream or sys.stderr
    fields = {**({"service": service} if service else {}), **(static or {})}
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(json=use_json(fmt, out), static=fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    install_redaction()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()  # uvicorn's own handlers would print a second, unformatted line
        named.propagate = True
        install_redaction(named)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler


def bind(**fields: str | None) -> None:
    """Add ``fields`` (None values are skipped) to every line of the current task from now on."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block, then put the context back."""
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def current() -> dict[str, str]:
    """The context fields bound now (:data:`CONTEXT_FIELDS` only)."""
    ctx: MutableMapping[str, Any] = structlog.contextvars.get_contextvars()
    return {k: str(ctx[k]) for k in CONTEXT_FIELDS if ctx.get(k) is not None}


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:~-")


def clean_id(raw: bytes | str | None) -> str | None:
    """An id taken from a header, if it is one: 1 to 128 of ``[A-Za-z0-9._:~-]`` (nothing that could
    forge a log line)."""
    if raw is None:
        return None
    value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if 0 < len(value) <= 128 and set(value) <= _ID_CHARS:
        return value
    return None


class RequestContext:
    """ASGI middleware: each HTTP request's log lines carry its ``request_id`` — the caller's
    (``request_id_header``) when it sent a valid one, else a new one — and the fields named by
    ``headers`` (header name → field); the answer carries the request id back.

        app.add_middleware(RequestContext, request_id_header="X-Request-ID",
                           headers={"X-CRMCluster-Run-ID": "run_id"})
    """

    def __init__(self, app: Any, *, request_id_header: str, headers: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.request_id_header = request_id_header.lower().encode("latin-1")
        self.headers = {k.lower().encode("latin-1"): v for k, v in (headers or {}).items()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or [])
        request_id = clean_id(sent.get(self.request_id_header)) or uuid.uuid4().hex
        fields = {field: clean_id(sent.get(header)) for header, field in self.headers.items()}
        answer = (self.request_id_header, request_id.encode("latin-1"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), answer]
            await send(message)

        with bound(request_id=request_id, **fields):
            await self.app(scope, receive, send_with_id)
