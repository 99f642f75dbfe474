"""Running a job's steps in order: each step persisted before and after it runs, compensation on
failure, and the one-placement-change-at-a-time rule (see :mod:`controller.jobs.store`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from config import logs
from controller.agents.client import AgentError
from controller.agents.follow import StepFailed, carry_out
from controller.errors import ClusterBusy
from controller.jobs.store import FAILED, SUCCEEDED, StepError, StepSpec
from node_agent.protocol import Action, NoParams, OperationRecord, Params, params_for_wire

if TYPE_CHECKING:
    from controller.context import ControllerContext
    from controller.registry.nodes import NodeRecord

log = logging.getLogger("crmcluster.controller.jobs")


def describe(spec: StepSpec, seq: int) -> str:
    where = f" on {spec.node}" if spec.node else ""
    return f"step {seq} ({spec.action}{where})"


async def run_steps(
    ctx: ControllerContext,
    job_id: str,
    steps: Sequence[StepSpec],
    *,
    compensate: Sequence[StepSpec] = (),
    kind: str = "job",
) -> bool:
    """Run ``steps`` in order; on the first failure stop, run ``compensate`` (appended as steps,
    their failures only logged), and fail the job naming the step. True when every step succeeded.
    Its log lines (and the agents' for its operations) carry ``job_id`` and each step's ``op_id``."""
    with logs.bound(job_id=job_id):
        return await _run_steps(ctx, job_id, steps, compensate=compensate, kind=kind)


async def _run_steps(
    ctx: ControllerContext,
    job_id: str,
    steps: Sequence[StepSpec],
    *,
    compensate: Sequence[StepSpec],
    kind: str,
) -> bool:
    store = ctx.jobs
    for seq, spec in enumerate(steps, start=1):
        op_id = f"{job_id}:{seq}"
        await store.start_step(job_id, seq, op_id=op_id)
        try:
            with logs.bound(op_id=op_id):
                result = await spec.run(op_id)
        except Exception as exc:  # noqa: BLE001 - any failure of a step is recorded and compensated
            message = _error_message(exc)
            await store.finish_step(job_id, seq, status=FAILED, message=message)
            for comp in compensate:
                cseq = await store.add_step(job_id, node=comp.node, action=comp.action)
                cop = f"{job_id}:{cseq}"
                await store.start_step(job_id, cseq, op_id=cop)
                try:
                    cres = await comp.run(cop)
                except Exception as cexc:  # noqa: BLE001 - the other compensations still run
                    log.error("job %s: compensation %s failed: %s", job_id, comp.action, _error_message(cexc))
                    await store.finish_step(job_id, cseq, status=FAILED, message=_error_message(cexc))
                else:
                    await store.finish_step(job_id, cseq, status=SUCCEEDED, result=cres)
            await store.finish(job_id, status=FAILED, message=f"{describe(spec, seq)} failed: {message}")
            ctx.metrics.jobs.labels(kind, FAILED).inc()
            return False
        await store.finish_step(job_id, seq, status=SUCCEEDED, result=result)
    await store.finish(job_id, status=SUCCEEDED)
    ctx.metrics.jobs.labels(kind, SUCCEEDED).inc()
    return True


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, StepError | AgentError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def agent_step(
    ctx: ControllerContext,
    node: NodeRecord,
    action: Action,
    params: Params | None = None,
    *,
    timeout: float | None = None,
) -> StepSpec:
    """A step that runs ``action`` on ``node``'s agent and waits for it to finish."""

    async def run(op_id: str) -> dict[str, Any] | None:
        return (await run_agent_op(ctx, node, action, params, op_id=op_id, timeout=timeout)).result

    return StepSpec(action=action.value, node=node.name, run=run)


async def run_agent_op(
    ctx: ControllerContext,
    node: NodeRecord,
    action: Action,
    params: Params | None = None,
    *,
    op_id: str,
    timeout: float | None = None,
) -> OperationRecord:
    """Run one operation on ``node`` through :func:`~controller.agents.follow.carry_out` (sent
    once, followed through blips, cancelled on the agent at ``timeout``): its succeeded record,
    whose result fits the action's model (read it with ``record.result_as(...)``), or
    :class:`StepError` saying what went wrong (the agent's own error for a failed operation)."""
    if not node.agent_url:
        raise StepError(f"node {node.name} has no agent URL")
    client = ctx.agents.client(node.agent_url)
    try:
        return await carry_out(
            client,
            op_id=op_id,
            action=action.value,
            params=params_for_wire(params or NoParams()),
            deadline=time.time() + (timeout or ctx.settings.operation_timeout),
            unreachable_grace=ctx.settings.agent_unreachable_grace,
        )
    except StepFailed as exc:
        raise StepError(f"{exc.message} (on {node.name})") from exc


def new_op_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def refuse_if_placing(ctx: ControllerContext) -> None:
    """One placement change at a time: a second one is refused now rather than left waiting."""
    if ctx.placement_lock.locked():
        raise ClusterBusy(
            "another change that moves roles between nodes (join, removal, Replication Engine, "
            "services) is running; try again when it has finished"
        )
