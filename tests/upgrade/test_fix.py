"""Item 4 of "Upgrade safety", on real sandbox agents through the API: "NB must be fixed" and a
failed script pause the run as ``awaiting_fix`` (never a restore); each is resolved with a note,
``resume`` reads the log again and honours the resolutions, and the checklist carries the notes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.upgrade.sandbox import sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE, _versions


async def test_nb_must_be_fixed_pauses_is_resolved_and_the_run_succeeds(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        faults={"crm1": "run_installer:nb", "crm3": "run_installer:log_error"},
    ) as h:
        run = await h.plan(database=DATABASE, batch_size=2)  # failure_policy: restore (the default)
        await h.command(run["id"], "start")
        held = await h.wait(run["id"], "awaiting_fix", "restoring", "restored", "failed", timeout=90)
        assert held["status"] == "awaiting_fix", held["message"]
        step = next(s for s in held["plan"] if s["status"] == "awaiting_fix")
        assert step["node"] == "crm1" and step["action"] == "read_upgrade_log"
        ev = step["result"]
        assert any("NB must be fixed" in f and "_dta_stat_" in f for f in ev["unresolved"])
        assert ev["script_logs"] and any(
            name.endswith(".html") for name in ev["script_logs"]
        )  # per-script logs
        assert not [s for s in held["plan"] if s["phase"] == "restore"]  # never restored for this

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://c") as web:
            assert (await web.get("/", params={"token": tokens["admin"]})).status_code == 303
            page = (await web.get("/dashboard/fragments")).json()["sections"]["upgrade"]
        assert "Awaiting a fix by hand" in page and f"upgrade resolve {run['id']} {step['id']}" in page
        assert "_dta_stat_" in page and "script logs" in page

        early = await h.client.post(f"/api/v1/upgrades/{run['id']}/resume")  # not resolved yet
        assert early.status_code == 409 and early.json()["error"]["details"]["unresolved_steps"] == [
            step["id"]
        ]
        empty = await h.client.post(
            f"/api/v1/upgrades/{run['id']}/steps/{step['id']}/resolve", json={"note": ""}
        )
        assert empty.status_code == 422
        note = "dropped _dta_stat_ on Comp_Sector, ran Tables.es again"
        await h.command(run["id"], f"steps/{step['id']}/resolve", body={"note": note})
        await h.command(run["id"], "resume")

        # crm3's failed script: its own hold, with the * error file and its log.
        second = await h.wait(run["id"], "awaiting_fix", "succeeded", "restored", "failed", timeout=90)
        assert second["status"] == "awaiting_fix", second["message"]
        crm3 = next(s for s in second["plan"] if s["status"] == "awaiting_fix")
        assert crm3["node"] == "crm3"
        assert any(f.startswith("script ") and "failed" in f for f in crm3["result"]["unresolved"])
        assert any(f.startswith("errors in *") for f in crm3["result"]["unresolved"])
        assert any(name.startswith("*") for name in crm3["result"]["script_logs"])
        await h.command(run["id"], f"steps/{crm3['id']}/resolve", body={"note": "rebuilt vCompany by hand"})
        await h.command(run["id"], "resume")

        done = await h.wait(run["id"], "succeeded", "restored", "failed", "awaiting_fix", timeout=90)
        assert done["status"] == "succeeded", done["message"]
        assert await _versions(h) == {"crm1": "2017 R1", "crm2": "2017 R1", "crm3": "2017 R1"}
        reread = next(s for s in done["plan"] if s["id"] == step["id"])
        assert reread["status"] == "succeeded" and reread["attempt"] == 1 and note in reread["message"]
        installers = [s for s in done["plan"] if s["action"] == "run_installer"]
        assert all(s["attempt"] == 0 for s in installers)  # the installer did not run again

        checklist = (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).json()
        logs = next(sec for sec in checklist["sections"] if sec["title"] == "Upgrade logs")
        rows = {ln["action"]: ln for ln in logs["lines"]}
        for action in (
            "Investigate each error and document resolution or outcome",
            "Complete resolutions for each error",
        ):
            assert rows[action]["status"] == "done"
            assert note in rows[action]["note"] and "rebuilt vCompany by hand" in rows[action]["note"]
            assert {e["node"] for e in rows[action]["evidence"]} == {"crm1", "crm3"}
