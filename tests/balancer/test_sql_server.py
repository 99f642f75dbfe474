"""The balancer's statements compile for SQL Server (the production CRM and state databases)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import mssql

from balancer.activity import ActivityReader
from config.crm_schema import CrmNames, crm_tables
from config.state_schema import balancer_pending, nodes


def sql(stmt: object) -> str:
    return str(stmt.compile(dialect=mssql.dialect(), compile_kwargs={"literal_binds": False}))  # type: ignore[attr-defined,no-untyped-call]


def test_activity_statements_compile_for_mssql_with_configured_names() -> None:
    names = CrmNames(activity_table="Activity", acty_server_name="Acty_Server", users_table="Users")
    reader = ActivityReader(crm_tables(names), session_timeout=timedelta(minutes=60))
    assert "max([Activity].[Acty_ActivityId])" in sql(reader.max_id()).replace('"', "")
    assert "LEFT OUTER JOIN [Users]" in sql(reader.new_rows(since_id=1, last_id=5))
    counted = sql(reader.logged_on(cutoff=datetime(2026, 1, 1), last_id=5))
    assert "count(DISTINCT [Activity].[Acty_UserId])" in counted
    assert "GROUP BY [Activity].[Acty_Server]" in counted
    text = sql(reader.open_sessions(cutoff=datetime(2026, 1, 1), last_id=5))
    assert "LEFT OUTER JOIN [Users]" in text
    assert "[Activity].[Acty_Logoff] IS NULL" in text


def test_state_statements_compile_for_mssql() -> None:
    assert "FROM nodes" in sql(select(nodes.c.name, nodes.c.state, nodes.c.weight))
    assert "balancer_pending" in sql(delete(balancer_pending).where(balancer_pending.c.replica == "a"))
    assert "INSERT INTO balancer_pending" in sql(insert(balancer_pending))
