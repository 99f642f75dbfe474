"""``/api/v1/servers`` (token when set), ``/healthz``, ``/metrics``."""

from __future__ import annotations

from typing import Any

from tests.balancer.conftest import Crm, set_node

TOKEN = "balancer-admin-0123456789abcdef"


async def test_servers_view(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("a", "crm2")
    await set_node(crm.engine, "crm3", "draining")
    async with make_balancer() as b:
        await b.route(["u1"])
        body = (await b.client.get("/api/v1/servers")).json()
        assert body == {
            "servers": [
                {
                    "name": "crm1",
                    "fqdn": "crm1.example.com",
                    "state": "up",
                    "weight": 1.0,
                    "logged_on": 0,
                    "pending": 1,
                },
                {
                    "name": "crm2",
                    "fqdn": "crm2.example.com:8443",
                    "state": "up",
                    "weight": 1.0,
                    "logged_on": 1,
                    "pending": 0,
                },
                {
                    "name": "crm3",
                    "fqdn": "crm3.example.com",
                    "state": "draining",
                    "weight": 1.0,
                    "logged_on": 0,
                    "pending": 0,
                },
            ],
            "stale": False,
        }


async def test_servers_needs_the_admin_token_when_one_is_set(make_balancer: Any) -> None:
    async with make_balancer(admin_token=TOKEN) as b:
        r = await b.client.get("/api/v1/servers", headers={"authorization": ""})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await b.client.get("/api/v1/servers", headers={"authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 401
        r = await b.client.get("/api/v1/servers", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        assert (await b.client.get("/api/v1/servers")).status_code == 200  # an API token of the controller's
        # the logon routes and /healthz need no token
        assert (await b.logon()).status_code == 307
        assert (await b.client.get("/healthz", headers={"authorization": ""})).status_code == 200
        r = await b.client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


async def test_metrics_need_a_token_the_admin_or_a_viewers(make_balancer: Any) -> None:
    async with make_balancer() as b:
        assert (await b.client.get("/metrics")).status_code == 200  # the harness's viewer token
        r = await b.client.get("/metrics", headers={"authorization": ""})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = await b.client.get("/metrics", headers={"authorization": "Bearer ct_" + "x" * 43})
        assert r.status_code == 401
        assert (await b.logon()).status_code == 307


async def test_metrics(make_balancer: Any, crm: Crm) -> None:
    await crm.logon("alice", "crm2")
    async with make_balancer() as b:
        await b.route(["u1", "u2", "alice"])
        text = (await b.client.get("/metrics")).text
        for line in (
            'crmcluster_balancer_logons_routed_total{reason="least_loaded",server="crm1"} 1.0',
            'crmcluster_balancer_logons_routed_total{reason="sticky",server="crm2"} 1.0',
            'crmcluster_balancer_logons_routed_total{reason="least_loaded",server="crm3"} 1.0',
            'crmcluster_balancer_decisions_total{reason="least_loaded"} 2.0',
            'crmcluster_balancer_decisions_total{reason="sticky"} 1.0',
            'crmcluster_balancer_pending_logons{server="crm3"} 1.0',
            'crmcluster_balancer_logged_on_users{server="crm2"} 1.0',
            'crmcluster_balancer_server_up{server="crm1"} 1.0',
            'crmcluster_balancer_db_errors_total{db="crm"} 0.0',
            'crmcluster_balancer_database_up{db="crm"} 1.0',
            "crmcluster_balancer_decision_seconds_count 3.0",
            "crmcluster_balancer_stale 0.0",
        ):
            assert line in text, line


async def test_unknown_api_route_is_a_json_404(make_balancer: Any) -> None:
    async with make_balancer() as b:
        r = await b.client.get("/api/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_no_log_line_per_logon(make_balancer: Any, caplog: Any) -> None:
    import logging

    async with make_balancer() as b:
        caplog.set_level(logging.DEBUG)
        caplog.clear()
        await b.route([f"u{i}" for i in range(20)])
        assert (await b.client.post("/crm/eware.dll/Logon", content=b"x" * 20_000)).status_code == 413
    assert [r for r in caplog.records if r.name.startswith("crmcluster")] == []
