"""The guide's connection budget: "the database server has enough concurrent connections to reload
the sum of one DLL per web server plus one Tomcat database connection pool per web server" (a pool
is 10 connections by default; ``tomcat_pool_sizes`` sets it per node).

The maximum comes from the CRM database itself — ``SHOW max_connections`` on PostgreSQL,
``SELECT @@MAX_CONNECTIONS`` on SQL Server — and from the ``max_connections`` setting where the
database cannot tell (SQLite).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.database import unavailable_errors
from controller.context import ControllerContext

DLL_CONNECTIONS = 1


async def database_max_connections(engine: AsyncEngine) -> int | None:
    """What the database says its maximum is, or None when it has no such notion."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        query = "SHOW max_connections"
    elif dialect == "mssql":
        query = "SELECT @@MAX_CONNECTIONS"
    else:
        return None
    with unavailable_errors("CRM database"):
        async with engine.connect() as conn:
            value = (await conn.execute(text(query))).scalar()
    return int(str(value))


async def capacity(ctx: ControllerContext) -> dict[str, Any]:
    nodes = await ctx.registry.list_nodes()
    pools = ctx.settings.tomcat_pool_sizes
    rows: list[dict[str, Any]] = [
        {
            "name": n.name,
            "dll_connections": DLL_CONNECTIONS,
            "tomcat_pool": pools.get(n.name, ctx.settings.tomcat_pool_size),
        }
        for n in nodes
    ]
    required = sum(int(r["dll_connections"]) + int(r["tomcat_pool"]) for r in rows)
    measured = await database_max_connections(ctx.crm_engine)
    maximum = measured if measured is not None else ctx.settings.max_connections
    return {
        "nodes": rows,
        "required": required,
        "max_connections": maximum,
        "max_connections_source": "database" if measured is not None else "setting",
        "headroom": maximum - required,
        "enough": maximum >= required,
    }
