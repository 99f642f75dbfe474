"""Server-sent events of an upgrade run, replayable with ``Last-Event-ID``.

Every phase, step, log line and decision is a row of ``upgrade_events`` (written in the same
transaction as the step record it describes); its id is the SSE ``id``. A client that reconnects
with ``Last-Event-ID: N`` (or ``?last_event_id=N``) gets every event after ``N`` — nothing lost,
nothing twice — then the live tail. The stream ends once the run has finished and every event was
sent (``event: end``).

    id: 42
    event: step
    data: {"at": "...", "step": "17-run_installer-crm1", "status": "succeeded", ...}
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from controller.sse import sse_event
from controller.upgrade.model import TERMINAL
from controller.upgrade.store import UpgradeStore

#: The client's reconnection delay, sent first (``retry:``).
RETRY_MS = 3000


def format_event(event: dict[str, Any]) -> ServerSentEvent:
    """An ``upgrade_events`` row as the event sent for it (its row id is the SSE ``id``)."""
    return sse_event({"at": event["at"], **(event["data"] or {})}, event=event["kind"], id=event["id"])


async def event_stream(
    store: UpgradeStore,
    run_id: str,
    *,
    last_id: int = 0,
    poll: float = 1.0,
) -> AsyncIterator[ServerSentEvent]:
    """Replay events after ``last_id``, then follow until the run is finished.

    Keep-alive comments are the response's (:func:`controller.sse.event_source`).
    """
    woken = asyncio.Event()

    def listener(rid: str) -> None:
        if rid == run_id:
            woken.set()

    store.listeners.add(listener)
    try:
        yield sse_event(retry_ms=RETRY_MS)
        while True:
            woken.clear()
            batch = await store.events_after(run_id, last_id)
            for event in batch:
                last_id = event["id"]
                yield format_event(event)
            if batch:
                continue
            run = await store.get_run(run_id)
            if run is None or run.status in TERMINAL:
                # The status event is written with the status, so nothing can follow it.
                if not await store.events_after(run_id, last_id, limit=1):
                    yield sse_event({"status": run.status.value if run else None}, event="end")
                    return
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=poll)
    finally:
        store.listeners.discard(listener)


def parse_last_id(header: str | None, query: str | None) -> int:
    for raw in (header, query):
        if raw:
            try:
                return max(0, int(raw.strip()))
            except ValueError:
                continue
    return 0
