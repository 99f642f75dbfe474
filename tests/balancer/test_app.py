"""``create_app`` on its own engines: one database for both, and a state database that is down."""

from __future__ import annotations

from typing import Any

import httpx

from balancer.app import create_app
from config.settings import BalancerSettings
from tests.balancer.conftest import BASE, Crm, Health


async def serve(app: Any) -> Any:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def test_one_database_for_both_migrated_at_start(db_url: str, crm: Crm) -> None:
    await crm.logon("a", "crm1")
    app = create_app(
        BalancerSettings(crm_db_url=db_url, state_db_url=db_url, install_name="CRM"),
        health_transport=Health().transport(),
        crm_now=crm.crm_now,
        background=False,
    )
    async with app.router.lifespan_context(app), await serve(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "stale": False}
        r = await client.get("/crm/")
        assert (r.status_code, r.headers["x-crm-server"]) == (307, "crm2")


async def test_state_database_down_at_start_is_degraded_not_fatal(db_url: str, crm: Crm) -> None:
    settings = BalancerSettings(
        crm_db_url=db_url,
        state_db_url="postgresql+asyncpg://postgres@127.0.0.1:9/nothing",
        install_name="CRM",
    )
    app = create_app(settings, health_transport=Health().transport(), background=False)
    async with app.router.lifespan_context(app), await serve(app) as client:
        body = (await client.get("/api/v1/servers")).json()
        assert body["stale"] is True and len(body["servers"]) == 3
        assert (await client.get("/crm/")).status_code == 307
