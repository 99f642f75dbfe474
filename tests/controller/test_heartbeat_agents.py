"""Contract item 3 end to end: a real sandbox agent's heartbeat loop posting to the controller
in-process; the node's state follows what the agent reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from node_agent.testing import running_sandbox_agent
from tests.controller.conftest import BASE, Harness


async def wait_state(h: Harness, name: str, state: str, *, timeout: float = 10.0) -> dict[str, object]:
    for _ in range(int(timeout / 0.05)):
        resp = await h.client.get(f"/api/v1/nodes/{name}")
        if resp.status_code == 200 and resp.json()["state"] == state:
            return dict(resp.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never became {state}")


async def test_agent_heartbeats_drive_the_node_state(
    controller: Harness, db_url: str, tmp_path: Path
) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=db_url,
        token=await controller.node_token("crm1"),
        roles=["database", "replication_engine", "email_manager"],
        controller_url=BASE,
        agent_url="http://crm1.agent",
        heartbeat_interval=0.05,
        app_kwargs={"controller_transport": httpx.ASGITransport(app=controller.app), "background": True},
    ) as agent:
        # Heartbeats of an unregistered node are refused, not recorded: wait for two refusals.
        heartbeat = agent.app.state.heartbeat
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while heartbeat.failures < 2:
            assert loop.time() < deadline, "the agent sent no heartbeat"
            await asyncio.sleep(0.01)
        assert (await controller.client.get("/api/v1/nodes")).json()["nodes"] == []
        # registered while its agent cannot be asked: down until its first heartbeat
        resp = await controller.client.post(
            "/api/v1/nodes", json={"name": "crm1", "agent_url": "http://crm1.agent", "roles": ["database"]}
        )
        assert resp.json()["state"] == "down"
        node = await wait_state(controller, "crm1", "up")
        assert node["roles"] == ["database", "replication_engine", "email_manager"]
        assert node["fqdn"] == agent.web_url.split("://", 1)[1].rstrip("/")
        assert (await agent.run("op-stop-web", "stop_web")).state == "succeeded"
        await wait_state(controller, "crm1", "down")
        assert (await agent.run("op-start-web", "start_web")).state == "succeeded"
        await wait_state(controller, "crm1", "up")
        metrics = (await controller.client.get("/metrics")).text
        assert 'crmcluster_controller_heartbeats_total{node="crm1"}' in metrics
