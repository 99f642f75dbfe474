"""Never down because the controller is behind: silence is evidence about a server only while the
controller kept up, and a storm of down decisions is held back and reported."""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.state_schema import nodes, utcnow
from controller.registry import heartbeats
from tests.controller.conftest import (
    FakeClock,
    Harness,
    make_settings,
    node_status,
    refused,
    start_controller,
)


async def states(h: Harness) -> dict[str, str]:
    async with h.ctx.state_engine.connect() as conn:
        return {r.name: r.state for r in await conn.execute(select(nodes.c.name, nodes.c.state))}


async def warnings(h: Harness) -> dict[str, list[str]]:
    cluster = (await h.client.get("/api/v1/cluster")).json()
    return {w["code"]: w["nodes"] for w in cluster["warnings"]}


async def test_a_storm_of_silences_is_held_and_reported_a_single_silence_is_not(controller: Harness) -> None:
    for name in ("crm1", "crm2", "crm3"):
        await controller.register(name)
        await controller.heartbeat(node_status(name))
    controller.clock.advance(16)  # all three silent past the 15 s time-out: the controller's network?
    assert await heartbeats.sweep(controller.ctx) == []
    assert set((await states(controller)).values()) == {"up"}
    assert (await warnings(controller))["down_storm_held"] == ["crm1", "crm2", "crm3"]
    metrics = (await controller.client.get("/metrics")).text
    assert 'crmcluster_controller_down_decisions_held_total{reason="down_storm"} 3.0' in metrics

    await controller.heartbeat(node_status("crm1"))
    await controller.heartbeat(node_status("crm2"))
    assert await heartbeats.sweep(controller.ctx) == ["crm3"]  # one of three: a server, marked down
    assert (await states(controller))["crm3"] == "down"
    assert "down_storm_held" not in await warnings(controller)


async def test_evidence_about_the_server_is_never_held(controller: Harness) -> None:
    for name in ("crm1", "crm2"):
        await controller.register(name)
        await controller.heartbeat(node_status(name))
    controller.ctx.liveness_guard.note_lag(60)  # the controller is behind
    resp = await controller.heartbeat(node_status("crm2", web="stopped"))
    assert resp.json()["state"] == "down"  # IIS stopped, said by the server itself


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_while_the_controller_is_behind_silence_takes_no_server_down(controller: Harness) -> None:
    guard = controller.ctx.liveness_guard
    guard.monotonic = mono = Monotonic()
    for name in ("crm1", "crm2"):
        await controller.register(name)
        await controller.heartbeat(node_status(name))
    guard.note_lag(guard.lag_limit + 0.1)  # the watch woke 5 s late: heartbeats waited in our queues
    controller.clock.advance(16)
    await controller.heartbeat(node_status("crm1"))
    assert await heartbeats.sweep(controller.ctx) == []
    assert (await states(controller))["crm2"] == "up"
    assert (await warnings(controller))["controller_behind"] == ["crm2"]

    mono.now += guard.window + 0.1  # a whole time-out of a controller keeping up: crm2 is silent
    await controller.heartbeat(node_status("crm1"))
    assert await heartbeats.sweep(controller.ctx) == ["crm2"]
    assert "controller_behind" not in await warnings(controller)


class RealClock(FakeClock):
    def __call__(self) -> datetime:
        return utcnow()


async def test_an_overloaded_controller_marks_no_live_server_down(
    crm_engine: AsyncEngine, db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    """The real watch loop and real time: the controller's loop is overloaded for longer than the
    heartbeat time-out while three agents keep sending; none of them goes down, and a fourth whose
    agent really stopped still does, once the controller has kept up for a whole time-out."""
    settings = make_settings(
        db_url,
        tokens,
        secret_key,
        tmp_path,
        heartbeat_timeout=2.0,
        sweep_interval=0.05,
        down_storm_share=1.0,  # the lag alone must hold them, not the storm rule
    )
    refuse = httpx.MockTransport(refused)
    async with AsyncExitStack() as stack:
        h = await start_controller(
            stack, settings, clock=RealClock(), tokens=tokens, transport_for=lambda _u: refuse, watch=True
        )
        live = ["crm1", "crm2", "crm3"]
        for name in [*live, "crm4"]:
            await h.register(name)
        seen_down: set[str] = set()

        async def agent(name: str) -> None:
            while True:  # as the agent does, each heartbeat gives up after its request time-out
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(h.heartbeat(node_status(name)), 1.0)
                await asyncio.sleep(0.2)

        async def observer() -> None:
            while True:
                seen_down.update(n for n, s in (await states(h)).items() if s == "down")
                await asyncio.sleep(0.02)

        agents = {n: asyncio.create_task(agent(n)) for n in [*live, "crm4"]}
        tasks = [*agents.values()]
        try:
            deadline = time.monotonic() + 10
            while set((await states(h)).values()) != {"up"}:
                assert time.monotonic() < deadline, await states(h)
                await asyncio.sleep(0.05)
            tasks.append(asyncio.create_task(observer()))
            agents["crm4"].cancel()  # crm4's agent stops for real, just as the controller gets busy
            # The controller's loop is overloaded for 6 s: CPU-bound work hogs it in 1 s slices,
            # so every await of a heartbeat's request (and of the watch) waits its turn.
            busy_until = time.monotonic() + 6.0
            while time.monotonic() < busy_until:
                time.sleep(1.0)
                await asyncio.sleep(0)
            deadline = time.monotonic() + 10
            while "crm4" not in seen_down and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert seen_down == {"crm4"}, seen_down
