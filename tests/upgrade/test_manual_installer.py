"""The ``manual`` installer mode end to end on sandbox agents, through the controller's API: the
installer step waits as ``awaiting_operator`` with the guide's wizard choices (backup or not,
register or not, triggers), a person runs the wizard by hand and confirms with a note
(``POST /upgrades/{id}/steps/{step}/confirm``, forwarded to the agent), then the step is verified
as usual — and a confirmation without the wizard having run fails that verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from config.state_schema import audit
from controller.upgrade.runtime import orchestrator_for
from tests.upgrade.conftest import DB_PASSWORD
from tests.upgrade.sandbox import SandboxHarness, sandbox_cluster
from tests.upgrade.test_sandbox_upgrade import DATABASE

MANUAL = {"sandbox_installer": "manual"}


def _installer(run: dict[str, Any], node: str) -> dict[str, Any]:
    return next(s for s in run["plan"] if s["action"] == "run_installer" and s["node"] == node)


async def _awaiting(h: SandboxHarness, run_id: str, node: str) -> dict[str, Any]:
    return await h.wait_step(
        run_id,
        lambda s: s["action"] == "run_installer" and s["node"] == node and s["status"] == "awaiting_operator",
        timeout=60,
    )


async def _confirm(h: SandboxHarness, run_id: str, step_id: str, note: str) -> Any:
    return await h.client.post(f"/api/v1/upgrades/{run_id}/steps/{step_id}/confirm", json={"note": note})


async def _events(h: SandboxHarness, run_id: str) -> list[dict[str, Any]]:
    return await orchestrator_for(h.app.state.ctx).store.events_after(run_id, 0, limit=5000)


async def test_manual_installers_wait_for_the_operator_then_are_verified(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        agent_settings={"crm1": MANUAL, "crm2": MANUAL},
    ) as h:
        run = await h.plan(database=DATABASE, disable_triggers=True, batch_size=2)
        assert run["blocking"] == [], run["preflight"]
        rid = run["id"]
        await h.command(rid, "start")

        # The database server's installer waits, the run with it, saying what to choose.
        step = await _awaiting(h, rid, "crm1")
        view = await h.wait(rid, "awaiting_operator")
        choices = step["result"]["choices"]
        assert any("'Upgrade Previous Version of CRM'" in c for c in choices), choices
        assert any("sql01, port 1433, SQL Server user crmsql" in c for c in choices)
        assert any("'Backup Existing Copy Of The Database, Program Files" in c for c in choices)
        assert any("Registration page" in c for c in choices)
        assert any("crmcluster disabled the triggers" in c for c in choices)
        assert "confirm" in choices[-1]
        assert DB_PASSWORD not in str(view)
        [waiting] = view["awaiting_operator"]
        assert waiting["step"] == step["id"] and waiting["choices"] == choices
        assert waiting["confirm"] == f"/api/v1/upgrades/{rid}/steps/{step['id']}/confirm"

        # Only a waiting step is confirmed.
        other = next(s for s in view["plan"] if s["action"] == "backup_database")
        refused = await _confirm(h, rid, other["id"], "nothing")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_awaiting"
        assert (await _confirm(h, rid, "no-such-step", "x")).status_code == 404

        # The person runs the wizard at crm1's console as listed, then confirms.
        await h.agents["crm1"].driver.run_wizard_by_hand()
        ok = await _confirm(h, rid, step["id"], "ran Setup.exe, backup to the default folder, registered")
        assert ok.status_code == 200, ok.text

        # crm2 ("backup is not required", not registered) waits too, while crm3 (response file)
        # in the same batch goes on by itself.
        step2 = await _awaiting(h, rid, "crm2")
        choices2 = step2["result"]["choices"]
        assert any("'Backup is not Required'" in c for c in choices2)
        assert any("do not register" in c for c in choices2)
        assert not any("triggers" in c for c in choices2)
        crm3 = _installer(view, "crm3")["id"]
        await h.wait_step(rid, lambda s: s["id"] == crm3 and s["status"] == "succeeded")
        await h.agents["crm2"].driver.run_wizard_by_hand()
        assert (await _confirm(h, rid, step2["id"], "ran it, no backup, not registered")).status_code == 200

        done = await h.wait(rid, "succeeded", "failed", "restored", "paused", timeout=90)
        assert done["status"] == "succeeded", (done["message"], [s for s in done["plan"] if s["message"]])
        assert done["awaiting_operator"] == []
        first = _installer(done, "crm1")
        assert first["status"] == "succeeded" and first["result"]["installer"] == "manual"
        assert first["result"]["version"] == "2017 R1" and first["result"]["registered"] is True
        assert "(confirmed by admin)" in first["result"]["operator_note"]
        assert not _installer(done, "crm2")["result"].get("registered")
        for name, agent in h.agents.items():
            assert (await agent.client.get("/v1/status")).json()["version"] == "2017 R1", name

        # The event stream said so; the note is in the audit trail and the checklist.
        kinds = [(e["kind"], (e["data"] or {}).get("step")) for e in await _events(h, rid)]
        assert ("awaiting_operator", step["id"]) in kinds and ("operator_confirmed", step["id"]) in kinds
        statuses = [(e["data"] or {}).get("status") for e in await _events(h, rid) if e["kind"] == "run"]
        assert "awaiting_operator" in statuses
        async with h.app.state.ctx.state_engine.connect() as conn:
            rows = (await conn.execute(select(audit).where(audit.c.action == "upgrades.confirm"))).all()
        assert [r.target for r in rows if r.result == "ok"] == [f"{rid}/{step['id']}", f"{rid}/{step2['id']}"]
        assert rows[-1].details["note"] == "ran it, no backup, not registered"
        checklist = (await h.client.get(f"/api/v1/upgrades/{rid}/checklist")).json()
        lines = {ln["action"]: ln for sec in checklist["sections"] for ln in sec["lines"]}
        installs = lines["Complete install shield upgrade to current version"]
        assert installs["status"] == "done" and "run by hand" in (installs["note"] or "")
        assert "registered (confirmed by admin)" in str(installs["evidence"])


async def test_a_confirmation_without_the_wizard_fails_the_verification(
    db_url: str, crm_db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> None:
    async with sandbox_cluster(
        db_url=db_url,
        crm_db_url=crm_db_url,
        tokens=tokens,
        secret_key=secret_key,
        tmp_path=tmp_path,
        agent_settings={"crm1": MANUAL},
    ) as h:
        run = await h.plan(database=DATABASE, failure_policy="pause")
        rid = run["id"]
        await h.command(rid, "start")
        step = await _awaiting(h, rid, "crm1")
        assert (await _confirm(h, rid, step["id"], "done (it was not)")).status_code == 200
        paused = await h.wait(rid, "paused", "succeeded", timeout=60)
        assert paused["status"] == "paused"
        failed = _installer(paused, "crm1")
        assert failed["status"] == "failed" and "was the wizard run to its end?" in failed["message"]
        # A second confirmation reaches nobody.
        assert (await _confirm(h, rid, step["id"], "again")).status_code == 409
