"""The guide's database maintenance plan end to end: the controller creates SQL Server Agent jobs
through the database server's sandbox agent, runs each task on the sandbox database, reads the
history and restore points back from msdb, and shows failures in its metrics and dashboard."""

from __future__ import annotations

from typing import Any

import httpx

from tests.controller.conftest import Cluster


async def _run(cluster: Cluster, task: str) -> dict[str, Any]:
    r = await cluster.client.post(f"/api/v1/maintenance/{task}/run")
    assert r.status_code == 202, r.text
    return await cluster.wait_job(r.json()["id"], timeout=60)


async def test_the_plan_in_sql_server_agent_each_task_run_and_its_history(cluster: Cluster) -> None:
    c = cluster.client
    before = (await c.get("/api/v1/maintenance")).json()
    assert before["database_server"] == "crm1"
    assert [w["code"] for w in before["warnings"]] == ["maintenance_not_set_up"]
    assert {t["schedule_text"] for t in before["tasks"]} == {"not scheduled"}

    r = await c.put("/api/v1/maintenance", json={"retention_days": 14})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["applied"]["created"]) == 8
    tasks = {t["task"]: t for t in body["tasks"]}
    assert tasks["log_backup"]["schedule_text"] == "every hour at :15"
    assert tasks["differential_backup"]["schedule_text"] == "every night at 01:00 except sunday"
    assert tasks["full_backup"]["guide"] == "Weekly" and tasks["full_backup"]["next_run_at"]
    assert not tasks["shrink_database"]["scheduled"]
    assert {w["code"] for w in body["warnings"]} == {"maintenance_no_full_backup"}

    # a differential before any full backup fails as SQL Server says; the failure shows everywhere
    job = await _run(cluster, "differential_backup")
    assert job["status"] == "failed" and "3035" in job["message"]
    report = (await c.get("/api/v1/maintenance")).json()
    diff = next(t for t in report["tasks"] if t["task"] == "differential_backup")
    assert diff["last_outcome"] == "failed" and "3035" in diff["last_message"]
    assert "maintenance_task_failed" in {w["code"] for w in report["warnings"]}
    metrics = (await c.get("/metrics")).text
    assert 'crmcluster_controller_maintenance_last_success{task="differential_backup"} 0.0' in metrics
    assert "crmcluster_controller_maintenance_failing_tasks 1.0" in metrics
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cluster.h.app), base_url="http://c"
    ) as web:
        assert (await web.get("/", params={"token": cluster.h.tokens["admin"]})).status_code == 303
        page = (await web.get("/dashboard/fragments")).json()["sections"]["maintenance"]
    assert 'class="task-differential_backup result-failed"' in page
    assert "Database backup - Differential" in page and "3035" in page

    # every task once, the full first: all succeed, restore points listed
    for task in (
        "full_backup",
        "differential_backup",
        "log_backup",
        "consistency_check",
        "reorganize_indexes",
        "rebuild_indexes",
        "update_statistics",
        "cleanup",
    ):
        job = await _run(cluster, task)
        assert job["status"] == "succeeded", (task, job["message"])
    report = (await c.get("/api/v1/maintenance")).json()
    assert {t["last_outcome"] for t in report["tasks"] if t["scheduled"]} == {"succeeded"}
    assert [p["kind"] for p in report["restore_points"]] == ["log", "differential", "full"]
    assert report["warnings"] == []
    metrics = (await c.get("/metrics")).text
    assert "crmcluster_controller_maintenance_failing_tasks 0.0" in metrics
    assert 'crmcluster_controller_restore_points{kind="full"} 1.0' in metrics

    # the monthly shrink, asked for: the guide's warning comes with it; other jobs keep their history
    r = await c.put("/api/v1/maintenance", json={"shrink": "monthly"})
    assert r.json()["applied"]["created"] == ["crmcluster maintenance: CRM shrink_database"]
    assert "maintenance_shrink" in {w["code"] for w in r.json()["warnings"]}
    assert next(t for t in r.json()["tasks"] if t["task"] == "full_backup")["last_outcome"] == "succeeded"
    assert (await _run(cluster, "shrink_database"))["status"] == "succeeded"
    # the audit has both applies and the runs
    actions = [e["action"] for e in (await c.get("/api/v1/audit")).json()["entries"]]
    assert actions.count("maintenance.apply") == 2 and "maintenance.run" in actions


async def test_bad_requests(cluster: Cluster) -> None:
    c = cluster.client
    r = await c.post("/api/v1/maintenance/defragment/run")
    assert r.status_code == 422 and "no maintenance task" in r.json()["error"]["message"]
    r = await c.put("/api/v1/maintenance", json={"shrink": "weekly"})
    assert r.status_code == 422
    r = await c.put("/api/v1/maintenance", json={"retention_days": 0})
    assert r.status_code == 422
    r = await c.post("/api/v1/maintenance/full_backup/run")
    assert r.status_code == 202  # not applied yet: the job fails saying so
    job = await cluster.wait_job(r.json()["id"])
    assert job["status"] == "failed" and "apply the plan first" in job["message"]
    plan = (await c.get("/api/v1/maintenance/plan", params={"shrink": "monthly"})).json()
    assert len(plan["jobs"]) == 9
    cluster.switches["crm1"].down = True
    r = await c.get("/api/v1/maintenance")
    assert r.status_code == 503 and r.json()["error"]["code"] == "agent_unavailable"
