"""The database maintenance plan: ``GET|PUT /api/v1/maintenance``, ``POST /api/v1/maintenance/{task}/run``.

GET  /maintenance/plan       the jobs PUT would create (query: full_backup_day, shrink, …)
GET  /maintenance            each task of the guide's table: its SQL Server Agent job, schedule,
                             last run (outcome, message), next run; restore points; warnings.
                             ``?cached=true``: the last report read (the dashboard's), if any
PUT  /maintenance            create or update the jobs from the guide's plan (body: PlanOptions)
POST /maintenance/{task}/run start the task now: 202 with the job that follows it to its outcome
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from config.api_errors import API_ERROR_RESPONSES
from config.maintenance_plan import PlanOptions, guide_plan
from controller.api.deps import AdminActor, Context, ViewerActor
from controller.maintenance import sql_agent

router = APIRouter(prefix="/api/v1", tags=["maintenance"], responses=API_ERROR_RESPONSES)


@router.get("/maintenance")
async def get_maintenance(ctx: Context, _actor: ViewerActor, cached: bool = False) -> dict[str, Any]:
    """What SQL Server Agent holds for the guide's maintenance plan (read from msdb through the
    database server's agent)."""
    if cached:  # never calls the agent: the dashboard asks every second
        return ctx.maintenance_report or {
            "checked_at": None,
            "tasks": [],
            "restore_points": [],
            "warnings": [],
        }
    return await sql_agent.refresh(ctx)


@router.get("/maintenance/plan")
async def get_plan(_actor: ViewerActor, options: Annotated[PlanOptions, Query()]) -> dict[str, Any]:
    """The schedules ``PUT /maintenance`` would create with these options (query parameters)."""
    plan = guide_plan(options)
    return {
        "jobs": [
            {"task": t, "schedule": s.model_dump(mode="json"), "text": s.describe()} for t, s in plan.items()
        ]
    }


@router.put("/maintenance")
async def put_maintenance(ctx: Context, actor: AdminActor, body: PlanOptions | None = None) -> dict[str, Any]:
    """Create (or update, keeping their history) the plan's SQL Server Agent jobs."""
    options = body or PlanOptions()
    async with ctx.audit.change(
        actor, "maintenance.apply", target="maintenance", details=options.model_dump(mode="json")
    ) as e:
        answer = await sql_agent.apply(ctx, options)
        applied = answer["applied"]
        e.message = (
            f"{len(applied.get('created', []))} created, {len(applied.get('updated', []))} updated, "
            f"{len(applied.get('deleted', []))} deleted"
        )
    return answer


@router.post("/maintenance/{task}/run", status_code=202)
async def run_task(task: str, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Run a task now (``sp_start_job``); the job ends with its outcome."""
    async with ctx.audit.change(actor, "maintenance.run", target=task) as e:
        job = await sql_agent.start_run(ctx, task)
        e.message = f"started as job {job['id']}"
    return job
