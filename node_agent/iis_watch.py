"""The IIS-reset watcher (the guide's "Configuring multi-server Sage CRM": after an IIS reset or an
application-pool recycle someone must log on to each server before load balancing works again).

Every ``iis_watch_interval`` seconds the watcher asks the driver when IIS (or the CRM app pool)
last started. When that time changes while IIS runs, it submits a ``warmup_logon`` operation of its
own (op id ``auto-warmup-<time>``, visible like any other), retried on the next look if it failed.
The first look only remembers the time: an agent start is not an IIS reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from node_agent.drivers.base import HostDriver
from node_agent.operations import OperationManager
from node_agent.protocol import Action, NoParams, OperationState

log = logging.getLogger("crmcluster.agent.iis")


class IisResetWatcher:
    def __init__(
        self,
        *,
        driver: HostDriver,
        operations: OperationManager,
        interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.driver = driver
        self.operations = operations
        self.interval = interval
        self._sleep = sleep
        self._seen: datetime | None = None
        self._first = True
        self._pending: datetime | None = None
        self._attempt = 0
        self.warmups: list[str] = []

    async def check_once(self) -> str | None:
        """Look once; returns the op id of a warm-up it started, if any."""
        started = await self.driver.iis_started_at()
        if self._first:
            self._first = False
            self._seen = started
            return None
        if started is not None and started != self._seen:
            self._pending = started
        self._seen = started
        if self._pending is None or started is None:
            return None
        self._attempt += 1
        op_id = f"auto-warmup-{self._pending.strftime('%Y%m%dT%H%M%S.%f')}-{self._attempt}"
        log.info("IIS started at %s: doing the warm-up logon", self._pending.isoformat())
        self.operations.submit(op_id, Action.WARMUP_LOGON, NoParams())
        self.warmups.append(op_id)
        record = await self.operations.wait(op_id)
        if record.state == OperationState.SUCCEEDED:
            self._pending = None
            self._attempt = 0
            note = getattr(self.driver, "note_warmup", None)
            if callable(note) and record.finished_at is not None:
                note(record.finished_at)
        return op_id

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception as exc:  # noqa: BLE001 - the watcher outlives any one check
                log.warning("IIS watcher: %s", type(exc).__name__)
            await self._sleep(self.interval)
