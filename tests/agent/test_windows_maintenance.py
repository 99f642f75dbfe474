"""The windows driver's maintenance plan on Linux: the T-SQL it sends to msdb, recorded, and
SQL Server Agent's answers read back (a recording SQL Server answers from scripted rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from config.maintenance_plan import PlanOptions, guide_plan
from config.settings import AgentSettings
from node_agent.app import create_app
from node_agent.drivers import windows_sql as tsql
from node_agent.drivers.windows import WindowsDriver
from node_agent.drivers.windows_maintenance import step_command
from node_agent.operations import OperationManager
from node_agent.protocol import Action, MaintenanceStatus, OperationRecord, parse_params
from node_agent.runner import RecordingRunner
from tests.agent.test_windows_driver import DB_URL, SQL_DIR


def res(rec: OperationRecord) -> dict[str, Any]:
    assert rec.result is not None, rec.error
    return rec.result


@dataclass
class Win:
    ops: OperationManager
    sql: tsql.RecordingSql

    async def run(self, op_id: str, action: str, params: dict[str, Any] | None = None) -> OperationRecord:
        self.ops.submit(op_id, Action(action), parse_params(action, params or {}))
        return await self.ops.wait(op_id)

    def statements(self) -> list[str]:
        return [" ".join(sql.split()) for _db, sql, _p in self.sql.calls]


@pytest.fixture
async def win(tmp_path: Path, tokens: dict[str, str]) -> AsyncIterator[Win]:
    settings = AgentSettings(
        _env_file=None,
        agent_token=tokens["agent"],
        name="crm1",
        driver="windows",
        data_dir=tmp_path / "data",
        crm_db_url=DB_URL,
        backup_root=str(tmp_path / "backups"),
        windows_programs_root=str(tmp_path / "Sage"),
        windows_sql_backup_dir=SQL_DIR,
    )
    runner = RecordingRunner()
    sql = tsql.RecordingSql()
    driver = WindowsDriver(settings, runner=runner, sql=sql, poll=0)
    app = create_app(settings, driver=driver, runner=runner, background=False)
    async with app.router.lifespan_context(app):
        yield Win(app.state.operations, sql)


def _plan() -> dict[str, Any]:
    return {
        "jobs": [{"task": t, "schedule": s.model_dump(mode="json")} for t, s in guide_plan().items()],
        "retention_days": 14,
    }


async def test_apply_creates_sql_server_agent_jobs_with_bound_values(win: Win) -> None:
    rec = await win.run("a1", "apply_maintenance_plan", _plan())
    assert rec.state == "succeeded", rec.error
    assert len(res(rec)["created"]) == 8
    calls = win.sql.calls
    assert all(db == "msdb" for db, _s, _p in calls)
    full = "crmcluster maintenance: CRM full_backup"
    by_sql = [(" ".join(s.split()), p) for _d, s, p in calls if full in p]
    verbs = [s.split(" @")[0] for s, _p in by_sql]
    assert verbs == [
        "SELECT job_id FROM msdb.dbo.sysjobs WHERE name = ?",
        "EXEC msdb.dbo.sp_add_job",
        "EXEC msdb.dbo.sp_add_jobstep",
        "EXEC msdb.dbo.sp_add_jobserver",
        "EXEC msdb.dbo.sp_add_schedule",
        "EXEC msdb.dbo.sp_attach_schedule",
    ]
    step = next(p for s, p in by_sql if s.startswith("EXEC msdb.dbo.sp_add_jobstep"))
    assert step[1:3] == ("full_backup", "CRM")
    assert "BACKUP DATABASE [CRM] TO DISK = @file WITH CHECKSUM, INIT" in step[3]
    assert "E:\\SQLBackups\\maintenance\\CRM_full_" in step[3]
    sched = next(p for s, p in by_sql if s.startswith("EXEC msdb.dbo.sp_add_schedule"))
    assert sched == (full, 8, 1, 1, 0, 1, 10000)  # weekly, Sunday, at 01:00:00
    # no value is ever pasted into a statement's own text
    assert not any("crmcluster maintenance:" in s for s in win.statements())


async def test_applying_again_keeps_each_job_and_its_history(win: Win) -> None:
    name = "crmcluster maintenance: CRM log_backup"
    win.sql.answers["SELECT job_id FROM msdb.dbo.sysjobs WHERE name"] = [("9F1C",)]
    win.sql.answers["SELECT s.name FROM msdb.dbo.sysjobschedules"] = [(name,)]
    win.sql.answers["SELECT name FROM msdb.dbo.sysjobs WHERE name LIKE"] = [
        (name,),
        ("crmcluster maintenance: CRM shrink_database",),
    ]
    rec = await win.run("a2", "apply_maintenance_plan", _plan())
    assert rec.state == "succeeded", rec.error
    assert res(rec)["deleted"] == ["crmcluster maintenance: CRM shrink_database"]
    assert len(res(rec)["updated"]) == 8 and res(rec)["created"] == []
    stmts = win.statements()
    assert not any(s.startswith("EXEC msdb.dbo.sp_add_job ") for s in stmts)
    assert any(s.startswith("EXEC msdb.dbo.sp_update_jobstep") for s in stmts)
    assert any(s.startswith("EXEC msdb.dbo.sp_detach_schedule") for s in stmts)
    assert any(s.startswith("EXEC msdb.dbo.sp_delete_job") for s in stmts)
    like = next(p for _d, s, p in win.sql.calls if "LIKE" in s)
    assert like == ("crmcluster maintenance: CRM %",)


async def test_status_reads_jobs_history_recovery_model_and_restore_points(win: Win) -> None:
    win.sql.answers["FROM msdb.dbo.sysjobs AS j"] = [
        # name, enabled, freq_type, freq_interval, subday_type, start, next date/time,
        # run_status, run_date, run_time, run_duration, message, running
        (
            "crmcluster maintenance: CRM full_backup",
            1,
            8,
            1,
            1,
            10000,
            20261206,
            10000,
            1,
            20261129,
            10000,
            112,
            "The job succeeded.",
            0,
        ),
        (
            "crmcluster maintenance: CRM log_backup",
            1,
            4,
            1,
            8,
            1500,
            20261202,
            131500,
            0,
            20261202,
            121500,
            3,
            "BACKUP LOG is terminating abnormally.",
            0,
        ),
        (
            "crmcluster maintenance: CRM consistency_check",
            1,
            8,
            1,
            1,
            3000,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            1,
        ),
    ]
    win.sql.answers["recovery_model_desc"] = [("FULL",)]
    win.sql.answers["sys.dm_server_services"] = [("Running",)]
    win.sql.answers["msdb.dbo.backupset"] = [
        (
            "L",
            datetime(2026, 12, 2, 11, 15),
            datetime(2026, 12, 2, 11, 15, 2),
            81920,
            r"E:\SQLBackups\maintenance\CRM_log_20261202_111500.trn",
        ),
        (
            "D",
            datetime(2026, 11, 29, 1, 0),
            datetime(2026, 11, 29, 1, 1, 52),
            4_194_304,
            r"E:\SQLBackups\maintenance\CRM_full_20261129_010000.bak",
        ),
    ]
    rec = await win.run("s1", "maintenance_status")
    assert rec.state == "succeeded", rec.error
    st = MaintenanceStatus.model_validate(rec.result)
    jobs = {j.task: j for j in st.jobs}
    full_run, log_run = jobs["full_backup"].last_run, jobs["log_backup"].last_run
    assert full_run is not None and log_run is not None
    assert jobs["full_backup"].schedule == guide_plan()["full_backup"]
    assert full_run.outcome == "succeeded"
    assert full_run.duration_s == 72.0
    assert jobs["full_backup"].next_run_at == datetime.fromisoformat("2026-12-06T01:00:00+00:00")
    assert log_run.outcome == "failed"
    assert "abnormally" in log_run.message
    assert jobs["consistency_check"].running and jobs["consistency_check"].last_run is None
    assert [p.kind for p in st.restore_points] == ["log", "full"]
    assert st.recovery_model == "FULL" and st.agent_running is True


async def test_run_starts_the_job_and_waits_for_its_outcome_row(win: Win) -> None:
    polls = iter(
        [
            [(41, 1, 20261129, 10000, 112, "old run")],
            [(41, 1, 20261129, 10000, 112, "old run")],
            [(42, 0, 20261202, 143000, 5, "Msg 3035: Cannot perform a differential backup")],
        ]
    )
    win.sql.answers["FROM msdb.dbo.sysjobhistory AS h"] = lambda _p: next(polls)
    rec = await win.run("r1", "run_maintenance_task", {"task": "differential_backup"})
    assert rec.state == "failed"
    assert "Msg 3035" in (rec.error or "")
    assert any(s.startswith("EXEC msdb.dbo.sp_start_job @job_name = ?") for s in win.statements())


def test_step_commands_quote_what_they_embed() -> None:
    cmd = step_command("full_backup", database="CR]M", folder="E:\\O'Brien", retention_days=7)
    assert "BACKUP DATABASE [CR]]M]" in cmd and "N'E:\\O''Brien\\CR]M_full_'" in cmd
    assert "DBCC CHECKDB (N'CRM')" in step_command(
        "consistency_check", database="CRM", folder="x", retention_days=1
    )
    clean = step_command("cleanup", database="CRM", folder="E:\\B", retention_days=28)
    assert "DATEADD(day, -28, GETDATE())" in clean and "sp_purge_jobhistory" in clean
    assert "WITH DIFFERENTIAL, CHECKSUM" in step_command(
        "differential_backup", database="CRM", folder="x", retention_days=1
    )
    assert "BACKUP LOG [CRM]" in step_command("log_backup", database="CRM", folder="x", retention_days=1)
    assert PlanOptions().shrink == "never"
