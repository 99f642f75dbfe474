"""Joining a web server the guide's way and moving the single Replication Engine, with real
sandbox agents in-process."""

from __future__ import annotations

import asyncio
import json
from re import fullmatch

import httpx
import pytest
from sqlalchemy import select

from config.state_schema import audit, jobs
from controller.jobs.runner import run_agent_op
from controller.jobs.store import StepError
from node_agent.protocol import Action
from tests.controller.conftest import Cluster

LICENSE = "LIC-7Q3X-99Z1-SECRET"


async def test_healthy_guide_cluster(cluster: Cluster) -> None:
    body = (await cluster.client.get("/api/v1/cluster")).json()
    assert body["warnings"] == []
    assert {n["name"]: n["state"] for n in body["nodes"]} == {"crm1": "up", "crm2": "up", "crm3": "up"}


async def test_join_leaves_exactly_one_replication_engine(cluster: Cluster) -> None:
    # A fresh install comes with its own Replication Engine war: what the guide's steps remove.
    await cluster.add_agent("crm4", ["replication_engine"])
    assert (await cluster.status("crm4")).replication_engine
    resp = await cluster.client.post(
        "/api/v1/nodes",
        json={"name": "crm4", "agent_url": "http://crm4.agent", "join": True, "license_key": LICENSE},
    )
    assert resp.status_code == 202, resp.text
    job = await cluster.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job["message"]
    assert [(s["node"], s["action"], s["status"]) for s in job["steps"]] == [
        ("crm1", "disable_exchange_integration", "succeeded"),
        ("crm4", "run_installer", "succeeded"),
        ("crm4", "stop_tomcat", "succeeded"),
        ("crm4", "remove_replication_engine", "succeeded"),
        ("crm4", "verify_replication_engine_removed", "succeeded"),
        ("crm4", "start_tomcat", "succeeded"),
        ("crm1", "enable_exchange_integration", "succeeded"),
        ("crm4", "add_to_server_names", "succeeded"),
        ("crm4", "put_in_rotation", "succeeded"),
    ]
    assert all(s["op_id"] == f"{job['id']}:{s['seq']}" for s in job["steps"])
    re = (await cluster.client.get("/api/v1/replication-engine")).json()
    assert re["node"] == "crm1" and re["holders"] == ["crm1"]
    assert not (await cluster.status("crm4")).replication_engine
    assert (await cluster.status("crm1")).exchange_integration is True
    body = (await cluster.client.get("/api/v1/cluster")).json()
    assert body["sysparams"]["server_names"] == ["crm1", "crm2", "crm3", "crm4"]
    assert body["sysparams"]["fq_server_names"][-1] == cluster.fqdn("crm4")
    assert {n["name"]: n["state"] for n in body["nodes"]}["crm4"] == "up"
    assert body["warnings"] == []
    # the license key is nowhere in the state database
    async with cluster.h.ctx.state_engine.connect() as conn:
        stored = json.dumps([list(r) for r in (await conn.execute(select(audit))).all()], default=str)
        stored += json.dumps([list(r) for r in (await conn.execute(select(jobs))).all()], default=str)
    assert LICENSE not in stored and "nodes.join" in stored


async def test_a_failed_join_stops_names_the_step_and_re_enables_integration(cluster: Cluster) -> None:
    await cluster.add_agent("crm4", ["replication_engine"], faults="remove_replication_engine:fail")
    resp = await cluster.client.post(
        "/api/v1/nodes",
        json={"name": "crm4", "agent_url": "http://crm4.agent", "join": True, "license_key": LICENSE},
    )
    job = await cluster.wait_job(resp.json()["id"])
    assert job["status"] == "failed"
    assert job["message"].startswith("step 4 (remove_replication_engine on crm4) failed")
    statuses = [(s["action"], s["status"]) for s in job["steps"]]
    assert statuses[:5] == [
        ("disable_exchange_integration", "succeeded"),
        ("run_installer", "succeeded"),
        ("stop_tomcat", "succeeded"),
        ("remove_replication_engine", "failed"),
        ("verify_replication_engine_removed", "pending"),
    ]
    assert statuses[-1] == ("enable_exchange_integration", "succeeded")  # the compensation
    assert (await cluster.status("crm1")).exchange_integration is True
    body = (await cluster.client.get("/api/v1/cluster")).json()
    assert "crm4" not in body["sysparams"]["server_names"]
    assert {n["name"]: n["state"] for n in body["nodes"]}["crm4"] == "maintenance"
    again = await cluster.client.post(
        "/api/v1/nodes",
        json={"name": "crm4", "agent_url": "http://crm4.agent", "join": True, "license_key": LICENSE},
    )
    assert again.status_code == 409


async def test_join_refuses_what_it_cannot_do(cluster: Cluster) -> None:
    c = cluster.client
    base = {"agent_url": "http://crm9.agent", "join": True, "license_key": LICENSE}
    r = await c.post("/api/v1/nodes", json={"name": "crm9"} | base)
    assert r.status_code == 422 and "register crm9 first" in r.json()["error"]["message"]  # no token yet
    await cluster.h.node_token("crm9")
    r = await c.post("/api/v1/nodes", json={"name": "crm9"} | base)
    assert r.status_code == 503 and r.json()["error"]["code"] == "agent_unavailable"
    r = await c.post("/api/v1/nodes", json={"name": "crm2"} | base)
    assert r.status_code == 409  # already in the cluster
    await cluster.add_agent("crm5", [])
    await cluster.h.node_token("crm4")
    r = await c.post(
        "/api/v1/nodes",
        json={"name": "crm4", "agent_url": "http://crm5.agent", "join": True, "license_key": LICENSE},
    )
    # crm5's agent holds crm5's token: it refuses crm4's, so nothing runs there.
    assert r.status_code == 422 and "refused crm4's token" in r.json()["error"]["message"]


async def test_move_the_replication_engine_never_two(cluster: Cluster) -> None:
    resp = await cluster.client.put("/api/v1/replication-engine", json={"node": "crm2"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["node"] == "crm2" and body["holders"] == ["crm2"] and body["changed"] is True
    assert [(s["node"], s["action"]) for s in body["job"]["steps"]] == [
        ("crm1", "remove_replication_engine"),
        ("crm1", "verify_removed"),
        ("crm2", "install_replication_engine"),
        ("crm2", "verify_installed"),
    ]
    assert not (await cluster.status("crm1")).replication_engine
    assert (await cluster.status("crm2")).replication_engine
    assert (await cluster.client.get("/api/v1/cluster")).json()["warnings"] == []
    same = await cluster.client.put("/api/v1/replication-engine", json={"node": "crm2"})
    assert same.json()["changed"] is False


async def test_a_down_holder_is_fenced_and_loses_its_engine_when_it_returns(cluster: Cluster) -> None:
    cluster.switches["crm1"].down = True
    resp = await cluster.client.put("/api/v1/replication-engine", json={"node": "crm3"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    first = body["job"]["steps"][0]
    assert (first["node"], first["action"]) == ("crm1", "fence")
    assert body["fenced"] == ["crm1"] and body["holders"] == ["crm3"]
    # crm1 comes back, still carrying its war: its heartbeat gets the engine removed, then unfenced
    cluster.switches["crm1"].down = False
    assert (await cluster.status("crm1")).replication_engine
    hb = await cluster.h.heartbeat(await cluster.status("crm1"))
    assert hb.json()["fenced"] is True
    for _ in range(200):
        node = (await cluster.client.get("/api/v1/nodes/crm1")).json()
        if not node["fenced"]:
            break
        await asyncio.sleep(0.05)
    assert not node["fenced"]
    assert not (await cluster.status("crm1")).replication_engine
    re = (await cluster.client.get("/api/v1/replication-engine")).json()
    assert re["holders"] == ["crm3"] and re["fenced"] == []


async def test_replication_engine_bad_input(cluster: Cluster) -> None:
    c = cluster.client
    assert (await c.put("/api/v1/replication-engine", json={"node": "crm9"})).status_code == 404
    assert (await c.put("/api/v1/replication-engine", json={})).status_code == 422
    assert (await c.put("/api/v1/replication-engine", json={"node": "a b"})).status_code == 422
    assert (await c.put("/api/v1/replication-engine", json={"node": "crm2", "x": 1})).status_code == 422
    cluster.switches["crm2"].down = True
    r = await c.put("/api/v1/replication-engine", json={"node": "crm2"})
    assert r.status_code == 503
    assert (await cluster.status("crm1")).replication_engine  # nothing was touched


async def test_one_placement_change_at_a_time(cluster: Cluster) -> None:
    async with cluster.h.ctx.placement_lock:  # as a join in progress holds it
        for method, path, body in (
            ("PUT", "/api/v1/replication-engine", {"node": "crm2"}),
            ("PUT", "/api/v1/services", {"indexer": "crm3"}),
            ("DELETE", "/api/v1/nodes/crm2", None),
        ):
            resp = await cluster.client.request(method, path, json=body)
            assert resp.status_code == 409, (path, resp.text)
            assert "another change" in resp.json()["error"]["message"]
    assert (await cluster.status("crm1")).replication_engine


class Blips(httpx.AsyncBaseTransport):
    """An agent's network that drops the next ``count`` requests once an operation of ``action``
    has been sent (connection reset), then carries on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, action: str, count: int) -> None:
        self.inner = inner
        self.action = action
        self.count = count
        self.armed = False
        self.dropped = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed and self.dropped < self.count:
            self.dropped += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/operations":
            self.armed = self.armed or json.loads(request.content).get("action") == self.action
        return response


async def test_a_network_blip_during_the_installer_does_not_fail_the_join(cluster: Cluster) -> None:
    agent = await cluster.add_agent("crm4", ["replication_engine"])
    blips = Blips(agent.transport, action="run_installer", count=3)
    cluster.h.transports["http://crm4.agent"] = blips
    resp = await cluster.client.post(
        "/api/v1/nodes",
        json={"name": "crm4", "agent_url": "http://crm4.agent", "join": True, "license_key": LICENSE},
    )
    assert resp.status_code == 202, resp.text
    job = await cluster.wait_job(resp.json()["id"])
    assert blips.dropped == 3  # three looks at the running installer did not get through
    assert job["status"] == "succeeded", job["message"]
    installer = next(s for s in job["steps"] if s["action"] == "run_installer")
    assert installer["status"] == "succeeded"
    # Sent once: the agent holds one installer operation, under the step's op id.
    ops = [o for o in agent.operations.records() if o.action == "run_installer"]
    assert [o.op_id for o in ops] == [installer["op_id"]]


async def test_an_operation_that_outlives_its_time_out_is_cancelled_on_the_agent(cluster: Cluster) -> None:
    agent = await cluster.add_agent("crm4", [], faults="stop_tomcat:hang")
    await cluster.client.post("/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"})
    node = await cluster.h.ctx.registry.get("crm4")
    with pytest.raises(StepError) as err:
        await run_agent_op(cluster.h.ctx, node, Action.STOP_TOMCAT, op_id="t-1", timeout=0.5)
    # The agent saw the cancel: the hanging work was stopped, not left running behind the failure.
    rec = await asyncio.wait_for(agent.operations.wait("t-1"), timeout=10)
    assert rec.state == "cancelled" and rec.error == "cancelled on request"
    assert fullmatch(
        r"stop_tomcat timed out after \d+s on this attempt \(last seen running\) \(on crm4\)", str(err.value)
    ), err.value


async def test_a_failed_operation_reports_the_agents_own_error(cluster: Cluster) -> None:
    await cluster.add_agent("crm4", [], faults="stop_tomcat:fail")
    await cluster.client.post("/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"})
    node = await cluster.h.ctx.registry.get("crm4")
    with pytest.raises(StepError) as err:
        await run_agent_op(cluster.h.ctx, node, Action.STOP_TOMCAT, op_id="f-1")
    assert str(err.value) == "stop_tomcat failed: injected fault: stop_tomcat fails on crm4 (on crm4)"


async def test_an_agent_that_stays_silent_fails_the_step_after_the_grace(cluster: Cluster) -> None:
    cluster.switches["crm3"].down = True
    node = await cluster.h.ctx.registry.get("crm3")
    with pytest.raises(StepError, match=r"reload_metadata: the agent did not answer for 1s .*on crm3"):
        await run_agent_op(cluster.h.ctx, node, Action.RELOAD_METADATA, op_id="s-1", timeout=60)
