"""The maintenance plan through the database server's agent: the guide's plan applied as SQL Server
Agent jobs, their state read back from msdb, a task started now, and the report made of them.

The truth is in msdb (the jobs, their schedules, their history, the backups SQL Server recorded),
never in the controller: every answer is read back through the agent, so a job changed or run by
hand in SQL Server Management Studio shows as it is. The last report is kept on the context
(``ctx.maintenance_report``) for the dashboard and the metrics, refreshed by :func:`watch`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from config.errors import DatabaseUnavailable
from config.maintenance_plan import GUIDE_TABLE, TASKS, PlanOptions, guide_plan
from controller.context import ControllerContext
from controller.errors import AgentsUnavailable, ClusterBusy, ControllerError, InvalidChange
from controller.jobs.runner import agent_step, new_op_id, run_agent_op, run_steps
from controller.jobs.store import StepError
from controller.registry.nodes import NodeRecord
from node_agent.protocol import (
    Action,
    MaintenanceJobSpec,
    MaintenancePlanParams,
    MaintenancePlanResult,
    MaintenanceStatus,
    MaintenanceTaskParams,
    OperationRecord,
)

log = logging.getLogger("crmcluster.controller.maintenance")


async def database_server(ctx: ControllerContext) -> NodeRecord:
    """The node holding the database: its agent talks to SQL Server (and SQL Server Agent)."""
    for node in await ctx.registry.list_nodes():
        if node.is_database:
            if not node.agent_url:
                raise AgentsUnavailable(f"the database server {node.name} has no agent URL")
            return node
    raise ClusterBusy("no database server is registered: the maintenance plan is kept through its agent")


async def _op(
    ctx: ControllerContext, node: NodeRecord, action: Action, params: Any = None
) -> OperationRecord:
    try:
        return await run_agent_op(ctx, node, action, params, op_id=new_op_id(action.value))
    except StepError as exc:
        if "did not answer" in str(exc):
            raise AgentsUnavailable(str(exc), details={"node": node.name}) from exc
        raise InvalidChange(str(exc), details={"node": node.name}) from exc


async def read_status(ctx: ControllerContext) -> tuple[NodeRecord, MaintenanceStatus]:
    node = await database_server(ctx)
    record = await _op(ctx, node, Action.MAINTENANCE_STATUS)
    return node, record.result_as(MaintenanceStatus)


async def refresh(ctx: ControllerContext) -> dict[str, Any]:
    """Read msdb through the agent; the report (also kept for the dashboard, metrics updated)."""
    node, status = await read_status(ctx)
    report = build_report(node.name, status, checked_at=ctx.clock().isoformat())
    ctx.maintenance_report = report
    ctx.metrics.maintenance(report)
    return report


def plan_params(options: PlanOptions) -> MaintenancePlanParams:
    jobs = [MaintenanceJobSpec(task=task, schedule=s) for task, s in guide_plan(options).items()]
    return MaintenancePlanParams(jobs=jobs, retention_days=options.retention_days)


async def apply(ctx: ControllerContext, options: PlanOptions) -> dict[str, Any]:
    """Create (or update) the plan's SQL Server Agent jobs; the agent's answer and the new report."""
    node = await database_server(ctx)
    record = await _op(ctx, node, Action.APPLY_MAINTENANCE_PLAN, plan_params(options))
    applied = record.result_as(MaintenancePlanResult)
    report = await refresh(ctx)
    return {"applied": applied.model_dump(mode="json", exclude={"commands"}), **report}


async def start_run(ctx: ControllerContext, task: str) -> dict[str, Any]:
    """Start a task now (``sp_start_job``) as a job that follows it to its outcome (202)."""
    if task not in TASKS:
        raise InvalidChange(f"no maintenance task {task!r}", details={"tasks": list(TASKS)})
    node = await database_server(ctx)
    if await ctx.jobs.running(kind="maintenance", target=task):
        raise ClusterBusy(f"the {task} task is already running", details={"task": task})
    job_id = await ctx.jobs.create(
        "maintenance",
        target=task,
        params={"task": task},
        steps=[(node.name, Action.RUN_MAINTENANCE_TASK.value)],
    )
    step = agent_step(
        ctx,
        node,
        Action.RUN_MAINTENANCE_TASK,
        MaintenanceTaskParams(task=task),
        timeout=ctx.settings.maintenance_run_timeout,
    )

    async def run() -> None:
        await run_steps(ctx, job_id, [step], kind="maintenance")
        try:
            await refresh(ctx)
        except (ControllerError, DatabaseUnavailable) as exc:  # the job's outcome stands; read later
            log.info("maintenance report not refreshed after %s: %s", task, exc)

    ctx.tasks.start(f"job-{job_id}", run)
    return await ctx.jobs.get(job_id)


def build_report(database_server: str, status: MaintenanceStatus, *, checked_at: str) -> dict[str, Any]:
    """Each task of the guide's table with what SQL Server Agent holds for it, and the warnings."""
    jobs = {j.task: j for j in status.jobs}
    tasks = []
    for row in GUIDE_TABLE:
        job = jobs.get(row.name)
        last = job.last_run if job else None
        tasks.append(
            {
                "task": row.name,
                "label": row.label,
                "guide": row.column,
                "note": row.note,
                "job_name": job.job_name if job else None,
                "scheduled": job is not None,
                "enabled": job.enabled if job else False,
                "schedule": job.schedule.model_dump(mode="json") if job and job.schedule else None,
                "schedule_text": job.schedule.describe() if job and job.schedule else "not scheduled",
                "last_run_at": last.started_at.isoformat() if last else None,
                "last_outcome": last.outcome if last else None,
                "last_message": last.message if last else None,
                "last_duration_s": last.duration_s if last else None,
                "next_run_at": job.next_run_at.isoformat() if job and job.next_run_at else None,
                "running": bool(job and job.running),
            }
        )
    return {
        "database_server": database_server,
        "database": status.database,
        "recovery_model": status.recovery_model,
        "agent_running": status.agent_running,
        "tasks": tasks,
        "restore_points": [p.model_dump(mode="json") for p in status.restore_points],
        "warnings": warnings(status),
        "checked_at": checked_at,
    }


def warnings(status: MaintenanceStatus) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    jobs = {j.task: j for j in status.jobs}
    if not jobs:
        out.append(
            {
                "code": "maintenance_not_set_up",
                "message": "SQL Server Agent holds no job of the guide's maintenance plan: "
                "PUT /api/v1/maintenance (crmcluster maintenance apply) creates them",
                "tasks": [],
            }
        )
        return out
    missing = [t.name for t in GUIDE_TABLE if t.name not in jobs and t.name != "shrink_database"]
    if missing:
        out.append(
            {
                "code": "maintenance_tasks_missing",
                "message": "not in SQL Server Agent: " + ", ".join(missing) + " (PUT /api/v1/maintenance)",
                "tasks": missing,
            }
        )
    failed = [j for j in status.jobs if j.last_run and j.last_run.outcome == "failed"]
    for j in failed:
        assert j.last_run is not None
        out.append(
            {
                "code": "maintenance_task_failed",
                "message": f"{TASKS[j.task].label} failed at {j.last_run.started_at:%Y-%m-%d %H:%M}: "
                f"{j.last_run.message[:300]}",
                "tasks": [j.task],
            }
        )
    if status.agent_running is False:
        out.append(
            {
                "code": "maintenance_agent_stopped",
                "message": "SQL Server Agent is not running: no maintenance job runs until it is started",
                "tasks": sorted(jobs),
            }
        )
    if not any(p.kind == "full" for p in status.restore_points):
        needing = [t for t in ("differential_backup", "log_backup") if t in jobs]
        if needing:
            out.append(
                {
                    "code": "maintenance_no_full_backup",
                    "message": "no full backup is recorded: the differential and log backups fail until one "
                    "runs (crmcluster maintenance run full_backup)",
                    "tasks": needing,
                }
            )
    if (status.recovery_model or "").upper() == "SIMPLE" and "log_backup" in jobs:
        out.append(
            {
                "code": "maintenance_simple_recovery",
                "message": f"{status.database} uses the SIMPLE recovery model: transaction log backups fail; "
                f"ALTER DATABASE [{status.database}] SET RECOVERY FULL, or apply a plan without them",
                "tasks": ["log_backup"],
            }
        )
    if "shrink_database" in jobs:
        out.append(
            {
                "code": "maintenance_shrink",
                "message": "the monthly shrink is scheduled: " + (TASKS["shrink_database"].note or ""),
                "tasks": ["shrink_database"],
            }
        )
    return out


async def watch(ctx: ControllerContext) -> None:
    """Refresh the report every ``maintenance_poll_interval`` seconds (metrics, dashboard)."""
    while True:
        try:
            await refresh(ctx)
        except (ClusterBusy, AgentsUnavailable, InvalidChange, DatabaseUnavailable) as exc:
            log.debug("maintenance report not refreshed: %s", exc)
        await asyncio.sleep(ctx.settings.maintenance_poll_interval)
