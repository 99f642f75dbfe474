"""The upgrade routes under ``/api/v1/upgrades`` (DESIGN.md "Controller contract").

Reading needs a viewer; pausing, resuming, approving, accepting (the acceptance hold) and
resolving (a fix by hand) an operator; planning, starting, retrying, aborting and rolling back an
admin. Every command is recorded in the audit trail (secrets redacted).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from config.api_errors import API_ERROR_RESPONSES
from controller.api.deps import AdminActor, Context, OperatorActor, ViewerActor
from controller.sse import event_source
from controller.upgrade.checklist import build_checklist, render_html
from controller.upgrade.events import event_stream, parse_last_id
from controller.upgrade.model import (
    AcceptRequest,
    ResolveRequest,
    RollbackRequest,
    RunStatus,
    UpgradeRequest,
)
from controller.upgrade.orchestrator import run_view
from controller.upgrade.runtime import orchestrator_for

router = APIRouter(prefix="/api/v1/upgrades", tags=["upgrades"], responses=API_ERROR_RESPONSES)


@router.post("", status_code=201)
async def plan_upgrade(body: UpgradeRequest, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Plan the upgrade and run the preflight; nothing in the cluster changes."""
    orch = orchestrator_for(ctx)
    async with ctx.audit.change(
        actor, "upgrades.plan", target=body.target_version, details=body.options()
    ) as entry:
        run = await orch.plan(body, actor=actor)
        entry.target = run.id
        entry.message = f"planned; blocking: {', '.join(run.blocking) or 'none'}"
    return await orch.view(run.id)


@router.get("")
async def list_upgrades(
    ctx: Context, _actor: ViewerActor, status: Annotated[RunStatus | None, Query()] = None
) -> dict[str, Any]:
    runs = await orchestrator_for(ctx).store.list_runs(statuses=[status] if status else None)
    return {"upgrades": [run_view(r, None) for r in runs]}


@router.get("/{run_id}")
async def get_upgrade(run_id: str, ctx: Context, _actor: ViewerActor) -> dict[str, Any]:
    return await orchestrator_for(ctx).view(run_id)


async def _command(ctx: Context, actor: str, run_id: str, what: str) -> dict[str, Any]:
    orch = orchestrator_for(ctx)
    async with ctx.audit.change(actor, f"upgrades.{what}", target=run_id, details=None):
        if what == "start":
            await orch.start(run_id)
        elif what == "pause":
            await orch.pause(run_id)
        elif what == "resume":
            await orch.resume(run_id)
        elif what == "approve":
            await orch.approve(run_id, actor=actor)
    return await orch.view(run_id)


@router.post("/{run_id}/start")
async def start(run_id: str, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Start a planned run (refused while a failing preflight finding is not overridden)."""
    return await _command(ctx, actor, run_id, "start")


@router.post("/{run_id}/pause")
async def pause(run_id: str, ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    """Pause after the steps now running."""
    return await _command(ctx, actor, run_id, "pause")


@router.post("/{run_id}/resume")
async def resume(run_id: str, ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    return await _command(ctx, actor, run_id, "resume")


@router.post("/{run_id}/approve")
async def approve(run_id: str, ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    """Record the client's sign-off and go on with the live upgrade."""
    return await _command(ctx, actor, run_id, "approve")


@router.post("/{run_id}/accept")
async def accept(run_id: str, body: AcceptRequest, ctx: Context, actor: OperatorActor) -> dict[str, Any]:
    """Accept the live upgrade at its hold: the "Testing a live upgrade" rows ticked, a note; then
    users return (``returned_at``)."""
    orch = orchestrator_for(ctx)
    details = {"rows": sorted(body.ticked()), "note": body.note}
    async with ctx.audit.change(actor, "upgrades.accept", target=run_id, details=details):
        await orch.accept(run_id, body, actor=actor)
    return await orch.view(run_id)


async def _restore(ctx: Context, actor: str, run_id: str, what: str, body: RollbackRequest | None) -> Any:
    orch = orchestrator_for(ctx)
    since = body.accept_data_loss_since if body is not None else None
    details = {"accept_data_loss_since": since} if since else None
    async with ctx.audit.change(actor, f"upgrades.{what}", target=run_id, details=details):
        if what == "abort":
            await orch.abort(run_id, accept_data_loss_since=since, actor=actor)
        else:
            await orch.rollback(run_id, accept_data_loss_since=since, actor=actor)
    return await orch.view(run_id)


@router.post("/{run_id}/abort")
async def abort(
    run_id: str, ctx: Context, actor: AdminActor, body: Annotated[RollbackRequest | None, Body()] = None
) -> dict[str, Any]:
    """Stop what runs, then restore the live environment (409 ``data_loss`` once users were back,
    unless ``accept_data_loss_since`` equals the run's ``returned_at``)."""
    result: dict[str, Any] = await _restore(ctx, actor, run_id, "abort", body)
    return result


@router.post("/{run_id}/rollback")
async def rollback(
    run_id: str, ctx: Context, actor: AdminActor, body: Annotated[RollbackRequest | None, Body()] = None
) -> dict[str, Any]:
    """Restore the live environment now. On a run whose users were back (``returned_at``) this
    answers 409 ``data_loss`` naming the window, unless ``accept_data_loss_since`` equals it."""
    result: dict[str, Any] = await _restore(ctx, actor, run_id, "rollback", body)
    return result


class ConfirmBody(BaseModel):
    """What the person did (kept in the audit trail, the agent's record and the checklist)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


@router.post("/{run_id}/steps/{step_id}/confirm")
async def confirm_step(
    run_id: str, step_id: str, ctx: Context, actor: OperatorActor, body: ConfirmBody | None = None
) -> dict[str, Any]:
    """Confirm a step that waits for an operator (``awaiting_operator``: the manual installer's
    wizard run by hand with the choices the step lists); the agent then verifies it as usual."""
    note = body.note if body is not None else ""
    orch = orchestrator_for(ctx)
    async with ctx.audit.change(
        actor, "upgrades.confirm", target=f"{run_id}/{step_id}", details={"note": note}
    ):
        await orch.confirm(run_id, step_id, note=note, actor=actor)
    return await orch.view(run_id)


@router.post("/{run_id}/steps/{step_id}/retry")
async def retry(run_id: str, step_id: str, ctx: Context, actor: AdminActor) -> dict[str, Any]:
    """Run a failed step again (a new attempt, a new op id)."""
    orch = orchestrator_for(ctx)
    async with ctx.audit.change(actor, "upgrades.retry", target=f"{run_id}/{step_id}", details=None):
        await orch.retry(run_id, step_id)
    return await orch.view(run_id)


@router.post("/{run_id}/steps/{step_id}/resolve")
async def resolve(
    run_id: str, step_id: str, body: ResolveRequest, ctx: Context, actor: OperatorActor
) -> dict[str, Any]:
    """Record how a step's findings ("NB must be fixed", a failed script) were fixed by hand;
    ``resume`` then reads the log again and honours it."""
    orch = orchestrator_for(ctx)
    async with ctx.audit.change(
        actor, "upgrades.resolve", target=f"{run_id}/{step_id}", details={"note": body.note}
    ):
        await orch.resolve(run_id, step_id, note=body.note, actor=actor)
    return await orch.view(run_id)


@router.get("/{run_id}/events")
async def events(
    run_id: str,
    ctx: Context,
    _actor: ViewerActor,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> EventSourceResponse:
    """Server-sent events of every phase, step, log line and decision; replay with Last-Event-ID."""
    orch = orchestrator_for(ctx)
    await orch.get(run_id)
    return event_source(event_stream(orch.store, run_id, last_id=parse_last_id(last_event_id, after)))


@router.get("/{run_id}/checklist", response_model=None)
async def checklist(run_id: str, request: Request, ctx: Context, _actor: ViewerActor) -> Any:
    """The guide's sample upgrade checklist for this run (JSON, or HTML with ``Accept: text/html``)."""
    orch = orchestrator_for(ctx)
    run = await orch.get(run_id)
    data = build_checklist(run, await orch.store.steps(run_id))
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(render_html(data))
    return data
