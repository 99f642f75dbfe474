"""The cluster upgrade on real sandbox agents (in-process, stand-in web servers on loopback):
database server first, logons after, restore of the live environment on failure, the preflight."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from config.state_schema import nodes
from tests.upgrade.conftest import DB_PASSWORD
from tests.upgrade.sandbox import SandboxHarness, sandbox_cluster

DATABASE = {"server": "sql01", "port": 1433, "user": "crmsql", "password": DB_PASSWORD}


def _t(v: str) -> datetime:
    return datetime.fromisoformat(v.rstrip("Z"))


async def _states(h: SandboxHarness) -> dict[str, str]:
    async with h.app.state.ctx.state_engine.connect() as conn:
        return {r.name: r.state for r in await conn.execute(select(nodes.c.name, nodes.c.state))}


async def _versions(h: SandboxHarness) -> dict[str, str | None]:
    out = {}
    for name, agent in h.agents.items():
        out[name] = (await agent.client.get("/v1/status")).json()["version"]
    return out


async def test_clean_upgrade_of_three_sandbox_servers(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url, crm_db_url=crm_db_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
    ) as h:
        run = await h.plan(database=DATABASE, disable_triggers=True, batch_size=2)
        assert run["blocking"] == [], run["preflight"]
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "succeeded", "failed", "restored", timeout=90)
        assert done["status"] == "succeeded", (done["message"], [s for s in done["plan"] if s["message"]])

        assert await _versions(h) == {"crm1": "2017 R1", "crm2": "2017 R1", "crm3": "2017 R1"}
        installers = [s for s in done["plan"] if s["action"] == "run_installer"]
        assert installers[0]["node"] == "crm1"
        assert all(_t(s["started_at"]) >= _t(installers[0]["finished_at"]) for s in installers[1:])
        assert installers[0]["result"]["registered"] is True
        assert all(not s["result"].get("registered") for s in installers[1:])
        # Exactly one Replication Engine, on crm1.
        holders = [
            n for n, a in h.agents.items() if (await a.client.get("/v1/status")).json()["replication_engine"]
        ]
        assert holders == ["crm1"]
        # Logons work after, on every server; the balancer sends users again.
        for i, name in enumerate(h.agents):
            assert await h.logon(name, f"after-{i}") < 400
        assert await _states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}
        routed = await h.balancer_logon("after-upgrade")
        assert routed.status_code == 307 and routed.headers["x-crm-server"] in h.agents

        checklist = (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).json()
        lines = {ln["action"]: ln for sec in checklist["sections"] for ln in sec["lines"]}
        assert lines["Complete random sampling of 20 company records"]["status"] == "done"
        assert lines["Review upgrade logs for errors"]["status"] == "done"
        assert checklist["summary"].get("failed", 0) == 0


async def test_failure_on_database_server_is_restored_and_verified(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm1": "run_installer:fail"},
    ) as h:
        run = await h.plan(database=DATABASE)
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "restored", "failed", "succeeded", timeout=90)
        assert done["status"] == "restored", (
            done["message"],
            [s for s in done["plan"] if s["status"] == "failed"],
        )
        assert await _versions(h) == {"crm1": "7.3", "crm2": "7.3", "crm3": "7.3"}
        verify = [s for s in done["plan"] if s["action"] == "verify_restore"]
        assert verify, [(s["id"], s["status"], s["message"]) for s in done["plan"]]
        assert verify[0]["result"]["records"]["differences"] == []
        assert verify[0]["result"]["schema_version"] == "7.3"
        assert set(verify[0]["result"]["logons"].values()) == {"ok"}
        assert await _states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}
        assert await h.logon("crm2", "after-restore") < 400

        html = await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist", headers={"Accept": "text/html"})
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "Restoring a Live Environment" in html.text and "failed" in html.text


async def test_failure_on_a_later_server_is_restored(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm3": "run_installer:fail"},
    ) as h:
        run = await h.plan(database=DATABASE, batch_size=1)
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "restored", "failed", "succeeded", timeout=90)
        assert done["status"] == "restored", (
            done["message"],
            [s for s in done["plan"] if s["status"] == "failed"],
        )
        assert done["touched"] == ["crm1", "crm2", "crm3"]
        assert await _versions(h) == {"crm1": "7.3", "crm2": "7.3", "crm3": "7.3"}
        for name in h.agents:
            assert await h.logon(name, f"restored-{name}") < 400
        assert await _states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}
        routed = await h.balancer_logon("after-restore")  # the balancer serves again
        assert routed.status_code == 307 and routed.headers["x-crm-server"] in h.agents


async def _tomcat_and_services(h: SandboxHarness) -> dict[str, Any]:
    """Per server: what it reports (eware.dll, Tomcat's web apps, each CRM service's program) and
    what Tomcat answers over HTTP."""
    out: dict[str, Any] = {}
    async with httpx.AsyncClient() as web:
        for name, agent in h.agents.items():
            st = (await agent.client.get("/v1/status")).json()
            sdata = (await web.get(st["web_url"] + "/sdata/")).json()
            out[name] = {
                "version": st["version"],
                "tomcat": st["tomcat_version"],
                "tomcat_answers": sdata["version"],
                "services": st["service_versions"],
            }
    return out


async def test_a_restore_puts_tomcat_and_the_crm_services_back_too(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    """DESIGN.md's restore: the program files backup put back, "Tomcat's webapps and the CRM
    services with it" — not only the website the guide redirects. crm3's installer fails after
    the new program files were laid down everywhere: every server must be back on 7.3, as its
    status, Tomcat's own answer and the services' programs say."""
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm3": "run_installer:fail"},
    ) as h:
        old = {
            "crm1": {"services": {"email_manager": "7.3"}},
            "crm2": {"services": {"indexer": "7.3"}},
            "crm3": {"services": {"escalation": "7.3"}},
        }
        want = {n: {"version": "7.3", "tomcat": "7.3", "tomcat_answers": "7.3", **v} for n, v in old.items()}
        assert await _tomcat_and_services(h) == want
        run = await h.plan(database=DATABASE, batch_size=2)
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "restored", "failed", "succeeded", timeout=90)
        assert done["status"] == "restored", (done["message"], [s for s in done["plan"] if s["message"]])
        assert done["touched"] == ["crm1", "crm2", "crm3"]
        assert await _tomcat_and_services(h) == want
        verify = next(s for s in done["plan"] if s["action"] == "verify_restore")
        for name in h.agents:
            checked = verify["result"]["nodes"][name]
            assert checked["tomcat_version"] == "7.3" and checked["sdata"] == {
                "answer": "ok",
                "version": "7.3",
            }
            assert set(checked["service_versions"].values()) == {"7.3"}


async def test_preflight_failures_block_start_unless_overridden(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    roles = {"crm1": ["database", "replication_engine"], "crm2": ["replication_engine"], "crm3": []}
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        versions={"crm3": "7.2"},
        roles=roles,
        faults={"crm1": "check_license:invalid"},
    ) as h:
        run = await h.plan(database={**DATABASE, "user": "sa"})
        findings = {f["name"]: f for f in run["preflight"]}
        assert findings["same_version"]["status"] == "fail"
        assert findings["same_version"]["evidence"]["versions"]["crm3"] == "7.2"
        assert findings["replication_engine"]["status"] == "fail"
        assert findings["replication_engine"]["evidence"]["nodes"] == ["crm1", "crm2"]
        assert findings["license"]["status"] == "fail"
        assert findings["sql_login"]["status"] == "fail"
        assert set(run["blocking"]) == {"same_version", "replication_engine", "license", "sql_login"}
        resp = await h.client.post(f"/api/v1/upgrades/{run['id']}/start")
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "preflight_failed"
        assert set(resp.json()["error"]["details"]["blocking"]) == set(run["blocking"])

        # Unsupported path: 7.3 to 7.3.
        same = await h.plan(target_version="7.3")
        assert {f["name"]: f["status"] for f in same["preflight"]}["supported_path"] == "fail"

        overridden = await h.plan(
            database={**DATABASE, "user": "sa"},
            overrides=["same_version", "replication_engine", "license", "sql_login"],
        )
        assert overridden["blocking"] == []
        assert all(f["overridden"] for f in overridden["preflight"] if f["status"] == "fail")
        started = await h.command(overridden["id"], "start")
        assert started["status"] in ("running", "restoring", "restored", "succeeded", "failed")
        await h.command(overridden["id"], "abort")
        await h.wait(overridden["id"], "aborted", "restored", "failed", timeout=90)


async def test_restore_when_the_crm_database_is_also_the_state_database(
    db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    """The embedded default (one SQLite file, or one schema): restoring the CRM database rolls
    crmcluster's own rows back too; the controller writes the run's records again."""
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm1": "run_installer:fail"},
    ) as h:
        run = await h.plan(database=DATABASE)
        assert {f["name"]: f["status"] for f in run["preflight"]}["state_database"] == "warn"
        await h.command(run["id"], "start")
        done = await h.wait(run["id"], "restored", "failed", "succeeded", timeout=90)
        assert done["status"] == "restored", done["message"]
        assert await _versions(h) == {"crm1": "7.3", "crm2": "7.3", "crm3": "7.3"}
        assert all(s["status"] == "succeeded" for s in done["plan"] if s["phase"] in ("freeze", "backup"))
        installer = next(s for s in done["plan"] if s["action"] == "run_installer")
        assert installer["status"] == "failed"
        checklist = (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).json()
        lines = {
            (sec["title"], ln["action"]): ln["status"] for sec in checklist["sections"] for ln in sec["lines"]
        }
        pre = "Live manual backup \N{EN DASH} pre live upgrade"
        assert lines[(pre, "Complete backup of Sage CRM program files")] == "done"
        assert lines[(pre, "Complete backup of Sage CRM database")] == "done"
        assert lines[("Live upgrade", "Complete install shield upgrade to current version")] == "failed"
        assert "Restoring a Live Environment" in [sec["title"] for sec in checklist["sections"]], (
            [sec["title"] for sec in checklist["sections"]],
            sorted({s["phase"] for s in done["plan"]}),
            len(done["plan"]),
        )
        assert lines[("Restoring a Live Environment", "Restoring the database backup")] == "done"
        assert (
            lines[
                ("Restoring a Live Environment", "Verify: old version, old schema, 20 records, logons served")
            ]
            == "done"
        )
        assert await _states(h) == {"crm1": "up", "crm2": "up", "crm3": "up"}


async def test_users_locked_out_while_paused_then_rolled_back(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm2": "read_upgrade_log:fail"},
    ) as h:
        run = await h.plan(database=DATABASE, failure_policy="pause")
        await h.command(run["id"], "start")
        paused = await h.wait(run["id"], "paused", timeout=90)
        assert "retry the step, or roll back" in paused["message"]
        assert (await _states(h))["crm1"] == "upgrading"
        locked = await h.balancer_logon("during-upgrade")
        assert locked.status_code == 503 and "retry-after" in locked.headers
        await h.command(run["id"], "rollback")
        done = await h.wait(run["id"], "restored", "failed", timeout=90)
        assert done["status"] == "restored", done["message"]
        assert await _versions(h) == {"crm1": "7.3", "crm2": "7.3", "crm3": "7.3"}
        routed = await h.balancer_logon("after-rollback")
        assert routed.status_code == 307 and routed.headers["x-crm-server"] in h.agents
