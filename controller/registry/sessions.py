"""Logged-on users per server for the controller (``/cluster``, drains), counted by the one
definition of "logged on" in :mod:`config.sessions` (distinct users with an open, recent Activity
row, in the CRM database's time zone), from the injected UTC clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables
from config.database import unavailable_errors
from config.sessions import logged_on_per_server, session_cutoff


class SessionCounter:
    """Counts open sessions per server name in the CRM database."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: CrmTables,
        *,
        timeout_minutes: int,
        tz: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.timeout_minutes = timeout_minutes
        self.tz = tz
        self.clock = clock

    def statement(self) -> Select[tuple[Any, int]]:
        """Logged-on users per server (:func:`config.sessions.logged_on_per_server`)."""
        cutoff = session_cutoff(self.clock(), timeout_minutes=self.timeout_minutes, tz=self.tz)
        return logged_on_per_server(self.tables, cutoff=cutoff)

    async def counts(self) -> dict[str, int]:
        """``{server name: logged-on users}`` for every server with at least one."""
        query = self.statement()
        with unavailable_errors("CRM database"):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return {str(name): int(n) for name, n in rows}

    async def count(self, server: str) -> int:
        return (await self.counts()).get(server, 0)
