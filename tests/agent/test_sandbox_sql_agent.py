"""The sandbox's SQL Server Agent: the plan's jobs created through the agent's API, each task run on
the real sandbox database (SQLite and PostgreSQL), SQL Server's backup rules, the scheduler firing
jobs at their times on a clock the test moves, and msdb kept apart from the CRM database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.maintenance_plan import PlanOptions, guide_plan, job_name
from node_agent.protocol import MaintenanceStatus, OperationRecord
from node_agent.testing import SandboxAgent, running_sandbox_agent


def res(rec: OperationRecord) -> dict[str, Any]:
    assert rec.result is not None, rec.error
    return rec.result


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def plan(**options: object) -> dict[str, object]:
    o = PlanOptions.model_validate(options)
    return {
        "jobs": [{"task": t, "schedule": s.model_dump(mode="json")} for t, s in guide_plan(o).items()],
        "retention_days": o.retention_days,
    }


async def status(agent: SandboxAgent, op: str) -> MaintenanceStatus:
    rec = await agent.run(op, "maintenance_status")
    assert rec.state == "succeeded", rec.error
    return MaintenanceStatus.model_validate(rec.result)


async def test_each_task_runs_on_the_sandbox_database_and_leaves_history(db_agent: SandboxAgent) -> None:
    rec = await db_agent.run("apply-1", "apply_maintenance_plan", plan())
    assert rec.state == "succeeded", rec.error
    assert len(res(rec)["created"]) == 8  # the shrink is off by default
    # a differential needs a full backup first (SQL Server's error 3035)
    rec = await db_agent.run("run-diff-0", "run_maintenance_task", {"task": "differential_backup"})
    assert rec.state == "failed" and "Msg 3035" in (rec.error or "")
    for i, task in enumerate(
        [
            "full_backup",
            "differential_backup",
            "log_backup",
            "consistency_check",
            "reorganize_indexes",
            "rebuild_indexes",
            "update_statistics",
            "cleanup",
        ]
    ):
        rec = await db_agent.run(f"run-{i}", "run_maintenance_task", {"task": task})
        assert rec.state == "succeeded", (task, rec.error)
        assert res(rec)["outcome"] == "succeeded"
    st = await status(db_agent, "st-1")
    assert st.recovery_model == "FULL" and st.agent_running
    outcomes = {j.task: j.last_run.outcome for j in st.jobs if j.last_run}
    assert set(outcomes.values()) == {"succeeded"} and len(outcomes) == 8
    assert [p.kind for p in st.restore_points] == ["log", "differential", "full"]  # newest first
    for p in st.restore_points:
        assert (db_agent.driver.backup_root / p.path / "manifest.json").is_file()
        assert p.size_bytes and p.size_bytes > 0
    # the shrink only when asked for; jobs kept (their history too) when the plan is applied again
    rec = await db_agent.run("apply-2", "apply_maintenance_plan", plan(shrink="monthly"))
    assert res(rec)["created"] == [job_name("CRM", "shrink_database")]
    assert len(res(rec)["updated"]) == 8
    rec = await db_agent.run("run-shrink", "run_maintenance_task", {"task": "shrink_database"})
    assert rec.state == "succeeded", rec.error
    st = await status(db_agent, "st-2")
    assert all(j.last_run is not None for j in st.jobs)
    # msdb is a file apart from the CRM database
    assert (db_agent.driver.base / "msdb.json").is_file()


async def test_a_plan_off_the_database_server_is_refused(
    tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm2", data_dir=tmp_path / "crm2", crm_db_url=db_url, token=tokens["agent"], roles=["indexer"]
    ) as agent:
        rec = await agent.run("a", "apply_maintenance_plan", plan())
        assert rec.state == "failed" and "not the database server" in (rec.error or "")


async def test_log_backups_fail_in_the_simple_recovery_model_and_faults_fail_a_task(
    tmp_path: Path, db_url: str, tokens: dict[str, str]
) -> None:
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=db_url,
        token=tokens["agent"],
        roles=["database"],
        sandbox_recovery_model="SIMPLE",
        sandbox_maintenance_faults="consistency_check",
    ) as agent:
        await agent.run("a", "apply_maintenance_plan", plan())
        assert (await agent.run("f", "run_maintenance_task", {"task": "full_backup"})).state == "succeeded"
        rec = await agent.run("l", "run_maintenance_task", {"task": "log_backup"})
        assert rec.state == "failed" and "Msg 4208" in (rec.error or "")
        rec = await agent.run("c", "run_maintenance_task", {"task": "consistency_check"})
        assert rec.state == "failed" and "injected fault" in (rec.error or "")
        st = await status(agent, "s")
        failed = {j.task for j in st.jobs if j.last_run and j.last_run.outcome == "failed"}
        assert failed == {"log_backup", "consistency_check"}
        assert st.recovery_model == "SIMPLE"


async def test_the_scheduler_fires_each_job_at_its_time(db_agent: SandboxAgent) -> None:
    sql_agent = db_agent.driver.sql_agent
    wednesday = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday noon
    clock = Clock(wednesday)
    sql_agent.clock = clock
    await db_agent.run("apply", "apply_maintenance_plan", plan())
    assert await sql_agent.tick() == []  # nothing is due at noon
    nexts = {j.task: j.next_run_at for j in sql_agent.status().jobs}
    assert nexts["log_backup"] == wednesday.replace(minute=15)
    assert nexts["differential_backup"] == datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    assert nexts["full_backup"] == datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # Sunday

    # 12:15 comes: the hourly log backup runs — and fails, there is no full backup yet
    clock.now = wednesday.replace(minute=15, second=5)
    (run,) = await sql_agent.tick()
    assert run.task == "log_backup" and run.outcome == "failed" and "4214" in run.message
    assert sql_agent.status().jobs[
        [j.task for j in sql_agent.status().jobs].index("log_backup")
    ].next_run_at == (wednesday.replace(hour=13, minute=15))
    # Sunday 01:00:30: every job due since runs once, the earliest due first — Thursday's
    # differential before Sunday's full, so it fails as it would have on Thursday
    clock.now = datetime(2026, 12, 6, 1, 0, 30, tzinfo=UTC)
    runs = await sql_agent.tick()
    ran = {r.task: r for r in runs}
    assert [r.task for r in runs].index("differential_backup") < [r.task for r in runs].index("full_backup")
    assert ran["differential_backup"].outcome == "failed" and "3035" in ran["differential_backup"].message
    assert {
        "consistency_check",
        "full_backup",
        "differential_backup",
        "log_backup",
        "reorganize_indexes",
        "update_statistics",
    } <= set(ran)
    assert ran["full_backup"].outcome == "succeeded"
    nexts = {j.task: j.next_run_at for j in sql_agent.status().jobs}
    assert nexts["full_backup"] == datetime(2026, 12, 13, 1, 0, tzinfo=UTC)
    assert nexts["differential_backup"] == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)  # not on Sunday
    assert nexts["log_backup"] == datetime(2026, 12, 6, 1, 15, tzinfo=UTC)
    assert nexts["rebuild_indexes"] == datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
    # a run missed while the agent was away is not caught up: next run from now
    clock.now = datetime(2026, 12, 6, 9, 40, tzinfo=UTC)
    sql_agent.normalise_missed()
    nexts = {j.task: j.next_run_at for j in sql_agent.status().jobs}
    assert nexts["rebuild_indexes"] == datetime(2026, 12, 13, 3, 0, tzinfo=UTC)
    assert nexts["log_backup"] == datetime(2026, 12, 6, 10, 15, tzinfo=UTC)
    # the cleanup removes backups older than the retention
    clock.now += timedelta(days=40)
    before = len(sql_agent.status().restore_points)
    assert before >= 1
    rec = await db_agent.run("clean", "run_maintenance_task", {"task": "cleanup"})
    assert rec.state == "succeeded", rec.error
    assert sql_agent.status().restore_points == []
    assert "deleted" in res(rec)["message"]
