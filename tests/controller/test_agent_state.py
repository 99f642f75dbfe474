"""``GET /api/v1/agents/{name}/state`` and the heartbeat's answer: the state the controller holds
for a node, as a NodeAssignment (what the agent answers HAProxy's agent-check from)."""

from __future__ import annotations

from node_agent.protocol import NodeAssignment
from tests.controller.conftest import Harness, node_status


async def test_heartbeat_and_state_answer_the_held_state(controller: Harness) -> None:
    r = await controller.register("crm2")
    assert r.status_code == 201, r.text
    hb = await controller.heartbeat(node_status("crm2"))
    assert hb.status_code == 200
    assert NodeAssignment.model_validate(hb.json()) == NodeAssignment(state="up", weight=1.0, fenced=False)

    agent = {"Authorization": f"Bearer {await controller.node_token('crm2')}"}
    state = await controller.client.get("/api/v1/agents/crm2/state", headers=agent)
    assert state.status_code == 200
    assert state.json() == {"state": "up", "weight": 1.0, "fenced": False}

    await controller.ctx.registry.set_state("crm2", "draining")
    state = await controller.client.get("/api/v1/agents/crm2/state", headers=agent)
    assert state.json()["state"] == "draining"
    # A heartbeat never overrides a held state, and says so.
    hb = await controller.heartbeat(node_status("crm2"))
    assert hb.json()["state"] == "draining"


async def test_state_needs_the_agent_token_and_a_known_node(controller: Harness) -> None:
    admin_only = await controller.client.get("/api/v1/agents/crm2/state")
    assert admin_only.status_code == 403  # the admin token is known, but it is no agent's
    assert admin_only.json()["error"]["code"]
    agent = {"Authorization": f"Bearer {await controller.node_token('nosuch')}"}
    unknown = await controller.client.get("/api/v1/agents/nosuch/state", headers=agent)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_node"
    other = await controller.client.get("/api/v1/agents/crm2/state", headers=agent)
    assert other.status_code == 403  # a node's token speaks for that node only
