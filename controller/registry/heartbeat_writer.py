"""Heartbeats written in groups: one transaction for every heartbeat that arrived meanwhile.

Each heartbeat used to open three database connections (read the row, update it, read it back).
With hundreds of agents that is hundreds of transactions a second fighting for SQLite's single
writer ("database is locked") or for one PostgreSQL core. :class:`HeartbeatWriter` keeps one
writer task: heartbeats queue their status and wait; the task takes every queued heartbeat (up to
``max_batch``), and writes them in one transaction of two statements — the rows read ``FOR UPDATE``
(PostgreSQL locks them), then one ``executemany`` update of every row — and answers each waiting
heartbeat with its new record, computed from what it read and wrote rather than read again (no
read-after-write). While it writes, the next heartbeats gather for the next group (group commit):
a quiet controller writes each heartbeat at once, a busy one writes many per transaction.

The state a heartbeat sets is the same rule as :meth:`NodeRegistry.observe`: ``up`` when IIS runs,
``down`` otherwise, and never over a held state (draining, maintenance, upgrading): decided in the
update's SQL, so a drain committed between the read and the write keeps its state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, literal_column, or_, select, update

from config.state_schema import nodes
from controller.errors import UnknownNode
from controller.registry.nodes import LIVENESS_STATES, NodeRecord, NodeRegistry, record_from_row
from node_agent.protocol import NodeStatus, ServiceStatus

log = logging.getLogger("crmcluster.controller.registry.heartbeats")

_COLUMNS = ("observed", "version", "roles", "fqdn", "last_heartbeat", "updated_at")
_LIVENESS = sorted(s.value for s in LIVENESS_STATES)
#: Literals, not an expanding ``IN`` parameter (which ``executemany`` cannot take).
_LIVENESS_SQL: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in _LIVENESS]


class HeartbeatWriter:
    def __init__(self, registry: NodeRegistry, *, max_batch: int = 500) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self._queue: list[tuple[str, NodeStatus, asyncio.Future[NodeRecord]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Sizes of the last groups written (for the benchmark and the tests).
        self.groups: list[int] = []

    async def observe(self, name: str, status: NodeStatus) -> NodeRecord:
        """Queue a heartbeat; its node's record once the group it joined is committed."""
        future: asyncio.Future[NodeRecord] = asyncio.get_running_loop().create_future()
        self._queue.append((name, status, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="heartbeat-writer")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                records = await self._write(group)
            except asyncio.CancelledError:  # shutting down: nobody is left to answer
                for _, _, future in [*group, *self._queue]:
                    future.cancel()
                self._queue = []
                raise
            except Exception as exc:  # noqa: BLE001 - each heartbeat of the group answers this error itself
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for name, _, future in group:
                if future.done():  # the agent gave up waiting
                    continue
                if name in records:
                    future.set_result(records[name])
                else:
                    future.set_exception(UnknownNode(name))

    async def _write(
        self, group: list[tuple[str, NodeStatus, asyncio.Future[NodeRecord]]]
    ) -> dict[str, NodeRecord]:
        latest: dict[str, NodeStatus] = {}
        for name, status, _ in group:
            latest[name] = status  # a node twice in one group: its newest report wins
        reg = self.registry
        async with reg.engine.begin() as conn:
            rows = await conn.execute(select(nodes).where(nodes.c.name.in_(list(latest))).with_for_update())
            current = {r.name: record_from_row(r) for r in rows}
            params: list[dict[str, Any]] = []
            records: dict[str, NodeRecord] = {}
            for name, rec in current.items():
                status = latest[name]
                values = reg.observed_values(rec, status, heartbeat=True)
                values.setdefault("fqdn", rec.fqdn)
                alive = "up" if status.web == ServiceStatus.RUNNING else "down"
                params.append({"b_name": name, "b_alive": alive} | {f"b_{c}": values[c] for c in _COLUMNS})
                state = alive if rec.state in _LIVENESS else rec.state
                records[name] = replace(rec, state=state, **values)
            if params:
                stmt = (
                    update(nodes)
                    .where(nodes.c.name == bindparam("b_name"))
                    .values(
                        {c: bindparam(f"b_{c}", type_=nodes.c[c].type) for c in _COLUMNS}
                        # In SQL, not from what was read: SQLite reads outside the write lock, and
                        # a drain committed in between keeps its held state.
                        | {
                            "state": case(
                                (or_(*(nodes.c.state == v for v in _LIVENESS_SQL)), bindparam("b_alive")),
                                else_=nodes.c.state,
                            )
                        }
                    )
                )
                await conn.execute(stmt, params)
        self.groups = [*self.groups[-99:], len(group)]
        return records
