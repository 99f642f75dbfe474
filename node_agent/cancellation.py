"""What a cancelled operation must stop before its record may read ``cancelled`` and the node's lock
is given to the next operation: the work it left running outside its own task.

Cancelling an asyncio task stops the coroutine at its next ``await``, nothing more. A function
handed to a worker thread (``asyncio.to_thread``: a folder copy, a pyodbc call) runs on to its
end, and a SQL statement goes on inside SQL Server. So each operation runs with an
:class:`OperationWork` bound in its context (:data:`CURRENT`):

- every worker thread it starts is tracked — :class:`TrackingExecutor`, the event loop's default
  executor, files each future under the operation that submitted it — and the cancelled operation
  waits for them all (joined) before it gives the lock back;
- code that blocks on something another thread can interrupt registers how
  (:func:`cancellable`: pyodbc's ``Cursor.cancel``, ODBC's ``SQLCancel``); a cancel calls those
  first, then cancels the task. :func:`cancelled` tells a worker thread between two statements that
  it must not start the next.

Subprocesses need none of this: :class:`~node_agent.runner.SubprocessRunner` terminates them before
the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("crmcluster.agent.operations")

#: The operation the current task (or worker thread: asyncio copies the context) works for.
CURRENT: ContextVar[OperationWork | None] = ContextVar("crmcluster_operation_work", default=None)


class OperationWork:
    """The worker threads and interruptible calls of one operation."""

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        self._lock = threading.Lock()
        self._threads: set[concurrent.futures.Future[Any]] = set()
        self._cancellers: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self.cancelled = False

    # Worker threads --------------------------------------------------------------------------------
    def track(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._threads.add(future)
        future.add_done_callback(self._untrack)

    def _untrack(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._threads.discard(future)

    def pending(self) -> list[concurrent.futures.Future[Any]]:
        """The worker threads still running (or queued) for this operation."""
        with self._lock:
            return [f for f in self._threads if not f.done()]

    async def join(self) -> int:
        """Wait until every worker thread has ended, even when cancelled again meanwhile (the
        threads hold the server until then); how many there were."""
        pending = self.pending()
        if not pending:
            return 0
        joined = asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)
        while not joined.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(joined)
        return len(pending)

    # Interruptible calls ---------------------------------------------------------------------------
    def on_cancel(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn`` when the operation is cancelled (at once if it already is); returns the undo."""
        with self._lock:
            key = next(self._ids)
            self._cancellers[key] = fn
            already = self.cancelled
        if already:
            self._call(fn)

        def undo() -> None:
            with self._lock:
                self._cancellers.pop(key, None)

        return undo

    def cancel(self) -> int:
        """Mark the work cancelled and interrupt what is registered; how many calls were interrupted."""
        with self._lock:
            self.cancelled = True
            todo = list(self._cancellers.values())
        for fn in todo:
            self._call(fn)
        return len(todo)

    def _call(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # one canceller failing must not stop the others
            log.warning("operation %s: interrupting its work failed", self.op_id, exc_info=True)


class TrackingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor: each future filed under the operation that submitted it."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        work = CURRENT.get()
        if work is not None:
            work.track(future)
        return future


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make the loop's default executor (``asyncio.to_thread``'s) a :class:`TrackingExecutor`."""
    old = getattr(loop, "_default_executor", None)  # asyncio keeps it there; there is no getter
    if isinstance(old, TrackingExecutor):
        return
    loop.set_default_executor(TrackingExecutor(thread_name_prefix="crmcluster-op"))
    if isinstance(old, concurrent.futures.Executor):
        old.shutdown(wait=False)


@contextlib.contextmanager
def cancellable(interrupt: Callable[[], None]) -> Iterator[None]:
    """Within the block, cancelling the current operation calls ``interrupt`` (from the event
    loop's thread: it must be thread-safe, as ``pyodbc.Cursor.cancel`` is)."""
    work = CURRENT.get()
    if work is None:
        yield
        return
    undo = work.on_cancel(interrupt)
    try:
        yield
    finally:
        undo()


def cancelled() -> bool:
    """True once the current operation was cancelled: a worker thread starts nothing more."""
    work = CURRENT.get()
    return work is not None and work.cancelled
