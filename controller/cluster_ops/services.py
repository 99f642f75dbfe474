"""Placing the CRM services — Indexer, Escalation, Email Manager — each installed on exactly one
node (the guide's example: Email Manager on application server 1, Indexer on 2, Escalation on 3).

Moving a service is one persisted job under the placement lock: on the node that has it, stop it
and uninstall it; on the new node install it, start it and see it running in the agent's status.
"""

from __future__ import annotations

from typing import Any

from config.vocabulary import CRM_SERVICES
from controller.cluster_ops.replication_engine import live_statuses
from controller.context import ControllerContext
from controller.errors import AgentsUnavailable, InvalidChange, StepFailed
from controller.jobs.runner import agent_step, refuse_if_placing, run_steps
from controller.jobs.store import StepError, StepSpec
from controller.registry.nodes import NodeRecord
from node_agent.protocol import Action, NodeStatus, ServiceParams, ServiceStatus

_INSTALLED = (ServiceStatus.RUNNING, ServiceStatus.STOPPED)


def _has(node: NodeRecord, status: NodeStatus | None, service: str) -> bool:
    if status is not None:
        return status.services.get(service, ServiceStatus.NOT_INSTALLED) in _INSTALLED
    return node.has_service(service)


def _state(node: NodeRecord, status: NodeStatus | None, service: str) -> str:
    st = status or node.status
    if st is None:
        return ServiceStatus.UNKNOWN.value
    return st.services.get(service, ServiceStatus.NOT_INSTALLED).value


async def placement(ctx: ControllerContext) -> dict[str, Any]:
    """``{"services": {service: {"node", "nodes", "state"}}}`` as the agents report them now."""
    nodes = await ctx.registry.list_nodes()
    statuses = await live_statuses(ctx, nodes)
    out: dict[str, Any] = {}
    for service in CRM_SERVICES:
        holders = [n for n in nodes if _has(n, statuses[n.name], service)]
        out[service] = {
            "node": holders[0].name if len(holders) == 1 else None,
            "nodes": [n.name for n in holders],
            "state": _state(holders[0], statuses[holders[0].name], service) if len(holders) == 1 else None,
        }
    return {"services": out}


def _verify_running(ctx: ControllerContext, node: NodeRecord, service: str) -> StepSpec:
    async def run(_op_id: str) -> dict[str, Any]:
        assert node.agent_url
        st = (await live_statuses(ctx, [node]))[node.name]
        if st is None:
            raise StepError(f"agent of {node.name} does not answer")
        state = st.services.get(service, ServiceStatus.NOT_INSTALLED)
        if state != ServiceStatus.RUNNING:
            raise StepError(f"{service} on {node.name} is {state.value} after it was started")
        return {"state": state.value}

    return StepSpec(action="verify_running", node=node.name, run=run)


async def place(ctx: ControllerContext, changes: dict[str, str]) -> dict[str, Any]:
    """Put each named service on its node (others untouched); the placement and the job."""
    refuse_if_placing(ctx)
    async with ctx.placement_lock:
        nodes = await ctx.registry.list_nodes()
        by_name = {n.name.lower(): n for n in nodes}
        for service, target in changes.items():
            if target.lower() not in by_name:
                raise InvalidChange(
                    f"{service}: no node named {target!r} is registered", details={"node": target}
                )
        statuses = await live_statuses(ctx, nodes)
        steps: list[StepSpec] = []
        for service, target_name in changes.items():
            node = by_name[target_name.lower()]
            params = ServiceParams.model_validate({"service": service})
            holders = [n for n in nodes if _has(n, statuses[n.name], service)]
            if [h.name for h in holders] == [node.name]:
                continue
            if statuses[node.name] is None:
                raise AgentsUnavailable(
                    f"the agent of {node.name} does not answer", details={"node": node.name}
                )
            for h in holders:
                if h.name == node.name:
                    continue
                if statuses[h.name] is None:
                    raise AgentsUnavailable(
                        f"{service} is installed on {h.name}, whose agent does not answer; "
                        "it cannot be uninstalled there now",
                        details={"node": h.name, "service": service},
                    )
                steps += [
                    agent_step(ctx, h, Action.STOP_SERVICE, params),
                    agent_step(ctx, h, Action.UNINSTALL_SERVICE, params),
                ]
            if node not in holders:
                steps.append(agent_step(ctx, node, Action.INSTALL_SERVICE, params))
            steps += [
                agent_step(ctx, node, Action.START_SERVICE, params),
                _verify_running(ctx, node, service),
            ]
        if not steps:
            return (await placement(ctx)) | {"changed": False, "job": None}
        job_id = await ctx.jobs.create(
            "services", target=None, params=dict(changes), steps=[(s.node, s.action) for s in steps]
        )
        ok = await run_steps(ctx, job_id, steps, kind="services")
    job = await ctx.jobs.get(job_id)
    if not ok:
        raise StepFailed(f"placing services stopped: {job['message']}", details=job)
    return (await placement(ctx)) | {"changed": True, "job": job}
