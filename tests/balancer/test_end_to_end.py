"""End to end on real loopback sockets: the balancer under uvicorn with its loops running, and
three stand-in CRM web servers; one goes down (connection refused) and comes back."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from balancer.app import create_app
from config.settings import BalancerSettings
from tests.balancer.conftest import Crm, set_node


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LogonPage:
    """A tiny HTTP server standing for one CRM web server's logon page."""

    def __init__(self) -> None:
        with free_socket() as s:
            self.port = s.getsockname()[1]
        self.server: asyncio.Server | None = None
        self.hits = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            body = b"<form action=eware.dll/Logon method=post></form>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def pages() -> AsyncIterator[list[LogonPage]]:
    servers = [LogonPage() for _ in range(3)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        if s.server is not None:
            await s.stop()


async def test_server_goes_down_and_comes_back(db_url: str, crm: Crm, pages: list[LogonPage]) -> None:
    await crm.configure(
        server_names=["crm1", "crm2", "crm3"],
        fq_server_names=[f"127.0.0.1:{p.port}" for p in pages],
    )
    settings = BalancerSettings(
        crm_db_url=db_url,
        state_db_url=db_url,
        install_name="CRM",
        health_interval=0.05,
        health_timeout=0.5,
        counts_interval=0.05,
        states_interval=0.05,
        config_interval=0.1,
        slow_start=0,
    )
    app = create_app(settings, crm_engine=crm.engine, state_engine=crm.engine)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", access_log=False, log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _started(server))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def state(name: str) -> Any:
                body = (await client.get("/api/v1/servers")).json()
                return {s["name"]: s["state"] for s in body["servers"]}[name]

            async def logon() -> str:
                r = await client.get("/crm/eware.dll/Logon")
                assert r.status_code == 307
                assert r.headers["location"] == f"http://{_fq(r, pages)}/crm/eware.dll/Logon"
                return r.headers["x-crm-server"]

            assert (await client.get("/healthz")).status_code == 200
            await eventually(lambda: _all_hit(pages))
            assert [await logon() for _ in range(3)] == ["crm1", "crm2", "crm3"]

            await pages[1].stop()  # IIS stopped: connection refused
            await eventually(lambda: _is(state, "crm2", "down"))
            assert {await logon() for _ in range(4)} == {"crm1", "crm3"}

            await pages[1].start()
            await eventually(lambda: _is(state, "crm2", "up"))
            assert await logon() == "crm2"  # it has the fewest now

            # a state the controller writes is honoured within a second
            await set_node(crm.engine, "crm2", "maintenance")
            started = time.monotonic()
            await eventually(lambda: _is(state, "crm2", "maintenance"), timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert "crm2" not in {await logon() for _ in range(4)}

            # a Custom_SysParams change is picked up by the config loop, without a restart
            await crm.configure(server_names=["crm1"], fq_server_names=[f"127.0.0.1:{pages[0].port}"])

            async def only_crm1() -> bool:
                body = (await client.get("/api/v1/servers")).json()
                return [s["name"] for s in body["servers"]] == ["crm1"]

            await eventually(only_crm1, timeout=5.0)
            assert {await logon() for _ in range(3)} == {"crm1"}
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def _fq(r: httpx.Response, pages: list[LogonPage]) -> str:
    i = int(r.headers["x-crm-server"][-1]) - 1
    return f"127.0.0.1:{pages[i].port}"


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _all_hit(pages: list[LogonPage]) -> bool:
    return all(p.hits > 0 for p in pages)


async def _is(state: Callable[[str], Awaitable[Any]], name: str, want: str) -> bool:
    return bool(await state(name) == want)
