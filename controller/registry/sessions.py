"""Logged-on users, counted the way Sage CRM counts them: from its ``Activity`` table.

A user is logged on to server S while an Activity row for S has ``Acty_Logoff`` NULL and a logon
time younger than the session time-out. Activity times are in the CRM database's time zone
(``crm_timezone``), so the cut-off is computed in that zone from the injected UTC clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables
from config.database import unavailable_errors


def session_cutoff(now_utc: datetime, *, timeout_minutes: int, tz: str) -> datetime:
    """The oldest logon time (naive, in the CRM database's zone) that still counts as logged on."""
    aware = now_utc.replace(tzinfo=UTC) if now_utc.tzinfo is None else now_utc
    local = aware.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return local - timedelta(minutes=timeout_minutes)


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
        """Open sessions per server: distinct users with an open, recent Activity row."""
        t = self.tables
        server = t.acty("acty_server_name")
        cutoff = session_cutoff(self.clock(), timeout_minutes=self.timeout_minutes, tz=self.tz)
        return (
            select(server, func.count(t.acty("acty_user_id").distinct()))
            .where(t.acty("acty_logoff").is_(None), t.acty("acty_logon_time") >= cutoff)
            .group_by(server)
        )

    async def counts(self) -> dict[str, int]:
        """``{server name: logged-on users}`` for every server with at least one."""
        query = self.statement()
        with unavailable_errors("CRM database"):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return {str(name): int(n) for name, n in rows}

    async def count(self, server: str) -> int:
        return (await self.counts()).get(server, 0)
