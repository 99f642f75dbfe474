"""Server-sent events of an upgrade run, replayable with ``Last-Event-ID``.

Every phase, step, log line and decision is a row of ``upgrade_events`` (written in the same
transaction as the step record it describes); its id is the SSE ``id``. A client that reconnects
with ``Last-Event-ID: N`` (or ``?last_event_id=N``) gets every event after ``N`` — nothing lost,
nothing twice — then the live tail. The stream ends once the run has finished and every event was
sent (``event: end``), unless the client asked to ``follow`` beyond that.

    id: 42
    event: step
    data: {"at": "...", "step": "17-run_installer-crm1", "status": "succeeded", ...}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from controller.upgrade.model import TERMINAL
from controller.upgrade.store import UpgradeStore

KEEPALIVE_SECONDS = 15.0


def format_event(event: dict[str, Any]) -> str:
    data = {"at": event["at"], **(event["data"] or {})}
    return f"id: {event['id']}\nevent: {event['kind']}\ndata: {json.dumps(data, default=str)}\n\n"


async def event_stream(
    store: UpgradeStore,
    run_id: str,
    *,
    last_id: int = 0,
    poll: float = 1.0,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[str]:
    """Replay events after ``last_id``, then follow until the run is finished."""
    woken = asyncio.Event()

    def listener(rid: str) -> None:
        if rid == run_id:
            woken.set()

    store.listeners.add(listener)
    try:
        yield "retry: 3000\n\n"
        idle = 0.0
        while True:
            woken.clear()
            batch = await store.events_after(run_id, last_id)
            for event in batch:
                last_id = event["id"]
                yield format_event(event)
            if batch:
                idle = 0.0
                continue
            run = await store.get_run(run_id)
            if run is None or run.status in TERMINAL:
                # The status event is written with the status, so nothing can follow it.
                if not await store.events_after(run_id, last_id, limit=1):
                    yield f"event: end\ndata: {json.dumps({'status': run.status.value if run else None})}\n\n"
                    return
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=poll)
            idle += poll
            if idle >= keepalive:
                idle = 0.0
                yield ": keep-alive\n\n"
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
