"""The operation journal: one JSON file per operation under ``<data dir>/agent/operations``.

Invariants:

- a file is replaced atomically (written beside, flushed, then renamed over), so a crash leaves
  the old record or the new one, never half of one;
- params are stored as the record shows them — secrets masked — so no license key or password
  ever reaches the disk (an interrupted operation is never resumed by the agent: the controller
  sends it again under a new op id, or the same one after reading ``interrupted``);
- op ids are file names: ``:`` (allowed in op ids, not in Windows file names) is written ``~``
  (not allowed in op ids), so the mapping is one to one;
- a running agent writes through :class:`JournalWriter`: off the event loop, in a worker thread,
  and only the newest record of each operation per write — an installer printing a thousand
  lines costs a handful of fsyncs, not a thousand, and the agent's API keeps answering meanwhile.
  Records of one operation are written in the order they were made, so a crash loses at most the
  newest changes: a record read back is older, never newer, than what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from node_agent.protocol import OperationRecord

log = logging.getLogger("crmcluster.agent.journal")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class OperationJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, op_id: str) -> Path:
        return self.directory / (op_id.replace(":", "~") + ".json")

    def save(self, record: OperationRecord) -> None:
        atomic_write_text(self._path(record.op_id), record.model_dump_json(indent=1))

    def load(self) -> dict[str, OperationRecord]:
        """Every readable record; unreadable files are set aside (``.bad``) and logged."""
        out: dict[str, OperationRecord] = {}
        if not self.directory.is_dir():
            return out
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = OperationRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("journal: setting aside unreadable %s (%s)", path.name, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            out[record.op_id] = record
        return out

    def prune(self, records: dict[str, OperationRecord], *, now: datetime, keep: timedelta) -> int:
        """Drop finished records older than ``keep``; returns how many went."""
        gone = 0
        for op_id, rec in list(records.items()):
            done = rec.finished_at or rec.created_at
            if rec.state.finished and now - done > keep:
                with contextlib.suppress(OSError):
                    self._path(op_id).unlink()
                del records[op_id]
                gone += 1
        return gone


class JournalWriter:
    """Saves records of an :class:`OperationJournal` off the event loop, coalescing bursts.

    ``save`` is cheap and never blocks: it keeps the record as the newest of its operation and
    makes sure a writer task runs. The writer takes everything kept so far and writes it in a
    worker thread; what arrives meanwhile waits for the next write. ``flush`` returns once every
    record saved before it is on disk. Outside a running event loop (start-up, tools), ``save``
    writes at once.

        writer = JournalWriter(journal)
        writer.save(record)        # many times a second
        await writer.flush()       # before answering that the operation is accepted
    """

    def __init__(self, journal: OperationJournal) -> None:
        self.journal = journal
        #: Files written so far (each one fsynced): what the coalescing saves is visible here.
        self.writes = 0
        self._pending: dict[str, OperationRecord] = {}
        self._task: asyncio.Task[None] | None = None

    def save(self, record: OperationRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write([record])
            return
        self._pending[record.op_id] = record
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain(), name="journal-writer")

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            await asyncio.to_thread(self._write, list(batch.values()))

    def _write(self, records: list[OperationRecord]) -> None:
        for record in records:
            try:
                self.journal.save(record)
            except OSError as exc:  # the disk is full or gone: the agent keeps running, and says so
                log.error("journal: cannot save %s: %s", record.op_id, exc)
            else:
                self.writes += 1

    async def flush(self) -> None:
        """Wait until every record saved so far is written."""
        while self._pending or (self._task is not None and not self._task.done()):
            if self._task is None or self._task.done():
                # A writer that died (its thread raised) left records behind: start another.
                self._task = asyncio.get_running_loop().create_task(self._drain(), name="journal-writer")
            await asyncio.wait([self._task])
