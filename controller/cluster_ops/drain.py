"""Draining a web server: no new logons, wait for its users to leave.

``drain`` writes ``draining`` to the node's row — the balancer stops sending new logons there
within a second — and starts a ``drain`` job that waits until the node's logged-on users
(Activity) reach zero, or the time-out passes; either way the node is then ``maintenance``: out of
rotation, safe to work on. ``undrain`` puts it back in rotation (``up``, or ``down`` if its agent is
silent); a drain still waiting notices and ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from config.state_schema import upgrade_runs
from config.vocabulary import NodeState
from controller.context import ControllerContext
from controller.errors import ClusterBusy
from controller.jobs.runner import run_steps
from controller.jobs.store import StepSpec
from controller.registry.nodes import NodeRecord

DRAIN_STEP = "wait_for_logoffs"
#: Upgrade run statuses during which node states belong to the upgrade (DESIGN.md "Upgrades").
UPGRADE_ACTIVE = (
    "running",
    "paused",
    "awaiting_approval",
    "awaiting_operator",
    "awaiting_fix",
    "awaiting_acceptance",
    "restoring",
)


async def refuse_during_upgrade(ctx: ControllerContext, name: str, what: str) -> None:
    """An upgrade holds its nodes (``maintenance``/``upgrading``): no drain or undrain meanwhile."""
    async with ctx.state_engine.connect() as conn:
        run = (
            await conn.execute(
                select(upgrade_runs.c.id).where(upgrade_runs.c.status.in_(UPGRADE_ACTIVE)).limit(1)
            )
        ).scalar()
    if run is not None:
        raise ClusterBusy(
            f"upgrade {run} is in progress; {what} {name} after it ends", details={"node": name, "run": run}
        )


async def wait_drained(ctx: ControllerContext, name: str, *, timeout: float) -> dict[str, Any]:
    """Wait until ``name`` has no logged-on users, the time-out passes, or the node is undrained."""
    deadline = ctx.clock().timestamp() + timeout
    poll = min(0.5, ctx.settings.sweep_interval)
    while True:
        count = await ctx.sessions.count(name)
        rec = await ctx.registry.get(name)
        if rec.state != NodeState.DRAINING:
            return {"logged_on": count, "timed_out": False, "undrained": True}
        if count == 0:
            return {"logged_on": 0, "timed_out": False, "undrained": False}
        if ctx.clock().timestamp() >= deadline:
            return {"logged_on": count, "timed_out": True, "undrained": False}
        await asyncio.sleep(poll)


def drain_step(ctx: ControllerContext, name: str, *, timeout: float) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        result = await wait_drained(ctx, name, timeout=timeout)
        rec = await ctx.registry.get(name)
        if rec.state == NodeState.DRAINING:
            await ctx.registry.set_state(name, NodeState.MAINTENANCE)
        return result

    return StepSpec(action=DRAIN_STEP, node=name, run=run)


async def start_drain(ctx: ControllerContext, name: str, *, timeout: float | None) -> dict[str, Any]:
    """Hold the node ``draining`` now and start the job that waits for its users; the job record."""
    rec = await ctx.registry.get(name)
    if rec.state == NodeState.UPGRADING:
        raise ClusterBusy(f"node {name} is being upgraded; it cannot be drained now", details={"node": name})
    await refuse_during_upgrade(ctx, name, "drain")
    running = await ctx.jobs.running(kind="drain", target=name)
    if running:
        return await ctx.jobs.get(running[0])
    await ctx.registry.hold(name, NodeState.DRAINING)
    wait = ctx.settings.drain_timeout if timeout is None else timeout
    job_id = await ctx.jobs.create("drain", target=name, params={"timeout": wait}, steps=[(name, DRAIN_STEP)])
    steps = [drain_step(ctx, name, timeout=wait)]
    ctx.tasks.start(f"job-{job_id}", lambda: run_steps(ctx, job_id, steps, kind="drain"))
    return await ctx.jobs.get(job_id)


async def undrain(ctx: ControllerContext, name: str) -> NodeRecord:
    rec = await ctx.registry.get(name)
    if rec.state == NodeState.UPGRADING:
        raise ClusterBusy(f"node {name} is being upgraded; the upgrade puts it back", details={"node": name})
    if rec.state not in (NodeState.DRAINING, NodeState.MAINTENANCE):
        return rec
    await refuse_during_upgrade(ctx, name, "undrain")
    for kind in ("join", "remove"):
        if await ctx.jobs.running(kind=kind, target=name):
            raise ClusterBusy(
                f"node {name} is being {'joined' if kind == 'join' else 'removed'}; wait for that job",
                details={"node": name},
            )
    return await ctx.registry.release(name, heartbeat_timeout=ctx.settings.heartbeat_timeout)
