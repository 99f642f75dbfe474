"""The controller app (real lifespan, real state database on SQLite and PostgreSQL) in front of a
fake cluster of agents reached through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from config.settings import ControllerSettings
from config.state_schema import nodes, utcnow
from controller.app import create_app
from tests.conftest import pg_admin
from tests.upgrade.fake_agents import FakeCluster

LICENSE = "LIC-2017R1-ABCDEFGH-0001"
DB_PASSWORD = "Sup3r-Secret-Pw!"


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    cluster: FakeCluster
    settings: ControllerSettings

    async def plan(self, **body: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "target_version": "2017 R1",
            "license_key": LICENSE,
            "database": {"server": "sql01", "user": "crmsql", "password": DB_PASSWORD},
            # The acceptance hold (default true) has tests of its own (test_acceptance.py).
            "require_acceptance": False,
        }
        payload.update(body)
        resp = await self.client.post("/api/v1/upgrades", json=payload)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    async def command(
        self, run_id: str, what: str, expect: int = 200, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        resp = await self.client.post(f"/api/v1/upgrades/{run_id}/{what}", json=body)
        assert resp.status_code == expect, resp.text
        return dict(resp.json())

    async def run(self, run_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/upgrades/{run_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def wait(self, run_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(run_id)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run is {run['status']} ({run['message']}), not {statuses}")
            await asyncio.sleep(0.02)

    async def wait_step(self, run_id: str, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(run_id)
            for step in run["plan"]:
                if pred(step):
                    found: dict[str, Any] = step
                    return found
            if time.monotonic() > deadline:
                raise AssertionError("no step matched")
            await asyncio.sleep(0.02)


async def register(engine: Any, cluster: FakeCluster) -> None:
    async with engine.begin() as conn:
        for n in cluster.nodes.values():
            await conn.execute(
                insert(nodes).values(
                    name=n.name,
                    state="up",
                    weight=1.0,
                    fqdn=f"{n.name}.web",
                    agent_url=n.agent_url,
                    roles=n.roles,
                    version=n.version,
                    logged_on=0,
                    fenced=False,
                    updated_at=utcnow(),
                )
            )


def controller_settings(
    db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path, crm_db_url: str | None = None
) -> ControllerSettings:
    return ControllerSettings(
        _env_file=None,
        admin_token=tokens["admin"],
        agent_token=tokens["agent"],
        secret_key=secret_key,
        state_db_url=db_url,
        crm_db_url=crm_db_url or db_url,
        data_dir=tmp_path,
        upgrade_lease_ttl=3.0,
        upgrade_poll_interval=0.01,
    )


@pytest.fixture
def crm_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """The CRM database, apart from the state database: restoring it must not roll the controller's
    own tables back (SQLite: another file; PostgreSQL: another schema on the same server)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}"
        return
    schema = "crm_" + uuid.uuid4().hex[:12]
    pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield db_url.split("?", 1)[0] + f"?search_path={schema}"
    finally:
        pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
async def harness(
    db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path, cluster: FakeCluster
) -> AsyncIterator[Harness]:
    settings = controller_settings(db_url, tokens, secret_key, tmp_path)
    app = create_app(settings, agent_transport_for=cluster.transport_for, watch=False)
    async with app.router.lifespan_context(app):
        await register(app.state.ctx.state_engine, cluster)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://controller",
            headers={"Authorization": f"Bearer {tokens['admin']}"},
        ) as client:
            yield Harness(app, client, cluster, settings)
