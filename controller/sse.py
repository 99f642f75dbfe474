"""Server-sent event responses, as the controller's streams send them (``sse-starlette``).

Both streams — an upgrade's ``/api/v1/upgrades/{id}/events`` and the dashboard's
``/dashboard/events`` — keep one wire format, the one clients and recordings already know:
``\\n`` line ends, a ``retry:`` hint first, ``: keep-alive`` comments while nothing happens.

    id: 42
    event: step
    data: {"at": "...", "step": "17-run_installer-crm1", "status": "succeeded"}

The library sends the keep-alive comments, stops the generator when the client goes away or the
server shuts down, and answers ``HEAD`` without opening a stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

#: Line separator of every event we send (the SSE spec allows \n, \r\n or \r; ours is \n).
SEPARATOR = "\n"
KEEPALIVE_SECONDS = 15.0


def sse_event(
    data: Any = None, *, event: str | None = None, id: int | str | None = None, retry_ms: int | None = None
) -> ServerSentEvent:
    """One event; ``data`` that is not a string is sent as one line of JSON."""
    text = data if data is None or isinstance(data, str) else json.dumps(data, default=str)
    return ServerSentEvent(
        text, event=event, id=None if id is None else str(id), retry=retry_ms, sep=SEPARATOR
    )


def keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment="keep-alive", sep=SEPARATOR)


def event_source(
    events: AsyncIterator[ServerSentEvent],
    *,
    cache_control: str = "no-cache",
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> EventSourceResponse:
    """A ``text/event-stream`` response of ``events``, with keep-alive comments in between."""
    return EventSourceResponse(
        events,
        headers={"Cache-Control": cache_control},
        sep=SEPARATOR,
        ping=keepalive_seconds,
        ping_message_factory=keepalive,
    )
