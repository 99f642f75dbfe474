"""Operations: the controller's requests, run once each as supervised asyncio tasks.

The life of an operation::

    submit(op_id) ──► pending ──(node lock)──► running ──► succeeded | failed
                         │                        │
                         └──── cancel ────────────┴──► cancelled
                 agent stops or dies while running ──► interrupted (read back from the journal)

Invariants:

- one op id, one operation: submitting a known op id returns its record and runs nothing (a
  different action under a known op id is refused);
- every change of state, progress or log tail is journalled (:class:`JournalWriter`: off the event
  loop, the newest record of each operation per write); an operation is accepted (the 202) only
  once its record is on disk, and a record read after a restart is never more hopeful than what
  happened: a crash loses at most the newest changes, and an operation found ``pending``/
  ``running`` in the journal at start reads ``interrupted``, never ``succeeded``;
- actions that change the server hold the node's lock (one at a time); read-only actions
  (:data:`~node_agent.drivers.base.READ_ONLY_ACTIONS`) run beside them;
- cancel reaches the running work: SQL statements are interrupted, the task is cancelled,
  subprocesses are terminated — and the operation keeps the node's lock, and reads ``running``,
  until what it left in worker threads has ended (:mod:`node_agent.cancellation`): only then
  does it read ``cancelled``, and the next operation start;
- a succeeded operation's ``result`` fits its action's result model
  (:data:`~node_agent.protocol.ACTION_RESULTS`): a driver returning another shape fails the
  operation, naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from config import logs
from config.secrets import redact, redact_mapping
from node_agent import cancellation
from node_agent.cancellation import OperationWork
from node_agent.drivers.base import READ_ONLY_ACTIONS, DriverError, HostDriver, OperationContext
from node_agent.journal import JournalWriter, OperationJournal
from node_agent.protocol import (
    Action,
    OperationRecord,
    OperationState,
    Params,
    ResultError,
    parse_result,
    result_for_wire,
)
from node_agent.runner import CommandRunner, CommandTimeout

log = logging.getLogger("crmcluster.agent.operations")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class OperationConflict(Exception):
    """The op id is known under another action."""


class UnknownOperation(Exception):
    pass


class NotAwaiting(Exception):
    """A confirmation for an operation that waits for nobody."""


class AgentStopping(Exception):
    """The agent is shutting down and takes no new operation."""


class TooManyOperations(Exception):
    """As many operations wait or run as the agent takes at once; send it again later."""


def shown_params(params: Params) -> dict[str, Any]:
    """Params as a record shows them: secrets masked."""
    dumped = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    masked: dict[str, Any] = redact_mapping(dumped)
    return masked


@dataclass
class _Operation:
    record: OperationRecord
    ctx: OperationContext | None = None
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    work: OperationWork | None = None


class OperationManager:
    def __init__(
        self,
        *,
        driver: HostDriver,
        journal: OperationJournal,
        runner: CommandRunner,
        clock: Clock = utcnow,
        keep: timedelta = timedelta(days=30),
        on_finish: Callable[[OperationRecord], None] | None = None,
        max_unfinished: int = 200,
        max_kept: int = 10_000,
    ) -> None:
        #: Bounds on memory whatever a caller sends: operations waiting or running at once, and
        #: records kept in memory (the oldest finished ones go first; the journal keeps them).
        self.max_unfinished = max_unfinished
        self.max_kept = max_kept
        self.driver = driver
        self.on_finish = on_finish
        self.journal = journal
        self.writer = JournalWriter(journal)
        self.runner = runner
        self.clock = clock
        self.keep = keep
        self._ops: dict[str, _Operation] = {}
        self._lock = asyncio.Lock()
        self._stopping = False

    # Start and stop ------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the journal; what was pending or running when the agent stopped is interrupted."""
        records = self.journal.load()
        self.journal.prune(records, now=self.clock(), keep=self.keep)
        for op_id, rec in records.items():
            if not rec.state.finished:
                rec = rec.model_copy(
                    update={
                        "state": OperationState.INTERRUPTED,
                        "finished_at": self.clock(),
                        "error": "the agent stopped while this operation was "
                        + ("running" if rec.state == OperationState.RUNNING else "waiting")
                        + "; its outcome is unknown",
                    }
                )
                self.journal.save(rec)
                log.warning(
                    "operation %s (%s) was interrupted by an agent restart",
                    op_id,
                    rec.action,
                    extra={"op_id": op_id, "action": rec.action.value},
                )
                if self.on_finish is not None:
                    self.on_finish(rec)
            op = _Operation(rec)
            op.done.set()
            self._ops[op_id] = op

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop: running operations are cancelled and read ``interrupted``."""
        self._stopping = True
        tasks = [op.task for op in self._ops.values() if op.task is not None and not op.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.journalled()

    # Reading ---------------------------------------------------------------------------------------
    def get(self, op_id: str) -> OperationRecord:
        op = self._ops.get(op_id)
        if op is None:
            raise UnknownOperation(op_id)
        return self._snapshot(op)

    def records(self, *, limit: int = 100) -> list[OperationRecord]:
        ops = sorted(self._ops.values(), key=lambda o: o.record.created_at, reverse=True)
        return [self._snapshot(o) for o in ops[:limit]]

    def running(self) -> list[str]:
        return [k for k, o in self._ops.items() if not o.record.state.finished]

    async def wait(self, op_id: str) -> OperationRecord:
        op = self._ops.get(op_id)
        if op is None:
            raise UnknownOperation(op_id)
        await op.done.wait()
        return self._snapshot(op)

    def _snapshot(self, op: _Operation) -> OperationRecord:
        if op.ctx is None:
            return op.record.model_copy()
        update: dict[str, Any] = {"progress": op.ctx.fraction, "log_tail": list(op.ctx.lines)}
        if not op.record.state.finished:
            update["awaiting"] = op.ctx.awaiting
            update["choices"] = list(op.ctx.choices)
        return op.record.model_copy(update=update)

    def _save(self, op: _Operation) -> None:
        self.writer.save(self._snapshot(op))

    async def journalled(self) -> None:
        """Wait until every change made so far is on disk."""
        await self.writer.flush()

    # Submitting and cancelling ------------------------------------------------------------------------
    def submit(self, op_id: str, action: Action, params: Params) -> OperationRecord:
        existing = self._ops.get(op_id)
        if existing is not None:
            if existing.record.action != action:
                raise OperationConflict(
                    f"operation {op_id} is a {existing.record.action.value}, not {action.value}"
                )
            return self._snapshot(existing)
        if self._stopping:
            raise AgentStopping("the agent is stopping; send the operation again once it is back")
        unfinished = sum(1 for o in self._ops.values() if not o.record.state.finished)
        if unfinished >= self.max_unfinished:
            raise TooManyOperations(
                f"{unfinished} operations are waiting or running on this agent; send it again later"
            )
        if len(self._ops) >= self.max_kept:
            finished = sorted(
                (o for o in self._ops.values() if o.record.state.finished), key=lambda o: o.record.created_at
            )
            for old in finished[: len(self._ops) - self.max_kept + 1]:
                self._ops.pop(old.record.op_id, None)
        rec = OperationRecord(
            op_id=op_id,
            action=action,
            state=OperationState.PENDING,
            params=shown_params(params),
            created_at=self.clock(),
        )
        op = _Operation(rec, work=OperationWork(op_id))
        self._ops[op_id] = op
        self._save(op)
        cancellation.install(asyncio.get_running_loop())
        op.task = asyncio.create_task(self._run(op, params), name=f"op:{op_id}")
        return self._snapshot(op)

    def cancel(self, op_id: str) -> OperationRecord:
        op = self._ops.get(op_id)
        if op is None:
            raise UnknownOperation(op_id)
        if not op.record.state.finished and op.task is not None and not op.task.done():
            if not op.cancel_requested:
                op.cancel_requested = True
                # SQL statements first: a cancelled task cannot reach them.
                interrupted = op.work.cancel() if op.work is not None else 0
                if interrupted and op.ctx is not None:
                    op.ctx.log(f"interrupted {interrupted} running statement(s)")
                op.task.cancel()
        return self._snapshot(op)

    def confirm(self, op_id: str, note: str) -> OperationRecord:
        """A person confirms what a waiting operation asked for (the manual installer)."""
        op = self._ops.get(op_id)
        if op is None:
            raise UnknownOperation(op_id)
        if op.ctx is None or not op.ctx.confirm(note):
            raise NotAwaiting(f"operation {op_id} is not waiting for an operator")
        op.ctx.log("operator confirmed: " + redact(note)[:200])
        return self._snapshot(op)

    # Running ------------------------------------------------------------------------------------------
    def _finish(self, op: _Operation, state: OperationState, **update: Any) -> None:
        op.record = op.record.model_copy(update={"state": state, "finished_at": self.clock(), **update})
        if state == OperationState.SUCCEEDED and op.ctx is not None:
            op.ctx.fraction = 1.0
        self._save(op)
        op.done.set()
        rec = op.record
        took = (
            (rec.finished_at - (rec.started_at or rec.created_at)).total_seconds() if rec.finished_at else 0.0
        )
        log.log(
            logging.INFO if state == OperationState.SUCCEEDED else logging.WARNING,
            "operation %s (%s) %s in %.1fs%s",
            rec.op_id,
            rec.action.value,
            state.value,
            took,
            f": {rec.error}" if rec.error else "",
        )
        if self.on_finish is not None:
            self.on_finish(rec)

    async def _stop_work(self, op: _Operation) -> None:
        """The task is cancelled; what it left running is not: interrupt its SQL statements and
        wait for its worker threads, so the node is free once the lock is given back."""
        assert op.ctx is not None
        work = op.work
        if work is None:
            return
        interrupted = work.cancel()
        if interrupted:
            op.ctx.log(f"interrupted {interrupted} running statement(s)")
        waiting = len(work.pending())
        if waiting:
            op.ctx.log(f"waiting for {waiting} worker thread(s) of the stopped work to end")
            await work.join()
            op.ctx.log("the stopped work has ended")

    async def _run(self, op: _Operation, params: Params) -> None:
        # This task's own context (a copy of the submitting request's): its lines name the op.
        logs.bind(op_id=op.record.op_id, action=op.record.action.value)
        cancellation.CURRENT.set(op.work)  # this task's threads and statements are this operation's
        action = op.record.action
        op.ctx = OperationContext(
            op_id=op.record.op_id, action=action, runner=self.runner, on_change=lambda: self._save(op)
        )
        lock = contextlib.nullcontext() if action in READ_ONLY_ACTIONS else self._lock
        try:
            async with lock:
                op.record = op.record.model_copy(
                    update={"state": OperationState.RUNNING, "started_at": self.clock()}
                )
                self._save(op)
                log.info("operation %s (%s) started", op.record.op_id, action.value)
                try:
                    result = await self.driver.perform(action, params, op.ctx)
                except asyncio.CancelledError:
                    await self._stop_work(op)  # still holding the lock
                    raise
        except asyncio.CancelledError:
            if op.cancel_requested:
                op.ctx.log("cancelled on request")
                self._finish(op, OperationState.CANCELLED, error="cancelled on request")
            else:
                self._finish(
                    op,
                    OperationState.INTERRUPTED,
                    error="the agent stopped while this operation was running; its outcome is unknown",
                )
            return
        except (DriverError, CommandTimeout) as exc:
            message = redact(str(exc))
            op.ctx.log("failed: " + message)
            self._finish(op, OperationState.FAILED, error=message)
            return
        except Exception as exc:
            log.exception("operation %s (%s) failed unexpectedly", op.record.op_id, action.value)
            message = redact(f"unexpected error: {type(exc).__name__}: {exc}")
            op.ctx.log(message)
            self._finish(op, OperationState.FAILED, error=message)
            return
        try:
            checked = parse_result(action, result)
        except ResultError as exc:
            # A driver that reports something else than its action's result model is a bug: the
            # operation fails saying so rather than record what no reader understands.
            message = redact(f"the {self.driver.kind} driver's result is wrong: {exc}")
            log.error("operation %s: %s", op.record.op_id, message)
            op.ctx.log(message)
            self._finish(op, OperationState.FAILED, error=message)
            return
        wire = result_for_wire(checked)
        if op.ctx.commands:
            wire = {**wire, "commands": list(op.ctx.commands)}
        self._finish(op, OperationState.SUCCEEDED, result=redact_mapping(wire))
