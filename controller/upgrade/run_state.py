"""What a step of a run may see and do: the narrow view of a running upgrade that the controller's
own steps (:mod:`~controller.upgrade.local_steps`) and the restore
(:mod:`~controller.upgrade.restore`) are given.

:class:`~controller.upgrade.executor.RunExecutor` implements :class:`RunState`; the step modules
depend on this protocol, never on the executor, so the executor can import them without a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from controller.agents.client import AgentPool
from controller.upgrade.model import Run, Step
from controller.upgrade.plan import PlannedNode
from controller.upgrade.store import UpgradeStore
from node_agent.protocol import OperationRecord

WebTransportFor = Callable[[str], httpx.AsyncBaseTransport | None]


def epoch(dt: datetime) -> float:
    """Seconds since the epoch of a naive-UTC time (as the state database stores them)."""
    return dt.replace(tzinfo=UTC).timestamp()


class RunState(Protocol):
    """The run, its steps and nodes, and the few actions a step may take on them."""

    run: Run
    steps: list[Step]
    nodes: dict[str, PlannedNode]
    db: PlannedNode | None
    store: UpgradeStore
    agents: AgentPool
    session_wait: float
    aborting: asyncio.Event
    web_transport_for: WebTransportFor

    def now(self) -> datetime: ...

    def epoch_now(self) -> float: ...

    async def update_context(self, **changes: Any) -> None: ...

    async def mutate_context(self, fn: Callable[[dict[str, Any]], None]) -> None: ...

    async def emit(self, kind: str, data: dict[str, Any]) -> None: ...

    async def agent_op(
        self,
        step: Step,
        node: str,
        op_id: str,
        action: str,
        params: dict[str, Any],
        deadline: float | None,
        *,
        fresh: bool = False,
    ) -> OperationRecord: ...


async def sub_op(
    ex: RunState, step: Step, node: str, purpose: str, action: str, params: dict[str, Any]
) -> OperationRecord:
    """One more agent operation inside ``step`` (op id ``{step op id}.{purpose}``), within its time-out."""
    deadline = None
    if step.timeout and step.started_at is not None:
        deadline = epoch(step.started_at) + step.timeout
    return await ex.agent_op(step, node, f"{step.op_id}.{purpose}", action, params, deadline)


async def sleep_until(ex: RunState, until: float) -> None:
    """Sleep to the wall-clock time ``until`` (epoch seconds), waking early on an abort."""
    remaining = until - ex.epoch_now()
    if remaining > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ex.aborting.wait(), timeout=remaining)
