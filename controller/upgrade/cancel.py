"""Cancel that really cancels: operations the run gave up on, followed until their agent says they
have ended, and the node's next step held back until then.

The controller gives an operation up when the run is aborted while it runs, when its step times
out, or when its agent stops answering. None of that stops the work on the server: an installer
may go on for an hour. So, for each such operation (DESIGN.md: every step is safe to run again,
and nothing runs twice on a node):

- its cancel is sent, and retried — logged, and an event each time — until the agent accepts it;
- the step reads ``cancelled`` only once the agent's record says the operation ended (it reads
  ``running`` meanwhile, with why); an operation that ended otherwise is recorded as it ended
  (it may have finished before the cancel reached it);
- until then the operation is kept in the run's context (``unfinished``: op id → step, node,
  attempt, why, since), so a restarted controller knows it too, and every later step on that
  node — the restore's first — waits for it to end (within its own time-out: a restore that
  cannot wait longer fails, saying which operation still runs, rather than restore over it).

The agent keeps the node's lock until the cancelled work has really stopped
(:mod:`node_agent.cancellation`), so "ended" means nothing of it runs any more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.agents.follow import StepFailed, stop_operation
from controller.upgrade.model import Step, StepStatus
from controller.upgrade.run_state import RunState
from node_agent.protocol import OperationRecord, OperationState

log = logging.getLogger("crmcluster.upgrade")

#: Seconds the abort waits for the agent to confirm before going on to plan the restore (the
#: node's restore then waits for the rest).
CONFIRM_WAIT = 10.0
#: Pause between looks at an operation that has not ended yet.
LOOK_EVERY = 0.5


def unfinished(ex: RunState, node: str | None = None) -> dict[str, dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = dict(ex.run.context.get("unfinished") or {})
    return {op: info for op, info in ops.items() if node is None or info.get("node") == node}


async def remember(ex: RunState, step: Step, op_id: str, node: str, *, why: str) -> None:
    """Keep ``op_id`` until its agent says it has ended (it was given up on: ``why``)."""
    info = {
        "step": step.id,
        "node": node,
        "attempt": step.attempt,
        "why": why,
        "since": ex.now().isoformat() + "Z",
    }
    await ex.mutate_context(lambda c: c.setdefault("unfinished", {}).update({op_id: info}))
    await ex.emit(
        "cancel", {"step": step.id, "node": node, "op_id": op_id, "state": "unconfirmed", "why": why}
    )


def _on_retry(ex: RunState, step_id: str, node: str, op_id: str) -> Any:
    async def retried(attempt: int, error: str) -> None:
        log.warning(
            "upgrade %s: cancelling %s on %s failed (attempt %d): %s; trying again",
            ex.run.id,
            op_id,
            node,
            attempt,
            error,
        )
        await ex.emit(
            "cancel",
            {
                "step": step_id,
                "node": node,
                "op_id": op_id,
                "state": "retrying",
                "attempt": attempt,
                "error": error,
            },
        )

    return retried


async def stop(ex: RunState, step_id: str, node: str, op_id: str, *, within: float) -> OperationRecord | None:
    """Cancel ``op_id`` (retrying) and follow it for ``within`` seconds; its ended record, None
    when the agent never had it. Raises :class:`StepFailed` while it still runs."""
    client = ex.agents.client(ex.nodes[node].agent_url)
    return await stop_operation(
        client,
        op_id,
        deadline=ex.epoch_now() + within,
        clock=ex.epoch_now,
        interval=min(LOOK_EVERY, 0.1),
        on_retry=_on_retry(ex, step_id, node, op_id),
    )


def _ended_status(record: OperationRecord | None) -> StepStatus:
    if record is None or record.state in (OperationState.CANCELLED, OperationState.INTERRUPTED):
        return StepStatus.CANCELLED
    return StepStatus.SUCCEEDED if record.state == OperationState.SUCCEEDED else StepStatus.FAILED


def _ended_message(why: str, record: OperationRecord | None) -> str:
    if record is None:
        return f"cancelled: {why} (the agent never ran it)"
    if record.state == OperationState.CANCELLED:
        return f"cancelled: {why}; the agent confirmed the work stopped"
    if record.state == OperationState.INTERRUPTED:
        return f"cancelled: {why}; the agent restarted while it ran ({record.error or 'outcome unknown'})"
    if record.state == OperationState.SUCCEEDED:
        return f"{why}, but it had finished before the cancel reached it"
    return f"{why}; it ended {record.state.value}: {record.error or ''}".rstrip(": ")


async def give_up(ex: RunState, step: Step, ops: dict[str, str], *, why: str) -> None:
    """The run stops following ``step`` (``ops``: op id → node, what it sent that may still run):
    cancel each and wait a little for the agent to confirm. The step is recorded as its operations
    ended, or stays ``running`` (kept in ``unfinished``) while one has not."""
    if not ops:
        step.status = StepStatus.CANCELLED
        step.message = f"cancelled: {why}"
        return
    ended: dict[str, OperationRecord | None] = {}
    for op_id, node in ops.items():
        try:
            ended[op_id] = await stop(ex, step.id, node, op_id, within=CONFIRM_WAIT)
        except StepFailed:
            await remember(ex, step, op_id, node, why=why)
    if len(ended) < len(ops):
        step.status = StepStatus.RUNNING
        step.message = (
            f"cancel requested ({why}); waiting for the agent to confirm the operation ended — "
            f"the next step on {step.node or 'its server'} waits for it"
        )
        return
    own = ended.get(step.op_id or "", next(iter(ended.values())))
    step.status = _ended_status(own)
    step.message = _ended_message(why, own)
    if own is not None and own.state == OperationState.SUCCEEDED and own.result is not None:
        step.result = own.result


async def _settle(ex: RunState, op_id: str, info: dict[str, Any], record: OperationRecord | None) -> None:
    """``op_id`` has ended: its step says so (when it is still that attempt), the run forgets it."""
    step = next((s for s in ex.steps if s.id == info.get("step")), None)
    if step is not None and step.attempt == info.get("attempt"):
        why = str(info.get("why") or "given up")
        if step.status == StepStatus.RUNNING:
            step.status = _ended_status(record)
            step.message = _ended_message(why, record)
            step.finished_at = ex.now()
            await ex.store.save_step(step)
        elif step.status == StepStatus.FAILED:  # it had timed out: now it is known to have ended
            state = record.state.value if record is not None else "never run"
            step.message = f"{step.message or why} (the agent confirmed it ended: {state})"
            await ex.store.save_step(step)
    await ex.mutate_context(lambda c: (c.get("unfinished") or {}).pop(op_id, None))
    await ex.emit(
        "cancel",
        {
            "step": info.get("step"),
            "node": info.get("node"),
            "op_id": op_id,
            "state": "ended",
            "ended": record.state.value if record is not None else "never run",
        },
    )


async def wait_for_node(ex: RunState, step: Step, deadline: float | None) -> None:
    """Before ``step`` runs on its node: every operation given up on there has ended."""
    if step.node is None:
        return
    pending = unfinished(ex, step.node)
    if not pending:
        return
    names = ", ".join(f"{op} ({info.get('why')})" for op, info in pending.items())
    log.warning("upgrade %s: %s on %s waits for %s to end", ex.run.id, step.id, step.node, names)
    await ex.emit(
        "decision", {"decision": "wait_for_cancel", "step": step.id, "node": step.node, "ops": list(pending)}
    )
    step.message = f"waiting for {names} to end on {step.node} before this step"
    await ex.store.save_step(step)
    while pending:
        for op_id, info in list(pending.items()):
            remaining = 30.0 if deadline is None else max(0.0, deadline - ex.epoch_now())
            try:
                record = await stop(ex, str(info.get("step")), step.node, op_id, within=min(remaining, 30.0))
            except StepFailed as exc:
                if deadline is not None and ex.epoch_now() >= deadline:
                    raise StepFailed(
                        f"{op_id} ({info.get('why')}) has not ended on {step.node}: {exc.message}; "
                        f"{step.action} must not run over it — retry once the agent says it stopped",
                        record=exc.record,
                    ) from exc
                continue
            await _settle(ex, op_id, info, record)
            del pending[op_id]
        if pending:
            await asyncio.sleep(LOOK_EVERY)
    step.message = None
