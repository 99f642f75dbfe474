"""Fixtures of the controller tests: a controller app on SQLite and on PostgreSQL, driven through
``httpx.ASGITransport`` with its lifespan run by the test, a clock the test moves, and agents
reached in-process through ``agent_transport_for``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import ControllerSettings
from config.state_schema import utcnow
from controller.app import create_app
from controller.context import ControllerContext
from node_agent.protocol import Heartbeat, NodeStatus, ServiceStatus

BASE = "http://controller.test"


class FakeClock:
    """Naive-UTC "now" that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@dataclass
class Harness:
    """A running controller app and what a test needs around it."""

    app: Any
    client: httpx.AsyncClient
    ctx: ControllerContext
    clock: FakeClock
    tokens: dict[str, str]
    transports: dict[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    #: Each node's own agent token, as registration showed it (or issued for a test's agent).
    node_tokens: dict[str, str] = field(default_factory=dict)

    async def node_token(self, name: str) -> str:
        """The node's agent token: the one registration showed, else a new one issued now."""
        if name not in self.node_tokens:
            self.node_tokens[name] = await self.ctx.node_tokens.issue(name)
        return self.node_tokens[name]

    async def heartbeat(self, status: NodeStatus, *, agent_url: str | None = None) -> httpx.Response:
        hb = Heartbeat(status=status, agent_url=agent_url, sent_at=self.clock())
        token = await self.node_token(status.name)
        return await self.client.post(
            f"/api/v1/agents/{status.name}/heartbeat",
            content=hb.model_dump_json(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    async def register(self, name: str, *, roles: list[str] | None = None, **extra: Any) -> httpx.Response:
        body = {"name": name, "agent_url": f"http://{name}.agent:8701", "roles": roles or []} | extra
        resp = await self.client.post("/api/v1/nodes", json=body)
        if resp.status_code in (200, 201) and "agent_token" in resp.json():
            self.node_tokens[name] = resp.json()["agent_token"]
        return resp


def node_status(
    name: str,
    *,
    version: str = "7.3",
    roles: list[str] | None = None,
    replication_engine: bool = False,
    services: dict[str, str] | None = None,
    web: str = "running",
    web_url: str | None = None,
) -> NodeStatus:
    svc = {s: ServiceStatus.NOT_INSTALLED for s in ("indexer", "escalation", "email_manager")}
    svc |= {k: ServiceStatus(v) for k, v in (services or {}).items()}
    return NodeStatus(
        name=name,
        install_name="CRM",
        version=version,
        roles=roles or [],
        web=ServiceStatus(web),
        tomcat=ServiceStatus.RUNNING,
        services=svc,
        replication_engine=replication_engine,
        driver="sandbox",
        web_url=web_url or f"http://{name}.example.com/",
    )


def make_settings(
    db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path, **kw: Any
) -> ControllerSettings:
    # A down agent fails a cluster change's step after a second, not the production 15 s.
    kw.setdefault("agent_unreachable_grace", 1.0)
    # Tests that try many wrong tokens on purpose are not brute force (tests/security covers that).
    kw.setdefault("auth_max_failures", 10_000)
    return ControllerSettings(
        _env_file=None,
        admin_token=tokens["admin"],
        agent_token=tokens["agent"],
        secret_key=secret_key,
        state_db_url=db_url,
        crm_db_url=db_url,
        data_dir=tmp_path,
        **kw,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def start_controller(
    stack: AsyncExitStack,
    settings: ControllerSettings,
    *,
    clock: FakeClock,
    tokens: dict[str, str],
    transport_for: Callable[[str], httpx.AsyncBaseTransport | None],
    watch: bool = False,
) -> Harness:
    app = create_app(settings, agent_transport_for=transport_for, clock=clock, watch=watch)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE,
            headers={"Authorization": f"Bearer {tokens['admin']}"},
        )
    )
    return Harness(app=app, client=client, ctx=app.state.ctx, clock=clock, tokens=tokens)


@pytest.fixture
async def controller(
    crm_engine: AsyncEngine,
    db_url: str,
    tokens: dict[str, str],
    secret_key: str,
    tmp_path: Path,
    clock: FakeClock,
) -> AsyncIterator[Harness]:
    """A controller whose agents refuse connections unless a test routes them (``transports``)."""
    settings = make_settings(db_url, tokens, secret_key, tmp_path, heartbeat_timeout=15)
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    refuse = httpx.MockTransport(refused)

    def transport_for(url: str) -> httpx.AsyncBaseTransport:
        return transports.get(url.rstrip("/"), refuse)

    async with AsyncExitStack() as stack:
        h = await start_controller(stack, settings, clock=clock, tokens=tokens, transport_for=transport_for)
        h.transports = transports
        yield h


# A cluster of in-process sandbox agents ------------------------------------------------------------
class Switch(httpx.AsyncBaseTransport):
    """An agent's transport that a test can turn off (connection refused) and on again."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


GUIDE_ROLES = {
    "crm1": ["database", "replication_engine", "email_manager"],
    "crm2": ["indexer"],
    "crm3": ["escalation"],
}


@dataclass
class Cluster:
    """The guide's three-server cluster: sandbox agents in-process behind a controller."""

    h: Harness
    stack: AsyncExitStack
    db_url: str
    tmp_path: Path
    agents: dict[str, Any] = field(default_factory=dict)
    switches: dict[str, Switch] = field(default_factory=dict)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.h.client

    async def add_agent(
        self, name: str, roles: list[str], *, faults: str = "", library: Path | None = None
    ) -> Any:
        from node_agent.testing import running_sandbox_agent

        agent = await self.stack.enter_async_context(
            running_sandbox_agent(
                name=name,
                data_dir=self.tmp_path / name,
                crm_db_url=self.db_url,
                token=await self.h.node_token(name),
                roles=roles,
                faults=faults,
                library_root=library or self.tmp_path / "library",
            )
        )
        self.agents[name] = agent
        self.switches[name] = Switch(agent.transport)
        self.h.transports[f"http://{name}.agent"] = self.switches[name]
        return agent

    def fqdn(self, name: str) -> str:
        return str(self.agents[name].web_url).split("://", 1)[1].rstrip("/")

    async def status(self, name: str) -> NodeStatus:
        return NodeStatus.model_validate((await self.agents[name].client.get("/v1/status")).json())

    async def wait_job(self, job_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        import asyncio

        for _ in range(int(timeout / 0.05)):
            job = (await self.client.get(f"/api/v1/jobs/{job_id}")).json()
            if job["status"] != "running":
                return dict(job)
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job_id} still running")


@pytest.fixture
async def cluster(
    crm_engine: AsyncEngine,
    db_url: str,
    tokens: dict[str, str],
    secret_key: str,
    tmp_path: Path,
    clock: FakeClock,
) -> AsyncIterator[Cluster]:
    settings = make_settings(db_url, tokens, secret_key, tmp_path, heartbeat_timeout=15, sweep_interval=0.05)
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    refuse = httpx.MockTransport(refused)
    (tmp_path / "library").mkdir()

    def transport_for(url: str) -> httpx.AsyncBaseTransport:
        return transports.get(url.rstrip("/"), refuse)

    async with AsyncExitStack() as stack:
        h = await start_controller(stack, settings, clock=clock, tokens=tokens, transport_for=transport_for)
        h.transports = transports
        c = Cluster(h=h, stack=stack, db_url=db_url, tmp_path=tmp_path)
        for name, roles in GUIDE_ROLES.items():
            await c.add_agent(name, roles)
        resp = await h.client.put(
            "/api/v1/cluster/config",
            json={
                "server_names": list(GUIDE_ROLES),
                "fq_server_names": [c.fqdn(n) for n in GUIDE_ROLES],
                "dtls_server_name": "crm1",
            },
        )
        assert resp.status_code == 200, resp.text
        for name, roles in GUIDE_ROLES.items():
            r = await h.client.post(
                "/api/v1/nodes", json={"name": name, "agent_url": f"http://{name}.agent", "roles": roles}
            )
            assert r.status_code == 201, r.text
            assert "agent_token" not in r.json()  # the test's agent already holds the one issued
            assert r.json()["state"] == "up"
        yield c
