"""What each task of the guide's maintenance plan does to the sandbox's CRM database — the
nearest real operation of SQLite or PostgreSQL to the T-SQL the Windows driver schedules:

=================== ================================ ============================================
task                SQL Server (the Windows driver)  sandbox database
=================== ================================ ============================================
consistency_check   ``DBCC CHECKDB``                 SQLite ``PRAGMA integrity_check``; PostgreSQL
                                                     reads every row of every CRM table (and
                                                     ``bt_index_check`` each index when amcheck is
                                                     installed)
shrink_database     ``DBCC SHRINKDATABASE``          SQLite ``VACUUM``; PostgreSQL ``VACUUM FULL``
reorganize_indexes  ``ALTER INDEX ALL … REORGANIZE`` SQLite ``PRAGMA optimize``; PostgreSQL ``VACUUM``
rebuild_indexes     ``ALTER INDEX ALL … REBUILD``    ``REINDEX``
update_statistics   ``sp_updatestats``               ``ANALYZE``
full/differential/  ``BACKUP DATABASE|LOG … TO DISK`` a real backup of the database (the backup API /
log backup                                           ``pg_dump``, :mod:`.database_backup`): the
                                                     sandbox cannot write a differential or a log,
                                                     so each is a whole copy, kept and listed with
                                                     its kind and SQL Server's rules for it
cleanup             ``xp_delete_file``, history      backups and history older than the retention
                    purged                           deleted
=================== ================================ ============================================

The backup rules are SQL Server's, so a plan that works here works there: a differential or a log
backup needs a full backup first (errors 3035 and 4214), and a log backup needs the FULL recovery
model (error 4208).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables
from node_agent.drivers.base import ActionFailed, OperationContext


class TaskFailed(ActionFailed):
    """A maintenance task failed; the message is SQL Server's words for it."""


def _tables(tables: CrmTables) -> list[str]:
    return [t.name for t in (tables.sysparams, tables.activity, tables.users, tables.company)]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _autocommit(engine: AsyncEngine, statements: list[str]) -> None:
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for sql in statements:
            await conn.execute(text(sql))


async def consistency_check(engine: AsyncEngine, tables: CrmTables, ctx: OperationContext) -> str:
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            rows = [str(r[0]) for r in await conn.execute(text("PRAGMA integrity_check"))]
        if rows != ["ok"]:
            raise TaskFailed("DBCC CHECKDB found consistency errors: " + "; ".join(rows[:5]))
        return "PRAGMA integrity_check: ok"
    counted = []
    async with engine.connect() as conn:
        for name in _tables(tables):
            n = (await conn.execute(text(f"SELECT count(*) FROM {_q(name)}"))).scalar_one()
            counted.append(f"{name}: {n} rows")
        has_amcheck = (
            await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'"))
        ).first() is not None
        if has_amcheck:
            for name in _tables(tables):
                await conn.execute(
                    text(
                        "SELECT bt_index_check(i.indexrelid) FROM pg_index i "
                        "WHERE i.indrelid = CAST(:t AS regclass)"
                    ),
                    {"t": _q(name)},
                )
    ctx.log("read every row of " + ", ".join(counted))
    return "every CRM table read" + (" and its indexes checked (amcheck)" if has_amcheck else "")


async def shrink_database(engine: AsyncEngine, tables: CrmTables, ctx: OperationContext) -> str:
    if engine.dialect.name == "sqlite":
        await _autocommit(engine, ["VACUUM"])
        return "VACUUM"
    await _autocommit(engine, [f"VACUUM FULL {_q(t)}" for t in _tables(tables)])
    return "VACUUM FULL of the CRM tables"


async def reorganize_indexes(engine: AsyncEngine, tables: CrmTables, ctx: OperationContext) -> str:
    if engine.dialect.name == "sqlite":
        await _autocommit(engine, ["PRAGMA optimize"])
        return "PRAGMA optimize"
    await _autocommit(engine, [f"VACUUM {_q(t)}" for t in _tables(tables)])
    return "VACUUM of the CRM tables"


async def rebuild_indexes(engine: AsyncEngine, tables: CrmTables, ctx: OperationContext) -> str:
    if engine.dialect.name == "sqlite":
        await _autocommit(engine, ["REINDEX"])
        return "REINDEX"
    await _autocommit(engine, [f"REINDEX TABLE {_q(t)}" for t in _tables(tables)])
    return "REINDEX of the CRM tables"


async def update_statistics(engine: AsyncEngine, tables: CrmTables, ctx: OperationContext) -> str:
    if engine.dialect.name == "sqlite":
        await _autocommit(engine, ["ANALYZE"])
        return "ANALYZE"
    await _autocommit(engine, [f"ANALYZE {_q(t)}" for t in _tables(tables)])
    return "ANALYZE of the CRM tables"


def check_backup_rules(
    kind: str, *, database: str, recovery_model: str, backupset: list[dict[str, Any]]
) -> None:
    """SQL Server's refusals, in its words."""
    has_full = any(b.get("kind") == "full" for b in backupset)
    if kind == "log" and recovery_model.upper() == "SIMPLE":
        raise TaskFailed(
            f"Msg 4208: The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. "
            f"Use BACKUP DATABASE or change the recovery model using ALTER DATABASE. ({database})"
        )
    if kind == "differential" and not has_full:
        raise TaskFailed(
            f'Msg 3035: Cannot perform a differential backup for database "{database}", because a '
            "current database backup does not exist. Perform a full database backup."
        )
    if kind == "log" and not has_full:
        raise TaskFailed(
            f"Msg 4214: BACKUP LOG cannot be performed because there is no current database backup. "
            f"({database})"
        )


RUNNERS = {
    "consistency_check": consistency_check,
    "shrink_database": shrink_database,
    "reorganize_indexes": reorganize_indexes,
    "rebuild_indexes": rebuild_indexes,
    "update_statistics": update_statistics,
}
