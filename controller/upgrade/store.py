"""Persistence of upgrade runs, their steps and their events (``upgrade_runs``/``_steps``/``_events``).

Every write goes through :class:`GroupCommit`: callers queue statements and wait until they are
committed; whatever queued while one transaction was being written goes in the next one. A step's
"before" record is therefore durable before its operation is sent, yet a wave of 50 nodes starting
together costs one or two transactions, not fifty.

Secrets never reach a row: event data and messages pass through :func:`config.secrets.redact_mapping`
and :func:`~config.secrets.redact`; the run's license key and passwords live only in
``upgrade_runs.secrets``, encrypted by the controller's :class:`~config.secrets.SecretBox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config.database import unavailable_errors
from config.secrets import SecretBox, redact, redact_mapping, register_secret
from config.state_schema import nodes, upgrade_events, upgrade_runs, upgrade_steps, utcnow
from controller.upgrade.model import Run, RunStatus, Step, StepStatus

Listener = Callable[[str], None]


class HeldConnection:
    """One connection kept open and shared under a lock.

    The embedded SQLite engine opens a new connection (and thread) for every use; a run writes
    thousands of small records, so the store keeps one connection for writing and one for reading.
    A read ends its transaction at once, so the next read sees the latest commits. Any error drops
    the connection; the next use opens a fresh one.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await self.engine.connect()
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock:
            conn = await self._get()
            try:
                async with conn.begin():
                    yield conn
            except BaseException:
                await self._drop()
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock:
            conn = await self._get()
            try:
                yield conn
                await conn.rollback()
            except BaseException:
                await self._drop()
                raise

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


@dataclass
class Write:
    """What one caller asks to commit: statements, step records (``step_values`` plus ``run_id``/
    ``id``) and event rows — the last two written with one ``executemany`` each per transaction."""

    stmts: Sequence[Executable] = ()
    steps: Sequence[dict[str, Any]] = ()
    events: Sequence[dict[str, Any]] = ()


class GroupCommit:
    """Queue writes; one writer commits whatever is queued in one transaction at a time."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.held = HeldConnection(engine)
        self._pending: list[tuple[Write, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(
        self,
        *stmts: Executable,
        steps: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((Write(stmts, steps, events), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="upgrade-store-writer")
        await fut

    @staticmethod
    async def _apply(conn: AsyncConnection, writes: list[Write]) -> None:
        for w in writes:
            for stmt in w.stmts:
                await conn.execute(stmt)
        steps = [row for w in writes for row in w.steps]
        if steps:
            await conn.execute(step_update(), steps)
        events = [row for w in writes for row in w.events]
        if events:
            await conn.execute(insert(upgrade_events), events)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                with unavailable_errors("state database"):
                    async with self.held.begin() as conn:
                        await self._apply(conn, [w for w, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, who raise it
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad write must not fail its neighbours: write them one by one.
                for w, fut in batch:
                    try:
                        async with self.held.begin() as conn:
                            await self._apply(conn, [w])
                    except Exception as one:  # noqa: BLE001 - handed to its caller, who raises it
                        _settle(fut, one)
                    else:
                        _settle(fut, None)
                continue
            for _, fut in batch:
                _settle(fut, None)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _run(row: Any) -> Run:
    m = row._mapping
    return Run(
        id=m["id"],
        status=RunStatus(m["status"]),
        target_version=m["target_version"],
        from_version=m["from_version"],
        options=dict(m["options"] or {}),
        preflight=list(m["preflight"] or []),
        context=dict(m["context"] or {}),
        secrets=m["secrets"],
        requested=m["requested"],
        nodes=list(m["nodes"] or []),
        message=m["message"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
    )


def _step(row: Any) -> Step:
    m = row._mapping
    return Step(
        run_id=m["run_id"],
        id=m["id"],
        seq=m["seq"],
        wave=m["wave"],
        phase=m["phase"],
        node=m["node"],
        action=m["action"],
        params=dict(m["params"] or {}),
        status=StepStatus(m["status"]),
        attempt=m["attempt"],
        op_id=m["op_id"],
        timeout=m["timeout"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        message=m["message"],
        result=m["result"],
    )


def step_update() -> Executable:
    """One UPDATE of a step's record, run as executemany over rows of :func:`step_row`."""
    return (
        update(upgrade_steps)
        .where(upgrade_steps.c.run_id == bindparam("k_run"))
        .where(upgrade_steps.c.id == bindparam("k_id"))
        .values(**{k: bindparam(f"v_{k}") for k in STEP_FIELDS})
    )


def step_row(step: Step) -> dict[str, Any]:
    return {"k_run": step.run_id, "k_id": step.id, **{f"v_{k}": v for k, v in step_values(step).items()}}


STEP_FIELDS = (
    "status",
    "attempt",
    "op_id",
    "started_at",
    "finished_at",
    "message",
    "result",
    "params",
    "timeout",
)


def step_values(step: Step) -> dict[str, Any]:
    return {
        "status": step.status.value,
        "attempt": step.attempt,
        "op_id": step.op_id,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "message": redact(step.message)[:4000] if step.message else None,
        "result": redact_mapping(step.result) if step.result is not None else None,
        "params": redact_mapping(step.params),
        "timeout": step.timeout,
    }


def new_step_row(step: Step, *, run_id: str) -> dict[str, Any]:
    """A whole ``upgrade_steps`` row for ``step``: its identity and place in the plan, then its record."""
    return {
        "run_id": run_id,
        "id": step.id,
        "seq": step.seq,
        "wave": step.wave,
        "phase": step.phase,
        "node": step.node,
        "action": step.action,
        **step_values(step),
    }


def insert_steps(rows: list[dict[str, Any]], *, chunk: int = 100) -> list[Executable]:
    """Multi-row INSERTs of step records, in chunks that stay under every database's limit on
    bound parameters (SQLite's is 32766, SQL Server's 2100 — hence small chunks there)."""
    return [insert(upgrade_steps).values(rows[i : i + chunk]) for i in range(0, len(rows), chunk)]


def step_event(step: Step) -> dict[str, Any]:
    return {
        "step": step.id,
        "phase": step.phase,
        "node": step.node,
        "action": step.action,
        "status": step.status.value,
        "attempt": step.attempt,
        "op_id": step.op_id,
        "message": step.message,
    }


class UpgradeStore:
    """Runs, steps and events of upgrades in the state database.

    ``listeners`` are told the run id after each committed event, so server-sent event streams in
    this process wake at once (streams also poll, for events another controller wrote).
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock
        self.writer = GroupCommit(engine)
        self.reader = HeldConnection(engine)
        self.listeners: set[Listener] = set()

    async def aclose(self) -> None:
        await self.writer.held.aclose()
        await self.reader.aclose()

    # Runs ------------------------------------------------------------------------------------------
    async def create_run(self, run: Run, steps: Iterable[Step]) -> None:
        now = self.clock()
        run.created_at = run.updated_at = now
        stmts: list[Executable] = [
            insert(upgrade_runs).values(
                id=run.id,
                status=run.status.value,
                target_version=run.target_version,
                from_version=run.from_version,
                options=run.options,
                secrets=run.secrets,
                nodes=run.nodes,
                preflight=redact_mapping(run.preflight),
                context=redact_mapping(run.context),
                message=redact(run.message) if run.message else None,
                created_by=run.created_by,
                created_at=now,
                updated_at=now,
            )
        ]
        rows = [new_step_row(s, run_id=run.id) for s in steps]
        if rows:
            stmts += insert_steps(rows)
        await self.writer.commit(*stmts)
        await self.event(run.id, "run", {"status": run.status.value, "message": "planned"})

    async def get_run(self, run_id: str) -> Run | None:
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                row = (await conn.execute(select(upgrade_runs).where(upgrade_runs.c.id == run_id))).first()
        return _run(row) if row is not None else None

    async def status_of(self, run_id: str) -> tuple[RunStatus, str | None] | None:
        """The run's status and pending request, read without its JSON columns (the hot path)."""
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                row = (
                    await conn.execute(
                        select(upgrade_runs.c.status, upgrade_runs.c.requested).where(
                            upgrade_runs.c.id == run_id
                        )
                    )
                ).first()
        return (RunStatus(row[0]), row[1]) if row is not None else None

    async def list_runs(self, *, statuses: Iterable[RunStatus] | None = None, limit: int = 100) -> list[Run]:
        q = select(upgrade_runs).order_by(upgrade_runs.c.created_at.desc()).limit(limit)
        if statuses is not None:
            q = q.where(upgrade_runs.c.status.in_([s.value for s in statuses]))
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                return [_run(r) for r in await conn.execute(q)]

    async def update_run(self, run_id: str, *, event: dict[str, Any] | None = None, **values: Any) -> None:
        """Write run columns (status, message, context, requested …) and, with it, a ``run`` event."""
        values["updated_at"] = self.clock()
        if isinstance(values.get("status"), RunStatus):
            values["status"] = values["status"].value
        if values.get("message"):
            values["message"] = redact(values["message"])[:4000]
        if "context" in values:
            values["context"] = redact_mapping(values["context"])
        await self.writer.commit(
            update(upgrade_runs).where(upgrade_runs.c.id == run_id).values(**values),
            events=[self._event_row(run_id, "run", event)] if event is not None else (),
        )
        if event is not None:
            self._notify(run_id)

    async def request(self, run_id: str, requested: str | None, *, expect: Iterable[RunStatus]) -> bool:
        """Compare-and-set the operator's request; False when the run is not in ``expect``."""
        with unavailable_errors("state database"):
            async with self.writer.held.begin() as conn:
                res = await conn.execute(
                    update(upgrade_runs)
                    .where(upgrade_runs.c.id == run_id)
                    .where(upgrade_runs.c.status.in_([s.value for s in expect]))
                    .values(requested=requested, updated_at=self.clock())
                )
        return bool(res.rowcount)

    async def transition(
        self, run_id: str, *, expect: Iterable[RunStatus], status: RunStatus, **values: Any
    ) -> bool:
        """Compare-and-set the run's status (from one of ``expect``); emits a ``run`` event."""
        values["updated_at"] = self.clock()
        if values.get("message"):
            values["message"] = redact(values["message"])[:4000]
        with unavailable_errors("state database"):
            async with self.writer.held.begin() as conn:
                res = await conn.execute(
                    update(upgrade_runs)
                    .where(upgrade_runs.c.id == run_id)
                    .where(upgrade_runs.c.status.in_([s.value for s in expect]))
                    .values(status=status.value, **values)
                )
                if res.rowcount:
                    await conn.execute(
                        self._event_stmt(
                            run_id, "run", {"status": status.value, "message": values.get("message")}
                        )
                    )
        if res.rowcount:
            self._notify(run_id)
        return bool(res.rowcount)

    # Steps -----------------------------------------------------------------------------------------
    async def steps(self, run_id: str) -> list[Step]:
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                rows = await conn.execute(
                    select(upgrade_steps)
                    .where(upgrade_steps.c.run_id == run_id)
                    .order_by(upgrade_steps.c.seq)
                )
                return [_step(r) for r in rows]

    async def add_steps(self, steps: Sequence[Step], *, event: dict[str, Any] | None = None) -> None:
        if not steps:
            return
        rows = [new_step_row(s, run_id=s.run_id) for s in steps]
        await self.writer.commit(
            *insert_steps(rows),
            events=[self._event_row(steps[0].run_id, "decision", event)] if event is not None else (),
        )
        self._notify(steps[0].run_id)

    async def save_steps(self, steps: Sequence[Step]) -> None:
        """Write several steps' records and their events in one transaction (a lane's "after" of one
        step with the "before" of the next)."""
        if steps:
            await self.writer.commit(
                steps=[step_row(s) for s in steps],
                events=[self._event_row(s.run_id, "step", step_event(s)) for s in steps],
            )
            self._notify(steps[0].run_id)

    async def save_step(self, step: Step) -> None:
        """Write the step's record together with its ``step`` event (one transaction)."""
        await self.save_steps([step])

    async def rewrite(self, run: Run, steps: Sequence[Step]) -> None:
        """Write the run's and every step's record again from memory (after a restore of a CRM
        database that is also the state database rolled them back)."""
        await self.writer.commit(
            update(upgrade_runs)
            .where(upgrade_runs.c.id == run.id)
            .values(
                status=run.status.value,
                requested=None,
                context=redact_mapping(run.context),
                started_at=run.started_at,
                updated_at=self.clock(),
            ),
            delete(upgrade_steps).where(upgrade_steps.c.run_id == run.id),
            *insert_steps(
                [
                    {
                        "run_id": x.run_id,
                        "id": x.id,
                        "seq": x.seq,
                        "wave": x.wave,
                        "phase": x.phase,
                        "node": x.node,
                        "action": x.action,
                        **step_values(x),
                    }
                    for x in steps
                ]
            ),
            events=[
                self._event_row(
                    run.id,
                    "decision",
                    {
                        "decision": "records_rewritten",
                        "message": "the restore rolled back the state database",
                    },
                )
            ],
        )
        self._notify(run.id)

    # Events ----------------------------------------------------------------------------------------
    def _event_stmt(self, run_id: str, kind: str, data: dict[str, Any]) -> Executable:
        return insert(upgrade_events).values(**self._event_row(run_id, kind, data))

    def _event_row(self, run_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": run_id, "at": self.clock(), "kind": kind, "data": redact_mapping(data)}

    async def event(self, run_id: str, kind: str, data: dict[str, Any]) -> None:
        await self.writer.commit(events=[self._event_row(run_id, kind, data)])
        self._notify(run_id)

    async def events_after(self, run_id: str, after: int, *, limit: int = 500) -> list[dict[str, Any]]:
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                rows = await conn.execute(
                    select(upgrade_events)
                    .where(upgrade_events.c.run_id == run_id)
                    .where(upgrade_events.c.id > after)
                    .order_by(upgrade_events.c.id)
                    .limit(limit)
                )
                return [
                    {"id": r.id, "at": r.at.isoformat() + "Z", "kind": r.kind, "data": r.data} for r in rows
                ]

    async def event_count(self, run_id: str) -> int:
        async with self.engine.connect() as conn:
            q = select(func.count()).select_from(upgrade_events).where(upgrade_events.c.run_id == run_id)
            return int((await conn.execute(q)).scalar_one())

    def _notify(self, run_id: str) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(run_id)

    # Nodes (the balancer reads these states within a second) ----------------------------------------
    async def set_node_states(self, names: Iterable[str], state: str) -> None:
        names = list(names)
        if names:
            await self.writer.commit(
                update(nodes).where(nodes.c.name.in_(names)).values(state=state, updated_at=self.clock())
            )

    async def node_rows(self) -> list[dict[str, Any]]:
        with unavailable_errors("state database"):
            async with self.reader.read() as conn:
                rows = await conn.execute(select(nodes).order_by(nodes.c.name))
                return [dict(r._mapping) for r in rows]


def seal(box: SecretBox, secrets: dict[str, str]) -> str:
    """The run's secrets as one encrypted token for ``upgrade_runs.secrets``."""
    for value in secrets.values():
        register_secret(value)
    return box.encrypt(json.dumps(secrets))


def unseal(box: SecretBox, token: str | None) -> dict[str, str]:
    if not token:
        return {}
    data = json.loads(box.decrypt(token))
    secrets = {str(k): str(v) for k, v in data.items()}
    for value in secrets.values():
        register_secret(value)
    return secrets
