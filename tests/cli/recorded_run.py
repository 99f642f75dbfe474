"""An upgrade run played on the controller's own upgrade store, recorded as the CLI sees it.

The watcher is tested against what the controller really sends: the run snapshots
``GET /upgrades/{id}`` answers (:func:`controller.upgrade.orchestrator.run_view`) and the bytes
``GET /upgrades/{id}/events`` sends (:func:`controller.upgrade.events.event_stream`, encoded as
the response encodes it), from the start or after any ``Last-Event-ID``. Nothing here writes a
wire format by hand: steps are saved with ``UpgradeStore.save_step`` (which writes their ``step``
events), the run's status with ``UpgradeStore.transition``.

    rec = record(tmp_path, [("s1", "running"), ("s1", "succeeded"), ("run", "succeeded")])
    rec.snapshots[-1]["status"]   # "succeeded"
    rec.streams[0]                # the whole stream: retry hint, every event, then "end"
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from config.database import make_engine
from config.migrate import migrate
from controller.upgrade.events import event_stream
from controller.upgrade.model import Phase, Run, RunStatus, Step, StepStatus
from controller.upgrade.orchestrator import run_view
from controller.upgrade.store import UpgradeStore

RUN_ID = "r1"
#: (step id, phase, node, action): one step of each kind the watcher draws.
PLAN = [
    ("s1", Phase.FREEZE, "crm2", "stop_web"),
    ("s2", Phase.BACKUP, "crm1", "backup_database"),
    ("s3", Phase.DATABASE_SERVER, "crm1", "run_installer"),
    ("s4", Phase.OTHER_SERVERS, "crm2", "run_installer"),
]
START = datetime(2026, 11, 28, 23, 10, 0)

#: One move: ``(step id, step status[, message])``, ``("run", run status)`` or ``("phase", name)``.
Move = tuple[str, ...]


@dataclass
class Recording:
    #: The run as ``GET /upgrades/r1`` answers it, after each move.
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    #: What ``GET /upgrades/r1/events`` sends, by ``Last-Event-ID`` (0: from the start).
    streams: dict[int, bytes] = field(default_factory=dict)

    def ids(self) -> list[int]:
        """The event ids of the whole stream, in order."""
        return [int(m) for m in re.findall(rb"^id: (\d+)$", self.streams[0], flags=re.M)]

    def cut_after(self, last_id: int) -> bytes:
        """The whole stream as a connection that dropped right after event ``last_id`` delivers it."""
        marker = f"id: {last_id}\n".encode()
        start = self.streams[0].index(marker)
        return self.streams[0][: self.streams[0].index(b"\n\n", start) + 2]


def record(tmp_path: Path, moves: list[Move]) -> Recording:
    """Play ``moves`` on a fresh SQLite state database; the run must end in a terminal status."""
    return asyncio.run(_record(tmp_path / "recorded-state.db", moves))


async def _record(db: Path, moves: list[Move]) -> Recording:
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    ticks = itertools.count()
    store = UpgradeStore(engine, clock=lambda: START + timedelta(seconds=next(ticks)))
    rec = Recording()
    try:
        await migrate(engine)
        steps = {
            sid: Step(run_id=RUN_ID, id=sid, seq=i, wave=i, phase=phase, node=node, action=action)
            for i, (sid, phase, node, action) in enumerate(PLAN)
        }
        run = Run(
            id=RUN_ID,
            status=RunStatus.PLANNED,
            target_version="2017 R1",
            from_version="7.3",
            options={},
            preflight=[{"name": "license", "status": "ok", "message": "valid for 2017 R1"}],
            context={},
        )
        await store.create_run(run, steps.values())
        status = RunStatus.PLANNED
        for n, move in enumerate(moves):
            what, value = move[0], move[1]
            if what == "run":
                new = RunStatus(value)
                assert await store.transition(RUN_ID, expect=[status], status=new)
                status = new
            elif what == "phase":
                nodes = sorted({s.node for s in steps.values() if s.phase == value and s.node})
                await store.event(RUN_ID, "phase", {"phase": value, "wave": 0, "nodes": nodes})
            else:
                step = steps[what]
                step.status = StepStatus(value)
                at = START + timedelta(seconds=n)
                if step.status == StepStatus.RUNNING:
                    step.op_id, step.started_at = step.op_id_for(step.attempt), at
                else:
                    step.finished_at = at
                step.message = move[2] if len(move) > 2 else None
                await store.save_step(step)
            current = await store.get_run(RUN_ID)
            assert current is not None
            rec.snapshots.append(run_view(current, [s.public() for s in await store.steps(RUN_ID)]))
        assert status.value in {"succeeded", "failed", "restored", "aborted"}, "the stream would not end"
        rec.streams[0] = await _stream(store, 0)
        for last_id in rec.ids():
            rec.streams[last_id] = await _stream(store, last_id)
    finally:
        await store.aclose()
        await engine.dispose()
    return rec


async def _stream(store: UpgradeStore, last_id: int) -> bytes:
    return b"".join([ev.encode() async for ev in event_stream(store, RUN_ID, last_id=last_id)])


#: A run that goes through every step and succeeds.
SUCCESS: list[Move] = [
    ("run", "running"),
    ("phase", "freeze"),
    ("s1", "running"),
    ("s1", "succeeded"),
    ("s2", "running"),
    ("s2", "succeeded"),
    ("s3", "running"),
    ("s3", "succeeded"),
    ("s4", "running"),
    ("s4", "succeeded"),
    ("run", "succeeded"),
]
