"""The records of what changed: multi-step jobs and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from config.api_errors import API_ERROR_RESPONSES
from config.input_types import DB_INT_MAX
from controller.api.deps import Context, ViewerActor

router = APIRouter(prefix="/api/v1", tags=["records"], responses=API_ERROR_RESPONSES)


@router.get("/jobs")
async def list_jobs(
    ctx: Context,
    _actor: ViewerActor,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return {"jobs": await ctx.jobs.list(kind=kind, limit=limit)}


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    return await ctx.jobs.get(job_id)


@router.get("/audit")
async def list_audit(
    ctx: Context,
    _actor: ViewerActor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
) -> dict[str, Any]:
    """The audit trail, newest first (who, what, when, result; secrets redacted)."""
    return {"entries": await ctx.audit.list(limit=limit, before_id=before_id)}
