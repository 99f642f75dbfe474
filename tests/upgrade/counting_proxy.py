"""A loopback HTTP proxy in front of one real agent that counts the operations sent to it.

The controller is given the proxy's URL as the node's ``agent_url``; every request goes on to the
agent unchanged, and each ``POST /v1/operations`` is counted by its ``op_id`` — what the agent
*received*, whatever either side remembers or writes to disk. "Sent once" is then a count of
requests on the wire.

    async with CountingProxy("http://127.0.0.1:8701") as proxy:
        ...                       # point the controller at proxy.url
        proxy.received["run.step.0"]  # 1
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import Generator
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

#: Hop-by-hop headers (RFC 9110 7.6.1) and those httpx recomputes: not passed on.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class _QuietServer(uvicorn.Server):
    """No signal handlers of its own: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.received: Counter[str] = Counter()
        self.url = ""
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=60)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST" and scope["path"] == "/v1/operations":
            with contextlib.suppress(ValueError, AttributeError):
                self.received[str(json.loads(body).get("op_id"))] += 1
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in _HOP]
        path = scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        resp = await self._client.request(scope["method"], path, headers=headers, content=body)
        out = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower() not in _HOP]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    async def __aenter__(self) -> CountingProxy:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self, lifespan="off", access_log=False, log_config=None, log_level="warning")
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"proxy {self.url}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not self._server.started:
            assert not self._task.done() and loop.time() < deadline, "the counting proxy did not start"
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        await self._client.aclose()
