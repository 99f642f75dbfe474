"""The guide's live upgrade and its restore, end to end on a sandbox node (SQLite and PostgreSQL):
back up everything, upgrade, read the log, restore — version, files, schema and records as before."""

from __future__ import annotations

from typing import Any

import httpx

from node_agent.backup_files import tree_manifest
from node_agent.testing import SandboxAgent

UPGRADE = {
    "mode": "upgrade",
    "version": "2017 R1",
    "license_key": "LIVE-KEY-2017-R1-0001",
    "database": {"server": "sql01", "user": "crmsql", "password": "Pa55-w0rd-live"},
    "register": True,
}


async def _ok(
    agent: SandboxAgent, op: str, action: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    rec = await agent.run(op, action, params)
    assert rec.state == "succeeded", (action, rec.error, rec.log_tail)
    assert rec.result is not None
    return rec.result


async def test_back_up_upgrade_read_the_log_and_restore(db_agent: SandboxAgent) -> None:
    a = db_agent
    tree_before = tree_manifest(a.driver.tree.root)
    before = await _ok(a, "fp-0", "fingerprint_records")
    assert before["schema_version"] == "7.3" and len(before["records"]) == 20
    ids = [int(i) for i in before["records"]]

    for action in ("stop_web", "stop_tomcat"):
        await _ok(a, f"freeze-{action}", action)
    await _ok(a, "freeze-svc", "stop_service", {"service": "email_manager"})
    db = await _ok(a, "bk-db", "backup_database")
    views = await _ok(a, "bk-views", "backup_views")
    files = await _ok(a, "bk-files", "backup_program_files")
    reg = await _ok(a, "bk-reg", "backup_registry")
    assert db["bytes"] > 0 and len(db["sha256"]) == 64
    assert "vCompany" in views["views"]
    assert files["version"] == "7.3" and files["files"] > 3
    assert reg["exports"] == ["Config_CRM.reg", "Mappings_CRM.reg"]

    await _ok(a, "trg-off", "disable_triggers")
    up = await _ok(a, "upgrade", "run_installer", UPGRADE)
    assert up["from_version"] == "7.3" and up["version"] == "2017 R1" and up["registered"] is True
    await _ok(a, "trg-on", "enable_triggers")
    log = await _ok(a, "log", "read_upgrade_log")
    assert log["ok"] is True and log["must_fix"] == [] and len(log["scripts"]) == 9
    after = await _ok(a, "fp-1", "fingerprint_records", {"ids": ids})
    assert after["schema_version"] == "2017 R1"
    assert after["schema"] != before["schema"]
    assert after["records"] == before["records"]  # the upgrade keeps the data
    status = (await a.client.get("/v1/status")).json()
    assert status["version"] == "2017 R1"
    assert tree_manifest(a.driver.tree.root) != tree_before

    # Restore the live environment, as the guide's chapter says.
    await _ok(a, "r-stop", "stop_web")
    await _ok(a, "r-db", "restore_database", {"source": db["path"]})
    restored = await _ok(a, "r-files", "restore_program_files", {"source": files["path"]})
    assert restored["path"] == "CRM_backup" and restored["version"] == "7.3"
    await _ok(a, "r-reg", "restore_registry", {"source": reg["path"]})
    dll = await _ok(a, "r-dll", "register_dll")
    assert dll["registered"] == "CRM_backup/WWWRoot/eware.dll"
    await _ok(a, "r-start", "start_web")
    await _ok(a, "r-tomcat", "start_tomcat")

    back = await _ok(a, "fp-2", "fingerprint_records", {"ids": ids})
    assert back["schema_version"] == "7.3"
    assert back["schema"] == before["schema"]
    assert back["records"] == before["records"]
    status = (await a.client.get("/v1/status")).json()
    assert status["version"] == "7.3" and status["web"] == "running"
    assert tree_manifest(a.driver.tree.root)["sha256"] == tree_before["sha256"]
    assert a.driver.registry.get("HKEY_LOCAL_MACHINE\\SOFTWARE\\eWare\\Config\\/CRM")["Version"] == "7.3"
    async with httpx.AsyncClient() as c:
        r = await c.post(a.web_url + "/crm/eware.dll/Logon", data={"EWARE_USERID": "after-restore"})
        assert r.status_code == 200 and r.headers["X-CRM-Server"] == "crm1"
    warm = await _ok(a, "warm", "warmup_logon")
    assert warm["logged_on"] is True and warm["logged_off"] == 1

    # The website decides which tree is live: back to the install's own, then to the backup again.
    own = await _ok(a, "w-own", "redirect_website")
    assert own == {"website_path": "CRM/WWWRoot", "version": "2017 R1"}
    again = await _ok(a, "w-bak", "redirect_website", {"path": "CRM_backup"})
    assert again == {"website_path": "CRM_backup/WWWRoot", "version": "7.3"}
    nowhere = await a.run("w-none", "redirect_website", {"path": "NoSuchFolder"})
    assert nowhere.state == "failed" and "not a Sage CRM website" in (nowhere.error or "")
    missing = await a.run("r-none", "restore_database", {"source": "database/never-made"})
    assert missing.state == "failed" and "no backup" in (missing.error or "")
