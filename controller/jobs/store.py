"""Multi-step cluster operations (join a web server, remove one, drain, move the Replication Engine,
place services) as persisted jobs: a ``jobs`` row and one ``job_steps`` row per step.

Every step is written before it runs (``running``, with the operation id the agent is sent) and
after (``succeeded``/``failed`` with the agent's message), so a job always says which step it is at
and, when it stops, which step failed and why. Operation ids are ``<job id>:<seq>``: an agent
never runs the same one twice. Compensating steps (re-enable Exchange integration after a failed
join) are appended to the same job. A controller that restarts marks jobs it was running
``interrupted`` (:meth:`JobStore.interrupt_running`).

    job = await store.create("join", target="crm4", params={}, steps=[("crm1", "disable_…"), …])
    await run_steps(ctx, job, [agent_step(ctx, primary, Action.DISABLE_EXCHANGE_INTEGRATION), ...])
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from config.secrets import redact, redact_mapping
from config.state_schema import job_steps, jobs, utcnow
from controller.errors import UnknownJob

if TYPE_CHECKING:
    pass

log = logging.getLogger("crmcluster.controller.jobs")

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
PENDING = "pending"


class StepError(Exception):
    """A step did not succeed; the message says what the agent (or the controller) found."""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() + "Z" if t else None


@dataclass
class StepSpec:
    """A step to run: ``run(op_id)`` does it and returns its result (or raises :class:`StepError`)."""

    action: str
    node: str | None
    run: Callable[[str], Awaitable[dict[str, Any] | None]]


class JobStore:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    async def create(
        self,
        kind: str,
        *,
        target: str | None,
        params: dict[str, Any] | None,
        steps: Sequence[tuple[str | None, str]],
    ) -> str:
        job_id = f"{kind}-{uuid.uuid4().hex[:12]}"
        now = self.clock()
        async with self.engine.begin() as conn:
            await conn.execute(
                jobs.insert().values(
                    id=job_id,
                    kind=kind,
                    target=target,
                    status=RUNNING,
                    params=params,
                    message=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            for seq, (node, action) in enumerate(steps, start=1):
                await conn.execute(
                    job_steps.insert().values(
                        job_id=job_id, seq=seq, node=node, action=action, status=PENDING
                    )
                )
        return job_id

    async def add_step(self, job_id: str, *, node: str | None, action: str) -> int:
        async with self.engine.begin() as conn:
            last = (
                await conn.execute(select(func.max(job_steps.c.seq)).where(job_steps.c.job_id == job_id))
            ).scalar()
            seq = int(last or 0) + 1
            await conn.execute(
                job_steps.insert().values(job_id=job_id, seq=seq, node=node, action=action, status=PENDING)
            )
        return seq

    async def start_step(self, job_id: str, seq: int, *, op_id: str) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(job_steps)
                .where(job_steps.c.job_id == job_id, job_steps.c.seq == seq)
                .values(status=RUNNING, op_id=op_id, started_at=now)
            )
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=now))

    async def finish_step(
        self,
        job_id: str,
        seq: int,
        *,
        status: str,
        message: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(job_steps)
                .where(job_steps.c.job_id == job_id, job_steps.c.seq == seq)
                .values(
                    status=status,
                    finished_at=now,
                    message=redact(message) if message else None,
                    result=redact_mapping(result) if result is not None else None,
                )
            )
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=now))

    async def finish(self, job_id: str, *, status: str, message: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(status=status, message=redact(message) if message else None, updated_at=self.clock())
            )

    async def interrupt_running(self) -> list[str]:
        """Mark jobs left ``running`` by a previous controller process as ``interrupted``."""
        async with self.engine.begin() as conn:
            ids = [r[0] for r in await conn.execute(select(jobs.c.id).where(jobs.c.status == RUNNING))]
            if ids:
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(ids))
                    .values(
                        status=INTERRUPTED,
                        message="the controller stopped while this job ran",
                        updated_at=self.clock(),
                    )
                )
                await conn.execute(
                    update(job_steps)
                    .where(job_steps.c.job_id.in_(ids), job_steps.c.status == RUNNING)
                    .values(status=INTERRUPTED)
                )
        return ids

    async def running(self, *, kind: str | None = None, target: str | None = None) -> list[str]:
        query = select(jobs.c.id).where(jobs.c.status == RUNNING)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        if target is not None:
            query = query.where(jobs.c.target == target)
        async with self.engine.connect() as conn:
            return [r[0] for r in await conn.execute(query)]

    async def get(self, job_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).first()
            if row is None:
                raise UnknownJob(job_id)
            steps = (
                await conn.execute(
                    select(job_steps).where(job_steps.c.job_id == job_id).order_by(job_steps.c.seq)
                )
            ).all()
        return {
            "id": row.id,
            "kind": row.kind,
            "target": row.target,
            "status": row.status,
            "message": row.message,
            "params": redact_mapping(row.params),
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "steps": [
                {
                    "seq": s.seq,
                    "node": s.node,
                    "action": s.action,
                    "status": s.status,
                    "op_id": s.op_id,
                    "started_at": _iso(s.started_at),
                    "finished_at": _iso(s.finished_at),
                    "message": s.message,
                    "result": s.result,
                }
                for s in steps
            ],
        }

    async def list(self, *, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = select(jobs.c.id).order_by(jobs.c.created_at.desc()).limit(limit)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        async with self.engine.connect() as conn:
            ids = [r[0] for r in await conn.execute(query)]
        return [await self.get(i) for i in ids]
