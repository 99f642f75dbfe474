"""The sandbox's side of the CRM database: the tables Sage's installer upgrades, the schema
version, and the record of which servers hold database connections.

Besides the CRM tables of :mod:`config.crm_schema` (``Custom_SysParams``, ``Activity``, ``Users``,
``Company``) a sandbox database has what the upgrade scripts change — ``Custom_Captions``,
``Custom_Edits``, the system view ``vCompany`` and the user view ``vUserCompanyList`` — and two
tables of its own:

- ``SandboxCrmState`` (``Name``, ``Value``): the CRM schema version and whether triggers are
  disabled;
- ``SandboxDbSessions`` (``Sess_Host``, ``Sess_Program``, ``Sess_Connections``, ``Sess_LastSeen``):
  the connections each node's IIS (one DLL), Tomcat (a pool of 10) and CRM services hold, written
  by each node while they run and deleted when they stop. What ``database_sessions`` reports, as
  SQL Server's ``sys.dm_exec_sessions`` would; rows not refreshed within the TTL are dead sessions.

Only embedded (SQLite) or test/demo PostgreSQL databases are touched: never SQL Server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config.crm_schema import CrmTables, NotEmbeddedDatabase
from config.sessions import crm_now, is_logged_on, logged_on_per_server, session_cutoff
from node_agent.records import fingerprint_companies, schema_fingerprint

SANDBOX_MD = MetaData()
crm_state = Table(
    "SandboxCrmState",
    SANDBOX_MD,
    Column("Name", String(60), primary_key=True),
    Column("Value", String(200), nullable=True),
)
db_sessions = Table(
    "SandboxDbSessions",
    SANDBOX_MD,
    Column("Sess_Host", String(100), primary_key=True),
    Column("Sess_Program", String(60), primary_key=True),
    Column("Sess_Connections", Integer, nullable=False),
    Column("Sess_LastSeen", DateTime, nullable=False),
)
captions = Table(
    "Custom_Captions",
    SANDBOX_MD,
    Column("Capt_CaptionId", Integer, primary_key=True, autoincrement=True),
    Column("Capt_Family", String(40), nullable=False),
    Column("Capt_Code", String(40), nullable=False),
    Column("Capt_US", String(200), nullable=True),
)
edits = Table(
    "Custom_Edits",
    SANDBOX_MD,
    Column("ColP_ColPropsId", Integer, primary_key=True, autoincrement=True),
    Column("ColP_Entity", String(40), nullable=False),
    Column("ColP_ColName", String(60), nullable=False),
    Column("ColP_EntryType", Integer, nullable=True),
)
SYSTEM_VIEWS = ("vCompany", "vUserCompanyList")
INTERNAL_TABLES = ("SandboxDbSessions",)

_COMPANIES = [
    ("Gatecom Ltd", "Customer", "Active"),
    ("Design Right Inc", "Prospect", "Active"),
    ("Eurolandia SA", "Customer", "Active"),
    ("Kardiff Solutions", "Partner", "Active"),
    ("Mercury Logistics", "Customer", "Inactive"),
    ("Northwind Traders", "Customer", "Active"),
    ("Sunrise Bakery", "Prospect", "Active"),
    ("Blue Harbour Shipping", "Supplier", "Active"),
]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class SandboxCrmDatabase:
    def __init__(
        self,
        engine: AsyncEngine,
        tables: CrmTables,
        *,
        node: str,
        session_ttl: float = 30.0,
        tz: str = "UTC",
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise NotEmbeddedDatabase(
                f"the sandbox driver plays Sage CRM on SQLite or PostgreSQL only, not {engine.dialect.name}"
            )
        self.engine = engine
        self.tables = tables
        self.node = node
        self.session_ttl = session_ttl
        #: The CRM database's time zone: Sage CRM writes Activity times in it.
        self.tz = tz

    def crm_now(self) -> datetime:
        return crm_now(datetime.now(UTC), self.tz)

    # Creation -----------------------------------------------------------------------------------------
    async def ensure_schema(self, *, seed_version: str | None) -> None:
        """Create what is missing (several sandboxes may start at once: retried on a clash).
        The node holding the database (``seed_version`` given) seeds the version and demo data."""
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(self.tables.metadata.create_all)
                    await conn.run_sync(SANDBOX_MD.create_all)
                    await self._create_views(conn, version=None)
                break
            except (IntegrityError, DBAPIError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        if seed_version is None:
            return
        async with self.engine.begin() as conn:
            have = await conn.scalar(select(crm_state.c.Value).where(crm_state.c.Name == "version"))
            if have is None:
                await conn.execute(crm_state.insert().values(Name="version", Value=seed_version))
                await conn.execute(crm_state.insert().values(Name="triggers", Value="enabled"))
            t = self.tables
            if not await conn.scalar(select(func.count()).select_from(t.company)):
                n = t.names
                rows = []
                for i in range(40):
                    name, kind, status = _COMPANIES[i % len(_COMPANIES)]
                    rows.append(
                        {
                            n.comp_name: f"{name} {i + 1}",
                            "Comp_Type": kind,
                            "Comp_Status": status,
                            "Comp_WebSite": f"www.company{i + 1}.example",
                            n.comp_updated_date: datetime(2026, 1, 1) + timedelta(days=i),
                        }
                    )
                await conn.execute(t.company.insert(), rows)
            if not await conn.scalar(select(func.count()).select_from(captions)):
                await conn.execute(
                    captions.insert(),
                    [
                        {"Capt_Family": "Comp_Status", "Capt_Code": "Active", "Capt_US": "Active"},
                        {"Capt_Family": "Comp_Status", "Capt_Code": "Inactive", "Capt_US": "Inactive"},
                    ],
                )
                await conn.execute(
                    edits.insert(),
                    [
                        {"ColP_Entity": "Company", "ColP_ColName": "Comp_Name", "ColP_EntryType": 10},
                        {"ColP_Entity": "Company", "ColP_ColName": "Comp_Status", "ColP_EntryType": 21},
                    ],
                )

    async def _create_views(self, conn: AsyncConnection, *, version: str | None) -> None:
        """The system views; ``version`` 2017 R1 (views.es/user_views.es) adds columns."""
        t = self.tables.names
        comp = self.tables.company.name
        q = conn.dialect.identifier_preparer.quote
        cols = [q(t.comp_id), q(t.comp_name)]
        if version == "2017 R1":
            cols.append(q("Comp_Status"))
            await conn.execute(text(f"DROP VIEW IF EXISTS {q('vCompany')}"))
            await conn.execute(text(f"DROP VIEW IF EXISTS {q('vUserCompanyList')}"))
        names = set(await conn.run_sync(lambda c: inspect(c).get_view_names()))
        if "vCompany" not in names or version == "2017 R1":
            await conn.execute(
                text(f"CREATE VIEW {q('vCompany')} AS SELECT {', '.join(cols)} FROM {q(comp)}")
            )
        if "vUserCompanyList" not in names or version == "2017 R1":
            extra = f", {q('Comp_Type')}" if version == "2017 R1" else ""
            await conn.execute(
                text(
                    f"CREATE VIEW {q('vUserCompanyList')} AS SELECT {q(t.comp_id)}, {q(t.comp_name)}{extra} "
                    f"FROM {q(comp)}"
                )
            )

    # Version and triggers -------------------------------------------------------------------------
    async def get_state(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(crm_state.c.Value).where(crm_state.c.Name == name))
            return None if value is None else str(value)

    async def set_state(self, name: str, value: str, conn: AsyncConnection | None = None) -> None:
        async def _do(c: AsyncConnection) -> None:
            res = await c.execute(update(crm_state).where(crm_state.c.Name == name).values(Value=value))
            if res.rowcount == 0:
                await c.execute(crm_state.insert().values(Name=name, Value=value))

        if conn is not None:
            await _do(conn)
            return
        async with self.engine.begin() as c:
            await _do(c)

    async def schema_version(self) -> str | None:
        return await self.get_state("version")

    # Sessions --------------------------------------------------------------------------------------
    async def hold_sessions(self, programs: dict[str, int]) -> None:
        """This node's connections now: ``{"eware.dll": 1, "tomcat": 10, …}``; others are closed."""
        now = _now()
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(db_sessions).where(
                    db_sessions.c.Sess_Host == self.node, db_sessions.c.Sess_Program.not_in(list(programs))
                )
            )
            for program, count in programs.items():
                res = await conn.execute(
                    update(db_sessions)
                    .where(db_sessions.c.Sess_Host == self.node, db_sessions.c.Sess_Program == program)
                    .values(Sess_Connections=count, Sess_LastSeen=now)
                )
                if res.rowcount == 0:
                    await conn.execute(
                        db_sessions.insert().values(
                            Sess_Host=self.node,
                            Sess_Program=program,
                            Sess_Connections=count,
                            Sess_LastSeen=now,
                        )
                    )

    async def sessions(self) -> dict[str, dict[str, int]]:
        """Live connections by host and program (rows refreshed within the TTL)."""
        since = _now() - timedelta(seconds=self.session_ttl)
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(db_sessions.c.Sess_Host, db_sessions.c.Sess_Program, db_sessions.c.Sess_Connections)
                .where(db_sessions.c.Sess_LastSeen >= since)
                .order_by(db_sessions.c.Sess_Host, db_sessions.c.Sess_Program)
            )
            for host, program, count in rows:
                out.setdefault(str(host), {})[str(program)] = int(count)
        return out

    async def drop_all_sessions(self) -> None:
        """What ``SET SINGLE_USER WITH ROLLBACK IMMEDIATE`` does to everyone else's sessions."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(db_sessions))

    # Logons (the stand-in web server) ---------------------------------------------------------------
    async def _user_id(self, user: str) -> int:
        """The user's id, creating the Users row on a first logon. Several servers may log the same
        user on for the first time at once (warm-up logons after a restore): the loser of the
        insert race reads the winner's row."""
        t = self.tables
        n = t.names
        lookup = select(t.users.c[n.user_id]).where(t.users.c[n.user_logon] == user)
        for _ in range(3):
            async with self.engine.connect() as conn:
                uid = await conn.scalar(lookup)
            if uid is not None:
                return int(uid)
            try:
                async with self.engine.begin() as conn:
                    res = await conn.execute(t.users.insert().values({n.user_logon: user}))
                    assert res.inserted_primary_key is not None
                    return int(res.inserted_primary_key[0])
            except IntegrityError:
                continue
        raise RuntimeError(f"could not create or find CRM user {user!r}")

    async def logon(self, user: str) -> int:
        t = self.tables
        n = t.names
        uid = await self._user_id(user)
        async with self.engine.begin() as conn:
            res = await conn.execute(
                t.activity.insert().values(
                    {
                        n.acty_user_id: uid,
                        n.acty_server_name: self.node,
                        n.acty_logon_time: self.crm_now(),
                        n.acty_logoff: None,
                    }
                )
            )
            assert res.inserted_primary_key is not None
            return int(res.inserted_primary_key[0])

    async def logoff(self, *, sid: int | None = None, user: str | None = None) -> int:
        t = self.tables
        n = t.names
        cond = (t.acty("acty_server_name") == self.node) & t.acty("acty_logoff").is_(None)
        if sid is not None:
            cond = cond & (t.acty("acty_id") == sid)
        elif user is not None:
            uid_q = select(t.users.c[n.user_id]).where(t.users.c[n.user_logon] == user).scalar_subquery()
            cond = cond & (t.acty("acty_user_id") == uid_q)
        else:
            return 0
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(t.activity)
                .where(cond)
                .values({n.acty_logoff: "Y", n.acty_logoff_time: self.crm_now()})
            )
            return int(res.rowcount or 0)

    async def open_sessions(self, timeout_minutes: int) -> list[dict[str, Any]]:
        """This server's open Activity rows (a user may hold several), oldest first."""
        t = self.tables
        n = t.names
        cutoff = session_cutoff(datetime.now(UTC), timeout_minutes=timeout_minutes, tz=self.tz)
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.acty("acty_id"), t.users.c[n.user_logon], t.acty("acty_logon_time"))
                .select_from(t.activity.outerjoin(t.users, t.users.c[n.user_id] == t.acty("acty_user_id")))
                .where(t.acty("acty_server_name") == self.node, is_logged_on(t, cutoff=cutoff))
                .order_by(t.acty("acty_id"))
            )
            return [{"sid": int(a), "user": u, "logon_time": lt.isoformat()} for a, u, lt in rows]

    async def logged_on(self, timeout_minutes: int) -> int:
        """Users logged on to this server (:mod:`config.sessions`: users, not rows)."""
        cutoff = session_cutoff(datetime.now(UTC), timeout_minutes=timeout_minutes, tz=self.tz)
        query = logged_on_per_server(self.tables, cutoff=cutoff, server=self.node)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return int(row[1]) if row is not None else 0

    # Records and schema -----------------------------------------------------------------------------
    async def fingerprint(self, ids: list[int] | None) -> dict[str, Any]:
        out = await fingerprint_companies(self.engine, self.tables, ids)
        out["schema"] = await self.schema_hash()
        out["schema_version"] = await self.schema_version()
        return out

    async def schema_hash(self) -> str:
        return await schema_fingerprint(self.engine, skip=INTERNAL_TABLES)

    async def dta_objects(self) -> list[dict[str, str]]:
        """Indexes named like the Database Tuning Advisor's (``_dta_index_*``, ``_dta_stat_*``)."""

        def find(sync_conn: Any) -> list[dict[str, str]]:
            insp = inspect(sync_conn)
            found = []
            for table in insp.get_table_names():
                for ix in insp.get_indexes(table):
                    name = str(ix["name"] or "")
                    if name.startswith(("_dta_index_", "_dta_stat_")):
                        kind = "index" if name.startswith("_dta_index_") else "statistics"
                        found.append({"table": table, "name": name, "kind": kind})
            return found

        async with self.engine.connect() as conn:
            return await conn.run_sync(find)

    async def view_definitions(self) -> dict[str, str]:
        def read(sync_conn: Any) -> dict[str, str]:
            insp = inspect(sync_conn)
            return {v: str(insp.get_view_definition(v) or "") for v in sorted(insp.get_view_names())}

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)
