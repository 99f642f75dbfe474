"""One identity per agent: each node's token is its own, shown once, kept only as a hash; a
heartbeat speaks for its token's node only and never moves where the controller sends tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from config.state_schema import metadata
from node_agent.protocol import Heartbeat
from tests.controller.conftest import Cluster, Harness, node_status


class Recorder(httpx.AsyncBaseTransport):
    """A fake agent that answers nothing useful and remembers every request it got."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"forged": True})


async def beat(
    h: Harness, node: str, token: str, *, status_of: str | None = None, **extra: Any
) -> httpx.Response:
    hb = Heartbeat(status=node_status(status_of or node, **extra), agent_url=None, sent_at=h.clock())
    return await h.client.post(
        f"/api/v1/agents/{node}/heartbeat",
        content=hb.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


async def test_registration_shows_the_token_once_and_keeps_only_its_hash(controller: Harness) -> None:
    first = await controller.client.post(
        "/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"}
    )
    assert first.status_code == 201
    token = first.json()["agent_token"]
    assert token.startswith("nt_") and len(token) >= 40
    again = await controller.client.post(
        "/api/v1/nodes", json={"name": "crm4", "agent_url": "http://crm4.agent"}
    )
    assert again.status_code == 200 and "agent_token" not in again.json()
    listed = (await controller.client.get("/api/v1/nodes")).text + (
        await controller.client.get("/api/v1/nodes/crm4")
    ).text
    assert token not in listed
    dump = ""
    async with controller.ctx.state_engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump += json.dumps([list(r) for r in (await conn.execute(select(table))).all()], default=str)
    assert token not in dump  # the hash and a nonce only
    assert (await beat(controller, "crm4", token)).status_code == 200


async def test_a_heartbeat_for_another_node_is_403_and_changes_nothing(cluster: Cluster) -> None:
    h = cluster.h
    before = (await h.client.get("/api/v1/nodes/crm2")).json()
    crm1_token = await h.node_token("crm1")
    spoof = await beat(h, "crm2", crm1_token, status_of="crm2", web="stopped")
    assert spoof.status_code == 403 and spoof.json()["error"]["code"] == "forbidden"
    assert "crm1" in spoof.json()["error"]["message"]
    after = (await h.client.get("/api/v1/nodes/crm2")).json()
    assert after["state"] == "up" and after["observed"] == before["observed"]
    state = await h.client.get("/api/v1/agents/crm2/state", headers={"Authorization": f"Bearer {crm1_token}"})
    assert state.status_code == 403


async def test_a_heartbeat_never_moves_the_agent_url(cluster: Cluster) -> None:
    h = cluster.h
    fake = Recorder()
    h.transports["http://evil.example:8701"] = fake
    token = await h.node_token("crm1")
    hb = Heartbeat(
        status=await cluster.status("crm1"), agent_url="http://evil.example:8701", sent_at=h.clock()
    )
    resp = await h.client.post(
        "/api/v1/agents/crm1/heartbeat",
        content=hb.model_dump_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200
    view = (await h.client.get("/api/v1/cluster")).json()
    crm1 = next(n for n in view["nodes"] if n["name"] == "crm1")
    assert crm1["agent_url"] == "http://crm1.agent"
    warning = next(w for w in view["warnings"] if w["code"] == "agent_url_mismatch")
    assert warning["nodes"] == ["crm1"] and "evil.example" in warning["message"]
    # The controller keeps calling the registered agent: nothing reaches the advertised one.
    located = await h.client.get("/api/v1/replication-engine")
    assert located.status_code == 200 and located.json()["node"] == "crm1"
    assert fake.requests == []


async def test_each_agent_is_called_with_its_own_token_only(cluster: Cluster) -> None:
    h = cluster.h
    seen: dict[str, set[str]] = {}

    class Spy(httpx.AsyncBaseTransport):
        def __init__(self, name: str, inner: httpx.AsyncBaseTransport) -> None:
            self.name, self.inner = name, inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.setdefault(self.name, set()).add(request.headers.get("authorization", ""))
            return await self.inner.handle_async_request(request)

    for name in ("crm1", "crm2", "crm3"):
        h.transports[f"http://{name}.agent"] = Spy(name, cluster.switches[name])
    assert (await h.client.get("/api/v1/replication-engine")).status_code == 200
    assert (await h.client.get("/api/v1/services")).status_code == 200
    for name in ("crm1", "crm2", "crm3"):
        assert seen[name] == {f"Bearer {await h.node_token(name)}"}, name
    # And one agent's token opens no other agent.
    crm2 = cluster.agents["crm2"]
    stolen = await crm2.client.get(
        "/v1/status", headers={"Authorization": f"Bearer {await h.node_token('crm1')}"}
    )
    assert stolen.status_code == 401


async def test_rotation_retires_the_old_token_at_once(controller: Harness) -> None:
    reg = await controller.register("crm4")
    old = reg.json()["agent_token"]
    assert (await beat(controller, "crm4", old)).status_code == 200
    rotated = await controller.client.post("/api/v1/nodes/crm4/token")
    assert rotated.status_code == 200
    new = rotated.json()["agent_token"]
    assert new != old
    assert (await beat(controller, "crm4", old)).status_code == 401
    assert (await beat(controller, "crm4", new)).status_code == 200
    audit = (await controller.client.get("/api/v1/audit")).json()["entries"]
    assert audit[0]["action"] == "nodes.rotate_token" and new not in json.dumps(audit)
    assert (await controller.client.post("/api/v1/nodes/crm9/token")).status_code == 404


async def test_the_old_shared_agent_token_opens_nothing(controller: Harness) -> None:
    shared = {"Authorization": f"Bearer {controller.tokens['agent']}"}
    await controller.register("crm4")
    hb = Heartbeat(status=node_status("crm4"), agent_url=None, sent_at=controller.clock())
    resp = await controller.client.post(
        "/api/v1/agents/crm4/heartbeat",
        content=hb.model_dump_json(),
        headers=shared | {"Content-Type": "application/json"},
    )
    assert resp.status_code == 401


async def test_one_agent_url_serves_one_node(controller: Harness) -> None:
    assert (await controller.register("crm4")).status_code == 201
    twin = await controller.client.post(
        "/api/v1/nodes", json={"name": "crm5", "agent_url": "http://crm4.agent:8701"}
    )
    assert twin.status_code == 409 and "crm4" in twin.json()["error"]["message"]
