"""Logged-on users per server, read from the CRM database's ``Activity`` table.

"Logged on" is :mod:`config.sessions`'s definition, shared with the controller and the sandbox
(distinct users with an open, recent Activity row; DESIGN.md "Users, sessions and companies"). One
read gives a consistent :class:`ActivitySnapshot` as of the highest row id it saw:

- ``logged_on``: distinct users with an open session, per server — counted by the database
  (``GROUP BY``), so a pass costs the same with 30 or 30,000 sessions;
- ``new_rows``: rows (open or not) per server with an id above the previous snapshot's, which
  retire pending logons (see :mod:`balancer.pending`);
- ``new_sessions``: user logon name -> server, from the open ones among those new rows;
- ``sessions``: user logon name -> the server of that user's newest open session, for sticky
  logons. This one reads every open session, so it is done only on a *full* read (every
  ``sticky_refresh`` seconds); in between, ``new_sessions`` keep the map current, and a user who
  logged off stays in it until the next full read (harmless: they go back to the same server).

Every query is bounded by that highest id, so a row written while the read runs is counted by
the next snapshot, together with the pending logon it retires, never by one without the other.
Server and logon names are lower-cased; rows of servers not in ``ServerNames`` are returned and
ignored by the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from config.crm_schema import CrmTables
from config.sessions import is_logged_on, logged_on_per_server


@dataclass(frozen=True)
class ActivitySnapshot:
    last_id: int
    logged_on: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    new_sessions: dict[str, str] = field(default_factory=dict)
    #: Every open session (user -> server), on a full read only; None otherwise.
    sessions: dict[str, str] | None = None


class ActivityReader:
    """Reads :class:`ActivitySnapshot` through the configured table and column names."""

    def __init__(self, tables: CrmTables, *, session_timeout: timedelta) -> None:
        self.tables = tables
        self.session_timeout = session_timeout
        t = tables
        self._id = t.acty("acty_id")
        self._server = t.acty("acty_server_name")
        self._user = t.acty("acty_user_id")
        self._logoff = t.acty("acty_logoff")
        self._user_id = t.users.c[t.names.user_id]
        self._user_logon = t.users.c[t.names.user_logon]
        self._with_users = t.activity.outerjoin(t.users, self._user_id == self._user)

    # Statements (kept apart so they can be compiled for every dialect, SQL Server included) -----
    def max_id(self) -> Select[Any]:
        return select(func.max(self._id))

    def new_rows(self, *, since_id: int, last_id: int) -> Select[Any]:
        """The rows above ``since_id``: server, logon name, logoff mark (NULL while open)."""
        return (
            select(self._server, self._user_logon, self._logoff)
            .select_from(self._with_users)
            .where(self._id > since_id, self._id <= last_id)
            .order_by(self._id)
        )

    def logged_on(self, *, cutoff: datetime, last_id: int) -> Select[Any]:
        return logged_on_per_server(self.tables, cutoff=cutoff, last_id=last_id)

    def open_sessions(self, *, cutoff: datetime, last_id: int) -> Select[Any]:
        return (
            select(self._server, self._user_logon)
            .select_from(self._with_users)
            .where(is_logged_on(self.tables, cutoff=cutoff), self._id <= last_id)
            .order_by(self._id)
        )

    async def read(
        self, conn: AsyncConnection, *, since_id: int | None, now: datetime, full: bool
    ) -> ActivitySnapshot:
        """The snapshot as of now (``now`` in the CRM database's time zone, naive); ``full`` also
        reads every open session for the sticky map."""
        top: Any = (await conn.execute(self.max_id())).scalar()
        last_id = int(top) if top is not None else 0
        if since_id is not None and last_id < since_id:
            # Rows were deleted (a restored database): start counting new rows from here.
            since_id = last_id
        new_rows: dict[str, int] = {}
        new_sessions: dict[str, str] = {}
        if since_id is not None and last_id > since_id:
            result = await conn.execute(self.new_rows(since_id=since_id, last_id=last_id))
            for server, logon, logoff in result:
                key = str(server).strip().lower()
                new_rows[key] = new_rows.get(key, 0) + 1
                if logon and logoff is None:
                    new_sessions[str(logon).strip().lower()] = key  # ordered by id: the newest wins
        cutoff = now - self.session_timeout
        logged_on: dict[str, int] = {}
        for server, n in await conn.execute(self.logged_on(cutoff=cutoff, last_id=last_id)):
            key = str(server).strip().lower()
            logged_on[key] = logged_on.get(key, 0) + int(n)  # servers differing only in case
        sessions: dict[str, str] | None = None
        if full:
            sessions = {}
            for server, logon in await conn.execute(self.open_sessions(cutoff=cutoff, last_id=last_id)):
                if logon:
                    sessions[str(logon).strip().lower()] = str(server).strip().lower()
        return ActivitySnapshot(
            last_id=last_id,
            logged_on=logged_on,
            new_rows=new_rows,
            new_sessions=new_sessions,
            sessions=sessions,
        )
