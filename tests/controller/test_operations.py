"""The guide's multi-server operations with real sandbox agents: drain (with the real balancer
routing logons), services placement, the library, metadata refresh, capacity, removing a node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from balancer.app import create_app as create_balancer
from config.settings import BalancerSettings
from node_agent.drivers.base import OperationContext
from node_agent.protocol import LibraryParams
from tests.controller.conftest import Cluster


async def drain_under_way(client: httpx.AsyncClient, job_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The job once its drain step runs (it has started counting the node's users)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}")).json()
        if any(s["action"] == "wait_for_logoffs" and s["status"] == "running" for s in job["steps"]):
            return job
        assert loop.time() < deadline, f"the drain step of job {job_id} never started: {job}"
        await asyncio.sleep(0.02)


LOGON = "/crm/eware.dll/Logon"


class Balancer:
    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    async def refresh(self) -> None:
        r = self.app.state.balancer.refresher
        await r.refresh_config()
        await r.refresh_states()
        await r.refresh_counts()

    async def logon(self, user: str) -> str:
        """Log ``user`` on the way a browser does: the balancer's 307, then the chosen web server."""
        first = await self.client.post(LOGON, data={"EWARE_USERID": user})
        assert first.status_code == 307, first.text
        async with httpx.AsyncClient() as web:
            final = await web.post(first.headers["location"], data={"EWARE_USERID": user})
            assert final.status_code == 200, final.text
        await self.refresh()
        return str(first.headers["x-crm-server"])


@pytest.fixture
async def balancer(cluster: Cluster) -> AsyncIterator[Balancer]:
    settings = BalancerSettings(
        _env_file=None,
        crm_db_url=cluster.db_url,
        state_db_url=cluster.db_url,
        slow_start=0.0,
    )
    app = create_balancer(settings, background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lb") as client:
            for _ in range(2):
                await app.state.balancer.refresher.check_health()
            b = Balancer(app, client)
            await b.refresh()
            yield b


async def logoff(cluster: Cluster, node: str, user: str) -> None:
    async with httpx.AsyncClient() as web:
        r = await web.post(f"{cluster.agents[node].web_url}/crm/eware.dll/Logoff", data={"User_Logon": user})
        assert r.status_code < 400


async def test_drain_with_live_users_sends_logons_elsewhere(cluster: Cluster, balancer: Balancer) -> None:
    assert [await balancer.logon(u) for u in ("u1", "u2", "u3")] == ["crm1", "crm2", "crm3"]
    resp = await cluster.client.post("/api/v1/nodes/crm2/drain", json={"timeout": 600})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    nodes = {n["name"]: n for n in (await cluster.client.get("/api/v1/cluster")).json()["nodes"]}
    assert nodes["crm2"]["state"] == "draining" and nodes["crm2"]["logged_on"] == 1
    # the balancer reads the node table (each pass within a second): no new logon goes to crm2
    routed = [await balancer.logon(u) for u in ("u4", "u5", "u6", "u7")]
    assert "crm2" not in routed and set(routed) == {"crm1", "crm3"}
    assert (await cluster.client.get(f"/api/v1/jobs/{job_id}")).json()["status"] == "running"
    await logoff(cluster, "crm2", "u2")
    job = await cluster.wait_job(job_id)
    assert job["status"] == "succeeded"
    assert job["steps"][0]["result"] == {"logged_on": 0, "timed_out": False, "undrained": False}
    assert (await cluster.client.get("/api/v1/nodes/crm2")).json()["state"] == "maintenance"
    undrained = await cluster.client.post("/api/v1/nodes/crm2/undrain")
    assert undrained.status_code == 200 and undrained.json()["state"] == "up"
    await balancer.refresh()
    assert await balancer.logon("u8") == "crm2"  # the emptiest server again


async def test_drain_completes_at_its_time_out(cluster: Cluster, balancer: Balancer) -> None:
    await balancer.logon("u1")  # crm1
    resp = await cluster.client.post("/api/v1/nodes/crm1/drain", json={"timeout": 30})
    job_id = resp.json()["id"]
    again = await cluster.client.post("/api/v1/nodes/crm1/drain")
    assert again.json()["id"] == job_id  # one drain at a time
    assert (await drain_under_way(cluster.client, job_id))["status"] == "running"
    cluster.h.clock.advance(31)
    job = await cluster.wait_job(job_id)
    assert job["status"] == "succeeded"
    assert job["steps"][0]["result"] == {"logged_on": 1, "timed_out": True, "undrained": False}


async def test_services_placement_moves_one_service(cluster: Cluster) -> None:
    c = cluster.client
    placed = (await c.get("/api/v1/services")).json()["services"]
    assert {s: v["node"] for s, v in placed.items()} == {
        "indexer": "crm2",
        "escalation": "crm3",
        "email_manager": "crm1",
    }
    resp = await c.put("/api/v1/services", json={"indexer": "crm3"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["services"]["indexer"] == {"node": "crm3", "nodes": ["crm3"], "state": "running"}
    assert [(s["node"], s["action"]) for s in body["job"]["steps"]] == [
        ("crm2", "stop_service"),
        ("crm2", "uninstall_service"),
        ("crm3", "install_service"),
        ("crm3", "start_service"),
        ("crm3", "verify_running"),
    ]
    assert (await cluster.status("crm2")).services["indexer"] == "not_installed"
    nochange = await c.put("/api/v1/services", json={"indexer": "crm3", "email_manager": "crm1"})
    assert nochange.json()["changed"] is False
    assert (await c.get("/api/v1/cluster")).json()["warnings"] == []
    for bad in ({}, {"indexer": "crm9"}, {"integration": "crm1"}, {"indexer": 3}):
        r = await c.put("/api/v1/services", json=bad)
        assert r.status_code == 422, (bad, r.text)


async def test_library_verify_names_the_node_that_cannot_write(cluster: Cluster) -> None:
    c = cluster.client
    await cluster.add_agent("crm4", [], faults="probe_library:fail")
    await c.post("/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"})
    resp = await c.put(
        "/api/v1/library",
        json={"doc_store": "\\\\fileserver\\CRM\\Library", "doc_templates": "\\\\fileserver\\CRM\\Templates"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["doc_store"] == "\\\\fileserver\\CRM\\Library"
    ver = body["verification"]
    assert ver["ok"] is False
    assert {n["name"]: n["ok"] for n in ver["nodes"]} == {
        "crm1": True,
        "crm2": True,
        "crm3": True,
        "crm4": False,
    }
    assert "crm4" in next(n for n in ver["nodes"] if not n["ok"])["message"]
    assert len(ver["nodes"][0]["probes"]) == 2
    again = (await c.post("/api/v1/library/verify")).json()
    assert [n["name"] for n in again["nodes"] if not n["ok"]] == ["crm4"]
    assert (await c.get("/api/v1/library")).json()["doc_templates"] == "\\\\fileserver\\CRM\\Templates"
    for bad in ({"doc_store": "C:\\docs"}, {"doc_store": "\\\\srv\\..\\x"}, {}, {"nope": 1}):
        assert (await c.put("/api/v1/library", json=bad)).status_code == 422, bad
    assert (await c.post("/api/v1/library/verify", json={"paths": ["/tmp"]})).status_code == 422


async def test_library_verify_fails_when_an_agent_reports_the_share_unreachable(cluster: Cluster) -> None:
    """An agent that answers (the operation succeeds) but says the probe did not read back —
    ``reachable``/``writable`` False, as the windows driver reports it — fails the verification.
    (The check used to read an ``ok`` field no agent sends, and reported success.)"""
    agent = await cluster.add_agent("crm4", [])

    async def probe_library(params: LibraryParams, ctx: OperationContext) -> dict[str, Any]:
        return {
            "path": params.path,
            "reachable": False,
            "writable": False,
            "message": "the network path was not found",
        }

    agent.driver.probe_library = probe_library
    c = cluster.client
    await c.post("/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"})
    library = {"doc_store": "\\\\fileserver\\CRM\\Docs", "verify": False}
    assert (await c.put("/api/v1/library", json=library)).status_code == 200
    resp = await c.post("/api/v1/library/verify", json={"paths": ["\\\\fileserver\\CRM\\Library"]})
    assert resp.status_code == 200, resp.text
    ver = resp.json()
    assert ver["ok"] is False
    crm4 = next(n for n in ver["nodes"] if n["name"] == "crm4")
    assert crm4["ok"] is False and crm4["message"] == "the network path was not found"
    assert [n["name"] for n in ver["nodes"] if not n["ok"]] == ["crm4"]


async def test_metadata_refresh_with_one_node_down(cluster: Cluster) -> None:
    cluster.switches["crm3"].down = True
    resp = await cluster.client.post("/api/v1/metadata/refresh")
    assert resp.status_code == 200
    body = resp.json()
    assert body["confirmed"] == ["crm1", "crm2"]
    assert [f["name"] for f in body["failed"]] == ["crm3"]
    assert "did not answer" in body["failed"][0]["message"]
    audit = (await cluster.client.get("/api/v1/audit", params={"limit": 1})).json()["entries"][0]
    assert (audit["action"], audit["result"]) == ("metadata.refresh", "partial")


async def test_capacity_figures(cluster: Cluster) -> None:
    body = (await cluster.client.get("/api/v1/capacity")).json()
    assert body["nodes"] == [
        {"name": n, "dll_connections": 1, "tomcat_pool": 10} for n in ("crm1", "crm2", "crm3")
    ]
    assert body["required"] == 33
    if cluster.h.ctx.crm_engine.dialect.name == "postgresql":
        async with cluster.h.ctx.crm_engine.connect() as conn:
            expected = int((await conn.execute(text("SHOW max_connections"))).scalar_one())
        assert body["max_connections_source"] == "database"
    else:
        expected = 100  # the setting
        assert body["max_connections_source"] == "setting"
    assert body["max_connections"] == expected and body["headroom"] == expected - 33
    # a per-node pool size (CRMCLUSTER_TOMCAT_POOL_SIZES='{"crm2": 20}')
    cluster.h.ctx.settings.tomcat_pool_sizes = {"crm2": 20}
    body = (await cluster.client.get("/api/v1/capacity")).json()
    assert [n["tomcat_pool"] for n in body["nodes"]] == [10, 20, 10]
    assert body["required"] == 43 and body["headroom"] == expected - 43


def test_per_node_pool_sizes_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, secret_key: str
) -> None:
    from config.settings import ControllerSettings

    monkeypatch.setenv("CRMCLUSTER_TOMCAT_POOL_SIZES", '{"crm2": 20}')
    settings = ControllerSettings(
        _env_file=None,
        admin_token="a" * 20,
        agent_token="b" * 20,
        secret_key=secret_key,
    )
    assert settings.tomcat_pool_sizes == {"crm2": 20}


async def test_remove_a_node_drains_it_first(cluster: Cluster, balancer: Balancer) -> None:
    c = cluster.client
    for name in ("crm1", "crm2", "crm3"):
        r = await c.delete(f"/api/v1/nodes/{name}")
        assert r.status_code == 409, r.text  # database, indexer, escalation
    assert "database" in (await c.delete("/api/v1/nodes/crm1")).json()["error"]["message"]
    await c.put("/api/v1/services", json={"escalation": "crm2"})
    await balancer.logon("u1")
    await balancer.logon("u2")
    assert await balancer.logon("u3") == "crm3"
    resp = await c.delete("/api/v1/nodes/crm3", params={"drain_timeout": 60})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert (await drain_under_way(c, job_id))["status"] == "running"  # u3 still on
    await logoff(cluster, "crm3", "u3")
    job = await cluster.wait_job(job_id)
    assert job["status"] == "succeeded", job
    assert [s["action"] for s in job["steps"]] == [
        "wait_for_logoffs",
        "remove_from_server_names",
        "forget_node",
    ]
    body = (await c.get("/api/v1/cluster")).json()
    assert [n["name"] for n in body["nodes"]] == ["crm1", "crm2"]
    assert body["sysparams"]["server_names"] == ["crm1", "crm2"]
    assert len(body["sysparams"]["fq_server_names"]) == 2
    assert body["warnings"] == []
    assert (await c.delete("/api/v1/nodes/crm3")).status_code == 404
    assert (await c.delete("/api/v1/nodes/crm2", params={"drain_timeout": -1})).status_code == 422
    assert (await c.post("/api/v1/nodes/crm9/drain")).status_code == 404
    assert (await c.post("/api/v1/nodes/crm2/drain", json={"timeout": "soon"})).status_code == 422
    assert (await c.get("/api/v1/jobs/nope")).status_code == 404
