"""Two sandbox nodes sharing one CRM database (SQLite and PostgreSQL): the guide's order of a
multi-server upgrade, database sessions by host, the Replication Engine, services, the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from config.crm_schema import crm_tables
from config.sysparams import SysParamsStore
from node_agent.testing import SandboxAgent, running_sandbox_agent

KEY = "MULTI-SERVER-KEY-2017"


async def _ok(
    agent: SandboxAgent, op: str, action: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    rec = await agent.run(op, action, params)
    assert rec.state == "succeeded", (action, rec.error)
    assert rec.result is not None
    return rec.result


async def test_two_nodes_upgrade_in_the_guides_order(
    db_agent: SandboxAgent, tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm2", data_dir=tmp_path / "crm2", crm_db_url=db_url, token=tokens["agent"], roles=["indexer"]
    ) as crm2:
        s2 = (await crm2.client.get("/v1/status")).json()
        assert s2["version"] == "7.3" and s2["replication_engine"] is False
        assert s2["services"]["indexer"] == "running" and s2["web_url"] != db_agent.web_url

        # Sessions by host; disconnecting crm2 (IIS, Tomcat, services) makes its sessions go away.
        sessions = await _ok(db_agent, "s0", "database_sessions")
        assert sessions["hosts"] == {"crm1": 12, "crm2": 12}
        for op, action, params in [
            ("d1", "stop_web", None),
            ("d2", "stop_tomcat", None),
            ("d3", "stop_service", {"service": "indexer"}),
        ]:
            await _ok(crm2, op, action, params)
        sessions = await _ok(db_agent, "s1", "database_sessions")
        assert "crm2" not in sessions["hosts"] and sessions["hosts"]["crm1"] == 12

        # A non-database server cannot go first.
        early = await crm2.run(
            "u-early", "run_installer", {"mode": "upgrade", "version": "2017 R1", "license_key": KEY}
        )
        assert early.state == "failed" and "database server first" in (early.error or "")
        assert (await crm2.client.get("/v1/status")).json()["version"] == "7.3"

        up = await _ok(
            db_agent,
            "u1",
            "run_installer",
            {
                "mode": "upgrade",
                "version": "2017 R1",
                "license_key": KEY,
                "database": {"server": "sql01", "user": "crm", "password": "db-pass-123"},
                "backup": True,
                "register": True,
            },
        )
        assert set(up["backup"]) == {"program_files", "registry", "database"}
        assert up["database_upgraded"] is True
        up2 = await _ok(
            crm2, "u2", "run_installer", {"mode": "upgrade", "version": "2017 R1", "license_key": KEY}
        )
        assert up2["database_upgraded"] is False and up2["version"] == "2017 R1"
        log2 = await _ok(crm2, "l2", "read_upgrade_log")
        assert log2["ok"] is True
        # The installer leaves IIS as it found it: stopped on crm2 (frozen), running on crm1.
        assert (await crm2.client.get("/v1/status")).json()["web"] == "stopped"
        assert (await db_agent.client.get("/v1/status")).json()["web"] == "running"
        again = await _ok(
            crm2, "u3", "run_installer", {"mode": "upgrade", "version": "2017 R1", "license_key": KEY}
        )
        assert again["upgraded"] is False


async def test_replication_engine_services_and_join(
    db_agent: SandboxAgent, tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    assert (await _ok(db_agent, "x1", "disable_exchange_integration"))["exchange_integration"] is False
    war = db_agent.driver.tree.war
    removed = await _ok(db_agent, "re1", "remove_replication_engine")
    assert removed["removed"] is True and not war.exists()
    assert (await db_agent.client.get("/v1/status")).json()["replication_engine"] is False
    await _ok(db_agent, "re2", "install_replication_engine")
    assert war.exists()
    await _ok(db_agent, "x2", "enable_exchange_integration")

    missing = await db_agent.run("sv0", "start_service", {"service": "escalation"})
    assert missing.state == "failed" and "not installed" in (missing.error or "")
    await _ok(db_agent, "sv1", "install_service", {"service": "escalation"})
    await _ok(db_agent, "sv2", "start_service", {"service": "escalation"})
    status = (await db_agent.client.get("/v1/status")).json()
    assert status["services"]["escalation"] == "running"
    await _ok(db_agent, "sv3", "stop_service", {"service": "escalation"})
    await _ok(db_agent, "sv4", "uninstall_service", {"service": "escalation"})
    assert (await db_agent.client.get("/v1/status")).json()["services"]["escalation"] == "not_installed"

    # A new node: the installer puts a Replication Engine on it, the join sequence removes it.
    empty = tmp_path / "crm4"
    async with running_sandbox_agent(
        name="crm4", data_dir=empty, crm_db_url=db_url, token=tokens["agent"], roles=[]
    ) as crm4:
        assert (await crm4.client.get("/v1/status")).json()["replication_engine"] is False
        res = await _ok(
            crm4, "j1", "run_installer", {"mode": "add_node", "version": "7.3", "license_key": KEY}
        )
        assert res["installed"] is True and res["replication_engine"] is True
        assert (await crm4.client.get("/v1/status")).json()["replication_engine"] is True
        assert (await _ok(crm4, "j2", "remove_replication_engine"))["removed"] is True
        assert (await crm4.client.get("/v1/status")).json()["replication_engine"] is False
        other = await crm4.run(
            "j3", "run_installer", {"mode": "add_node", "version": "2017 R1", "license_key": KEY}
        )
        assert other.state == "failed" and "upgrade it instead" in (other.error or "")
        await _ok(crm4, "j4", "reload_metadata")


async def test_library_probe_and_license(db_agent: SandboxAgent, tmp_path: Path) -> None:
    nodoc = await db_agent.run("p2", "probe_library")
    assert nodoc.state == "failed" and "DocStore" in (nodoc.error or "")
    unset = await db_agent.run("p0", "probe_library", {"path": "\\\\files\\crmlib\\Library"})
    assert unset.state == "failed" and "no library share" in (unset.error or "")  # no share to be on
    store = SysParamsStore(crm_tables(), db_agent.driver.settings.sysparam_row_names())
    async with db_agent.driver.engine.begin() as conn:
        await store.write(conn, {"doc_store": "\\\\files\\crmlib\\Docs"})
    res = await _ok(db_agent, "p1", "probe_library", {"path": "\\\\files\\crmlib\\Library"})
    assert res["reachable"] is True and (tmp_path / "library" / "Library").is_dir()
    bad = await db_agent.run("lic-short", "check_license", {"license_key": "short"})
    assert bad.state == "failed" and "not valid" in (bad.error or "")
    good = await _ok(db_agent, "lic-ok", "check_license", {"license_key": "LONG-ENOUGH-KEY"})
    assert good["valid"] is True and good["key_hash"].startswith("sha256:")
    dta = await _ok(db_agent, "dta", "list_dta_objects")
    assert dta == {"objects": [], "count": 0}


async def test_the_stand_in_web_server(db_agent: SandboxAgent) -> None:
    base = db_agent.web_url
    async with httpx.AsyncClient(base_url=base) as c:
        page = await c.get("/crm/eware.dll/Logon")
        # Sage CRM's logon form: EWARE_USERID and PASSWORD, posted with a provisional SID.
        assert (
            page.status_code == 200 and 'name="EWARE_USERID"' in page.text and 'name="PASSWORD"' in page.text
        )
        assert "eware.dll/Logon?SID=" in page.text and "Log Out" not in page.text
        sage = await c.post("/crm/eware.dll/Logon", data={"EWARE_USERID": "ann", "PASSWORD": "pw-ann-secret"})
        assert sage.status_code == 200 and 'title="Log Out"' in sage.text
        await c.get("/crm/eware.dll/Logoff", params={"SID": sage.headers["X-CRM-SID"]})
        assert (await c.get("/crm/")).status_code == 200
        # eware.dll knows only its own form's fields: a User_Logon form logs nobody on.
        other = await c.post("/crm/eware.dll/Logon", data={"User_Logon": "bob", "Password": "hunter2-secret"})
        assert other.status_code == 400 and 'name="EWARE_USERID"' in other.text
        assert (await c.get("/crm/eware.dll/Sessions")).json()["logged_on"] == 0
        logon = await c.post(
            "/crm/eware.dll/Logon", data={"EWARE_USERID": "bob", "PASSWORD": "hunter2-secret"}
        )
        assert logon.status_code == 200 and logon.headers["X-CRM-Server"] == "crm1"
        sid = logon.headers["X-CRM-SID"]
        sessions = (await c.get("/crm/eware.dll/Sessions")).json()
        assert [s["user"] for s in sessions["sessions"]] == ["bob"]
        assert (await db_agent.client.get("/v1/status")).json()["logged_on"] == 1
        assert (await c.get("/sdata/crmj/sagecrm/-/")).status_code == 200
        off = await c.get("/crm/eware.dll/Logoff", params={"SID": sid})
        assert off.json()["closed"] == 1
        assert (await c.get("/crm/eware.dll/Sessions")).json()["logged_on"] == 0
        assert (await c.post("/crm/eware.dll/Logon", data={})).status_code == 400

        await db_agent.run("w1", "stop_web")
        for method, path in [
            ("GET", "/crm/eware.dll/Logon"),
            ("POST", "/crm/eware.dll/Logon"),
            ("GET", "/crm/"),
        ]:
            r = await c.request(method, path, data={"EWARE_USERID": "carol"} if method == "POST" else None)
            assert r.status_code == 503
        await db_agent.run("w2", "stop_tomcat")
        assert (await c.get("/sdata/crmj/sagecrm/-/")).status_code == 503
        await db_agent.run("w3", "start_web")
        await db_agent.run("w4", "start_tomcat")
        assert (await c.get("/crm/eware.dll/Logon")).status_code == 200
        assert (await c.get("/sdata/")).status_code == 200


async def test_one_user_with_two_open_sessions_is_one_logged_on_user(db_agent: SandboxAgent) -> None:
    """Sage CRM counts users, not Activity rows: alice in two browsers is one user on crm1."""
    async with httpx.AsyncClient(base_url=db_agent.web_url) as c:
        for _ in range(2):
            r = await c.post("/crm/eware.dll/Logon", data={"EWARE_USERID": "alice"})
            assert r.status_code == 200
        r = await c.post("/crm/eware.dll/Logon", data={"EWARE_USERID": "bob"})
        assert r.status_code == 200
        sessions = (await c.get("/crm/eware.dll/Sessions")).json()
    assert [s["user"] for s in sessions["sessions"]] == ["alice", "alice", "bob"]
    assert sessions["logged_on"] == 2
    assert (await db_agent.client.get("/v1/status")).json()["logged_on"] == 2
