"""A new license key on three sandbox servers (``PUT /api/v1/license``): the differences (users,
features) shown first and nothing changed, then every server updated as the License Key Update
application does, no registration spent, nothing done twice, the audit showing the key; the
windows driver's update waiting for the person who runs the application."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.agent.test_windows_driver import Agent, settings
from tests.upgrade.sandbox import SandboxHarness, sandbox_cluster

NEW_KEY = "LIC-2017R1-U25-FOXM-0002"
SMALLER = "LIC-2017R1-U5-FO-0003"


async def _wait_job(h: SandboxHarness, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = (await h.client.get(f"/api/v1/jobs/{job_id}")).json()
        if job["status"] != "running":
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} still running")


async def _installed(h: SandboxHarness) -> dict[str, str]:
    return {n: a.app.state.driver.license.installed()["key_hint"] for n, a in h.agents.items()}


async def test_a_license_update_on_three_servers(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url, crm_db_url=crm_db_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
    ) as h:
        registrations = {
            n: dict(a.app.state.driver.state.get("registrations", {})) for n, a in h.agents.items()
        }
        before = await _installed(h)
        assert set(before.values()) == {"…0000"}

        # The preview: the differences on every server, nothing changed.
        r = await h.client.put("/api/v1/license", json={"license_key": NEW_KEY})
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["key_hint"] == "…0002" and shown["to_update"] == ["crm1", "crm2", "crm3"]
        crm2 = shown["servers"]["crm2"]
        assert crm2["users"] == {"before": 10, "after": 25, "change": 15}
        assert crm2["features"]["added"] == ["Extensibility Module"] and crm2["features"]["removed"] == []
        assert shown["summary"] == "users 10 → 25; features added: Extensibility Module"
        assert await _installed(h) == before
        # A smaller key says what would be lost.
        smaller = (await h.client.put("/api/v1/license", json={"license_key": SMALLER})).json()
        assert "features REMOVED: Multi-server" in smaller["summary"] and "users 10 → 5" in smaller["summary"]

        # Apply: a job, server by server (the database server first).
        r = await h.client.put("/api/v1/license", json={"license_key": NEW_KEY, "preview": False})
        assert r.status_code == 202, r.text
        job = await _wait_job(h, r.json()["job"]["id"])
        assert job["status"] == "succeeded", job
        assert [(s["node"], s["action"]) for s in job["steps"]] == [
            ("crm1", "update_license_key"),
            ("crm2", "update_license_key"),
            ("crm3", "update_license_key"),
        ]
        assert all(s["result"]["registered"] is False for s in job["steps"])
        assert await _installed(h) == {"crm1": "…0002", "crm2": "…0002", "crm3": "…0002"}
        # No registration spent, on any server.
        assert {n: dict(a.app.state.driver.state.get("registrations", {})) for n, a in h.agents.items()} == (
            registrations
        )

        # Again: nothing to do, no job.
        r = await h.client.put("/api/v1/license", json={"license_key": NEW_KEY, "preview": False})
        assert r.status_code == 200 and r.json()["job"] is None and r.json()["to_update"] == []

        # The audit shows it: one key, 25 users, on every server.
        audit = (await h.client.get("/api/v1/cluster/audit")).json()
        part = audit["parts"]["license"]
        assert part["status"] == "pass" and part["message"] == "one license key on 3 servers"
        assert part["applied"]["key_hint"] == "…0002" and part["applied"]["job_id"] == job["id"]
        assert part["applied"]["key_hash"] == shown["new"]["key_hash"]
        check = part["nodes"]["crm3"]["checks"][0]
        assert check["value"]["users"] == 25 and check["value"]["key_hint"] == "…0002"

        # One server given another key by hand: the audit fails it.
        h.agents["crm3"].app.state.driver.update_state(
            license=h.agents["crm3"].app.state.driver.license.installed() | {"key_hash": "sha256:other"}
        )
        audit = (await h.client.get("/api/v1/cluster/audit")).json()
        assert audit["parts"]["license"]["status"] == "fail" and audit["status"] == "fail"

        # The key is never kept: not in the audit trail, not in the job.
        trail = (await h.client.get("/api/v1/audit")).json()["entries"]
        assert {"license.preview", "license.update"} <= {e["action"] for e in trail}
        assert NEW_KEY not in json.dumps(trail) and NEW_KEY not in json.dumps(job)


async def test_a_refused_key_fails_its_server_and_stops(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm2": "update_license_key:invalid"},
    ) as h:
        r = await h.client.put("/api/v1/license", json={"license_key": NEW_KEY, "preview": False})
        job = await _wait_job(h, r.json()["job"]["id"])
        assert job["status"] == "failed" and "refused the key" in job["message"]
        assert await _installed(h) == {"crm1": "…0002", "crm2": "…0000", "crm3": "…0000"}
        # The audit names the mixed keys.
        assert (await h.client.get("/api/v1/cluster/audit")).json()["parts"]["license"]["status"] == "fail"
        # A bad body is a 422, never a 500; the key is not echoed.
        r = await h.client.put("/api/v1/license", json={"license_key": "K-7"})
        assert r.status_code == 422 and "K-7" not in r.text


async def test_the_windows_update_waits_for_the_person_running_the_application(
    tmp_path: Path, tokens: dict[str, str]
) -> None:
    from node_agent.app import create_app

    app = create_app(settings(tmp_path, tokens["agent"]), background=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://crm1.agent",
            headers={"Authorization": f"Bearer {tokens['agent']}"},
        ) as client:
            agent = Agent(client, app.state.driver, app)
            details = await agent.ok("d1", "license_details", {"license_key": NEW_KEY})
            assert details["key_hint"] == "…0002" and details.get("users") is None
            assert "Sage decodes its keys" in details["checked"]
            r = await client.post(
                "/v1/operations",
                json={"op_id": "u1", "action": "update_license_key", "params": {"license_key": NEW_KEY}},
            )
            assert r.status_code == 202
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while (rec := (await client.get("/v1/operations/u1")).json())["awaiting"] != "operator":
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            assert any("licensekeyupdate.exe" in line and "…0002" in line for line in rec["log_tail"])
            assert NEW_KEY not in json.dumps(rec)
            assert (
                await client.post("/v1/operations/u1/confirm", json={"note": "ran it"})
            ).status_code == 200
            await app.state.operations.wait("u1")
            rec = (await client.get("/v1/operations/u1")).json()
            assert rec["state"] == "succeeded", rec["error"]
            assert rec["result"]["after"]["key_hint"] == "…0002" and rec["result"]["registered"] is False
            installed = await agent.ok("d2", "license_details")
            assert installed["key_hint"] == "…0002"


def test_crmcluster_license_update_commands() -> None:
    from tests.cli.fake_controller import FakeController, invoke

    shown = {
        "key_hint": "…0002",
        "summary": "users 10 → 25; features added: Extensibility Module",
        "servers": {
            "crm1": {
                "installed": {"key_hint": "…0000"},
                "same_key": False,
                "users": {"before": 10, "after": 25, "change": 15},
                "features": {"added": ["Extensibility Module"], "removed": [], "kept": []},
            }
        },
        "to_update": ["crm1"],
        "job": None,
    }
    job: dict[str, Any] = {
        "id": "license-1",
        "kind": "license",
        "status": "succeeded",
        "steps": [],
        "message": None,
    }
    fake = FakeController(
        {("PUT", "/api/v1/license"): {**shown, "job": job}, ("GET", "/api/v1/jobs/license-1"): job}
    )
    result = invoke(fake, "license", "update", "--license-key", NEW_KEY)
    assert result.exit_code == 0, result.stderr
    assert "10 → 25" in result.stdout and "+Extensibility Module" in result.stdout
    assert NEW_KEY not in result.stdout
    assert json.loads(fake.requests[-1].content) == {"license_key": NEW_KEY, "preview": True}
    result = invoke(fake, "license", "update", "--apply", "--license-key", NEW_KEY)
    assert result.exit_code == 0, result.stderr
    puts = [json.loads(r.content) for r in fake.requests if r.method == "PUT"]
    assert puts[-1] == {"license_key": NEW_KEY, "preview": False}
    # No key and no terminal: a usage error, not a traceback.
    result = invoke(fake, "license", "update")
    assert result.exit_code == 2 and "--license-key" in result.stderr
