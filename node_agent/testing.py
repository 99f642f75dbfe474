"""Sandbox agents in-process, for the tests of every package (controller, upgrade, balancer, demo).

    async with running_sandbox_agent(
        name="crm1", data_dir=tmp_path / "crm1", crm_db_url=db_url,
        roles=["database", "replication_engine"], token=tokens["agent"],
    ) as agent:
        r = await agent.client.post("/v1/operations", json={...})   # bearer token already set
        agent.transport        # httpx.ASGITransport to hand to the controller's agent_transport_for
        agent.web_url          # the stand-in CRM web server (a real socket)
        agent.driver.faults.set("run_installer", "fail")

:func:`running_sandbox_agent` runs the app's lifespan (the stand-in web server, the journal; no
background loops unless ``background=True``) and stops it on exit. ``crash`` faults raise
:class:`SimulatedCrash` in-process instead of ending the process: the operation stays ``running``
in the journal, and a new agent on the same data dir reads it ``interrupted``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers.sandbox.host import SandboxDriver
from node_agent.operations import OperationManager
from node_agent.protocol import OperationRecord


class SimulatedCrash(BaseException):
    """Raised by an in-process sandbox where a real agent would die (a ``crash`` fault)."""


def _crash() -> None:
    raise SimulatedCrash("injected crash")


def sandbox_settings(
    *,
    name: str,
    data_dir: Path,
    crm_db_url: str,
    token: str,
    roles: Iterable[str] = (),
    version: str = "7.3",
    faults: str = "",
    install_name: str = "CRM",
    library_root: Path | None = None,
    controller_url: str | None = None,
    agent_url: str | None = None,
    web_port: int = 0,
    **extra: Any,
) -> AgentSettings:
    """AgentSettings for a sandbox node, independent of the environment and any ``.env`` file."""
    return AgentSettings(
        _env_file=None,
        agent_token=token,
        name=name,
        driver="sandbox",
        data_dir=data_dir,
        crm_db_url=crm_db_url,
        install_name=install_name,
        sandbox_roles=",".join(roles),
        sandbox_version=version,
        sandbox_faults=faults,
        sandbox_library_root=library_root,
        sandbox_web_port=web_port,
        controller_url=controller_url,
        agent_url=agent_url,
        **extra,
    )


def sandbox_agent_app(
    name: str,
    data_dir: Path,
    crm_db_url: str,
    *,
    token: str,
    roles: Iterable[str] = (),
    version: str = "7.3",
    faults: str = "",
    in_process_crash: bool = True,
    app_kwargs: dict[str, Any] | None = None,
    **settings_kwargs: Any,
) -> FastAPI:
    """The agent app of a sandbox node (not started: run its lifespan, or use
    :func:`running_sandbox_agent`). ``app.state.driver`` is the :class:`SandboxDriver`."""
    settings = sandbox_settings(
        name=name,
        data_dir=data_dir,
        crm_db_url=crm_db_url,
        token=token,
        roles=roles,
        version=version,
        faults=faults,
        **settings_kwargs,
    )
    driver = SandboxDriver(settings, crash=_crash) if in_process_crash else SandboxDriver(settings)
    return create_app(settings, driver=driver, **(app_kwargs or {"background": False}))


@dataclass
class SandboxAgent:
    app: FastAPI
    transport: httpx.ASGITransport
    client: httpx.AsyncClient
    token: str

    @property
    def driver(self) -> SandboxDriver:
        driver: SandboxDriver = self.app.state.driver
        return driver

    @property
    def operations(self) -> OperationManager:
        ops: OperationManager = self.app.state.operations
        return ops

    @property
    def web_url(self) -> str:
        return self.driver.web_url

    async def run(self, op_id: str, action: str, params: dict[str, Any] | None = None) -> OperationRecord:
        """Submit through the HTTP API and wait for the operation to finish; returns its record."""
        resp = await self.client.post(
            "/v1/operations", json={"op_id": op_id, "action": action, "params": params or {}}
        )
        if resp.status_code != 202:
            raise AssertionError(f"submit {action}: {resp.status_code} {resp.text}")
        await self.operations.wait(op_id)
        got = await self.client.get(f"/v1/operations/{op_id}")
        return OperationRecord.model_validate(got.json())


@contextlib.asynccontextmanager
async def running_sandbox_agent(
    *,
    name: str,
    data_dir: Path,
    crm_db_url: str,
    token: str,
    roles: Iterable[str] = (),
    version: str = "7.3",
    faults: str = "",
    background: bool = False,
    app_kwargs: dict[str, Any] | None = None,
    **settings_kwargs: Any,
) -> AsyncIterator[SandboxAgent]:
    """A started in-process sandbox agent (see the module docstring)."""
    kwargs = dict(app_kwargs or {})
    kwargs.setdefault("background", background)
    app = sandbox_agent_app(
        name,
        data_dir,
        crm_db_url,
        token=token,
        roles=roles,
        version=version,
        faults=faults,
        app_kwargs=kwargs,
        **settings_kwargs,
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{name}.agent", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            yield SandboxAgent(app=app, transport=transport, client=client, token=token)
