"""The shared JSON error shape: 4xx for bad input, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from config.aiotasks import TaskSupervisor
from config.api_errors import Conflict, check_bearer, install_error_handlers
from config.errors import DatabaseUnavailable, SysParamsError
from config.secrets import register_secret


class Body(BaseModel):
    count: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    register_secret("leaky-secret-value")

    @app.post("/items")
    async def items(body: Body) -> dict[str, int]:
        return {"count": body.count}

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("already running", details={"run": "r1"})

    @app.get("/sysparams")
    async def sysparams() -> None:
        raise SysParamsError("http_port", "http_port must be between 1 and 65535, not 0")

    @app.get("/db")
    async def db() -> None:
        raise DatabaseUnavailable("crm database unavailable")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("leaky-secret-value in a stack")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"count": "many"}', b"\xff\xfe", b'{"count": 1e999}'])
async def test_malformed_bodies_are_422_json(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/items", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid" and err["message"]


async def test_domain_errors_map_to_status(client: httpx.AsyncClient) -> None:
    r = await client.get("/conflict")
    assert r.status_code == 409 and r.json()["error"] == {
        "code": "conflict",
        "message": "already running",
        "details": {"run": "r1"},
    }
    r = await client.get("/sysparams")
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "http_port"}
    r = await client.get("/db")
    assert r.status_code == 503 and r.headers["retry-after"]
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_unexpected_error_is_generic(client: httpx.AsyncClient) -> None:
    r = await client.get("/boom")
    assert r.status_code == 500
    assert "leaky" not in r.text and "Traceback" not in r.text
    assert r.json()["error"]["code"] == "internal"


def test_check_bearer() -> None:
    from starlette.requests import Request

    def req(header: str | None) -> Request:
        headers = [(b"authorization", header.encode())] if header else []
        return Request({"type": "http", "headers": headers})

    assert check_bearer(req("Bearer abc"), "abc", "def") == "abc"
    assert check_bearer(req("bearer def"), "abc", "def") == "def"
    assert check_bearer(req("Bearer nope"), "abc") is None
    assert check_bearer(req("Basic abc"), "abc") is None
    assert check_bearer(req(None), "abc") is None
    assert check_bearer(req("Bearer abc"), None) is None


async def test_supervisor_restarts_a_crashed_loop_and_shuts_down() -> None:
    runs = 0
    stop = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("crash")
        await stop.wait()

    sup = TaskSupervisor("test")
    sup.start("loop", loop, restart=True, restart_delay=0)
    for _ in range(100):
        if runs >= 3:
            break
        await asyncio.sleep(0)
    assert runs == 3 and sup.names == ["loop"]
    await sup.shutdown(timeout=0.01)
    assert sup.names == []
    with pytest.raises(RuntimeError):
        sup.start("again", loop)
