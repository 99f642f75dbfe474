"""Several servers logging the same user on for the first time at once (the warm-up logons after a
restore do exactly that) each get a session; the Users row is created once."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase


async def test_simultaneous_first_logons_of_one_user(crm_engine: AsyncEngine, tables: CrmTables) -> None:
    servers = [SandboxCrmDatabase(crm_engine, tables, node=f"crm{i}") for i in range(1, 6)]
    await servers[0].ensure_schema(seed_version=None)
    sessions = await asyncio.gather(*(s.logon("Admin") for s in servers))
    assert len(set(sessions)) == len(servers)
    n = tables.names
    async with crm_engine.connect() as conn:
        users = await conn.scalar(
            select(func.count()).select_from(tables.users).where(tables.users.c[n.user_logon] == "Admin")
        )
        rows = await conn.execute(
            select(tables.acty("acty_server_name"), func.count()).group_by(tables.acty("acty_server_name"))
        )
        by_server: dict[Any, int] = {server: count for server, count in rows}
    assert users == 1
    assert by_server == {f"crm{i}": 1 for i in range(1, 6)}
