"""The sandbox as strict as Windows, SQL Server and InstallShield (issue 11, item 10): each test
here passed against the lenient sandbox only where the real server would have failed too, or
fails against it where the real one fails."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.sandbox import database_backup
from node_agent.protocol import Action
from node_agent.runner import RecordingRunner
from node_agent.testing import SandboxAgent, running_sandbox_agent

UPGRADE = {
    "mode": "upgrade",
    "version": "2017 R1",
    "license_key": "KEY-2017-ABCDEFG",
    "database": {"server": "sql01", "user": "crmsql", "password": "Sql-Pw-123"},
}


async def _ok(
    agent: SandboxAgent, op: str, action: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    rec = await agent.run(op, action, params)
    assert rec.state == "succeeded", (rec.error, rec.log_tail)
    assert rec.result is not None
    return rec.result


async def test_sql_server_creates_no_backup_folder(db_agent: SandboxAgent, tmp_path: Path) -> None:
    ctx = OperationContext(op_id="x", action=Action.BACKUP_DATABASE, runner=RecordingRunner())
    with pytest.raises(ActionFailed, match="Operating system error 3"):
        await database_backup.backup_database(db_agent.driver.settings.crm_url, tmp_path / "nowhere", ctx)
    res = await _ok(db_agent, "b1", "backup_database", {"destination": "fresh/folder"})
    assert res["path"] == "fresh/folder" and res["bytes"] > 0  # the action creates it first


async def test_restore_fails_while_another_server_holds_the_database(
    db_agent: SandboxAgent, tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    await _ok(db_agent, "b1", "backup_database")
    async with running_sandbox_agent(
        name="crm2", data_dir=tmp_path / "crm2", crm_db_url=db_url, token=tokens["agent"], roles=["indexer"]
    ) as crm2:
        for op, action in [("w1", "stop_web"), ("w2", "stop_tomcat")]:
            await _ok(db_agent, op, action)
        await _ok(db_agent, "w3", "stop_service", {"service": "email_manager"})
        rec = await db_agent.run("r1", "restore_database", {"source": "database/b1"})
        assert rec.state == "failed" and "error 3101" in (rec.error or "") and "crm2" in (rec.error or "")
        for op, action in [("s1", "stop_web"), ("s2", "stop_tomcat")]:
            await _ok(crm2, op, action)
        await _ok(crm2, "s3", "stop_service", {"service": "indexer"})
        res = await _ok(db_agent, "r2", "restore_database", {"source": "database/b1"})
        assert res["restored_from"] == "database/b1"


async def test_the_installer_replays_a_response_file_and_its_result_code_decides(
    tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=db_url,
        token=tokens["agent"],
        roles=["database"],
        faults="run_installer:response*1",
    ) as a:
        rec = await a.run("i1", "run_installer", UPGRADE)
        assert rec.state == "failed" and "ResultCode -3" in (rec.error or "")
        assert (await a.client.get("/v1/status")).json()["version"] == "7.3"  # nothing installed
        work = a.driver.base / "agent" / "installer"
        assert (work / "i1.log").read_text().strip().endswith("ResultCode=-3")
        assert not (work / "i1.iss").exists()  # the key's copy is gone
        res = await _ok(a, "i2", "run_installer", UPGRADE)
        assert res["result_code"] == 0 and res["version"] == "2017 R1"
        # A recorded response file that does not take the key is refused before anything runs.
        template = a.driver.setup.responses / "upgrade-2017 R1.iss"
        template.write_text(template.read_text().replace("{{license_key}}", "RECORDED-TEST-KEY"))
        rec = await a.run("i3", "run_installer", UPGRADE)
        assert rec.state == "failed" and "{{license_key}}" in (rec.error or "")


async def test_a_stale_upgrade_log_is_refused(tmp_path: Path, db_url: str, tokens: dict[str, str]) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=db_url,
        token=tokens["agent"],
        roles=["database"],
        faults="run_installer:no_log*1",
    ) as a:
        log = a.driver.tree.upgrade_log
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("<table><tr><td>views.es</td><td>Completed</td></tr></table>")  # the last upgrade's
        old = time.time() - 86400
        os.utime(log, (old, old))
        await _ok(a, "i1", "run_installer", UPGRADE)
        rec = await a.run("l1", "read_upgrade_log")
        assert rec.state == "failed" and "stale log" in (rec.error or "")


async def test_the_logon_page_is_no_logon_and_the_warm_up_gives_its_seat_back(db_agent: SandboxAgent) -> None:
    async with httpx.AsyncClient(base_url=db_agent.web_url) as c:
        page = await c.get("/crm/eware.dll/go")
        assert "SID=" in page.text  # a provisional session id: counting it as a logon is wrong
    before = (await db_agent.client.get("/v1/status")).json()["logged_on"]
    res = await _ok(db_agent, "w1", "warmup_logon")
    assert res["logged_on"] is True and res["logged_off"] == 1
    assert (await db_agent.client.get("/v1/status")).json()["logged_on"] == before
    async with httpx.AsyncClient(base_url=db_agent.web_url) as c:
        await c.post("/crm/eware.dll/Logon", data={"EWARE_USERID": "kept", "PASSWORD": "pw-kept-1"})
    assert (await db_agent.client.get("/v1/status")).json()["logged_on"] == before + 1  # a seat until logoff
