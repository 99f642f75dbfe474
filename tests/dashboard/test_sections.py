"""The sections' templates from a snapshot: the upgrade timeline, the distribution chart, escaping."""

from __future__ import annotations

from typing import Any

from controller.dashboard.feed import Snapshot, current_run
from controller.dashboard.routes import render_sections, upgrade_view


def step(sid: str, phase: str, node: str | None, action: str, status: str) -> dict[str, Any]:
    return {"id": sid, "phase": phase, "node": node, "action": action, "status": status, "message": None}


RUN = {
    "id": "r7",
    "status": "running",
    "from_version": "7.3",
    "target_version": "2017 R1",
    "message": None,
    "plan": [
        step("1", "freeze", None, "lock_out", "succeeded"),
        step("2", "freeze", "crm2", "stop_web", "succeeded"),
        step("3", "backup", "crm1", "backup_database", "running"),
        step("4", "backup", "crm2", "backup_program_files", "pending"),
        step("5", "database_server", "crm1", "run_installer", "pending"),
    ],
}


RUN_STEPS: list[dict[str, Any]] = list(RUN["plan"])  # type: ignore[arg-type]


def test_upgrade_view_is_a_timeline_of_phases_with_per_server_progress() -> None:
    view = upgrade_view(RUN)
    phases = {p["name"]: p for p in view["phases"]}
    assert list(phases) == ["freeze", "backup", "database_server"]
    assert (phases["freeze"]["done"], phases["freeze"]["total"], phases["freeze"]["status"]) == (
        2,
        2,
        "succeeded",
    )
    assert (
        phases["backup"]["status"] == "running" and phases["backup"]["running"] == "backup_database on crm1"
    )
    assert phases["database_server"]["label"] == "Upgrade the database server"
    nodes = {n["name"]: n for n in view["node_progress"]}
    assert (nodes["crm1"]["done"], nodes["crm1"]["total"]) == (0, 2)
    assert (nodes["crm2"]["done"], nodes["crm2"]["total"], nodes["crm2"]["pct"]) == (1, 2, 50)
    assert (view["done"], view["total"]) == (2, 5)


def test_upgrade_section_offers_pause_while_running_and_resume_while_paused() -> None:
    html = render_sections(Snapshot(run=RUN), actor="operator")["upgrade"]
    assert 'data-run="r7" data-status="running"' in html
    assert "/api/v1/upgrades/r7/pause" in html and "resume" not in html
    paused = render_sections(Snapshot(run=RUN | {"status": "paused"}), actor="operator")["upgrade"]
    assert "/api/v1/upgrades/r7/resume" in paused


def test_a_step_awaiting_an_operator_shows_its_choices_and_a_confirm_with_a_note() -> None:
    waiting = step("5", "database_server", "crm1", "run_installer", "awaiting_operator")
    run = RUN | {
        "status": "awaiting_operator",
        "plan": [*RUN_STEPS[:4], waiting],
        "awaiting_operator": [
            {
                "step": "5",
                "node": "crm1",
                "action": "run_installer",
                "choices": ["select 'Backup Existing Copy <of> the database'", "then confirm this step"],
            }
        ],
    }
    view = upgrade_view(run)
    assert {p["name"]: p for p in view["phases"]}["database_server"]["running"] == "run_installer on crm1"
    html = render_sections(Snapshot(run=run), actor="operator")["upgrade"]
    assert "<li>select &#39;Backup Existing Copy &lt;of&gt; the database&#39;</li>" in html
    assert 'data-url="/api/v1/upgrades/r7/steps/5/confirm"' in html and 'data-note-from="note-5"' in html
    assert 'id="note-5"' in html and "crmcluster upgrade confirm r7 5" in html
    assert "/api/v1/upgrades/r7/pause" in html  # the other lanes go on: pausing stays possible


def test_distribution_bars_are_proportional_and_show_pending_logons() -> None:
    snap = Snapshot(
        distribution=[
            {"name": "crm1", "state": "up", "logged_on": 4, "pending": 0},
            {"name": "crm2", "state": "draining", "logged_on": 2, "pending": 2},
        ],
        distribution_source="balancer",
    )
    html = render_sections(snap, actor="admin")["distribution"]
    assert 'data-node="crm1" data-logged-on="4"' in html
    assert 'width="260.0"' in html and 'width="130.0"' in html
    assert 'class="pending"' in html and "2 +2" in html


def test_everything_is_escaped() -> None:
    snap = Snapshot(
        warnings=[{"code": "x", "message": "<script>alert(1)</script>", "nodes": []}],
        audit=[
            {"at": "2026-11-28T23:00:00Z", "actor": "admin", "action": "<b>", "target": None, "result": "ok"}
        ],
    )
    sections = render_sections(snap, actor="admin")
    assert "<script>alert" not in sections["warnings"] and "&lt;script&gt;" in sections["warnings"]
    assert "<b>" not in sections["audit"]


def test_current_run_prefers_one_still_going() -> None:
    runs = [
        {"id": "a", "status": "succeeded", "created_at": "2026-11-28T23:00:00"},
        {"id": "b", "status": "paused", "created_at": "2026-11-28T22:00:00"},
    ]
    assert current_run(runs)["id"] == "b"  # type: ignore[index]
    assert current_run(runs[:1])["id"] == "a"  # type: ignore[index]
    assert current_run([]) is None


def test_latest_steps_are_listed_newest_first() -> None:
    plan = [
        {**step("1", "freeze", None, "lock_out", "succeeded"), "finished_at": "2026-11-28T23:00:01"},
        {**step("2", "freeze", "crm2", "stop_web", "failed"), "finished_at": "2026-11-28T23:00:02"},
        step("3", "backup", "crm1", "backup_database", "running"),
    ]
    view = upgrade_view(RUN | {"plan": plan})
    assert [s["id"] for s in view["recent_steps"]] == ["2", "1"]
    html = render_sections(Snapshot(run=RUN | {"plan": plan}), actor="admin")["upgrade"]
    recent = html[html.index('class="recent"') :]
    assert recent.index("stop_web") < recent.index("lock_out")
