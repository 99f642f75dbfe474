"""The controller's event streams keep one wire format (``\\n`` line ends, ``retry:`` first,
``: keep-alive`` comments), whatever library writes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from sse_starlette import ServerSentEvent

from controller.sse import event_source, sse_event
from controller.upgrade.events import format_event


def test_an_upgrade_event_row_on_the_wire() -> None:
    row = {"id": 42, "kind": "step", "at": "2024-05-01T10:00:00Z", "data": {"step": "s-1", "status": "ok"}}
    assert format_event(row).encode() == (
        b'id: 42\nevent: step\ndata: {"at": "2024-05-01T10:00:00Z", "step": "s-1", "status": "ok"}\n\n'
    )
    assert sse_event(retry_ms=3000).encode() == b"retry: 3000\n\n"
    assert sse_event({"status": "restored"}, event="end").encode() == (
        b'event: end\ndata: {"status": "restored"}\n\n'
    )


async def test_keepalive_comments_while_the_stream_is_quiet() -> None:
    async def events() -> AsyncIterator[ServerSentEvent]:
        yield sse_event(retry_ms=1000)
        yield sse_event({"n": 1}, event="tick", id=1)
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + 1.0  # quiet long enough for several keep-alives, under load too
        while loop.time() < quiet_until:
            await asyncio.sleep(0.02)
        yield sse_event({"n": 2}, event="tick", id=2)

    app = FastAPI()

    @app.get("/stream")
    async def stream() -> object:
        return event_source(events(), keepalive_seconds=0.1)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await client.get("/stream")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["cache-control"] == "no-cache"
    body = resp.text
    assert "\r" not in body
    blocks = body.split("\n\n")
    assert blocks[0] == "retry: 1000"
    assert blocks[1] == 'id: 1\nevent: tick\ndata: {"n": 1}'
    assert ": keep-alive" in blocks[2:-2]
    assert blocks[-2] == 'id: 2\nevent: tick\ndata: {"n": 2}' and blocks[-1] == ""
