"""The windows driver's database maintenance plan: SQL Server Agent jobs created, read back and
started through T-SQL on ``msdb``, bound parameters for every value (never text pasted into a
statement), as the database server's agent runs them.

=========================== ==========================================================================
apply_maintenance_plan      for each task: ``msdb.dbo.sp_add_job`` + ``sp_add_jobstep`` (subsystem
                            TSQL, on the CRM database) + ``sp_add_jobserver``, or — the job exists —
                            ``sp_update_jobstep`` (its history kept); its schedules detached and
                            deleted, then ``sp_add_schedule`` + ``sp_attach_schedule``; crmcluster's
                            jobs of tasks no longer planned: ``sp_delete_job``
maintenance_status          ``msdb.dbo.sysjobs`` + ``sysjobschedules``/``sysschedules`` (schedule,
                            next run) + the newest ``sysjobhistory`` outcome row (``step_id = 0``) +
                            ``sysjobactivity`` (running now); ``sys.databases.recovery_model_desc``;
                            ``sys.dm_server_services`` (is SQL Server Agent running);
                            ``msdb.dbo.backupset`` ⨝ ``backupmediafamily`` (restore points)
run_maintenance_task        ``msdb.dbo.sp_start_job``, then ``sysjobhistory`` polled until the run's
                            outcome row appears
=========================== ==========================================================================

The job steps' T-SQL (:func:`step_command`): ``DBCC CHECKDB``, ``DBCC SHRINKDATABASE``,
``ALTER INDEX ALL … REORGANIZE|REBUILD`` over every user table, ``sp_updatestats``,
``BACKUP DATABASE … [WITH DIFFERENTIAL]`` / ``BACKUP LOG`` to a time-stamped file in
``<CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR>\\maintenance`` with ``CHECKSUM``, and the clean-up's
``xp_delete_file`` + ``sp_delete_backuphistory`` + ``sp_purge_jobhistory``. The database name and
folder are the only values inside a step's text (SQL Server keeps the text and runs it later, so
they cannot be bound): the name is a quoted identifier, the folder an ``N'…'`` literal, both built
by functions that double their quote characters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any, Protocol

from config.maintenance_plan import AGENT_DAY_BITS, BACKUP_KINDS, JOB_PREFIX, WEEKDAYS, Schedule, job_name
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows_sql import SqlExecutor
from node_agent.protocol import (
    MaintenanceJobState,
    MaintenancePlanParams,
    MaintenanceRun,
    MaintenanceStatus,
    MaintenanceTaskParams,
    NoParams,
    RestorePoint,
)

MSDB = "msdb"
OUTCOMES = {0: "failed", 1: "succeeded", 2: "retry", 3: "cancelled", 4: "running"}
BACKUP_TYPES = {"D": "full", "I": "differential", "L": "log"}


class SqlServer(Protocol):
    """What the maintenance plan needs of :class:`~node_agent.drivers.windows.WindowsDriver`."""

    poll: float

    @property
    def sql(self) -> SqlExecutor: ...
    @property
    def database(self) -> str: ...
    @property
    def sql_backup_dir(self) -> PureWindowsPath: ...


def ident(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def literal(value: str) -> str:
    return "N'" + value.replace("'", "''") + "'"


def _like(prefix: str) -> str:
    return "".join("\\" + c if c in "%_[\\" else c for c in prefix) + "%"


# Job steps -------------------------------------------------------------------------------------------
_EACH_TABLE = """DECLARE @sql nvarchar(max) = N'';
SELECT @sql += N'ALTER INDEX ALL ON ' + QUOTENAME(s.name) + N'.' + QUOTENAME(t.name) + N' {verb};'
FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id WHERE t.is_ms_shipped = 0;
EXEC sys.sp_executesql @sql;"""


def step_command(task: str, *, database: str, folder: str, retention_days: int) -> str:
    """The T-SQL a task's job step runs (kept by SQL Server Agent, run at the scheduled time)."""
    db = ident(database)
    if task == "consistency_check":
        return f"DBCC CHECKDB ({literal(database)}) WITH NO_INFOMSGS, ALL_ERRORMSGS;"
    if task == "shrink_database":
        return f"DBCC SHRINKDATABASE ({literal(database)}, 10);"
    if task == "reorganize_indexes":
        return _EACH_TABLE.format(verb="REORGANIZE")
    if task == "rebuild_indexes":
        return _EACH_TABLE.format(verb="REBUILD")
    if task == "update_statistics":
        return "EXEC sys.sp_updatestats;"
    if task in BACKUP_KINDS:
        kind = BACKUP_KINDS[task]
        ext = "trn" if kind == "log" else "bak"
        name = literal(job_name(database, task))
        head = (
            # SQL Server creates no folders (a missing one is OS error 3): the step makes its own.
            f"EXEC master.sys.xp_create_subdir {literal(folder)};\n"
            f"DECLARE @file nvarchar(400) = {literal(folder + chr(92) + database + '_' + kind + '_')}"
            f" + FORMAT(SYSDATETIME(), N'yyyyMMdd_HHmmss') + N'.{ext}';\n"
        )
        if kind == "log":
            return head + f"BACKUP LOG {db} TO DISK = @file WITH CHECKSUM, INIT, NAME = {name};"
        diff = "DIFFERENTIAL, " if kind == "differential" else ""
        return head + f"BACKUP DATABASE {db} TO DISK = @file WITH {diff}CHECKSUM, INIT, NAME = {name};"
    if task == "cleanup":
        d = literal(folder + "\\")
        return (
            f"DECLARE @before datetime = DATEADD(day, -{int(retention_days)}, GETDATE());\n"
            f"EXEC master.dbo.xp_delete_file 0, {d}, N'bak', @before, 0;\n"
            f"EXEC master.dbo.xp_delete_file 0, {d}, N'trn', @before, 0;\n"
            "EXEC msdb.dbo.sp_delete_backuphistory @oldest_date = @before;\n"
            "EXEC msdb.dbo.sp_purge_jobhistory @oldest_date = @before;"
        )
    raise ActionFailed(f"unknown maintenance task {task}")


# Schedules ---------------------------------------------------------------------------------------------
def agent_schedule(s: Schedule) -> dict[str, int]:
    """``sp_add_schedule``'s arguments for a schedule."""
    start = s.hour * 10000 + s.minute * 100
    base = {"freq_subday_type": 1, "freq_subday_interval": 0, "freq_recurrence_factor": 0}
    if s.every == "hour":
        return base | {
            "freq_type": 4,
            "freq_interval": 1,
            "freq_subday_type": 8,
            "freq_subday_interval": 1,
            "active_start_time": s.minute * 100,
        }
    if s.every == "month":
        return base | {
            "freq_type": 16,
            "freq_interval": int(s.day_of_month or 1),
            "freq_recurrence_factor": 1,
            "active_start_time": start,
        }
    if s.every == "day" and (s.days is None or len(s.days) == 7):
        return base | {"freq_type": 4, "freq_interval": 1, "active_start_time": start}
    mask = sum(AGENT_DAY_BITS[d] for d in (s.days or ()))
    return base | {
        "freq_type": 8,
        "freq_interval": mask,
        "freq_recurrence_factor": 1,
        "active_start_time": start,
    }


def schedule_from_agent(
    freq_type: int | None, freq_interval: int | None, subday_type: int | None, start: int | None
) -> Schedule | None:
    """The schedule back from ``msdb.dbo.sysschedules`` (None for one crmcluster did not write)."""
    if freq_type is None or start is None:
        return None
    hh, mm = divmod(int(start) // 100, 100)
    at = f"{hh:02d}:{mm:02d}"
    try:
        if freq_type == 4 and subday_type == 8:
            return Schedule(every="hour", at=f"00:{mm:02d}")
        if freq_type == 4:
            return Schedule(every="day", at=at)
        if freq_type == 16:
            return Schedule(every="month", at=at, day_of_month=int(freq_interval or 1))
        if freq_type == 8:
            days = tuple(d for d in WEEKDAYS if int(freq_interval or 0) & AGENT_DAY_BITS[d])
            if len(days) == 1:
                return Schedule(every="week", at=at, days=days)
            return Schedule(every="day", at=at, days=days)
    except ValueError:
        return None
    return None


def agent_time(run_date: int | None, run_time: int | None) -> datetime | None:
    """msdb's ``YYYYMMDD`` + ``HHMMSS`` integers (the server's clock) as a datetime."""
    if not run_date:
        return None
    d = int(run_date)
    t = int(run_time or 0)
    return datetime(d // 10000, d // 100 % 100, d % 100, t // 10000, t // 100 % 100, t % 100, tzinfo=UTC)


def agent_duration(value: int | None) -> float | None:
    if value is None:
        return None
    v = int(value)
    return float(v // 10000 * 3600 + v // 100 % 100 * 60 + v % 100)


# T-SQL the actions run ---------------------------------------------------------------------------------
JOB_EXISTS_SQL = "SELECT job_id FROM msdb.dbo.sysjobs WHERE name = ?"
OUR_JOBS_SQL = "SELECT name FROM msdb.dbo.sysjobs WHERE name LIKE ? ESCAPE N'\\'"
ADD_JOB_SQL = (
    "EXEC msdb.dbo.sp_add_job @job_name = ?, @enabled = 1, @description = ?, "
    "@category_name = N'Database Maintenance'"
)
ADD_STEP_SQL = (
    "EXEC msdb.dbo.sp_add_jobstep @job_name = ?, @step_name = ?, @subsystem = N'TSQL', "
    "@database_name = ?, @command = ?, @on_success_action = 1, @on_fail_action = 2"
)
UPDATE_STEP_SQL = (
    "EXEC msdb.dbo.sp_update_jobstep @job_name = ?, @step_id = 1, @database_name = ?, @command = ?"
)
ADD_SERVER_SQL = "EXEC msdb.dbo.sp_add_jobserver @job_name = ?, @server_name = N'(local)'"
JOB_SCHEDULES_SQL = (
    "SELECT s.name FROM msdb.dbo.sysjobschedules AS js "
    "JOIN msdb.dbo.sysschedules AS s ON s.schedule_id = js.schedule_id "
    "JOIN msdb.dbo.sysjobs AS j ON j.job_id = js.job_id WHERE j.name = ?"
)
DETACH_SCHEDULE_SQL = (
    "EXEC msdb.dbo.sp_detach_schedule @job_name = ?, @schedule_name = ?, @delete_unused_schedule = 1"
)
ADD_SCHEDULE_SQL = (
    "EXEC msdb.dbo.sp_add_schedule @schedule_name = ?, @enabled = 1, @freq_type = ?, @freq_interval = ?, "
    "@freq_subday_type = ?, @freq_subday_interval = ?, @freq_recurrence_factor = ?, @active_start_time = ?"
)
ATTACH_SCHEDULE_SQL = "EXEC msdb.dbo.sp_attach_schedule @job_name = ?, @schedule_name = ?"
DELETE_JOB_SQL = "EXEC msdb.dbo.sp_delete_job @job_name = ?, @delete_unused_schedule = 1"
STATUS_SQL = """SELECT j.name, j.enabled,
       s.freq_type, s.freq_interval, s.freq_subday_type, s.active_start_time,
       js.next_run_date, js.next_run_time,
       h.run_status, h.run_date, h.run_time, h.run_duration, h.message,
       CASE WHEN a.start_execution_date IS NOT NULL AND a.stop_execution_date IS NULL THEN 1 ELSE 0 END
FROM msdb.dbo.sysjobs AS j
LEFT JOIN msdb.dbo.sysjobschedules AS js ON js.job_id = j.job_id
LEFT JOIN msdb.dbo.sysschedules AS s ON s.schedule_id = js.schedule_id
OUTER APPLY (SELECT TOP (1) x.run_status, x.run_date, x.run_time, x.run_duration, x.message
             FROM msdb.dbo.sysjobhistory AS x WHERE x.job_id = j.job_id AND x.step_id = 0
             ORDER BY x.instance_id DESC) AS h
OUTER APPLY (SELECT TOP (1) y.start_execution_date, y.stop_execution_date FROM msdb.dbo.sysjobactivity AS y
             WHERE y.job_id = j.job_id ORDER BY y.session_id DESC) AS a
WHERE j.name LIKE ? ESCAPE N'\\'
ORDER BY j.name"""
RECOVERY_MODEL_SQL = "SELECT recovery_model_desc FROM sys.databases WHERE name = ?"
AGENT_SERVICE_SQL = (
    "SELECT status_desc FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server Agent%'"
)
RESTORE_POINTS_SQL = """SELECT TOP (100) b.type, b.backup_start_date, b.backup_finish_date, b.backup_size,
       m.physical_device_name
FROM msdb.dbo.backupset AS b JOIN msdb.dbo.backupmediafamily AS m ON m.media_set_id = b.media_set_id
WHERE b.database_name = ? ORDER BY b.backup_finish_date DESC"""
START_JOB_SQL = "EXEC msdb.dbo.sp_start_job @job_name = ?"
LAST_RUN_SQL = """SELECT TOP (1) h.instance_id, h.run_status, h.run_date, h.run_time, h.run_duration,
       h.message
FROM msdb.dbo.sysjobhistory AS h JOIN msdb.dbo.sysjobs AS j ON j.job_id = h.job_id
WHERE j.name = ? AND h.step_id = 0 ORDER BY h.instance_id DESC"""


class WindowsMaintenance:
    """The three maintenance actions of the windows driver."""

    def __init__(self, server: SqlServer, *, run_timeout: float = 6 * 3600) -> None:
        self.s = server
        self.run_timeout = run_timeout

    @property
    def folder(self) -> str:
        base = str(self.s.sql_backup_dir)
        if not base or base == ".":
            raise ActionFailed(
                "set CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR: where SQL Server writes the plan's backups"
            )
        return str(self.s.sql_backup_dir / "maintenance")

    async def _sql(self, ctx: OperationContext | None, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if ctx is not None:
            ctx.log(f"[{MSDB}] " + " ".join(sql.split())[:400])
        return list(await self.s.sql.execute(sql, tuple(params), database=MSDB))

    async def apply_maintenance_plan(
        self, params: MaintenancePlanParams, ctx: OperationContext
    ) -> dict[str, Any]:
        db = self.s.database
        folder = self.folder
        wanted = {job_name(db, j.task): j for j in params.jobs}
        created, updated, deleted = [], [], []
        for (name,) in await self._sql(ctx, OUR_JOBS_SQL, (_like(f"{JOB_PREFIX}{db} "),)):
            if name not in wanted:
                await self._sql(ctx, DELETE_JOB_SQL, (name,))
                deleted.append(str(name))
        for name, spec in wanted.items():
            command = step_command(
                spec.task, database=db, folder=folder, retention_days=params.retention_days
            )
            exists = await self._sql(ctx, JOB_EXISTS_SQL, (name,))
            if exists:
                await self._sql(ctx, UPDATE_STEP_SQL, (name, db, command))
                for (sched,) in await self._sql(ctx, JOB_SCHEDULES_SQL, (name,)):
                    await self._sql(ctx, DETACH_SCHEDULE_SQL, (name, sched))
                updated.append(name)
            else:
                description = (
                    f"The guide's database maintenance plan: {spec.task} ({spec.schedule.describe()})"
                )
                await self._sql(ctx, ADD_JOB_SQL, (name, description))
                await self._sql(ctx, ADD_STEP_SQL, (name, spec.task, db, command))
                await self._sql(ctx, ADD_SERVER_SQL, (name,))
                created.append(name)
            a = agent_schedule(spec.schedule)
            await self._sql(
                ctx,
                ADD_SCHEDULE_SQL,
                (
                    name,
                    a["freq_type"],
                    a["freq_interval"],
                    a["freq_subday_type"],
                    a["freq_subday_interval"],
                    a["freq_recurrence_factor"],
                    a["active_start_time"],
                ),
            )
            await self._sql(ctx, ATTACH_SCHEDULE_SQL, (name, name))
        return {"created": created, "updated": updated, "deleted": deleted, "database": db, "folder": folder}

    async def _status(self, ctx: OperationContext | None) -> MaintenanceStatus:
        db = self.s.database
        prefix = f"{JOB_PREFIX}{db} "
        rows = await self._sql(ctx, STATUS_SQL, (_like(prefix),))
        jobs = []
        for name, enabled, ftype, finterval, subday, start, nd, nt, rs, rd, rt, dur, msg, running in rows:
            task = str(name)[len(prefix) :]
            last = None
            if rs is not None and rd:
                started = agent_time(rd, rt)
                assert started is not None
                seconds = agent_duration(dur)
                last = MaintenanceRun(
                    task=task,
                    job_name=str(name),
                    started_at=started,
                    finished_at=None,
                    outcome=OUTCOMES.get(int(rs), "failed"),
                    message=str(msg or ""),
                    duration_s=seconds,
                )
            try:
                jobs.append(
                    MaintenanceJobState(
                        task=task,
                        job_name=str(name),
                        enabled=bool(enabled),
                        schedule=schedule_from_agent(ftype, finterval, subday, start),
                        last_run=last,
                        next_run_at=agent_time(nd, nt),
                        running=bool(running),
                    )
                )
            except ValueError:
                continue  # a job named like ours that is not one of the plan's tasks
        recovery = await self.s.sql.execute(RECOVERY_MODEL_SQL, (db,), database="master")
        try:
            agent = await self.s.sql.execute(AGENT_SERVICE_SQL, (), database="master")
            agent_running: bool | None = bool(agent) and str(agent[0][0]).lower() == "running"
        except ActionFailed:
            agent_running = None  # VIEW SERVER STATE not granted
        points = [
            RestorePoint(
                kind=BACKUP_TYPES.get(str(t), "full"),
                started_at=_aware(st),
                finished_at=_aware(fin) or datetime.now(UTC),
                size_bytes=int(size) if size is not None else None,
                path=str(path),
            )
            for t, st, fin, size, path in await self._sql(ctx, RESTORE_POINTS_SQL, (db,))
            if str(t) in BACKUP_TYPES
        ]
        return MaintenanceStatus(
            database=db,
            recovery_model=str(recovery[0][0]) if recovery else None,
            agent_running=agent_running,
            jobs=jobs,
            restore_points=points,
        )

    async def maintenance_status(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return (await self._status(ctx)).model_dump(mode="json")

    async def run_maintenance_task(
        self, params: MaintenanceTaskParams, ctx: OperationContext
    ) -> dict[str, Any]:
        name = job_name(self.s.database, params.task)
        before = await self._sql(ctx, LAST_RUN_SQL, (name,))
        last_id = int(before[0][0]) if before else 0
        await self._sql(ctx, START_JOB_SQL, (name,))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.run_timeout
        while True:
            rows = await self._sql(None, LAST_RUN_SQL, (name,))
            if rows and int(rows[0][0]) > last_id:
                _, rs, rd, rt, dur, msg = rows[0]
                started = agent_time(rd, rt) or datetime.now(UTC)
                run = MaintenanceRun(
                    task=params.task,
                    job_name=name,
                    started_at=started,
                    outcome=OUTCOMES.get(int(rs), "failed"),
                    message=str(msg or ""),
                    duration_s=agent_duration(dur),
                )
                if run.outcome != "succeeded":
                    raise ActionFailed(f"{name} {run.outcome}: {run.message}")
                return run.model_dump(mode="json")
            if loop.time() >= deadline:
                raise ActionFailed(f"{name} has not finished after {self.run_timeout:.0f}s")
            await asyncio.sleep(max(self.s.poll, 0.01))


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
