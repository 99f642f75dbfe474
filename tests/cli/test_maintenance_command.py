"""``crmcluster maintenance …`` against a fake controller answering with a report made by the
controller's own :func:`build_report` from a msdb status."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

from config.maintenance_plan import guide_plan, job_name
from controller.maintenance.sql_agent import build_report
from node_agent.protocol import MaintenanceJobState, MaintenanceRun, MaintenanceStatus, RestorePoint
from tests.cli.fake_controller import FakeController, invoke

T = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)


def _report(*, failed: bool) -> dict[str, object]:
    jobs = []
    for task, schedule in guide_plan().items():
        outcome = "failed" if failed and task == "consistency_check" else "succeeded"
        run = MaintenanceRun(
            task=task,
            job_name=job_name("CRM", task),
            started_at=T,
            outcome=outcome,
            message="Msg 8928: Object ID 2105058535 ... could not be processed"
            if outcome == "failed"
            else "ok",
        )
        jobs.append(
            MaintenanceJobState(
                task=task,
                job_name=run.job_name,
                enabled=True,
                schedule=schedule,
                last_run=run,
                next_run_at=T.replace(hour=2),
            )
        )
    status = MaintenanceStatus(
        database="CRM",
        recovery_model="FULL",
        agent_running=True,
        jobs=jobs,
        restore_points=[
            RestorePoint(kind="full", finished_at=T, size_bytes=4_194_304, path="E:\\B\\CRM_full.bak")
        ],
    )
    return build_report("crm1", status, checked_at=T.isoformat())


def test_show_prints_each_task_and_fails_when_one_failed() -> None:
    fake = FakeController({("GET", "/api/v1/maintenance"): _report(failed=False)})
    result = invoke(fake, "maintenance", "show")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for words in (
        "Database backup - Transaction log",
        "every hour at :15",
        "every night at 01:00 except sunday",
        "succeeded",
        "Restore points",
        "CRM_full.bak",
        "4,096 KiB",
    ):
        assert words in out, words
    fake.routes[("GET", "/api/v1/maintenance")] = _report(failed=True)
    result = invoke(fake, "maintenance", "show")
    assert result.exit_code == 1
    assert "maintenance_task_failed" in result.stdout and "Msg 8928" in result.stdout
    result = invoke(fake, "maintenance", "show", "--json")
    assert json.loads(result.stdout)["database_server"] == "crm1"


def test_apply_sends_the_options_and_run_follows_the_job() -> None:
    fake = FakeController()
    fake.routes[("PUT", "/api/v1/maintenance")] = {
        "applied": {"created": ["a"] * 9, "updated": [], "deleted": []}
    } | _report(failed=False)
    result = invoke(fake, "maintenance", "apply", "--shrink", "monthly", "--retention-days", "14")
    assert result.exit_code == 0, result.stderr
    assert fake.bodies("PUT", "/api/v1/maintenance") == [
        {"shrink": "monthly", "full_backup_day": "sunday", "retention_days": 14}
    ]
    assert "jobs created: 9" in result.stdout
    job: dict[str, object] = {
        "id": "j1",
        "kind": "maintenance",
        "target": "full_backup",
        "status": "running",
        "message": None,
        "steps": [],
    }
    fake.routes[("POST", "/api/v1/maintenance/full_backup/run")] = httpx.Response(202, json=job)
    fake.routes[("GET", "/api/v1/jobs/j1")] = job | {"status": "failed", "message": "step 1 failed: Msg 3201"}
    result = invoke(fake, "maintenance", "run", "full_backup")
    assert result.exit_code == 1 and "Msg 3201" in result.stdout
    fake.routes[("GET", "/api/v1/maintenance")] = _report(failed=False)
    result = invoke(fake, "maintenance", "restore-points", "--json")
    assert json.loads(result.stdout)[0]["kind"] == "full"
