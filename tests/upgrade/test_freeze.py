"""Item 1 of "Upgrade safety": every web server — the database server's own IIS, Tomcat and CRM
services included — stops serving users before the database backup, and the disconnect check
covers every host (only the upgrade's own connection remains)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.upgrade.sandbox import sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE


async def test_database_server_refuses_users_while_its_backup_hangs(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm1": "backup_database:hang"},
    ) as h:
        crm1 = h.agents["crm1"].web_url + "/crm/eware.dll/Logon"
        assert await h.logon("crm1", "before-upgrade") < 400  # a user logged on to the database server
        run = await h.plan(database=DATABASE)
        await h.command(run["id"], "start")
        await h.wait_step(
            run["id"], lambda s: s["action"] == "backup_database" and s["status"] == "running", timeout=60
        )
        async with httpx.AsyncClient() as c:
            page = await c.get(crm1)
            logon = await c.post(crm1, data={"EWARE_USERID": "during-backup"})
            sdata = await c.get(h.agents["crm1"].web_url + "/sdata/")
        assert page.status_code == 503, page.text  # the logon page refuses users ...
        assert logon.status_code == 503, logon.text  # ... and nobody logs on
        assert sdata.status_code == 503  # Tomcat (SData, the Replication Engine) is stopped too
        status = (await h.agents["crm1"].client.get("/v1/status")).json()
        assert status["web"] == "stopped" and status["tomcat"] == "stopped"
        assert all(v != "running" for v in status["services"].values()), status["services"]

        run_now = await h.run(run["id"])
        verify = next(s for s in run_now["plan"] if s["action"] == "verify_disconnected")
        assert verify["node"] == "crm1" and verify["status"] == "succeeded"
        assert set(verify["result"]["checked"]) == {"crm1", "crm2", "crm3"}  # every host, crm1 too
        assert verify["result"]["sessions"] == {}  # nothing but the upgrade's own connection
        # Every server stopped before the backup began.
        backup = next(s for s in run_now["plan"] if s["action"] == "backup_database")
        stops = [s for s in run_now["plan"] if s["phase"] == "freeze" and s["action"].startswith("stop_")]
        assert {s["node"] for s in stops if s["action"] == "stop_web"} == {"crm1", "crm2", "crm3"}
        assert all(s["finished_at"] <= backup["started_at"] for s in stops)

        await h.command(run["id"], "abort")
        done = await h.wait(run["id"], "aborted", "restored", "failed", timeout=90)
        assert done["status"] == "aborted", done["message"]
        assert await h.logon("crm1", "after-abort") < 400  # crm1 serves users again
