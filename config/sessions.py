"""Who is logged on: the one definition the controller, the balancer and the sandbox share.

DESIGN.md ("Users, sessions and companies"), after Sage CRM's own ``Activity`` table: a **user** is
logged on to server S while an Activity row for S has ``Acty_Logoff`` NULL and a logon time younger
than the session time-out. Counts are of users, not rows: a user with two open rows on one server
(two browser sessions) is one logged-on user there. Activity times are written in the CRM
database's time zone (``crm_timezone``), so the cut-off is computed in that zone::

    cutoff = session_cutoff(datetime.now(UTC), timeout_minutes=60, tz="Europe/London")
    rows = await conn.execute(logged_on_per_server(tables, cutoff=cutoff))   # (server, users)

Every statement here is plain SQLAlchemy Core through the configured table and column names, so it
runs on SQLite and PostgreSQL and compiles for SQL Server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, func, select

from config.crm_schema import CrmTables


def crm_now(now_utc: datetime, tz: str) -> datetime:
    """``now_utc`` (aware, or naive UTC) as the CRM database writes times: naive, in zone ``tz``."""
    aware = now_utc.replace(tzinfo=UTC) if now_utc.tzinfo is None else now_utc
    return aware.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def session_cutoff(now_utc: datetime, *, timeout_minutes: int, tz: str) -> datetime:
    """The oldest logon time (naive, in the CRM database's zone) that still counts as logged on."""
    return crm_now(now_utc, tz) - timedelta(minutes=timeout_minutes)


def is_logged_on(tables: CrmTables, *, cutoff: datetime) -> ColumnElement[bool]:
    """An Activity row that keeps its user logged on: not logged off, logon not older than ``cutoff``."""
    return and_(tables.acty("acty_logoff").is_(None), tables.acty("acty_logon_time") >= cutoff)


def logged_on_per_server(
    tables: CrmTables, *, cutoff: datetime, last_id: int | None = None, server: str | None = None
) -> Select[Any]:
    """``(server name, logged-on users)`` per server with at least one (distinct users).

    ``last_id`` bounds the rows read (the balancer's consistent snapshot); ``server`` keeps one
    server's row only.
    """
    t = tables
    name = t.acty("acty_server_name")
    cond = is_logged_on(t, cutoff=cutoff)
    if last_id is not None:
        cond = and_(cond, t.acty("acty_id") <= last_id)
    if server is not None:
        cond = and_(cond, name == server)
    return select(name, func.count(t.acty("acty_user_id").distinct())).where(cond).group_by(name)
