"""A three-server sandbox cluster in-process: real sandbox agents (node_agent.testing) with their
stand-in CRM web servers on loopback sockets, and the controller app in front of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select

from config.crm_schema import crm_tables
from config.database import make_engine
from config.migrate import migrate
from config.settings import BalancerSettings, CommonSettings
from config.state_schema import nodes, utcnow
from config.sysparams import SysParamsStore
from controller.access.node_tokens import NodeTokens
from controller.app import create_app
from node_agent.testing import SandboxAgent, running_sandbox_agent
from tests.upgrade.conftest import Harness, controller_settings

LIBRARY_UNC = "\\\\files\\crm\\library"
ROLES = {
    "crm1": ["database", "replication_engine", "email_manager"],
    "crm2": ["indexer"],
    "crm3": ["escalation"],
}


@dataclass
class SandboxHarness(Harness):
    agents: dict[str, SandboxAgent]
    crm_db_url: str = ""
    state_db_url: str = ""

    async def balancer_logon(self, user: str) -> httpx.Response:
        """A logon through a real balancer (reading the same databases): 307 to the chosen server."""
        from balancer.app import create_app as balancer_app

        settings = BalancerSettings(
            _env_file=None, crm_db_url=self.crm_db_url, state_db_url=self.state_db_url
        )
        app = balancer_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://balancer") as c,
        ):
            return await c.post("/crm/eware.dll/Logon", data={"EWARE_USERID": user})

    async def logon(self, node: str, user: str) -> int:
        async with httpx.AsyncClient() as c:
            r = await c.post(self.agents[node].web_url + "/crm/eware.dll/Logon", data={"EWARE_USERID": user})
        return r.status_code


async def issue_node_tokens(db_url: str, secret_key: str, names: Iterable[str]) -> dict[str, str]:
    """Each node's own agent token, issued in the state database before the agents start."""
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        issuer = NodeTokens(engine, secret_key)
        return {name: await issuer.issue(name) for name in names}
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def sandbox_cluster(
    *,
    db_url: str,
    crm_db_url: str,
    tokens: dict[str, str],
    secret_key: str,
    tmp_path: Path,
    versions: dict[str, str] | None = None,
    roles: dict[str, list[str]] | None = None,
    faults: dict[str, str] | None = None,
    agent_settings: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[SandboxHarness]:
    """``agent_settings``: more AgentSettings fields per node (``{"crm1": {"sandbox_installer":
    "manual"}}``)."""
    roles = roles or ROLES
    library = tmp_path / "library"
    library.mkdir(exist_ok=True)
    node_tokens = await issue_node_tokens(db_url, secret_key, roles)
    async with contextlib.AsyncExitStack() as stack:
        agents: dict[str, SandboxAgent] = {}
        for name, node_roles in roles.items():  # crm1 first: it seeds the CRM database
            agents[name] = await stack.enter_async_context(
                running_sandbox_agent(
                    name=name,
                    data_dir=tmp_path / name,
                    crm_db_url=crm_db_url,
                    token=node_tokens[name],
                    roles=node_roles,
                    version=(versions or {}).get(name, "7.3"),
                    faults=(faults or {}).get(name, ""),
                    library_root=library,
                    **(agent_settings or {}).get(name, {}),
                )
            )
        engine = make_engine(crm_db_url)
        stack.push_async_callback(engine.dispose)
        tables = crm_tables()
        async with engine.begin() as conn:
            # Sage CRM ships its Admin user; the warm-up logons sign in as it.
            if (
                await conn.execute(select(tables.users).where(tables.users.c.User_Logon == "Admin"))
            ).first() is None:
                await conn.execute(tables.users.insert().values(User_Logon="Admin"))
            await SysParamsStore(tables, CommonSettings(_env_file=None).sysparam_row_names()).write(
                conn,
                {
                    "server_names": list(roles),
                    "fq_server_names": [a.web_url.split("://", 1)[1] for a in agents.values()],
                    "doc_store": LIBRARY_UNC,
                    "doc_templates": LIBRARY_UNC,
                },
            )
        transports = {f"http://{n}.agent": a.transport for n, a in agents.items()}

        def transport_for(url: str) -> Any:
            return transports.get(url.rstrip("/"))

        settings = controller_settings(db_url, tokens, secret_key, tmp_path / "controller", crm_db_url)
        app: FastAPI = create_app(settings, agent_transport_for=transport_for, watch=False)
        await stack.enter_async_context(app.router.lifespan_context(app))
        async with app.state.ctx.state_engine.begin() as conn:
            for name, node_roles in roles.items():
                await conn.execute(
                    insert(nodes).values(
                        name=name,
                        state="up",
                        weight=1.0,
                        fqdn=agents[name].web_url.split("://", 1)[1],
                        agent_url=f"http://{name}.agent",
                        roles=node_roles,
                        version=(versions or {}).get(name, "7.3"),
                        logged_on=0,
                        fenced=False,
                        updated_at=utcnow(),
                    )
                )
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://controller",
                headers={"Authorization": f"Bearer {tokens['admin']}"},
            )
        )
        yield SandboxHarness(app, client, None, settings, agents, crm_db_url, db_url)  # type: ignore[arg-type]
