"""The agent's own loops: the warm-up logon after an IIS reset or app-pool recycle, and
heartbeats to the controller with back-off while it is away."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from config.crm_schema import crm_tables
from config.database import make_engine
from node_agent.heartbeat import HeartbeatSender
from node_agent.protocol import Heartbeat
from node_agent.testing import SandboxAgent, running_sandbox_agent


def _later(agent: SandboxAgent) -> datetime:
    """A moment after IIS last started: the reset the watcher must notice (no sleep needed)."""
    started = str(agent.driver.state["iis_started_at"])
    return datetime.fromisoformat(started) + timedelta(seconds=1)


async def test_warm_up_logon_after_a_simulated_iis_reset(db_agent: SandboxAgent, db_url: str) -> None:
    watcher = db_agent.app.state.watcher
    assert await watcher.check_once() is None  # the first look only remembers
    assert await watcher.check_once() is None  # nothing changed
    db_agent.driver.simulate_iis_reset(at=_later(db_agent))
    op_id = await watcher.check_once()
    assert op_id is not None and op_id.startswith("auto-warmup-")
    rec = (await db_agent.client.get(f"/v1/operations/{op_id}")).json()
    assert rec["state"] == "succeeded" and rec["action"] == "warmup_logon"
    assert rec["result"]["logged_off"] == 1
    assert await watcher.check_once() is None  # done once per reset

    t = crm_tables()
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(t.acty("acty_server_name"), t.acty("acty_logoff"), t.users.c.User_Logon).join(
                        t.users, t.users.c.User_UserId == t.acty("acty_user_id")
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("crm1", "Y", "Admin")]
    assert (await db_agent.client.get("/v1/status")).json()["last_warmup_at"] is not None

    # iisreset through the agent (stop, start) is noticed the same way.
    await db_agent.run("st", "stop_web")
    assert await watcher.check_once() is None  # IIS stopped: nothing to warm up
    await db_agent.run("go", "start_web")
    assert (await watcher.check_once() or "").startswith("auto-warmup-")


async def test_a_failed_warm_up_is_tried_again(db_agent: SandboxAgent) -> None:
    watcher = db_agent.app.state.watcher
    await watcher.check_once()
    db_agent.driver.faults.set("warmup_logon", "fail", times=1)
    db_agent.driver.simulate_iis_reset(at=_later(db_agent))
    first = await watcher.check_once()
    assert db_agent.operations.get(first).state == "failed"
    second = await watcher.check_once()
    assert second != first and db_agent.operations.get(second).state == "succeeded"


async def test_heartbeats_back_off_while_the_controller_is_away(db_agent: SandboxAgent) -> None:
    answers = [503, 0, 0, 200, 200]
    seen: list[httpx.Request] = []

    def controller(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        code = answers.pop(0)
        if code == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(code, json={"state": "up"})

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 5:
            raise asyncio.CancelledError

    sender = HeartbeatSender(
        controller_url="http://controller:8700/",
        name="crm1",
        token=db_agent.token,
        status=db_agent.driver.status,
        agent_url="http://127.0.0.1:8701",
        interval=5,
        max_backoff=12,
        clock=lambda: datetime(2026, 11, 28, tzinfo=UTC),
        transport=httpx.MockTransport(controller),
        sleep=sleep,
        jitter=0,
    )
    with pytest.raises(asyncio.CancelledError):
        await sender.run()
    assert waits == [10, 12, 12, 5, 5]
    assert sender.sent == 2 and sender.last_answer == {"state": "up"}
    req = seen[-1]
    assert str(req.url) == "http://controller:8700/api/v1/agents/crm1/heartbeat"
    assert req.headers["authorization"] == f"Bearer {db_agent.token}"
    beat = Heartbeat.model_validate(json.loads(req.content))
    assert beat.status.name == "crm1" and beat.status.web_url == db_agent.web_url
    assert beat.agent_url == "http://127.0.0.1:8701"


async def test_heartbeat_back_off_is_jittered_above_the_cap(db_agent: SandboxAgent) -> None:
    """Agents cut off together come back spread out: every wait after a failure is the doubling
    back-off plus up to one interval at random — at the cap too."""
    failing = 12

    def controller(request: httpx.Request) -> httpx.Response:
        nonlocal failing
        failing -= 1
        if failing >= 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"state": "up"})

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if failing < 0:
            raise asyncio.CancelledError

    sender = HeartbeatSender(
        controller_url="http://controller:8700",
        name="crm1",
        token=db_agent.token,
        status=db_agent.driver.status,
        agent_url=None,
        interval=5,
        max_backoff=30,
        clock=lambda: datetime(2026, 11, 28, tzinfo=UTC),
        transport=httpx.MockTransport(controller),
        sleep=sleep,
    )
    with pytest.raises(asyncio.CancelledError):
        await sender.run()
    backoffs, after = waits[:-1], waits[-1]
    assert len(backoffs) == 12 and after == 5
    floors = [min(30, 10 * 2**i) for i in range(12)]
    assert all(f <= w < f + 5 for w, f in zip(backoffs, floors, strict=True)), backoffs
    at_cap = backoffs[3:]
    assert len(set(at_cap)) > 1, "the waits at the cap are all the same: no jitter"


async def test_the_agent_sends_heartbeats_from_its_lifespan(
    tmp_path: Path, sqlite_url: str, tokens: dict[str, str]
) -> None:
    got = asyncio.Event()
    beats: list[Heartbeat] = []

    def controller(request: httpx.Request) -> httpx.Response:
        beats.append(Heartbeat.model_validate(json.loads(request.content)))
        got.set()
        return httpx.Response(200, json={"state": "up"})

    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path,
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        controller_url="http://controller",
        agent_url="http://127.0.0.1:9999",
        background=True,
        app_kwargs={"controller_transport": httpx.MockTransport(controller)},
    ) as agent:
        await asyncio.wait_for(got.wait(), 10)
        assert beats[0].status.name == "crm1" and beats[0].agent_url == "http://127.0.0.1:9999"
        assert agent.app.state.heartbeat.sent >= 1


async def test_no_controller_no_heartbeats(db_agent: SandboxAgent) -> None:
    assert db_agent.app.state.heartbeat is None
    assert (await db_agent.client.get("/v1/status")).status_code == 200
