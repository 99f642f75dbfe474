"""The operation journal: one JSON file per operation under ``<data dir>/agent/operations``.

Invariants:

- a file is replaced atomically (written beside, flushed, then renamed over), so a crash leaves
  the old record or the new one, never half of one;
- params are stored as the record shows them — secrets masked — so no license key or password
  ever reaches the disk (an interrupted operation is never resumed by the agent: the controller
  sends it again under a new op id, or the same one after reading ``interrupted``);
- op ids are file names: ``:`` (allowed in op ids, not in Windows file names) is written ``~``
  (not allowed in op ids), so the mapping is one to one.
"""

from __future__ import annotations

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
