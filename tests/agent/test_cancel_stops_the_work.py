"""Cancel that really cancels, on the agent: a cancelled operation keeps the node's lock, and reads
``running``, until the work it left in worker threads has ended (joined) and its SQL statement has
been interrupted; only then does it read ``cancelled`` and the next change start."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from node_agent.cancellation import cancellable, cancelled
from node_agent.drivers.base import HostDriver, OperationContext
from node_agent.journal import OperationJournal
from node_agent.operations import OperationManager
from node_agent.protocol import Action, NodeStatus, NoParams, OperationState, RestoreParams
from node_agent.runner import RecordingRunner


class ThreadedWork(HostDriver):
    """Actions whose work runs in worker threads, as file copies and pyodbc calls do."""

    kind = "test"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.events: list[tuple[str, float]] = []

    def note(self, what: str) -> None:
        self.events.append((what, time.monotonic()))

    async def status(self) -> NodeStatus:  # pragma: no cover - not asked here
        raise NotImplementedError

    async def iis_started_at(self) -> datetime | None:  # pragma: no cover - not asked here
        return None

    async def backup_program_files(self, params: Any, ctx: OperationContext) -> dict[str, Any]:
        def copy() -> None:  # a folder copy: nothing can stop it half-way
            self.started.set()
            self.release.wait(10)
            self.note("copy thread ended")

        await asyncio.to_thread(copy)
        raise AssertionError("not reached: cancelled")

    async def restore_database(self, params: Any, ctx: OperationContext) -> dict[str, Any]:
        def session() -> None:  # one connection, statements in turn (the windows driver's RESTORE)
            for name in ("single_user", "restore", "multi_user"):
                if cancelled():
                    self.note(f"{name} not started")
                    return
                interrupted = threading.Event()
                with cancellable(interrupted.set):  # pyodbc's Cursor.cancel
                    self.started.set()
                    self.note(f"{name} running")
                    interrupted.wait(10)
                self.note(f"{name} interrupted")

        await asyncio.to_thread(session)
        raise AssertionError("not reached: cancelled")

    async def stop_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        self.note("stop_web ran")
        return {"web": "stopped"}


async def _until(pred: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def _manager(tmp_path: Path, driver: HostDriver) -> OperationManager:
    return OperationManager(driver=driver, journal=OperationJournal(tmp_path), runner=RecordingRunner())


async def test_the_lock_is_held_until_the_cancelled_threads_have_ended(tmp_path: Path) -> None:
    driver = ThreadedWork()
    ops = _manager(tmp_path, driver)
    ops.submit("copy", Action.BACKUP_PROGRAM_FILES, NoParams())
    await _until(driver.started.is_set)
    ops.submit("next", Action.STOP_WEB, NoParams())  # a change: waits for the node's lock
    ops.cancel("copy")
    ops.cancel("copy")  # a second cancel changes nothing
    await asyncio.sleep(0.3)
    # The copy still runs in its thread: the operation says so, and holds the node.
    rec = ops.get("copy")
    assert rec.state == OperationState.RUNNING and rec.finished_at is None
    assert any("waiting for 1 worker thread(s)" in line for line in rec.log_tail)
    assert ops.get("next").state == OperationState.PENDING
    driver.release.set()
    done = await ops.wait("copy")
    assert done.state == OperationState.CANCELLED and done.log_tail[-2:] == [
        "the stopped work has ended",
        "cancelled on request",
    ]
    assert (await ops.wait("next")).state == OperationState.SUCCEEDED
    assert [e for e, _ in driver.events] == ["copy thread ended", "stop_web ran"]
    await ops.shutdown()


async def test_a_cancel_interrupts_the_running_statement_and_starts_no_other(tmp_path: Path) -> None:
    driver = ThreadedWork()
    ops = _manager(tmp_path, driver)
    ops.submit("restore", Action.RESTORE_DATABASE, RestoreParams(source="database/b1"))
    await _until(driver.started.is_set)
    ops.cancel("restore")
    done = await ops.wait("restore")
    assert done.state == OperationState.CANCELLED
    assert any("interrupted 1 running statement(s)" in line for line in done.log_tail)
    # The statement stopped at once (no one released it), and the next was never started.
    assert [e for e, _ in driver.events] == [
        "single_user running",
        "single_user interrupted",
        "restore not started",
    ]
    await ops.shutdown()
