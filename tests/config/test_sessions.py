""" "Logged on", defined once (config.sessions) and counted alike by the controller, the balancer
and the sandbox: users, not rows; open and younger than the time-out; in the CRM database's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.dialects import mssql
from sqlalchemy.ext.asyncio import AsyncEngine

from balancer.activity import ActivityReader
from config.crm_schema import CrmTables
from config.sessions import crm_now, logged_on_per_server, session_cutoff
from controller.registry.sessions import SessionCounter
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase

TZ = "America/New_York"  # five hours behind UTC in January
TIMEOUT = 30


async def _seed(engine: AsyncEngine, tables: CrmTables, now_utc: datetime) -> None:
    """crm1: alice twice (two browser sessions), bob once; crm2: bob logged off, carol timed out,
    dave 20 minutes ago in the CRM database's own zone (times relative to ``now_utc``)."""
    t, n = tables, tables.names
    local = crm_now(now_utc, TZ)
    async with engine.begin() as conn:
        ids = {}
        for user in ("alice", "bob", "carol", "dave"):
            res = await conn.execute(insert(t.users).values({n.user_logon: user}))
            ids[user] = int(res.inserted_primary_key[0])  # type: ignore[index]
        rows = [
            ("alice", "crm1", local - timedelta(minutes=5), None),
            ("alice", "crm1", local - timedelta(minutes=1), None),
            ("bob", "crm1", local - timedelta(minutes=2), None),
            ("bob", "crm2", local - timedelta(minutes=3), "Y"),
            ("carol", "crm2", local - timedelta(minutes=TIMEOUT + 5), None),
            ("dave", "crm2", local - timedelta(minutes=20), None),
        ]
        for user, server, at, logoff in rows:
            await conn.execute(
                insert(t.activity).values(
                    {
                        n.acty_user_id: ids[user],
                        n.acty_server_name: server,
                        n.acty_logon_time: at,
                        n.acty_logoff: logoff,
                    }
                )
            )


async def test_users_not_rows_and_the_same_count_everywhere(
    crm_engine: AsyncEngine, tables: CrmTables
) -> None:
    now_utc = datetime.now(UTC)  # the sandbox reads the real clock: rows are seeded relative to it
    await _seed(crm_engine, tables, now_utc)
    expected = {"crm1": 2, "crm2": 1}  # alice once on crm1 for her two rows; dave counts in New York time
    cutoff = session_cutoff(now_utc, timeout_minutes=TIMEOUT, tz=TZ)
    async with crm_engine.connect() as conn:
        rows = (await conn.execute(logged_on_per_server(tables, cutoff=cutoff))).all()
        assert {str(s): int(c) for s, c in rows} == expected
        one = (await conn.execute(logged_on_per_server(tables, cutoff=cutoff, server="crm1"))).all()
        assert [(str(s), int(c)) for s, c in one] == [("crm1", 2)]
        # The balancer's snapshot, through the same definition.
        snap = await ActivityReader(tables, session_timeout=timedelta(minutes=TIMEOUT)).read(
            conn, since_id=None, now=crm_now(now_utc, TZ), full=True
        )
    assert snap.logged_on == expected
    assert snap.sessions == {"alice": "crm1", "bob": "crm1", "dave": "crm2"}
    # The controller's counter.
    counter = SessionCounter(crm_engine, tables, timeout_minutes=TIMEOUT, tz=TZ, clock=lambda: now_utc)
    assert await counter.counts() == expected
    # The sandbox's stand-in Sage CRM server (what its agent reports as ``logged_on``).
    for server, users in expected.items():
        db = SandboxCrmDatabase(crm_engine, tables, node=server, tz=TZ)
        assert await db.logged_on(TIMEOUT) == users
    crm1 = SandboxCrmDatabase(crm_engine, tables, node="crm1", tz=TZ)
    assert len(await crm1.open_sessions(TIMEOUT)) == 3  # its rows, which are not its users


async def test_a_cutoff_taken_in_utc_would_miss_the_crm_zones_logons(
    crm_engine: AsyncEngine, tables: CrmTables
) -> None:
    now_utc = datetime.now(UTC)
    await _seed(crm_engine, tables, now_utc)
    async with crm_engine.connect() as conn:
        in_utc = session_cutoff(now_utc, timeout_minutes=TIMEOUT, tz="UTC")
        rows = (await conn.execute(logged_on_per_server(tables, cutoff=in_utc))).all()
    # New York's times are hours behind UTC's: read as UTC every session looks timed out.
    assert rows == []


def test_the_definition_compiles_for_sql_server(tables: CrmTables) -> None:
    stmt = logged_on_per_server(tables, cutoff=datetime(2026, 1, 1, 12, 0), last_id=7, server="CRM1")
    dialect = mssql.dialect()  # type: ignore[no-untyped-call]  # sqlalchemy leaves the dialect untyped
    sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    assert "count(DISTINCT [Activity].[Acty_UserId])" in sql
    assert "[Activity].[Acty_Logoff] IS NULL" in sql
    assert "[Activity].[Acty_LogonTime] >= '2026-01-01 12:00:00'" in sql
    assert "[Activity].[Acty_ActivityId] <= 7" in sql and "[Activity].[Acty_ServerName] = 'CRM1'" in sql
