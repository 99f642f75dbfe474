"""Degraded mode: the CRM or state database unreachable -> keep routing on last known data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from balancer.app import create_app
from config.database import make_engine
from config.settings import BalancerSettings
from tests.balancer.conftest import BASE, Crm, FakeClock, Health


@pytest.fixture
async def unreachable(db_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine of the same backend whose every connection fails (nothing listens / no file)."""
    if db_url.startswith("sqlite"):
        gone = tmp_path / "gone"
        eng = make_engine(f"sqlite+aiosqlite:///{gone / 'crm.db'}")
        gone.rmdir()  # make_engine created the folder; without it SQLite cannot open the file
    else:
        eng = make_engine("postgresql+asyncpg://postgres@127.0.0.1:9/nothing")
    try:
        yield eng
    finally:
        await eng.dispose()


async def test_crm_database_down_keeps_routing_on_last_known_counts_and_recovers(
    make_balancer: Any, crm: Crm, unreachable: AsyncEngine, clock: FakeClock
) -> None:
    await crm.logon("a", "crm1")
    await crm.logon("alice", "crm3")
    async with make_balancer(pending_ttl=30) as b:
        good = b.refresher.crm_engine
        b.refresher.crm_engine = unreachable
        assert not await b.refresher.refresh_counts()
        assert not await b.refresher.refresh_config()
        body = (await b.client.get("/api/v1/servers")).json()
        assert body["stale"] is True
        assert [s["logged_on"] for s in body["servers"]] == [1, 0, 1]
        health = await b.client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok", "stale": True}
        # routing goes on: last counts, our own pending logons (kept while stale), stickiness
        assert await b.route(["u1", "u2", "u3", "alice"]) == ["crm2", "crm1", "crm2", "crm3"]
        clock.advance(60)
        assert not await b.refresher.refresh_counts()
        assert [s["pending"] for s in (await b.servers()).values()] == [1, 2, 1]
        metrics = (await b.client.get("/metrics")).text
        assert 'crmcluster_balancer_db_errors_total{db="crm"} 3.0' in metrics
        assert "crmcluster_balancer_stale 1.0" in metrics
        # the database comes back: fresh counts, the old pending logons expire, stale is cleared
        b.refresher.crm_engine = good
        await crm.logon("u1", "crm2")
        assert await b.refresher.refresh_counts()
        body = (await b.client.get("/api/v1/servers")).json()
        assert body["stale"] is False
        assert [(s["logged_on"], s["pending"]) for s in body["servers"]] == [(1, 0), (1, 0), (1, 0)]
        assert (await b.client.get("/healthz")).json()["stale"] is False


async def test_state_database_down_keeps_the_last_node_states(
    make_balancer: Any, crm: Crm, unreachable: AsyncEngine
) -> None:
    from tests.balancer.conftest import set_node

    await set_node(crm.engine, "crm1", "maintenance")
    async with make_balancer() as b:
        b.refresher.state_engine = unreachable
        assert not await b.refresher.refresh_states()
        assert (await b.client.get("/api/v1/servers")).json()["stale"] is True
        assert await b.route(["u1"]) == ["crm2"]


async def test_start_without_the_crm_database_is_not_ready_then_recovers(
    db_url: str, crm: Crm, unreachable: AsyncEngine, clock: FakeClock
) -> None:
    settings = BalancerSettings(crm_db_url=db_url, state_db_url=db_url, install_name="CRM")
    app = create_app(
        settings,
        crm_engine=unreachable,
        state_engine=crm.engine,
        clock=clock,
        crm_now=crm.crm_now,
        health_transport=Health().transport(),
        background=False,
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            r = await client.get("/healthz")
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json()["error"]["code"] == "starting"
            assert (await client.get("/crm/")).status_code == 503
            refresher = app.state.balancer.refresher
            refresher.crm_engine = crm.engine
            await refresher.refresh_config()
            await refresher.refresh_counts()
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/crm/")).status_code == 307
