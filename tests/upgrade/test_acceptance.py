"""Items 2 and 3 of "Upgrade safety", on real sandbox agents through the API: users return last,
after the acceptance hold; once they are back nothing is restored on its own."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from controller.upgrade.runtime import orchestrator_for
from tests.upgrade.sandbox import sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE, _states, _versions


def _t(v: str) -> datetime:
    return datetime.fromisoformat(v.rstrip("Z"))


async def test_users_return_last_after_the_acceptance_hold(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url, crm_db_url=crm_db_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
    ) as h:
        body = {
            "target_version": "2017 R1",
            "license_key": "LIC-2017R1-ABCDEFGH-0001",
            "database": DATABASE,
        }
        planned = await h.client.post("/api/v1/upgrades", json=body)  # require_acceptance: the default
        assert planned.status_code == 201, planned.text
        run = planned.json()
        assert run["options"]["require_acceptance"] is True
        await h.command(run["id"], "start")
        held = await h.wait(run["id"], "awaiting_acceptance", "failed", "restored", timeout=120)
        assert held["status"] == "awaiting_acceptance", held["message"]
        assert held["returned_at"] is None
        # Users are still out: the balancer refuses logons during the hold.
        locked = await h.balancer_logon("during-hold")
        assert locked.status_code == 503
        assert not set((await _states(h)).values()) & {"up", "draining"}  # maintenance or upgrading
        assert await _versions(h) == {"crm1": "2017 R1", "crm2": "2017 R1", "crm3": "2017 R1"}
        # Smoke checks, the 20 records and every post-upgrade backup are done before the hold.
        after = [s for s in held["plan"] if s["phase"] == "after" and s["action"] != "acceptance"]
        before_hold = [s for s in after if s["action"] not in ("return_to_service", "verify_service")]
        assert before_hold and all(s["status"] == "succeeded" for s in before_hold)
        post_backups = {s["action"] for s in before_hold if s["action"].startswith("backup_")}
        assert post_backups == {"backup_database", "backup_program_files", "backup_registry"}
        # The guide's "Testing a live upgrade" table: crmcluster's rows with evidence, others to tick.
        table = {r["id"]: r for r in held["acceptance"]["table"]}
        assert len(table) == 17
        assert table["logon"]["by"] == "crmcluster" and table["logon"]["status"] == "passed"
        assert set(table["logon"]["evidence"]["servers"]) == {"crm1", "crm2", "crm3"}
        assert table["library"]["status"] == "passed" and table["library"]["evidence"]["servers"]["crm2"]
        assert table["mail_merge"]["by"] == "operator" and table["mail_merge"]["status"] == "to tick"

        bad = await h.client.post(
            f"/api/v1/upgrades/{run['id']}/accept", json={"rows": ["nope"], "note": "x"}
        )
        assert bad.status_code == 422, bad.text
        no_note = await h.client.post(f"/api/v1/upgrades/{run['id']}/accept", json={"rows": []})
        assert no_note.status_code == 422
        accepted = await h.command(
            run["id"],
            "accept",
            body={
                "rows": ["mail_merge", {"id": "reports", "note": "PDF and XLSX checked"}],
                "note": "UAT ok",
            },
        )
        assert accepted["acceptance"]["accepted_by"] and accepted["acceptance"]["note"] == "UAT ok"
        done = await h.wait(run["id"], "succeeded", "failed", "paused", timeout=60)
        assert done["status"] == "succeeded", done["message"]
        returned = _t(done["returned_at"])
        assert all(_t(s["finished_at"]) <= returned for s in before_hold)  # users returned last
        gate = next(s for s in done["plan"] if s["action"] == "acceptance")
        assert _t(gate["finished_at"]) <= returned
        rows = {r["id"]: r for r in done["acceptance"]["table"]}
        assert rows["mail_merge"]["status"] == "ticked"
        assert rows["reports"]["note"] == "PDF and XLSX checked"
        assert rows["exchange"]["status"] == "not ticked"
        routed = await h.balancer_logon("after-acceptance")
        assert routed.status_code == 307

        checklist = (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).json()
        testing = next(sec for sec in checklist["sections"] if sec["title"] == "Testing a live upgrade")
        by_action = {ln["action"]: ln for ln in testing["lines"]}
        assert by_action["Log on is successful"]["status"] == "done"
        assert by_action["Report writer presenting in all formats (HTML, PDF, CSV, XLSX)"]["status"] == "done"
        assert "PDF and XLSX checked" in str(
            by_action["Report writer presenting in all formats (HTML, PDF, CSV, XLSX)"]
        )
        assert by_action["Outlook and Exchange Integration functioning as expected"]["status"] == "not done"

        # Item 7: the estimate carries its source; after the run, the downtime measured.
        assert run["downtime"]["estimate"]["source"].startswith("the step time-outs")
        lines = {ln["action"]: ln for sec in checklist["sections"] for ln in sec["lines"]}
        est = lines["Estimate downtime for production system and document risks to client"]
        assert est["status"] == "done" and "time-outs" in est["evidence"]["source"]
        measured = est["evidence"]["measured"]
        assert measured["locked_out_seconds"] >= measured["acceptance_hold_seconds"] > 0
        assert "measured" in est["note"] and "acceptance hold" in est["note"]
        assert done["downtime"]["measured"] == measured
        again = await h.plan()  # the next plan's estimate comes from this run's durations
        assert again["downtime"]["estimate"]["source"] == f"measured on {run['id']}"
        assert (
            again["downtime"]["estimate"]["downtime_seconds"]
            < run["downtime"]["estimate"]["downtime_seconds"]
        )
        assert again["downtime"]["measured"] is None
        await h.command(again["id"], "abort")
        # No row is marked done without its evidence.
        assert all(ln["evidence"] for ln in lines.values() if ln["status"] == "done")


async def test_a_failure_once_users_are_back_pauses_and_alerts_never_restores(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url, crm_db_url=crm_db_url, tokens=tokens, secret_key=secret_key, tmp_path=tmp_path
    ) as h:
        run = await h.plan(require_acceptance=True)
        await h.command(run["id"], "start")
        held = await h.wait(run["id"], "awaiting_acceptance", "failed", "restored", timeout=120)
        assert held["status"] == "awaiting_acceptance", held["message"]
        # crm2's IIS stops behind the controller's back: once users are back it is seen not serving.
        await h.agents["crm2"].run("outside-iisreset-stop", "stop_web")
        await h.command(run["id"], "accept", body={"rows": [], "note": "no tests possible tonight"})
        paused = await h.wait(run["id"], "paused", "restoring", "restored", "succeeded", timeout=60)
        assert paused["status"] == "paused", paused["message"]
        assert paused["returned_at"] and paused["alert"]["kind"] == "failure_after_return"
        assert "ALERT" in paused["message"] and "nothing is restored on its own" in paused["message"]
        assert not [s for s in paused["plan"] if s["phase"] == "restore"]  # no restore planned
        assert await _versions(h) == {"crm1": "2017 R1", "crm2": "2017 R1", "crm3": "2017 R1"}

        store = orchestrator_for(h.app.state.ctx).store  # the stream stays open while the run is paused
        alerts = [e for e in await store.events_after(run["id"], 0, limit=5000) if e["kind"] == "alert"]
        assert alerts and alerts[0]["data"]["step"] == paused["alert"]["step"]
        metrics = (await h.client.get("/metrics")).text
        assert f'crmcluster_upgrade_alert{{kind="failure_after_return",run="{run["id"]}"}} 1.0' in metrics
        assert 'crmcluster_upgrade_alerts_total{kind="failure_after_return"} 1.0' in metrics
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://c") as web:
            assert (await web.get("/", params={"token": tokens["admin"]})).status_code == 303
            page = (await web.get("/dashboard/fragments")).json()["sections"]["upgrade"]
        assert 'class="alert"' in page and "users are back" in page.lower()
        assert f"--accept-data-loss-since {paused['returned_at']}" in page

        # Rollback loses users' writes: 409 data_loss naming the window, unless accepted.
        refused = await h.client.post(f"/api/v1/upgrades/{run['id']}/rollback")
        assert refused.status_code == 409, refused.text
        err = refused.json()["error"]
        assert err["code"] == "data_loss" and err["details"]["window"]["since"] == paused["returned_at"]
        assert paused["returned_at"] in err["message"]
        abort = await h.client.post(f"/api/v1/upgrades/{run['id']}/abort")
        assert abort.status_code == 409 and abort.json()["error"]["code"] == "data_loss"
        assert (await h.run(run["id"]))["status"] == "paused"

        await h.command(run["id"], "rollback", body={"accept_data_loss_since": paused["returned_at"]})
        done = await h.wait(run["id"], "restored", "failed", timeout=120)
        assert done["status"] == "restored", done["message"]
        assert await _versions(h) == {"crm1": "7.3", "crm2": "7.3", "crm3": "7.3"}
        checklist = (await h.client.get(f"/api/v1/upgrades/{run['id']}/checklist")).json()
        restoring = next(
            sec for sec in checklist["sections"] if sec["title"] == "Restoring a Live Environment"
        )
        loss = next(ln for ln in restoring["lines"] if ln["action"].startswith("Data written since users"))
        assert (
            loss["status"] == "done"
            and loss["evidence"]["by"]
            and loss["evidence"]["since"] == paused["returned_at"]
        )
