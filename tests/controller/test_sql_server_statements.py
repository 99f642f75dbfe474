"""The controller's statements compile for SQL Server (the production CRM and state database)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.dialects import mssql

from config.crm_schema import crm_tables
from config.sessions import session_cutoff
from config.state_schema import nodes
from controller.registry.sessions import SessionCounter


def compiled(stmt: object) -> str:
    return str(stmt.compile(dialect=mssql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined,no-untyped-call]


def test_logged_on_count_compiles_for_sql_server() -> None:
    counter = SessionCounter(
        engine=None,  # type: ignore[arg-type]
        tables=crm_tables(),
        timeout_minutes=60,
        tz="Europe/London",
        clock=lambda: datetime(2026, 7, 1, 12, 0, 0),
    )
    sql = compiled(counter.statement())
    assert "FROM [Activity]" in sql
    assert "count(DISTINCT [Activity].[Acty_UserId])" in sql
    assert "[Activity].[Acty_Logoff] IS NULL" in sql
    assert "GROUP BY [Activity].[Acty_ServerName]" in sql
    assert "'2026-07-01 12:00:00'" in sql  # 12:00 UTC is 13:00 in London, minus the 60-minute time-out


def test_session_cutoff_is_in_the_crm_databases_zone() -> None:
    now = datetime(2026, 1, 15, 12, 0, 0)
    assert session_cutoff(now, timeout_minutes=30, tz="UTC") == datetime(2026, 1, 15, 11, 30)
    assert session_cutoff(now, timeout_minutes=30, tz="America/New_York") == datetime(2026, 1, 15, 6, 30)


def test_node_state_write_compiles_for_sql_server() -> None:
    from sqlalchemy import update

    sql = compiled(update(nodes).where(nodes.c.name == "crm2").values(state="draining"))
    assert sql.startswith("UPDATE nodes SET state='draining'")
