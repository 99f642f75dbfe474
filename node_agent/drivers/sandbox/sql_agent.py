"""The sandbox's SQL Server Agent: the jobs of the database maintenance plan, a scheduler that
runs them on the sandbox's CRM database at their times, and msdb's record of what ran.

Only the node with the ``database`` role plays it (the database server's agent creates the jobs,
as on Windows). Its msdb is a file of its own, ``<data dir>/sandbox/msdb.json`` — never a table of
the CRM database, so restoring the CRM database does not roll back the history of the backups
that allow it (as with SQL Server, where msdb is a database apart)::

    {"jobs": {name: {task, enabled, schedule, retention_days, next_run_at}},
     "history": [{job_name, task, started_at, finished_at, outcome, message, duration_s}],
     "backupset": [{kind, started_at, finished_at, size_bytes, path}]}

As SQL Server Agent does: a job fires when its next run time has come; runs missed while the
agent was away are not caught up (the next run is computed from now); a job already running is
refused by "start now" (``sp_start_job``); the history keeps the outcome of every run with its
message. :meth:`SandboxSqlAgent.tick` takes the time, so tests move the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config.maintenance_plan import BACKUP_KINDS, JOB_PREFIX, Schedule, job_name
from node_agent.drivers.base import ActionFailed, OperationContext, resolve_under
from node_agent.drivers.sandbox import database_backup
from node_agent.drivers.sandbox.maintenance_tasks import RUNNERS, TaskFailed, check_backup_rules
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.journal import atomic_write_text
from node_agent.protocol import (
    Action,
    MaintenanceJobState,
    MaintenancePlanParams,
    MaintenanceRun,
    MaintenanceStatus,
    MaintenanceTaskParams,
    NoParams,
    RestorePoint,
)
from node_agent.runner import SubprocessRunner

log = logging.getLogger("crmcluster.agent.sql_agent")

#: Folder (under the backup root) the maintenance backups are written to.
FOLDER = "maintenance"
HISTORY_KEEP = 2000


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _parse(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class SandboxSqlAgent:
    def __init__(
        self,
        host: SandboxNode,
        *,
        path: Path,
        clock: Callable[[], datetime] = _now,
        failing: frozenset[str] = frozenset(),
    ) -> None:
        self.host = host
        self.path = path
        self.clock = clock
        self.failing = set(failing)
        self._lock = asyncio.Lock()
        self._running: set[str] = set()

    # msdb --------------------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"jobs": {}, "history": [], "backupset": []}
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def save(self, msdb: dict[str, Any]) -> None:
        atomic_write_text(self.path, json.dumps(msdb, indent=1, sort_keys=True))

    @property
    def database(self) -> str:
        return self.host.install_name

    @property
    def recovery_model(self) -> str:
        return self.host.settings.sandbox_recovery_model

    # The actions ---------------------------------------------------------------------------------------
    async def apply_maintenance_plan(
        self, params: MaintenancePlanParams, ctx: OperationContext
    ) -> dict[str, Any]:
        """``sp_add_job`` … for each task (an existing job keeps its history; its step and schedule
        are replaced); crmcluster's jobs of tasks no longer in the plan are deleted."""
        async with self._lock:
            msdb = self.load()
            now = self.clock()
            jobs: dict[str, Any] = msdb.setdefault("jobs", {})
            wanted = {job_name(self.database, j.task): j for j in params.jobs}
            created: list[str] = []
            updated: list[str] = []
            deleted: list[str] = []
            for name in [n for n in jobs if n.startswith(JOB_PREFIX) and n not in wanted]:
                ctx.log(f"EXEC msdb.dbo.sp_delete_job @job_name = N'{name}'")
                del jobs[name]
                deleted.append(name)
            for name, spec in wanted.items():
                existed = name in jobs
                ctx.log(("updating " if existed else "EXEC msdb.dbo.sp_add_job ") + name)
                jobs[name] = {
                    "task": spec.task,
                    "enabled": True,
                    "schedule": spec.schedule.model_dump(mode="json"),
                    "retention_days": params.retention_days,
                    "next_run_at": _iso(spec.schedule.next_after(now)),
                }
                (updated if existed else created).append(name)
            self.save(msdb)
        return {"created": created, "updated": updated, "deleted": deleted, "database": self.database}

    async def maintenance_status(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return self.status().model_dump(mode="json")

    async def run_maintenance_task(
        self, params: MaintenanceTaskParams, ctx: OperationContext
    ) -> dict[str, Any]:
        """``sp_start_job``, then wait for the outcome: the operation fails when the job fails."""
        name = job_name(self.database, params.task)
        if name not in self.load().get("jobs", {}):
            raise ActionFailed(f"The specified @job_name ('{name}') does not exist: apply the plan first")
        if name in self._running:
            raise ActionFailed(
                f"SQLServerAgent Error: Request to run job {name} refused because the job is already running"
            )
        run = await self.run_job(name, ctx=ctx)
        if run.outcome != "succeeded":
            raise ActionFailed(f"{name}: {run.message}")
        return run.model_dump(mode="json")

    # Status ------------------------------------------------------------------------------------------
    def status(self) -> MaintenanceStatus:
        msdb = self.load()
        last: dict[str, dict[str, Any]] = {}
        for h in msdb.get("history", []):
            last[h["job_name"]] = h
        jobs = []
        for name, job in sorted(msdb.get("jobs", {}).items()):
            h = last.get(name)
            jobs.append(
                MaintenanceJobState(
                    task=job["task"],
                    job_name=name,
                    enabled=bool(job.get("enabled", True)),
                    schedule=Schedule.model_validate(job["schedule"]),
                    last_run=MaintenanceRun.model_validate(h) if h else None,
                    next_run_at=_parse(job["next_run_at"]) if job.get("next_run_at") else None,
                    running=name in self._running,
                )
            )
        points = [RestorePoint.model_validate(b) for b in reversed(msdb.get("backupset", []))]
        return MaintenanceStatus(
            database=self.database,
            recovery_model=self.recovery_model,
            agent_running=True,
            jobs=jobs,
            restore_points=points[:100],
        )

    # Running -----------------------------------------------------------------------------------------
    async def tick(self) -> list[MaintenanceRun]:
        """Run every enabled job whose time has come by the agent's clock (one after the other)."""
        moment = self.clock()
        due = sorted(
            (_parse(job["next_run_at"]), name)
            for name, job in self.load().get("jobs", {}).items()
            if job.get("enabled", True) and job.get("next_run_at") and name not in self._running
        )
        return [await self.run_job(name, scheduled=True) for at, name in due if at <= moment]

    def normalise_missed(self) -> None:
        """Runs missed while the agent was away are not caught up: their next run is from now."""
        msdb = self.load()
        now = self.clock()
        for job in msdb.get("jobs", {}).values():
            if job.get("next_run_at") and _parse(job["next_run_at"]) < now:
                job["next_run_at"] = _iso(Schedule.model_validate(job["schedule"]).next_after(now))
        self.save(msdb)

    async def run_forever(self) -> None:
        interval = self.host.settings.sandbox_sql_agent_interval
        async with self._lock:
            self.normalise_missed()
        while True:
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - the scheduler's loop: a tick never ends the agent
                log.warning("sandbox SQL Server Agent: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(interval)

    async def run_job(
        self, name: str, *, scheduled: bool = False, ctx: OperationContext | None = None
    ) -> MaintenanceRun:
        """Run one job now (a scheduled fire, or "start now"); its history entry."""
        self._running.add(name)
        try:
            async with self._lock:
                return await self._run(name, scheduled=scheduled, ctx=ctx)
        finally:
            self._running.discard(name)

    async def _run(self, name: str, *, scheduled: bool, ctx: OperationContext | None) -> MaintenanceRun:
        msdb = self.load()
        job = msdb["jobs"][name]
        task = str(job["task"])
        started = self.clock()
        op = ctx or OperationContext(
            op_id=f"sqlagent-{task}-{started:%Y%m%d%H%M%S}",
            action=Action.RUN_MAINTENANCE_TASK,
            runner=SubprocessRunner(),
        )
        outcome, message = "succeeded", ""
        try:
            if task in self.failing:
                raise TaskFailed(f"injected fault: the {task} job fails")
            message = await self._do(task, job, msdb, op, started)
        except (TaskFailed, ActionFailed, OSError) as exc:
            outcome, message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever failed the job is its history, as SQL Agent keeps it
            outcome, message = "failed", f"{type(exc).__name__}: {exc}"
        finished = self.clock()
        schedule = Schedule.model_validate(job["schedule"])
        run = MaintenanceRun(
            task=task,
            job_name=name,
            started_at=started,
            finished_at=finished,
            outcome=outcome,
            message=message[:2000],
            duration_s=max(0.0, (finished - started).total_seconds()),
        )
        history = msdb.setdefault("history", [])
        history.append(run.model_dump(mode="json"))
        del history[:-HISTORY_KEEP]
        if scheduled:  # the next run after this one (a "start now" leaves the schedule as it is)
            job["next_run_at"] = _iso(schedule.next_after(started))
        self.save(msdb)
        log.info("sandbox SQL Server Agent: %s %s: %s", name, outcome, message[:200])
        return run

    async def _do(
        self, task: str, job: dict[str, Any], msdb: dict[str, Any], ctx: OperationContext, now: datetime
    ) -> str:
        host = self.host
        if task in RUNNERS:
            return await RUNNERS[task](host.engine, host.db.tables, ctx)
        if task in BACKUP_KINDS:
            kind = BACKUP_KINDS[task]
            backupset: list[dict[str, Any]] = msdb.setdefault("backupset", [])
            check_backup_rules(
                kind, database=self.database, recovery_model=self.recovery_model, backupset=backupset
            )
            rel = f"{FOLDER}/{self.database}_{kind}_{now:%Y%m%d_%H%M%S_%f}"
            dest = resolve_under(host.backup_root, rel)
            # The job step's first statement, as on Windows: xp_create_subdir (SQL Server creates no
            # folders; BACKUP into a missing one is OS error 3).
            ctx.log(f"xp_create_subdir {FOLDER}")
            await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
            manifest = await database_backup.backup_database(host.settings.crm_url, dest, ctx)
            finished = self.clock()
            backupset.append(
                {
                    "kind": kind,
                    "started_at": _iso(now),
                    "finished_at": _iso(finished),
                    "size_bytes": int(manifest.get("bytes") or 0),
                    "path": rel,
                }
            )
            verb = "BACKUP LOG" if kind == "log" else "BACKUP DATABASE"
            return f"{verb} ({kind}) to {rel}: {manifest.get('bytes')} bytes"
        if task == "cleanup":
            return await self._cleanup(job, msdb, now)
        raise TaskFailed(f"unknown task {task}")

    async def _cleanup(self, job: dict[str, Any], msdb: dict[str, Any], now: datetime) -> str:
        """``xp_delete_file`` of backups older than the retention; backup and job history purged."""
        before = now - timedelta(days=int(job.get("retention_days") or 28))
        kept, removed = [], 0
        for b in msdb.get("backupset", []):
            if _parse(b["finished_at"]) < before:
                folder = resolve_under(self.host.backup_root, b["path"])
                await asyncio.to_thread(shutil.rmtree, folder, True)
                removed += 1
            else:
                kept.append(b)
        msdb["backupset"] = kept
        history = msdb.get("history", [])
        msdb["history"] = [h for h in history if _parse(h["started_at"]) >= before]
        purged = len(history) - len(msdb["history"])
        return f"deleted {removed} backup(s) and {purged} history row(s) older than {before:%Y-%m-%d %H:%M}"
