"""``GET /cluster`` (every violated invariant a warning) and ``PUT /cluster/config``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from config.state_schema import audit
from tests.controller.conftest import Harness, node_status

SYSPARAMS = {
    "server_names": ["crm1", "crm2", "crm3"],
    "fq_server_names": ["crm1.example.com", "crm2.example.com", "crm3.example.com"],
    "dtls_server_name": "crm1",
}


async def healthy_cluster(h: Harness) -> None:
    """The guide's example cluster: database + RE + Email Manager on 1, Indexer on 2, Escalation on 3."""
    resp = await h.client.put("/api/v1/cluster/config", json=SYSPARAMS)
    assert resp.status_code == 200, resp.text
    placement: dict[str, dict[str, Any]] = {
        "crm1": {"roles": ["database"], "replication_engine": True, "services": {"email_manager": "running"}},
        "crm2": {"services": {"indexer": "running"}},
        "crm3": {"services": {"escalation": "stopped"}},
    }
    for name, kw in placement.items():
        await h.register(name, roles=kw.get("roles"), fqdn=f"{name}.example.com")
        await h.heartbeat(node_status(name, **kw))


def codes(cluster: dict[str, Any]) -> list[str]:
    return [w["code"] for w in cluster["warnings"]]


async def test_a_healthy_cluster_has_no_warnings(controller: Harness) -> None:
    await healthy_cluster(controller)
    cluster = (await controller.client.get("/api/v1/cluster")).json()
    assert set(cluster) == {"nodes", "sysparams", "warnings"}
    assert cluster["warnings"] == []
    assert [n["name"] for n in cluster["nodes"]] == ["crm1", "crm2", "crm3"]
    assert cluster["sysparams"]["server_names"] == ["crm1", "crm2", "crm3"]
    assert cluster["sysparams"]["do_load_balancing"] is False


async def test_a_second_replication_engine_by_hand_is_a_warning(controller: Harness) -> None:
    await healthy_cluster(controller)
    await controller.heartbeat(
        node_status("crm3", replication_engine=True, services={"escalation": "running"})
    )
    cluster = (await controller.client.get("/api/v1/cluster")).json()
    (w,) = cluster["warnings"]
    assert w["code"] == "replication_engine_count" and w["nodes"] == ["crm1", "crm3"]
    assert "exactly one Replication Engine" in w["message"]


async def test_every_invariant_is_checked(controller: Harness) -> None:
    await healthy_cluster(controller)
    h = controller
    # no Replication Engine, two Indexers, a version apart, a second database, an unknown server
    await h.heartbeat(node_status("crm1", roles=["database"], services={"email_manager": "running"}))
    await h.heartbeat(
        node_status("crm3", version="2017 R1", services={"indexer": "running", "escalation": "running"})
    )
    await h.register("crm4", roles=["database"], fqdn="crm4.example.com")
    await h.client.put("/api/v1/cluster/config", json={"dtls_server_name": None})
    cluster = (await h.client.get("/api/v1/cluster")).json()
    by_code = {w["code"]: w for w in cluster["warnings"]}
    assert by_code["database_count"]["nodes"] == ["crm1", "crm4"]
    assert by_code["replication_engine_count"]["nodes"] == []
    assert by_code["service_count"]["nodes"] == ["crm2", "crm3"]
    assert by_code["version_mismatch"]["nodes"] == ["crm1", "crm2", "crm3"]
    assert "2017 R1 on crm3" in by_code["version_mismatch"]["message"]
    assert by_code["server_names_mismatch"]["nodes"] == ["crm4"]
    assert by_code["dtls_server_name"]["message"] == "DTLSServerName is not set"


async def test_sysparams_must_agree_with_the_registry(controller: Harness) -> None:
    await healthy_cluster(controller)
    h = controller
    await h.client.put(
        "/api/v1/cluster/config",
        json={
            "server_names": ["crm1", "crm2", "crm9"],
            "fq_server_names": ["crm1.example.com", "other.example.com", "crm9.example.com"],
            "dtls_server_name": "crm9",
        },
    )
    by_code = {w["code"]: w for w in (await h.client.get("/api/v1/cluster")).json()["warnings"]}
    assert by_code["server_names_mismatch"]["nodes"] == ["crm3", "crm9"]
    assert by_code["fq_server_names_mismatch"]["nodes"] == ["crm2"]
    assert by_code["dtls_server_name"]["nodes"] == ["crm9"]


async def test_config_change_is_partial_validated_and_audited(controller: Harness) -> None:
    c = controller.client
    assert (await c.put("/api/v1/cluster/config", json=SYSPARAMS)).status_code == 200
    resp = await c.put("/api/v1/cluster/config", json={"do_load_balancing": True, "http_port": 8443})
    assert resp.status_code == 200
    sp = resp.json()["sysparams"]
    assert sp["do_load_balancing"] is True and sp["http_port"] == 8443
    assert sp["server_names"] == ["crm1", "crm2", "crm3"]  # untouched
    for bad, field in (
        ({"server_names": ["crm1"]}, "fq_server_names"),  # the FQ list no longer pairs up
        ({"dtls_server_name": "crm7"}, "dtls_server_name"),
    ):
        r = await c.put("/api/v1/cluster/config", json=bad)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"] == {"field": field}
    model_refused: list[tuple[dict[str, Any], str]] = [
        ({"http_port": 0}, "http_port"),
        ({"doc_store": "C:\\docs"}, "doc_store"),
    ]
    for body, field in model_refused:
        r = await c.put("/api/v1/cluster/config", json=body)  # refused by the request model itself
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["body", field]
    assert (await c.put("/api/v1/cluster/config", json={"nope": 1})).status_code == 422
    assert (await c.put("/api/v1/cluster/config", json={"http_port": "x"})).status_code == 422
    async with controller.ctx.state_engine.connect() as conn:
        rows = (await conn.execute(select(audit).order_by(audit.c.id))).all()
    assert [(r.actor, r.action, r.result) for r in rows][:2] == [
        ("admin", "cluster.config", "ok"),
        ("admin", "cluster.config", "ok"),
    ]
    assert rows[1].details == {"do_load_balancing": True, "http_port": 8443}
    assert [r.result for r in rows[2:]] == ["failed"] * 2
    listed = (await c.get("/api/v1/audit", params={"limit": 2})).json()["entries"]
    assert len(listed) == 2 and listed[0]["id"] > listed[1]["id"]


async def test_every_route_needs_the_admin_token(controller: Harness) -> None:
    c = controller.client
    routes = [
        ("GET", "/api/v1/cluster"),
        ("PUT", "/api/v1/cluster/config"),
        ("GET", "/api/v1/nodes"),
        ("POST", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes/crm1"),
        ("DELETE", "/api/v1/nodes/crm1"),
        ("POST", "/api/v1/nodes/crm1/drain"),
        ("POST", "/api/v1/nodes/crm1/undrain"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/x"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/replication-engine"),
        ("PUT", "/api/v1/replication-engine"),
        ("GET", "/api/v1/services"),
        ("PUT", "/api/v1/services"),
        ("GET", "/api/v1/library"),
        ("PUT", "/api/v1/library"),
        ("POST", "/api/v1/library/verify"),
        ("POST", "/api/v1/metadata/refresh"),
        ("GET", "/api/v1/capacity"),
    ]
    for method, path in routes:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong-token-123456789"}):
            resp = await c.request(method, path, headers=headers, json={})
            assert resp.status_code == 401, (method, path, resp.status_code)
            assert resp.json()["error"]["code"] == "unauthorized"
            assert resp.headers["www-authenticate"] == "Bearer"
        # An agent's token is known but holds no role: 403, not 401.
        agent = {"Authorization": f"Bearer {await controller.node_token('crm1')}"}
        resp = await c.request(method, path, headers=agent, json={})
        assert resp.status_code == 403, (method, path, resp.status_code)
        assert resp.json()["error"]["code"] == "forbidden"


async def test_health_metrics_and_openapi(controller: Harness) -> None:
    await healthy_cluster(controller)
    c = controller.client
    assert (await c.get("/healthz", headers={"Authorization": ""})).status_code == 200
    assert (await c.get("/metrics", headers={"Authorization": ""})).status_code == 401
    metrics = (await c.get("/metrics")).text
    assert 'crmcluster_controller_nodes{state="up"} 3.0' in metrics
    assert 'crmcluster_controller_heartbeats_total{node="crm1"} 1.0' in metrics
    assert 'crmcluster_controller_changes_total{action="cluster.config",result="ok"} 1.0' in metrics
    spec = (await c.get("/openapi.json")).json()
    for path in (
        "/api/v1/cluster",
        "/api/v1/cluster/config",
        "/api/v1/nodes",
        "/api/v1/replication-engine",
        "/api/v1/services",
        "/api/v1/library",
        "/api/v1/library/verify",
        "/api/v1/metadata/refresh",
        "/api/v1/capacity",
        "/api/v1/nodes/{name}/drain",
    ):
        assert path in spec["paths"], path
    assert (await c.get("/docs")).status_code == 200
    assert (await c.get("/api/v1/nothing")).json()["error"]["code"] == "not_found"
