"""One agent operation carried to its end: sent at most once, followed, and timed out.

:func:`carry_out` looks the op id up on the agent before sending it, so a controller that died after
persisting a step's "before" record (or after sending it) picks the same operation up again instead
of running it twice. It then polls the record until the operation finishes, passing new log lines
on, and gives up at the step's deadline (wall-clock, so the deadline survives a restart), cancelling
the operation on the agent: an agent that stops answering fails the step after its time-out, never
hangs the run. A request that does not get through (a network blip, an agent restarting) is
tried again at the next look; ``unreachable_grace`` bounds how long an agent may stay silent
before the step fails without waiting for the deadline. A failed operation is reported with the
agent's own error. Every caller — the join and other jobs, the preflight, the upgrade — follows
operations through :func:`carry_out`; there is no second way.

Polling (:class:`Polling`) is proportional to the time elapsed, and predictive once an action's
usual duration is known, so a step is seen to finish within a few hundredths of a second without
asking the agent every few milliseconds.

    StepFailed            the operation did not succeed; ``message`` says why (already redacted)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config.secrets import redact
from controller.agents.client import AgentClient, AgentRejected, AgentUnreachable
from node_agent.protocol import OperationRecord, OperationState, ResultError


class StepFailed(Exception):
    """``given_up``: the operation was left (time-out, a silent agent) while it may still run on
    the agent — its cancel was sent, but nobody knows it stopped."""

    def __init__(
        self,
        message: str,
        *,
        record: OperationRecord | None = None,
        evidence: dict[str, Any] | None = None,
        given_up: bool = False,
    ) -> None:
        super().__init__(redact(message))
        self.message = redact(message)
        self.record = record
        self.evidence = evidence
        self.given_up = given_up


@dataclass
class Polling:
    """When to look at a running operation again.

    Proportional: every ``fraction`` of the time elapsed so far, between ``min_interval`` and
    ``max_interval``. Predictive once an action has been seen to finish: operations of one action
    take about as long on every server (a batch of installers), so the next look is put just before
    the expected end, then every ``min_interval`` around it — a few requests per operation instead
    of one every ``min_interval``, which keeps a 500-server wave cheap.
    """

    fraction: float = 0.02
    min_interval: float = 0.05
    max_interval: float = 1.0
    estimates: dict[str, float] = field(default_factory=dict)

    def interval(self, elapsed: float, action: str | None = None) -> float:
        base = min(self.max_interval, max(self.min_interval, elapsed * self.fraction))
        expected = self.estimates.get(action or "")
        if expected is None and self.estimates:
            # Not seen yet (a wave's first operations): the shortest action seen is a safe guess —
            # a longer operation is then followed proportionally, as without an estimate.
            expected = min(self.estimates.values())
        if expected is None:
            return base
        early = 0.95 * expected - elapsed
        if early > base:
            return min(early, self.max_interval)
        if elapsed < 1.25 * expected:
            return self.min_interval
        return base

    def observe(self, action: str, seconds: float) -> None:
        if seconds < 0:
            return
        old = self.estimates.get(action)
        self.estimates[action] = seconds if old is None else 0.7 * old + 0.3 * seconds


def _duration(record: OperationRecord) -> float | None:
    start = record.started_at or record.created_at
    if record.finished_at is None or start is None:
        return None
    return (record.finished_at - start).total_seconds()


def new_lines(seen: list[str], tail: list[str]) -> list[str]:
    """Lines of ``tail`` not yet passed on, given the lines ``seen`` so far (tails scroll)."""
    if not seen:
        return list(tail)
    for overlap in range(min(len(seen), len(tail)), 0, -1):
        if seen[-overlap:] == tail[:overlap]:
            return tail[overlap:]
    return list(tail)


async def carry_out(
    client: AgentClient,
    *,
    op_id: str,
    action: str,
    params: dict[str, Any],
    deadline: float | None,
    polling: Polling | None = None,
    clock: Callable[[], float] = time.time,
    on_log: Callable[[list[str]], Any] | None = None,
    on_record: Callable[[OperationRecord], Any] | None = None,
    fresh: bool = False,
    unreachable_grace: float | None = None,
) -> OperationRecord:
    """Send (unless already sent) and follow ``op_id`` until it finishes; the succeeded record.

    ``deadline`` is a ``clock()`` time (epoch seconds by default). ``fresh`` says the caller has
    just persisted this op id for the first time, so no one can have sent it yet and the look-up
    is skipped (the agent would still answer a duplicate with the same operation).
    ``unreachable_grace``: seconds the agent may go unanswered in a row before the step fails
    (None: until the deadline). ``on_record`` is given every record read (sync or async), e.g. to
    notice an operation that waits for an operator (``record.awaiting``). Raises
    :class:`StepFailed` when the operation fails, is cancelled or interrupted, is refused, its
    result does not fit its action's model, or it outlives the deadline (it is then cancelled on
    the agent) or the grace.
    """
    polling = polling or Polling()
    start = clock()
    seen: list[str] = []
    sent = False
    last: OperationRecord | None = None
    last_error = ""
    silent_since: float | None = None
    while True:
        try:
            record = None if fresh and not sent else await client.operation(op_id)
            if record is None and not sent:
                record = await client.submit(op_id, action, params)
                sent = True
            elif record is None:
                raise StepFailed(f"{action}: the agent no longer knows operation {op_id}")
            else:
                sent = True
            last = record
            last_error = ""
            silent_since = None
            lines = new_lines(seen, record.log_tail)
            if lines and on_log is not None:
                seen.extend(lines)
                seen[:] = seen[-200:]
                res = on_log([redact(x) for x in lines])
                if asyncio.iscoroutine(res):
                    await res
            if on_record is not None:
                res = on_record(record)
                if asyncio.iscoroutine(res):
                    await res
            if record.state.finished:
                took = _duration(record)
                if took is not None and record.state == OperationState.SUCCEEDED:
                    polling.observe(action, took)
                return _settled(record)
        except AgentRejected as exc:
            raise StepFailed(f"{action}: {exc}") from exc
        except AgentUnreachable as exc:
            last_error = str(exc)
            if silent_since is None:
                silent_since = clock()
        now = clock()
        if (
            unreachable_grace is not None
            and silent_since is not None
            and now - silent_since >= unreachable_grace
        ):
            if sent:
                with contextlib.suppress(AgentUnreachable, AgentRejected):
                    await client.cancel(op_id)
            raise StepFailed(
                f"{action}: the agent did not answer for {now - silent_since:.0f}s ({last_error})",
                record=last,
                given_up=sent,
            )
        if deadline is not None and now >= deadline:
            if sent:
                with contextlib.suppress(AgentUnreachable, AgentRejected):
                    await client.cancel(op_id)
            state = f"last seen {last.state.value}" if last is not None else "never seen"
            why = f"; {last_error}" if last_error else ""
            raise StepFailed(
                f"{action} timed out after {now - start:.0f}s on this attempt ({state}{why})",
                record=last,
                given_up=sent,
            )
        wait = polling.interval(now - start, action)
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - now))
        await asyncio.sleep(wait)


async def stop_operation(
    client: AgentClient,
    op_id: str,
    *,
    deadline: float | None,
    clock: Callable[[], float] = time.time,
    interval: float = 0.1,
    max_interval: float = 5.0,
    on_retry: Callable[[int, str], Any] | None = None,
) -> OperationRecord | None:
    """Cancel ``op_id`` and follow it until its agent says it has ended; that record, or None
    when the agent has never seen it (it cannot run). A cancel that does not get through (refused,
    unanswered) is tried again, each failure given to ``on_retry(attempt, error)`` first; looks
    back off from ``interval`` to ``max_interval``. Raises :class:`StepFailed` at ``deadline``
    (a ``clock()`` time) while the operation still runs, or its agent still does not answer."""
    accepted = False
    failures = 0
    last: OperationRecord | None = None
    looks = 0
    while True:
        try:
            if not accepted:
                last = await client.cancel(op_id)
                accepted = True
            else:
                last = await client.operation(op_id)
                if last is None:
                    return None
            if last.state.finished:
                return last
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            failures += 1
            if on_retry is not None:
                res = on_retry(failures, str(exc))
                if asyncio.iscoroutine(res):
                    await res
        except AgentUnreachable as exc:
            failures += 1
            if on_retry is not None:
                res = on_retry(failures, str(exc))
                if asyncio.iscoroutine(res):
                    await res
        now = clock()
        if deadline is not None and now >= deadline:
            seen = f"it still reads {last.state.value}" if last is not None else "its agent does not answer"
            raise StepFailed(f"{op_id} has not ended: {seen}", record=last)
        looks += 1
        wait = min(max_interval, interval * 2 ** min(looks, 8))
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - now))
        await asyncio.sleep(wait)


def _settled(record: OperationRecord) -> OperationRecord:
    if record.state == OperationState.SUCCEEDED:
        try:
            record.parsed_result()
        except ResultError as exc:
            raise StepFailed(f"{record.action.value}: the agent's result is not understood: {exc}") from exc
        return record
    reason = record.error or (record.log_tail[-1] if record.log_tail else "")
    if record.state == OperationState.INTERRUPTED:
        reason = "interrupted: the agent stopped while it ran" + (f" ({reason})" if reason else "")
    raise StepFailed(
        f"{record.action.value} {record.state.value}" + (f": {reason}" if reason else ""), record=record
    )
