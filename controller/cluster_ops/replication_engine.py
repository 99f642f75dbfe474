"""The single Replication Engine (the guide: "only one single Replication Engine instance",
normally on the primary server), located and moved safely.

Where it is comes from the agents themselves: each answering agent is asked now; a silent one is
judged by its last heartbeat. A move is one persisted job, under the placement lock so no two
moves (or a join) overlap:

1. on every other node that has one: remove it, then see it gone (the agent's status);
   a node that does not answer is **fenced** instead — marked so that, should it come back with a
   Replication Engine, the controller removes it before anything else (:func:`enforce_fence`);
2. install it on the target and see it there.

So there are never two at once: the new one is installed only after every old one is gone or
fenced.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.agents.client import AgentError
from controller.context import ControllerContext
from controller.errors import AgentsUnavailable, StepFailed
from controller.jobs.runner import agent_step, new_op_id, refuse_if_placing, run_agent_op, run_steps
from controller.jobs.store import StepError, StepSpec
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, NodeStatus

log = logging.getLogger("crmcluster.controller.cluster_ops.replication_engine")


async def live_statuses(ctx: ControllerContext, nodes: list[NodeRecord]) -> dict[str, NodeStatus | None]:
    """Each node's status as its agent reports it now (None when it does not answer)."""

    async def one(n: NodeRecord) -> NodeStatus | None:
        if not n.agent_url:
            return None
        try:
            return await ctx.agents.client(n.agent_url).status()
        except AgentError:
            return None

    results = await asyncio.gather(*(one(n) for n in nodes))
    statuses = dict(zip((n.name for n in nodes), results, strict=True))
    for n in nodes:
        st = statuses[n.name]
        if st is not None:
            await ctx.registry.observe(n.name, st, heartbeat=False)
    return statuses


async def locate(ctx: ControllerContext) -> dict[str, Any]:
    nodes = await ctx.registry.list_nodes()
    statuses = await live_statuses(ctx, nodes)
    rows = []
    for n in nodes:
        st = statuses[n.name]
        rows.append(
            {
                "name": n.name,
                "replication_engine": _has_engine(n, st),
                "fenced": n.fenced,
                "source": "agent" if st is not None else "last_heartbeat",
            }
        )
    holders = [r["name"] for r in rows if r["replication_engine"] and not r["fenced"]]
    return {
        "node": holders[0] if len(holders) == 1 else None,
        "holders": holders,
        "fenced": [r["name"] for r in rows if r["fenced"]],
        "nodes": rows,
    }


def _has_engine(node: NodeRecord, status: NodeStatus | None) -> bool:
    return status.replication_engine if status is not None else node.has_replication_engine


def _verify(ctx: ControllerContext, node: NodeRecord, *, present: bool) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        assert node.agent_url
        try:
            st = await ctx.agents.client(node.agent_url).status()
        except AgentError as exc:
            raise StepError(f"agent of {node.name} does not answer: {exc}") from exc
        await ctx.registry.observe(node.name, st, heartbeat=False)
        if st.replication_engine != present:
            where = "still has" if not present else "does not report"
            raise StepError(f"{node.name} {where} a Replication Engine")
        return {"replication_engine": st.replication_engine}

    return StepSpec(action="verify_" + ("installed" if present else "removed"), node=node.name, run=run)


def _fence(ctx: ControllerContext, node: NodeRecord) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        await ctx.registry.set_fenced(node.name, True)
        return {"fenced": True}

    return StepSpec(action="fence", node=node.name, run=run)


async def move(ctx: ControllerContext, target: str) -> dict[str, Any]:
    """Move (or keep) the Replication Engine on ``target``; the final location and the job."""
    refuse_if_placing(ctx)
    async with ctx.placement_lock:
        await ctx.registry.get(target)
        nodes = await ctx.registry.list_nodes()
        statuses = await live_statuses(ctx, nodes)
        if statuses.get(target) is None:
            raise AgentsUnavailable(
                f"the agent of {target} does not answer; the Replication Engine cannot go there now",
                details={"node": target},
            )
        by_name = {n.name: n for n in await ctx.registry.list_nodes()}
        rec = by_name[target]
        present = {n: _has_engine(by_name[n], st) for n, st in statuses.items() if n in by_name}
        others = [by_name[n] for n, has in present.items() if has and n != target]
        here = present[target]
        if here and not others:
            return {"node": target, "changed": False, "job": None}
        steps: list[StepSpec] = []
        for n in others:
            if statuses[n.name] is not None:
                steps += [
                    agent_step(ctx, n, Action.REMOVE_REPLICATION_ENGINE),
                    _verify(ctx, n, present=False),
                ]
            else:
                steps.append(_fence(ctx, n))
        if not here:
            steps += [
                agent_step(ctx, rec, Action.INSTALL_REPLICATION_ENGINE),
                _verify(ctx, rec, present=True),
            ]
        plan = [(s.node, s.action) for s in steps]
        job_id = await ctx.jobs.create(
            "replication_engine", target=target, params={"from": [n.name for n in others]}, steps=plan
        )
        ok = await run_steps(ctx, job_id, steps, kind="replication_engine")
    job = await ctx.jobs.get(job_id)
    if not ok:
        raise StepFailed(f"moving the Replication Engine to {target} stopped: {job['message']}", details=job)
    return {"node": target, "changed": True, "job": job}


def enforce_fence(ctx: ControllerContext, rec: NodeRecord) -> None:
    """Called on a heartbeat from a fenced node: remove a Replication Engine it came back with;
    lift the fence once it has none."""
    task = f"fence-{rec.name}"
    if task in ctx.tasks.names:
        return

    async def run() -> None:
        if rec.has_replication_engine:
            log.warning("fenced node %s came back with a Replication Engine; removing it", rec.name)
            try:
                await run_agent_op(ctx, rec, Action.REMOVE_REPLICATION_ENGINE, op_id=new_op_id("fence"))
                assert rec.agent_url
                st = await ctx.agents.client(rec.agent_url).status()
            except (StepError, AgentError) as exc:
                log.error("fenced node %s: could not remove its Replication Engine: %s", rec.name, exc)
                return
            await ctx.registry.observe(rec.name, st, heartbeat=False)
            if st.replication_engine:
                return
        await ctx.registry.set_fenced(rec.name, False)
        log.info("node %s has no Replication Engine; fence lifted", rec.name)

    try:
        ctx.tasks.start(task, run)
    except RuntimeError:  # shutting down, or started concurrently
        pass
