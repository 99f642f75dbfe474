"""Supervised long-lived asyncio tasks, shared by every service.

A :class:`TaskSupervisor` starts named background loops; a guard logs any unexpected exit (and
restarts the loop after a delay when asked to). Shutdown stops accepting, waits for the tasks
with a timeout, then cancels the rest.

    supervisor = TaskSupervisor("controller")
    supervisor.start("heartbeat-watch", watch_heartbeats, restart=True)
    ...
    await supervisor.shutdown(timeout=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from config.secrets import redact

log = logging.getLogger("crmcluster.tasks")


class TaskSupervisor:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._closing = False

    @property
    def names(self) -> list[str]:
        return [n for n, t in self._tasks.items() if not t.done()]

    def start(
        self,
        name: str,
        factory: Callable[[], Awaitable[Any]],
        *,
        restart: bool = False,
        restart_delay: float = 1.0,
    ) -> asyncio.Task[Any]:
        """Run ``factory()`` as a task named ``name``; with ``restart``, run it again after a crash."""
        if self._closing:
            raise RuntimeError(f"{self.owner} is shutting down; not starting {name}")
        existing = self._tasks.get(name)
        if existing is not None and not existing.done():
            raise RuntimeError(f"task {name} is already running")
        task = asyncio.create_task(self._guard(name, factory, restart, restart_delay), name=name)
        self._tasks[name] = task
        return task

    async def _guard(
        self, name: str, factory: Callable[[], Awaitable[Any]], restart: bool, delay: float
    ) -> Any:
        while True:
            try:
                return await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s: task %s stopped unexpectedly: %s", self.owner, name, redact(repr(exc)))
                if not restart or self._closing:
                    raise
            await asyncio.sleep(delay)

    async def shutdown(self, timeout: float = 5.0) -> None:
        self._closing = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def cancel_all(self) -> None:
        """Cancel every task now (loops that never finish by themselves)."""
        self._closing = True
        for t in self._tasks.values():
            t.cancel()
        for t in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
