"""Limits before parsing: no body is read before the token is checked, none beyond the limit
(1 MiB by default, a 413), and guessing tokens from one address is stopped (429, Retry-After) and
logged — on the agent and on the controller alike."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from config.auth_limiter import FailedAuthLimiter
from node_agent.testing import SandboxAgent
from tests.controller.conftest import Harness

MiB = 1024 * 1024


class CountingBody(httpx.AsyncByteStream):
    """A request body of ``total`` bytes that counts how much of it the server pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b"x" * self.chunk


async def post_stream(
    client: httpx.AsyncClient, url: str, body: CountingBody, **headers: str
) -> httpx.Response:
    request = client.build_request("POST", url, headers={"Content-Type": "application/json", **headers})
    request.stream = body
    request.headers.pop("content-length", None)
    request.headers["transfer-encoding"] = "chunked"
    return await client.send(request)


@pytest.mark.parametrize("where", ["agent", "controller"])
async def test_no_body_is_read_without_a_token(where: str, agent: SandboxAgent, controller: Harness) -> None:
    client, url = (
        (agent.client, "/v1/operations")
        if where == "agent"
        else (controller.client, "/api/v1/cluster/config")
    )
    body = CountingBody(300 * MiB)
    resp = await post_stream(client, url, body, Authorization="")
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"]["code"] == "unauthorized"
    assert body.pulled <= 64 * 1024  # at most what the transport had in hand; the rest never read


@pytest.mark.parametrize("where", ["agent", "controller"])
async def test_a_body_past_the_limit_is_a_413_read_no_further(
    where: str, agent: SandboxAgent, controller: Harness
) -> None:
    client, url = (
        (agent.client, "/v1/operations")
        if where == "agent"
        else (controller.client, "/api/v1/cluster/config")
    )
    body = CountingBody(10 * MiB)
    resp = await post_stream(client, url, body)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "too_large"
    assert body.pulled <= MiB + 64 * 1024
    declared = await client.post(
        url, content=b"{}", headers={"Content-Length": str(300 * MiB), "Content-Type": "application/json"}
    )
    assert declared.status_code == 413


async def test_a_body_within_the_limit_is_read(agent: SandboxAgent) -> None:
    resp = await agent.client.post(
        "/v1/operations", json={"op_id": "ok1", "action": "stop_web", "params": {}, "pad": "x" * (MiB // 2)}
    )
    assert resp.status_code == 422  # read and parsed: the unknown field is named
    assert "pad" in resp.text


async def test_guessing_tokens_is_stopped_and_logged(
    agent: SandboxAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmcluster.security")
    answers = []
    for i in range(12):
        r = await agent.client.get("/v1/status", headers={"Authorization": f"Bearer guess-{i:020d}"})
        answers.append(r.status_code)
    assert answers[:9] == [401] * 9
    assert answers[9:] == [429, 429, 429]
    blocked = await agent.client.get("/v1/status")  # even the right token, while blocked
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert blocked.json()["error"]["code"] == "too_many_failures"
    lines = [r.getMessage() for r in caplog.records]
    assert sum("authentication failed from 127.0.0.1" in m for m in lines) == 10
    assert any("blocked for 60s after 10 failed authentications" in m for m in lines)
    assert all("guess-" not in m for m in lines)  # a guessed token is never logged
    # Another address is not blocked; open routes stay open.
    other = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=agent.app, client=("10.9.9.9", 5000)),
        base_url="http://crm1.agent",
        headers={"Authorization": f"Bearer {agent.token}"},
    )
    async with other:
        assert (await other.get("/v1/status")).status_code == 200
    assert (await agent.client.get("/healthz")).status_code == 200


async def test_controller_rate_limits_wrong_tokens_too(controller: Harness) -> None:
    codes = [
        (
            await controller.client.get("/api/v1/cluster", headers={"Authorization": f"Bearer nope-{i:020d}"})
        ).status_code
        for i in range(11)
    ]
    assert codes.count(401) == 9 and codes[-2:] == [429, 429]


def test_the_limiter_forgets_in_time_and_is_bounded() -> None:
    now = [0.0]
    lim = FailedAuthLimiter(max_failures=3, window=10, block=30, max_clients=100, clock=lambda: now[0])
    assert lim.failed("a") is None and lim.failed("a") is None
    now[0] = 11  # the first two fell out of the window
    assert lim.failed("a") is None and lim.failed("a") is None
    assert lim.failed("a") == 30
    assert lim.blocked_for("a") == 30
    now[0] = 41.5
    assert lim.blocked_for("a") is None
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) == 100  # memory bounded whatever a caller sends


async def test_operations_waiting_at_once_are_bounded(agent: SandboxAgent) -> None:
    ops = agent.app.state.operations
    ops.max_unfinished = 0
    resp = await agent.client.post("/v1/operations", json={"op_id": "q1", "action": "stop_web"})
    assert resp.status_code == 503 and "waiting or running" in resp.json()["error"]["message"]
    ops.max_unfinished, ops.max_kept = 200, 3
    for i in range(6):
        record = await agent.run(f"k{i}", "database_sessions", {})
        assert record.state == "succeeded", record.error
    assert len(ops._ops) <= 3  # memory bounded whatever a caller sends; the journal keeps the rest
