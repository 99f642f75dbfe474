"""Roles: API tokens of a role (viewer, operator, admin), shown once and kept as a hash; every
route needs the least role that may use it (401 without a valid token, 403 for a role that may
not), revoking is at once, and every write is in the audit trail under the token's name."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from config.roles import Role
from config.state_schema import metadata
from controller.app import ROUTERS
from controller.dashboard.session import COOKIE_NAME, CSRF_HEADER
from tests.controller.conftest import Harness

#: The least role of every route (``agent``: a node's own token; ``open``: no credential here).
#: A route missing from this table fails test_every_route_has_the_role_the_issue_names.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/cluster"): "viewer",
    ("PUT", "/api/v1/cluster/config"): "admin",
    # Reads only, but runs the prerequisite commands on every server: an operator's, as the
    # library probe is.
    ("GET", "/api/v1/cluster/audit"): "operator",
    ("GET", "/api/v1/https"): "viewer",
    ("PUT", "/api/v1/https"): "admin",
    ("PUT", "/api/v1/license"): "admin",
    ("POST", "/api/v1/agents/{name}/heartbeat"): "agent",
    ("GET", "/api/v1/agents/{name}/state"): "agent",
    ("GET", "/api/v1/nodes"): "viewer",
    ("GET", "/api/v1/nodes/{name}"): "viewer",
    ("POST", "/api/v1/nodes"): "admin",
    ("POST", "/api/v1/nodes/{name}/token"): "admin",
    ("DELETE", "/api/v1/nodes/{name}"): "admin",
    ("POST", "/api/v1/nodes/{name}/drain"): "operator",
    ("POST", "/api/v1/nodes/{name}/undrain"): "operator",
    ("GET", "/api/v1/replication-engine"): "viewer",
    ("PUT", "/api/v1/replication-engine"): "admin",
    ("GET", "/api/v1/services"): "viewer",
    ("PUT", "/api/v1/services"): "admin",
    ("GET", "/api/v1/library"): "viewer",
    ("PUT", "/api/v1/library"): "admin",
    ("POST", "/api/v1/library/verify"): "operator",
    ("POST", "/api/v1/metadata/refresh"): "operator",
    ("GET", "/api/v1/capacity"): "viewer",
    ("GET", "/api/v1/jobs"): "viewer",
    ("GET", "/api/v1/jobs/{job_id}"): "viewer",
    ("GET", "/api/v1/audit"): "viewer",
    ("GET", "/api/v1/sizing"): "viewer",
    ("GET", "/api/v1/maintenance"): "viewer",
    ("GET", "/api/v1/maintenance/plan"): "viewer",
    ("PUT", "/api/v1/maintenance"): "admin",
    ("POST", "/api/v1/maintenance/{task}/run"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("GET", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{name}"): "admin",
    ("POST", "/api/v1/upgrades"): "admin",
    ("GET", "/api/v1/upgrades"): "viewer",
    ("GET", "/api/v1/upgrades/{run_id}"): "viewer",
    ("POST", "/api/v1/upgrades/{run_id}/start"): "admin",
    ("POST", "/api/v1/upgrades/{run_id}/pause"): "operator",
    ("POST", "/api/v1/upgrades/{run_id}/resume"): "operator",
    ("POST", "/api/v1/upgrades/{run_id}/approve"): "operator",
    ("POST", "/api/v1/upgrades/{run_id}/abort"): "admin",
    ("POST", "/api/v1/upgrades/{run_id}/rollback"): "admin",
    ("POST", "/api/v1/upgrades/{run_id}/steps/{step_id}/retry"): "admin",
    ("POST", "/api/v1/upgrades/{run_id}/accept"): "operator",
    ("POST", "/api/v1/upgrades/{run_id}/steps/{step_id}/resolve"): "operator",
    ("POST", "/api/v1/upgrades/{run_id}/steps/{step_id}/confirm"): "operator",
    ("GET", "/api/v1/upgrades/{run_id}/events"): "viewer",
    ("GET", "/api/v1/upgrades/{run_id}/checklist"): "viewer",
    # The dashboard signs in by itself (its session, its CSRF header).
    ("GET", "/"): "open",
    ("POST", "/dashboard/signin"): "open",
    ("POST", "/dashboard/signout"): "open",
    ("GET", "/dashboard/fragments"): "open",
    ("GET", "/dashboard/events"): "open",
    ("GET", "/static/dashboard/{name}"): "open",
}
BELOW = {"viewer": [], "operator": ["viewer"], "admin": ["viewer", "operator"]}


def routes() -> dict[tuple[str, str], str]:
    found = {}
    for router in ROUTERS:
        for route in router.routes:
            needed = [getattr(d.call, "needed_role", None) for d in route.dependant.dependencies]
            calls = [d.call.__name__ for d in route.dependant.dependencies]
            role = next((str(r) for r in needed if r), "agent" if "require_agent" in calls else "open")
            for method in route.methods:
                found[(method, route.path)] = role
    return found


def test_every_route_has_the_role_the_issue_names() -> None:
    assert routes() == ROUTE_ROLES


async def make_token(h: Harness, role: str, name: str | None = None) -> str:
    resp = await h.client.post("/api/v1/tokens", json={"name": name or f"{role}-1", "role": role})
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    assert isinstance(token, str)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_route_refuses_the_roles_below_its_own(controller: Harness) -> None:
    tokens = {role: await make_token(controller, role) for role in ("viewer", "operator")}
    tokens["admin"] = controller.tokens["admin"]
    for (method, path), role in ROUTE_ROLES.items():
        if role not in BELOW:
            continue
        url = re.sub(r"\{[a-z_]+\}", "nope", path)
        for lower in BELOW[role]:
            resp = await controller.client.request(method, url, headers=bearer(tokens[lower]))
            assert resp.status_code == 403, (method, path, lower, resp.text)
            err = resp.json()["error"]
            assert err["code"] == "forbidden" and err["details"]["needs"] == role
        if method == "GET" and path.endswith("/events"):
            continue  # a stream: its refusals are enough here
        resp = await controller.client.request(method, url, headers=bearer(tokens[role]))
        assert resp.status_code not in (401, 403), (method, path, role, resp.text)


async def test_no_token_or_an_unknown_one_is_401(controller: Harness) -> None:
    for headers in ({"Authorization": ""}, bearer("ct_" + "A" * 43), bearer("nope-0123456789abcdef")):
        resp = await controller.client.get("/api/v1/cluster", headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"


async def test_a_viewer_reads_and_changes_nothing(controller: Harness) -> None:
    await controller.register("crm4")
    viewer = bearer(await make_token(controller, "viewer", "grafana"))
    for url in ("/api/v1/cluster", "/api/v1/nodes", "/api/v1/audit", "/api/v1/upgrades", "/metrics"):
        resp = await controller.client.get(url, headers=viewer)
        assert resp.status_code == 200, (url, resp.text)
    for method, url, body in (
        ("POST", "/api/v1/nodes/crm4/drain", None),
        ("PUT", "/api/v1/cluster/config", {"do_load_balancing": True}),
        ("POST", "/api/v1/tokens", {"name": "mine", "role": "admin"}),
        ("POST", "/api/v1/nodes", {"name": "crm5", "agent_url": "http://crm5.agent:8701"}),
    ):
        resp = await controller.client.request(method, url, json=body, headers=viewer)
        assert resp.status_code == 403, (url, resp.text)
    node = (await controller.client.get("/api/v1/nodes/crm4")).json()
    assert node["state"] != "draining"
    assert [t["name"] for t in (await controller.client.get("/api/v1/tokens")).json()["tokens"]] == [
        "grafana"
    ]


async def test_an_operator_drains_but_configures_nothing(controller: Harness) -> None:
    await controller.register("crm4")
    operator = bearer(await make_token(controller, "operator", "night-shift"))
    assert (await controller.client.post("/api/v1/nodes/crm4/drain", headers=operator)).status_code == 202
    assert (await controller.client.post("/api/v1/nodes/crm4/undrain", headers=operator)).status_code == 200
    for method, url in (
        ("PUT", "/api/v1/cluster/config"),
        ("DELETE", "/api/v1/nodes/crm4"),
        ("POST", "/api/v1/nodes/crm4/token"),
        ("POST", "/api/v1/upgrades/run-1/rollback"),
        ("GET", "/api/v1/tokens"),
    ):
        resp = await controller.client.request(method, url, headers=operator)
        assert resp.status_code == 403, (url, resp.text)
    entries = (await controller.client.get("/api/v1/audit")).json()["entries"]
    drains = [(e["action"], e["actor"]) for e in entries if e["target"] == "crm4"]
    assert ("nodes.drain", "night-shift") in drains and ("nodes.undrain", "night-shift") in drains


async def test_an_agent_token_reads_nothing(cluster: Any) -> None:
    agent = bearer(await cluster.h.node_token("crm1"))
    for url in ("/api/v1/cluster", "/api/v1/nodes", "/metrics"):
        resp = await cluster.client.get(url, headers=agent)
        assert resp.status_code == 403, (url, resp.text)


async def test_tokens_are_shown_once_kept_hashed_and_revoked_at_once(controller: Harness) -> None:
    created = await controller.client.post("/api/v1/tokens", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201
    body = created.json()
    token = body["token"]
    assert token.startswith("ct_") and len(token) >= 40
    assert body["name"] == "ci" and body["role"] == "operator" and body["created_by"] == "admin"
    listed = await controller.client.get("/api/v1/tokens")
    assert token not in listed.text and listed.json()["tokens"][0]["name"] == "ci"
    dump = ""
    async with controller.ctx.state_engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump += json.dumps([list(r) for r in (await conn.execute(select(table))).all()], default=str)
    assert token not in dump
    assert (await controller.client.get("/api/v1/cluster", headers=bearer(token))).status_code == 200
    assert (await controller.client.get("/api/v1/tokens")).json()["tokens"][0]["last_used_at"] is not None
    again = await controller.client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert again.status_code == 409
    revoked = await controller.client.delete("/api/v1/tokens/ci")
    assert revoked.status_code == 200 and token not in revoked.text
    assert (await controller.client.get("/api/v1/cluster", headers=bearer(token))).status_code == 401
    assert (await controller.client.delete("/api/v1/tokens/ci")).status_code == 404
    actions = [
        (e["action"], e["target"], e["actor"])
        for e in (await controller.client.get("/api/v1/audit")).json()["entries"]
    ]
    assert ("tokens.revoke", "ci", "admin") in actions and ("tokens.create", "ci", "admin") in actions
    assert token not in json.dumps(actions)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "admin", "role": "viewer"},
        {"name": "operator", "role": "viewer"},
        {"name": "agent:crm1", "role": "viewer"},
        {"name": "Bob", "role": "viewer"},
        {"name": "x" * 64, "role": "viewer"},
        {"name": "ok", "role": "root"},
        {"name": "ok", "role": "viewer", "token": "mine"},
    ],
)
async def test_token_names_and_roles_are_checked(controller: Harness, body: dict[str, Any]) -> None:
    resp = await controller.client.post("/api/v1/tokens", json=body)
    assert resp.status_code == 422, resp.text


async def test_a_revoked_token_ends_its_dashboard_sessions(controller: Harness) -> None:
    token = await make_token(controller, "operator", "laptop")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=controller.app), base_url="http://controller.test"
    ) as browser:
        assert (await browser.get("/", params={"token": token})).status_code == 303
        page = await browser.get("/")
        assert page.status_code == 200 and "signed in as <strong>laptop</strong> (operator)" in page.text
        assert (await browser.get("/api/v1/cluster")).status_code == 200
        await controller.client.delete("/api/v1/tokens/laptop")
        assert (await browser.get("/")).status_code == 401
        assert COOKIE_NAME in browser.cookies
        resp = await browser.post("/api/v1/nodes/crm1/drain", headers={CSRF_HEADER: "1"})
        assert resp.status_code == 401


async def test_a_viewers_dashboard_has_no_buttons(controller: Harness) -> None:
    await controller.register("crm4")
    from tests.controller.conftest import node_status

    assert (await controller.heartbeat(node_status("crm4"))).status_code == 200
    token = await make_token(controller, "viewer", "wallboard")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=controller.app), base_url="http://controller.test"
    ) as browser:
        assert (await browser.get("/", params={"token": token})).status_code == 303
        page = await browser.get("/")
        assert page.status_code == 200 and 'data-node="crm4"' in page.text
        assert "data-action=" not in page.text
        resp = await browser.post("/api/v1/nodes/crm4/drain", headers={CSRF_HEADER: "1"})
        assert resp.status_code == 403


def test_roles_rank() -> None:
    assert Role.ADMIN.covers(Role.OPERATOR) and Role.OPERATOR.covers(Role.VIEWER)
    assert not Role.VIEWER.covers(Role.OPERATOR)
