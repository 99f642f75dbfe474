"""The T-SQL the windows driver runs on SQL Server, and how it runs it.

Names that come from settings (the CRM database's name) are quoted as identifiers (``[...]``, a
``]`` doubled) after a strict check; everything else — backup file paths, names to look up — is a
bound ``?`` parameter, so nothing in a request can change a statement. Statements are run on one
autocommit connection through pyodbc (aioodbc), every result set drained (``BACKUP``/``RESTORE``
only finish when their informational messages are read). pyodbc/aioodbc are imported only here,
only when a statement runs.

:class:`RecordingSql` stands in for SQL Server in tests: it records each (database, statement,
params) and answers from a script.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import URL

from config.database import parse_url
from node_agent.cancellation import cancellable
from node_agent.drivers.base import ActionFailed

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_@$#\- ]{0,127}$")
Row = tuple[Any, ...]


def quote_ident(name: str) -> str:
    """``[name]`` with ``]`` doubled — SQL Server's QUOTENAME."""
    if not name or len(name) > 128 or any(ord(c) < 32 for c in name):
        raise ActionFailed(f"not a SQL Server name: {name!r}")
    return "[" + name.replace("]", "]]") + "]"


def database_name(url: str) -> str:
    name = parse_url(url).database or ""
    if not _DB_NAME.match(name):
        raise ActionFailed(f"the CRM database URL names no usable database ({name!r})")
    return name


# The statements --------------------------------------------------------------------------------------
def backup_database_sql(db: str) -> str:
    return f"BACKUP DATABASE {quote_ident(db)} TO DISK = ? WITH CHECKSUM, INIT, FORMAT, NAME = ?"


VERIFY_BACKUP_SQL = "RESTORE VERIFYONLY FROM DISK = ? WITH CHECKSUM"


def single_user_sql(db: str) -> str:
    return f"ALTER DATABASE {quote_ident(db)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE"


def restore_database_sql(db: str) -> str:
    return f"RESTORE DATABASE {quote_ident(db)} FROM DISK = ? WITH REPLACE, CHECKSUM"


def multi_user_sql(db: str) -> str:
    return f"ALTER DATABASE {quote_ident(db)} SET MULTI_USER"


#: msdb's record of the last backup of a database (``?``) to a file (``?``): size, whether it
#: carries page checksums, when it finished.
BACKUP_RECORD_SQL = (
    "SELECT TOP (1) bs.backup_size, bs.has_backup_checksums, bs.backup_finish_date "
    "FROM msdb.dbo.backupset AS bs "
    "JOIN msdb.dbo.backupmediafamily AS mf ON mf.media_set_id = bs.media_set_id "
    "WHERE bs.database_name = ? AND mf.physical_device_name = ? AND bs.type = 'D' "
    "ORDER BY bs.backup_finish_date DESC"
)

SESSIONS_SQL = (
    "SELECT ISNULL(s.host_name, N''), ISNULL(s.program_name, N''), COUNT(*) "
    "FROM sys.dm_exec_sessions AS s "
    "WHERE s.database_id = DB_ID(?) AND s.is_user_process = 1 AND s.session_id <> @@SPID "
    "GROUP BY s.host_name, s.program_name ORDER BY s.host_name"
)

DTA_OBJECTS_SQL = (
    "SELECT OBJECT_SCHEMA_NAME(i.object_id), OBJECT_NAME(i.object_id), i.name, N'index' "
    "FROM sys.indexes AS i WHERE i.name LIKE N'\\_dta\\_index\\_%' ESCAPE N'\\' "
    "UNION ALL "
    "SELECT OBJECT_SCHEMA_NAME(s.object_id), OBJECT_NAME(s.object_id), s.name, N'statistics' "
    "FROM sys.stats AS s WHERE s.name LIKE N'\\_dta\\_stat\\_%' ESCAPE N'\\'"
)

ENABLED_TRIGGERS_SQL = (
    "SELECT sc.name, o.name, t.name FROM sys.triggers AS t "
    "JOIN sys.objects AS o ON o.object_id = t.parent_id "
    "JOIN sys.schemas AS sc ON sc.schema_id = o.schema_id "
    "WHERE t.parent_class = 1 AND t.is_disabled = 0 AND o.is_ms_shipped = 0 ORDER BY sc.name, o.name, t.name"
)

VIEWS_SQL = (
    "SELECT sc.name, v.name, m.definition FROM sys.views AS v "
    "JOIN sys.sql_modules AS m ON m.object_id = v.object_id "
    "JOIN sys.schemas AS sc ON sc.schema_id = v.schema_id "
    "WHERE v.is_ms_shipped = 0 ORDER BY sc.name, v.name"
)


def trigger_sql(verb: str, schema: str, table: str, trigger: str) -> str:
    assert verb in ("DISABLE", "ENABLE")
    on = f"{quote_ident(schema)}.{quote_ident(table)}"
    return f"{verb} TRIGGER {quote_ident(schema)}.{quote_ident(trigger)} ON {on}"


# Running them --------------------------------------------------------------------------------------------
class SqlExecutor(Protocol):
    async def execute(
        self, sql: str, params: Sequence[Any] = (), *, database: str | None = None
    ) -> list[Row]: ...


def odbc_connection_string(url: str, *, database: str | None = None) -> str:
    """The ODBC connection string SQLAlchemy's mssql dialect makes of ``url`` (another database
    when ``database`` is given, e.g. ``master`` for RESTORE)."""
    from sqlalchemy.dialects.mssql.pyodbc import MSDialect_pyodbc

    parsed: URL = parse_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    args, _kwargs = MSDialect_pyodbc().create_connect_args(parsed)  # type: ignore[no-untyped-call]  # SQLAlchemy dialect, untyped
    return str(args[0])


class OdbcSql:
    """Runs statements on SQL Server through aioodbc (pyodbc), autocommit, every result set read."""

    def __init__(self, url: str, *, timeout: int = 0) -> None:
        if parse_url(url).get_backend_name() != "mssql":
            raise ActionFailed("the windows driver's database actions need an mssql+aioodbc CRM database URL")
        self.url = url
        self.timeout = timeout

    async def execute(
        self, sql: str, params: Sequence[Any] = (), *, database: str | None = None
    ) -> list[Row]:
        import aioodbc  # imported only when SQL Server is really used

        try:
            return await self._execute(aioodbc, sql, params, database)
        except ActionFailed:
            raise
        except Exception as exc:  # pyodbc.Error and friends, translated at the boundary
            raise ActionFailed(f"SQL Server: {type(exc).__name__}: {exc}") from exc

    async def _execute(
        self, aioodbc: Any, sql: str, params: Sequence[Any], database: str | None
    ) -> list[Row]:
        conn = await aioodbc.connect(dsn=odbc_connection_string(self.url, database=database), autocommit=True)
        try:
            cur = await conn.cursor()
            # A cancelled operation interrupts the statement: pyodbc's Cursor.cancel (SQLCancel)
            # on the cursor aioodbc runs in its worker thread.
            raw = getattr(cur, "_impl", None)
            try:
                with cancellable(raw.cancel if raw is not None else (lambda: None)):
                    await cur.execute(sql, *params)
                rows: list[Row] = []
                while True:
                    if cur.description is not None:
                        rows.extend(tuple(r) for r in await cur.fetchall())
                    if not await cur.nextset():
                        break
                return rows
            finally:
                await cur.close()
        finally:
            await conn.close()


@dataclass
class RecordingSql:
    """SQL Server for tests: records ``(database, sql, params)``; answers by a substring of the
    statement (first match in ``answers``), else no rows."""

    answers: dict[str, list[Row] | Callable[[Sequence[Any]], list[Row]]] = field(default_factory=dict)
    calls: list[tuple[str | None, str, tuple[Any, ...]]] = field(default_factory=list)
    fail_on: str | None = None

    async def execute(
        self, sql: str, params: Sequence[Any] = (), *, database: str | None = None
    ) -> list[Row]:
        self.calls.append((database, sql, tuple(params)))
        if self.fail_on and self.fail_on in sql:
            raise ActionFailed(f"SQL Server refused: {self.fail_on}")
        for key, answer in self.answers.items():
            if key in sql:
                return answer(params) if callable(answer) else list(answer)
        return []
