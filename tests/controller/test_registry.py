"""The node registry: registration, heartbeats, down detection, held states, and the ``nodes`` rows
the balancer reads."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import event, select

from config.state_schema import nodes
from controller.registry import heartbeats
from tests.controller.conftest import Harness, node_status


async def state_row(h: Harness, name: str) -> str:
    async with h.ctx.state_engine.connect() as conn:
        return str((await conn.execute(select(nodes.c.state).where(nodes.c.name == name))).scalar_one())


async def test_register_existing_install_then_heartbeat_makes_it_up(controller: Harness) -> None:
    resp = await controller.register("crm1", roles=["database"], fqdn="crm1.example.com")
    assert resp.status_code == 201, resp.text
    node = resp.json()
    assert node["name"] == "crm1" and node["state"] == "down" and node["roles"] == ["database"]
    assert await state_row(controller, "crm1") == "down"

    st = node_status(
        "crm1", roles=["database"], replication_engine=True, services={"email_manager": "running"}
    )
    hb = await controller.heartbeat(st, agent_url="http://crm1.agent:8701")
    assert hb.status_code == 200 and hb.json()["state"] == "up"
    assert await state_row(controller, "crm1") == "up"

    cluster = (await controller.client.get("/api/v1/cluster")).json()
    (n,) = cluster["nodes"]
    assert set(n) >= {
        "name",
        "fqdn",
        "agent_url",
        "roles",
        "state",
        "weight",
        "version",
        "logged_on",
        "last_heartbeat",
    }
    assert n["roles"] == ["database", "replication_engine", "email_manager"]
    assert n["version"] == "7.3" and n["state"] == "up" and n["fqdn"] == "crm1.example.com"
    assert n["last_heartbeat"] is not None

    again = await controller.register("crm1", roles=["database"], fqdn="crm1.example.com")
    assert again.status_code == 200  # re-registering updates, keeps the state
    assert again.json()["state"] == "up"


async def test_silent_node_goes_down_after_the_timeout(controller: Harness) -> None:
    await controller.register("crm1", roles=["database"])
    await controller.heartbeat(node_status("crm1"))
    controller.clock.advance(14)
    assert await heartbeats.sweep(controller.ctx) == []
    assert await state_row(controller, "crm1") == "up"
    controller.clock.advance(2)
    assert await heartbeats.sweep(controller.ctx) == ["crm1"]
    assert await state_row(controller, "crm1") == "down"
    hb = await controller.heartbeat(node_status("crm1"))
    assert hb.json()["state"] == "up"


async def test_iis_stopped_is_down_and_held_states_survive_heartbeats(controller: Harness) -> None:
    await controller.register("crm2")
    assert (await controller.heartbeat(node_status("crm2", web="stopped"))).json()["state"] == "down"
    await controller.ctx.registry.set_state("crm2", "maintenance")
    assert (await controller.heartbeat(node_status("crm2"))).json()["state"] == "maintenance"
    controller.clock.advance(60)
    await heartbeats.sweep(controller.ctx)
    assert await state_row(controller, "crm2") == "maintenance"
    released = await controller.ctx.registry.release("crm2", heartbeat_timeout=15)
    assert released.state == "down"  # its last heartbeat is a minute old


async def test_heartbeat_auth_and_bad_input(controller: Harness) -> None:
    st = node_status("crm9")
    assert (await controller.heartbeat(st)).status_code == 404  # not registered
    await controller.register("crm9")
    body = {"status": st.model_dump(mode="json"), "sent_at": "2026-11-28T00:00:00Z"}
    admin = await controller.client.post("/api/v1/agents/crm9/heartbeat", json=body)
    assert admin.status_code == 403  # the admin token is known, but it is no agent's
    wrong = await controller.client.post(
        "/api/v1/agents/crm9/heartbeat",
        json={"status": {"name": "crm9"}},
        headers={"Authorization": f"Bearer {await controller.node_token('crm9')}"},
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid"
    other = await controller.heartbeat(node_status("crm1").model_copy(update={"name": "crm1"}))
    assert other.status_code == 404
    mismatch = await controller.client.post(
        "/api/v1/agents/crm9/heartbeat",
        json={"status": node_status("crm1").model_dump(mode="json"), "sent_at": "2026-11-28T00:00:00Z"},
        headers={"Authorization": f"Bearer {await controller.node_token('crm9')}"},
    )
    assert mismatch.status_code == 422


async def test_register_refuses_bad_input(controller: Harness) -> None:
    c = controller.client
    for body in (
        {"name": "crm 1", "agent_url": "http://x:1"},
        {"name": "crm1", "agent_url": "ftp://x"},
        {"name": "crm1", "agent_url": "http://x:1", "roles": ["king"]},
        {"name": "crm1", "agent_url": "http://x:1", "surprise": 1},
        {"name": "crm1", "agent_url": "http://x:1", "fqdn": "bad host!"},
        {"name": "crm1", "agent_url": "http://x:1", "join": True},  # no license key
    ):
        resp = await c.post("/api/v1/nodes", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert set(resp.json()["error"]) == {"code", "message", "details"}
    assert (await c.get("/api/v1/nodes/nope")).status_code == 404
    assert (
        await c.post("/api/v1/nodes", content=b"{not json", headers={"Content-Type": "application/json"})
    ).status_code == 422


async def test_no_drain_or_undrain_while_an_upgrade_holds_the_nodes(controller: Harness) -> None:
    from config.state_schema import upgrade_runs

    await controller.register("crm2")
    await controller.heartbeat(node_status("crm2"))
    now = controller.clock()
    async with controller.ctx.state_engine.begin() as conn:
        await conn.execute(
            upgrade_runs.insert().values(
                id="run-1",
                status="running",
                target_version="2017 R1",
                options={},
                preflight=[],
                created_at=now,
                updated_at=now,
            )
        )
    await controller.ctx.registry.set_state("crm2", "maintenance")
    for path in ("/api/v1/nodes/crm2/drain", "/api/v1/nodes/crm2/undrain"):
        resp = await controller.client.post(path)
        assert resp.status_code == 409, resp.text
        assert "run-1" in resp.json()["error"]["message"]
    assert await state_row(controller, "crm2") == "maintenance"


async def test_list_routes_refuse_bad_query_parameters(controller: Harness) -> None:
    c = controller.client
    for path in (
        "/api/v1/audit?limit=0",
        "/api/v1/audit?limit=x",
        "/api/v1/audit?before_id=-1",
        "/api/v1/jobs?limit=0",
        "/api/v1/jobs?limit=100000",
    ):
        resp = await c.get(path)
        assert resp.status_code == 422, path
        assert resp.json()["error"]["code"] == "invalid"


async def test_the_watch_checks_invariants_continuously(
    controller: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crmcluster.controller")
    await controller.register("crm1", roles=["database"])
    await controller.heartbeat(node_status("crm1", replication_engine=True))
    await controller.register("crm2")
    await controller.heartbeat(node_status("crm2", replication_engine=True))
    await heartbeats.sweep(controller.ctx)
    await heartbeats.sweep(controller.ctx)
    violated = [r.getMessage() for r in caplog.records if "invariant violated" in r.getMessage()]
    assert sum("Replication Engine" in m for m in violated) == 1  # logged once, not every pass
    metrics = (await controller.client.get("/metrics")).text
    assert 'crmcluster_controller_cluster_warnings{code="replication_engine_count"} 1.0' in metrics
    await controller.heartbeat(node_status("crm2"))
    await heartbeats.sweep(controller.ctx)
    assert any("restored: replication_engine_count" in r.getMessage() for r in caplog.records)


async def test_concurrent_heartbeats_are_written_in_groups(controller: Harness) -> None:
    """Group commit: 40 agents heartbeating at once take fewer transactions than heartbeats, and
    each still gets its own node's state; a held state survives a heartbeat in the same group."""
    names = [f"crm{i}" for i in range(40)]
    for name in names:
        await controller.register(name)
    await controller.ctx.registry.set_state("crm7", "draining")
    updates: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE NODES"):
            updates.append(statement)

    engine = controller.ctx.state_engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        answers = await asyncio.gather(*(controller.heartbeat(node_status(n)) for n in names))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [a.status_code for a in answers] == [200] * 40
    states = {n: a.json()["state"] for n, a in zip(names, answers, strict=True)}
    assert states["crm7"] == "draining" and {s for n, s in states.items() if n != "crm7"} == {"up"}
    assert await state_row(controller, "crm7") == "draining"
    groups = controller.ctx.heartbeat_writer.groups
    assert sum(groups[-len(updates) :]) == 40 and len(updates) < 40, (groups, len(updates))
