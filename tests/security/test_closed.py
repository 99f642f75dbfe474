"""Closed by default: ``/metrics`` needs a token; ``/docs`` and ``/openapi.json`` are open to the
service's own machine only; the balancer publishes the OpenAPI of its API and logon routes."""

from __future__ import annotations

from typing import Any

import httpx

from node_agent.testing import SandboxAgent
from tests.controller.conftest import Harness


def remote(app: Any, **headers: str) -> httpx.AsyncClient:
    """A client on another machine (10.9.9.9), as an attacker on the LAN is."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("10.9.9.9", 5000)),
        base_url="http://service.test",
        headers=headers,
    )


async def test_metrics_need_a_token(controller: Harness) -> None:
    c = controller.client
    resp = await c.get("/metrics", headers={"Authorization": ""})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    made = await c.post("/api/v1/tokens", json={"name": "prometheus", "role": "viewer"})
    viewer = made.json()["token"]
    ok = await c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"})
    assert ok.status_code == 200 and "crmcluster_controller_" in ok.text
    assert viewer not in ok.text and controller.tokens["admin"] not in ok.text
    await controller.register("crm4")
    agent = await c.get("/metrics", headers={"Authorization": f"Bearer {controller.node_tokens['crm4']}"})
    assert agent.status_code == 403


async def test_docs_are_closed_off_loopback(controller: Harness, agent: SandboxAgent) -> None:
    for app, token in ((controller.app, controller.tokens["admin"]), (agent.app, agent.token)):
        async with remote(app) as outsider:
            for path in ("/openapi.json", "/docs"):
                resp = await outsider.get(path)
                assert resp.status_code == 401, (path, resp.text)
        async with remote(app, Authorization=f"Bearer {token}") as insider:
            assert (await insider.get("/openapi.json")).json()["openapi"].startswith("3.")
            assert (await insider.get("/docs")).status_code == 200
    # From the machine itself (loopback) the description is open.
    local = await controller.client.get("/openapi.json", headers={"Authorization": ""})
    assert local.status_code == 200
    spec = local.json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    drain = spec["paths"]["/api/v1/nodes/{name}/drain"]["post"]
    assert drain["security"] == [{"bearer": []}]
    for status in ("401", "403", "404", "409", "413", "422", "429"):
        assert drain["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    assert "Retry-After" in drain["responses"]["429"]["headers"]


async def test_a_viewer_token_opens_the_docs_elsewhere(controller: Harness) -> None:
    made = await controller.client.post("/api/v1/tokens", json={"name": "reader", "role": "viewer"})
    async with remote(controller.app, Authorization=f"Bearer {made.json()['token']}") as reader:
        assert (await reader.get("/openapi.json")).status_code == 200


async def test_agent_actions_have_a_schema_each(agent: SandboxAgent) -> None:
    spec = (await agent.client.get("/openapi.json")).json()
    body = spec["paths"]["/v1/operations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "action"
    assert len(body["oneOf"]) >= 40
    backup = spec["components"]["schemas"]["BackupDatabaseOperation"]
    assert backup["properties"]["action"]["const"] == "backup_database"
    refused = await agent.client.post(
        "/v1/operations", json={"op_id": "x1", "action": "backup_database", "params": {"nope": 1}}
    )
    assert refused.status_code == 422 and "nope" in refused.text


async def test_405_names_the_methods_allowed(controller: Harness) -> None:
    resp = await controller.client.patch("/api/v1/cluster")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET"
    resp = await controller.client.delete("/api/v1/tokens")
    assert resp.status_code == 405 and set(resp.headers["allow"].split(", ")) == {"GET", "POST"}
