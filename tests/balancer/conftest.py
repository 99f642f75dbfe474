"""Fixtures of the balancer tests: a CRM + state database (SQLite and PostgreSQL), a fake clock,
health checks answered in-process, and a balancer app whose passes the test drives by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balancer.app import BalancerApp, BalancerContext, create_app
from balancer.refresh import Refresher
from config.crm_schema import CrmTables
from config.migrate import migrate
from config.settings import BalancerSettings
from config.state_schema import nodes, utcnow
from config.sysparams import SysParamsStore

INSTALL = "CRM"
BASE = "http://balancer.test"
LOGON = "/crm/eware.dll/Logon"


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Health:
    """Health check answers by host: ``down`` hosts answer 503, the rest 200."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.checked: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        self.checked.append(host)
        if host in self.down:
            return httpx.Response(503, text="IIS stopped")
        return httpx.Response(200, text="<form>logon</form>")

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


@dataclass
class Crm:
    """Writes to the CRM database the way Sage CRM would."""

    engine: AsyncEngine
    tables: CrmTables
    store: SysParamsStore
    crm_now: Callable[[], datetime]
    users: dict[str, int] = field(default_factory=dict)

    async def configure(self, **changes: Any) -> None:
        async with self.engine.begin() as conn:
            await self.store.write(conn, changes)

    async def set_raw(self, row: str, value: str) -> None:
        t = self.tables
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.sysparams).where(t.parm("parm_name") == row).values({t.names.parm_value: value})
            )

    async def user(self, logon: str) -> int:
        if logon not in self.users:
            t = self.tables
            async with self.engine.begin() as conn:
                result = await conn.execute(insert(t.users).values({t.names.user_logon: logon}))
                self.users[logon] = int(result.inserted_primary_key[0])  # type: ignore[index]  # one row inserted: its key is there
        return self.users[logon]

    async def logon(self, logon: str, server: str, *, age: timedelta = timedelta(0)) -> int:
        """An Activity row: ``logon`` logged on to ``server``."""
        uid = await self.user(logon)
        t = self.tables
        n = t.names
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(t.activity).values(
                    {
                        n.acty_user_id: uid,
                        n.acty_server_name: server,
                        n.acty_logon_time: self.crm_now() - age,
                        n.acty_logoff: None,
                    }
                )
            )
        return int(result.inserted_primary_key[0])  # type: ignore[index]  # one row inserted: its key is there

    async def logoff(self, logon: str) -> None:
        uid = self.users[logon]
        t = self.tables
        n = t.names
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.activity)
                .where(t.acty("acty_user_id") == uid, t.acty("acty_logoff").is_(None))
                .values({n.acty_logoff: "Y", n.acty_logoff_time: self.crm_now()})
            )


async def set_node(engine: AsyncEngine, name: str, state: str, weight: float = 1.0) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(nodes).where(nodes.c.name == name))
        await conn.execute(
            insert(nodes).values(name=name, state=state, weight=weight, roles=[], updated_at=utcnow())
        )


@dataclass
class Balancer:
    app: BalancerApp
    client: httpx.AsyncClient
    clock: FakeClock
    health: Health

    @property
    def ctx(self) -> BalancerContext:
        ctx: BalancerContext = self.app.state.balancer
        return ctx

    @property
    def refresher(self) -> Refresher:
        assert self.ctx.refresher is not None
        return self.ctx.refresher

    async def refresh(self) -> None:
        await self.refresher.refresh_config()
        await self.refresher.refresh_states()
        await self.refresher.refresh_counts()

    async def servers(self) -> dict[str, dict[str, Any]]:
        body = (await self.client.get("/api/v1/servers")).json()
        return {s["name"]: s for s in body["servers"]}

    async def logon(self, user: str | None = None, *, query: str = "") -> httpx.Response:
        url = LOGON + (f"?{query}" if query else "")
        if user is None:
            return await self.client.get(url)
        return await self.client.post(url, data={"User_Logon": user, "Password": "s3cret-pw"})

    async def route(self, users: Iterable[str]) -> list[str]:
        """Log each user on in turn; the servers they were sent to."""
        out = []
        for u in users:
            r = await self.logon(u)
            assert r.status_code == 307, r.text
            out.append(r.headers["x-crm-server"])
        return out


def crm_now_fixed() -> datetime:
    return datetime(2026, 11, 28, 12, 0, 0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def crm(crm_engine: AsyncEngine, tables: CrmTables) -> Crm:
    await migrate(crm_engine)
    store = SysParamsStore(tables, BalancerSettings().sysparam_row_names())
    crm = Crm(crm_engine, tables, store, crm_now_fixed)
    await crm.configure(
        server_names=["crm1", "crm2", "crm3"],
        fq_server_names=["crm1.example.com", "crm2.example.com:8443", "crm3.example.com"],
        do_load_balancing=False,
    )
    return crm


BalancerFactory = Callable[..., Any]


async def viewer_token(engine: AsyncEngine) -> str:
    """A viewer API token in the state database, made as ``crmcluster tokens create`` would."""
    import uuid

    from config.api_tokens import ApiTokens
    from config.roles import Role

    _, token = await ApiTokens(engine).create(
        f"scraper-{uuid.uuid4().hex[:8]}", Role.VIEWER, created_by="test"
    )
    return token


@pytest.fixture
def make_balancer(crm: Crm, db_url: str, clock: FakeClock) -> Callable[..., Any]:
    """``async with make_balancer(**settings) as b:`` — a balancer on the test database, loaded."""

    @asynccontextmanager
    async def _make(**overrides: Any) -> AsyncIterator[Balancer]:
        health = Health()
        values: dict[str, Any] = {
            "crm_db_url": db_url,
            "state_db_url": db_url,
            "install_name": INSTALL,
            "slow_start": 0.0,
            # A loaded test machine is slower than the production 2 s bound on a database pass.
            "db_timeout": 15.0,
        } | overrides
        settings = BalancerSettings(**values)
        app = create_app(
            settings,
            crm_engine=crm.engine,
            state_engine=crm.engine,
            clock=clock,
            crm_now=crm.crm_now,
            health_transport=health.transport(),
            background=False,
        )
        async with app.router.lifespan_context(app):
            # The controller's viewer token (api_tokens, shared through the state database): what
            # Prometheus scrapes /metrics with. Routes that are open ignore it.
            viewer = await viewer_token(crm.engine)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=BASE,
                headers={"Authorization": f"Bearer {viewer}"},
            ) as client:
                yield Balancer(app, client, clock, health)

    return _make
