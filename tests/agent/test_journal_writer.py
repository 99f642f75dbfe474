"""The journal is written off the event loop, and a burst of output lines costs a few writes (each
one an fsync), not one per line: a chatty installer on a slow disk leaves the agent's API
answering."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from node_agent.drivers.base import HostDriver, OperationContext
from node_agent.journal import JournalWriter, OperationJournal
from node_agent.operations import OperationManager
from node_agent.protocol import Action, NodeStatus, NoParams, OperationRecord, OperationState, Params
from node_agent.runner import SubprocessRunner

LINES = 3000
#: What one fsync costs on a slow disk (a busy Windows server with an antivirus scanning writes).
SLOW_FSYNC = 0.005


class SlowDiskJournal(OperationJournal):
    """The journal on a slow disk; records which threads wrote to it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.threads: set[str] = set()

    def save(self, record: OperationRecord) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(SLOW_FSYNC)
        super().save(record)


class ChattyDriver(HostDriver):
    """Runs a real subprocess that prints ``LINES`` lines, as an installer does."""

    kind = "chatty"

    async def status(self) -> NodeStatus:
        raise NotImplementedError

    async def iis_started_at(self) -> datetime | None:
        return None

    async def perform(self, action: Action, params: Params, ctx: OperationContext) -> dict[str, Any]:
        code = f"for i in range({LINES}): print('setup line', i, flush=True)"
        await ctx.run([sys.executable, "-c", code])
        return {"ok": True, "completed": True, "scripts": []}  # read_upgrade_log's result model


async def _max_loop_gap(until: asyncio.Future[Any]) -> float:
    """The longest the event loop went without running this task while ``until`` was pending."""
    loop = asyncio.get_running_loop()
    worst, last = 0.0, loop.time()
    while not until.done():
        await asyncio.sleep(0.005)
        now = loop.time()
        worst, last = max(worst, now - last), now
    return worst


async def test_a_burst_of_output_lines_is_journalled_in_a_few_writes_off_the_loop(tmp_path: Path) -> None:
    journal = SlowDiskJournal(tmp_path / "operations")
    manager = OperationManager(driver=ChattyDriver(), journal=journal, runner=SubprocessRunner())
    manager.submit("chatty-1", Action.READ_UPGRADE_LOG, NoParams())
    await manager.journalled()
    finished = asyncio.ensure_future(manager.wait("chatty-1"))
    gap = await _max_loop_gap(finished)
    record = await finished
    await manager.journalled()

    assert record.state == OperationState.SUCCEEDED and record.log_tail[-1] == f"setup line {LINES - 1}"
    # Every line changed the record; the writer wrote only the newest record per write.
    writes = manager.writer.writes
    assert writes < LINES / 10, f"{writes} journal writes for {LINES} lines"
    # Written from worker threads, never from the event loop's own.
    assert threading.main_thread().name not in journal.threads
    # Writing one record per line on this disk would have held the loop ~15 s.
    assert gap < 0.5, f"the event loop stalled for {gap:.3f}s"
    on_disk = json.loads((tmp_path / "operations" / "chatty-1.json").read_text(encoding="utf-8"))
    assert on_disk["state"] == record.state.value and on_disk["log_tail"] == record.log_tail


async def test_flush_waits_for_the_newest_record_of_each_operation(tmp_path: Path) -> None:
    journal = OperationJournal(tmp_path)
    writer = JournalWriter(journal)
    base = OperationRecord(
        op_id="op-1", action=Action.STOP_WEB, state=OperationState.PENDING, created_at=datetime(2026, 11, 28)
    )
    writer.save(base)
    writer.save(base.model_copy(update={"state": OperationState.RUNNING}))
    writer.save(base.model_copy(update={"op_id": "op-2"}))
    writer.save(base.model_copy(update={"state": OperationState.SUCCEEDED}))
    await writer.flush()
    records = journal.load()
    assert records["op-1"].state == OperationState.SUCCEEDED
    assert records["op-2"].state == OperationState.PENDING
    assert writer.writes <= 4


def test_outside_an_event_loop_a_save_is_written_at_once(tmp_path: Path) -> None:
    writer = JournalWriter(OperationJournal(tmp_path))
    record = OperationRecord(
        op_id="op-1", action=Action.STOP_WEB, state=OperationState.PENDING, created_at=datetime(2026, 11, 28)
    )
    writer.save(record)
    assert writer.writes == 1 and (tmp_path / "op-1.json").exists()
