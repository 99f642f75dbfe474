"""The T-SQL the windows driver sends to SQL Server, and how it is sent.

Every statement is a :class:`Statement`: its text, its bound ``?`` parameters (request values and
paths never enter the text), the database it runs in, whether it changes anything (the read-only
mode refuses those), and a query time-out. Names that come from settings (the CRM database's
name) are quoted identifiers (``[...]``, ``]`` doubled) after a strict check.

:class:`OdbcSql` runs statements through pyodbc in a worker thread, autocommit, every result set
drained (``BACKUP``/``RESTORE`` only finish once their messages are read), with pyodbc's query
time-out (``Connection.timeout``) set for each statement and ``SET LOCK_TIMEOUT`` on the
connection, so no statement waits for ever. :meth:`OdbcSql.session` runs several statements on
ONE connection — how the restore keeps the exclusive access it took.

=========================== ================================================================
``xp_create_subdir``        the backup folder, created by SQL Server's own service account (SQL
                            Server creates no folders: a missing one is OS error 3)
``BACKUP DATABASE``         ``WITH COPY_ONLY`` (the customer's differential chain is left as it
                            was), ``CHECKSUM`` (pages verified as written), ``INIT, FORMAT``
``RESTORE VERIFYONLY``      the backup file readable and its checksums right
``msdb.dbo.backupset``      the evidence: size, page checksums, copy-only, finish time
``HAS_PERMS_BY_NAME``       the login's rights: VIEW SERVER STATE (without it
                            ``sys.dm_exec_sessions`` shows only the caller's own session),
                            BACKUP DATABASE, ALTER on the database, CREATE ANY DATABASE
=========================== ================================================================
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from config.database import parse_url
from node_agent.cancellation import cancellable, cancelled
from node_agent.drivers.base import ActionFailed

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_@$#\- ]{0,127}$")
Row = tuple[Any, ...]
#: SET LOCK_TIMEOUT for every connection (milliseconds): a statement blocked on a lock fails.
LOCK_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Statement:
    """One T-SQL statement as the driver sends it."""

    name: str
    text: str
    params: tuple[Any, ...] = ()
    #: None: the CRM database; else ``master`` / ``msdb``.
    database: str | None = None
    changes: bool = False
    #: Seconds (pyodbc's query time-out; SQL Server cancels the statement after it).
    timeout: int = 60


def tsql_literal(value: Any) -> str:
    """A value as a T-SQL literal (for records and tests; never sent: parameters are bound)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return "'" + value.isoformat(sep=" ") + "'"
    return "N'" + str(value).replace("'", "''") + "'"


def render_statement(st: Statement) -> str:
    """``[database] text -- ? = p1, p2`` — how a statement is shown in ``result.commands``."""
    from config.secrets import redact

    where = f"[{st.database}] " if st.database else ""
    params = f" -- ? = {', '.join(tsql_literal(p) for p in st.params)}" if st.params else ""
    return redact(f"{where}{st.text}{params}")


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


# The statements ---------------------------------------------------------------------------------------
def create_subdir(folder: str) -> Statement:
    return Statement("create_subdir", "EXEC master.sys.xp_create_subdir ?", (folder,), "master", True)


def backup_database(db: str, disk: str, name: str, *, timeout: int) -> Statement:
    return Statement(
        "backup_database",
        f"BACKUP DATABASE {quote_ident(db)} TO DISK = ? WITH COPY_ONLY, CHECKSUM, INIT, FORMAT, NAME = ?",
        (disk, name),
        "master",
        True,
        timeout,
    )


def verify_backup(disk: str, *, timeout: int) -> Statement:
    return Statement(
        "verify_backup", "RESTORE VERIFYONLY FROM DISK = ? WITH CHECKSUM", (disk,), "master", False, timeout
    )


def backup_record(db: str, disk: str) -> Statement:
    """msdb's record of the latest full backup of ``db`` to ``disk``."""
    return Statement(
        "backup_record",
        "SELECT TOP (1) b.backup_size, b.has_backup_checksums, b.is_copy_only, b.backup_finish_date, "
        "CONVERT(nvarchar(36), b.backup_set_uuid), b.database_name "
        "FROM msdb.dbo.backupset AS b "
        "JOIN msdb.dbo.backupmediafamily AS f ON f.media_set_id = b.media_set_id "
        "WHERE b.database_name = ? AND f.physical_device_name = ? AND b.type = 'D' "
        "ORDER BY b.backup_finish_date DESC",
        (db, disk),
        "msdb",
    )


def single_user(db: str) -> Statement:
    return Statement(
        "single_user",
        f"ALTER DATABASE {quote_ident(db)} SET SINGLE_USER WITH ROLLBACK IMMEDIATE",
        (),
        "master",
        True,
        120,
    )


def restore_database(db: str, disk: str, *, timeout: int) -> Statement:
    return Statement(
        "restore_database",
        f"RESTORE DATABASE {quote_ident(db)} FROM DISK = ? WITH REPLACE, CHECKSUM",
        (disk,),
        "master",
        True,
        timeout,
    )


def multi_user(db: str) -> Statement:
    return Statement(
        "multi_user", f"ALTER DATABASE {quote_ident(db)} SET MULTI_USER", (), "master", True, 120
    )


def login_rights(db: str) -> Statement:
    return Statement(
        "login_rights",
        "SELECT SUSER_SNAME(), HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE'), "
        "HAS_PERMS_BY_NAME(?, N'DATABASE', N'BACKUP DATABASE'), HAS_PERMS_BY_NAME(?, N'DATABASE', N'ALTER'), "
        "HAS_PERMS_BY_NAME(NULL, NULL, N'CREATE ANY DATABASE'), IS_SRVROLEMEMBER(N'sysadmin')",
        (db, db),
        "master",
    )


def view_server_state() -> Statement:
    return Statement(
        "view_server_state", "SELECT HAS_PERMS_BY_NAME(NULL, NULL, N'VIEW SERVER STATE')", (), "master"
    )


def sessions(db: str) -> Statement:
    return Statement(
        "sessions",
        "SELECT ISNULL(s.host_name, N''), ISNULL(s.program_name, N''), COUNT(*) "
        "FROM sys.dm_exec_sessions AS s "
        "WHERE s.database_id = DB_ID(?) AND s.is_user_process = 1 AND s.session_id <> @@SPID "
        "GROUP BY s.host_name, s.program_name ORDER BY s.host_name",
        (db,),
        "master",
    )


def locks(db: str) -> Statement:
    return Statement(
        "locks",
        "SELECT ISNULL(s.host_name, N''), COUNT(*) FROM sys.dm_tran_locks AS l "
        "JOIN sys.dm_exec_sessions AS s ON s.session_id = l.request_session_id "
        "WHERE l.resource_database_id = DB_ID(?) AND l.request_session_id <> @@SPID "
        "GROUP BY s.host_name ORDER BY s.host_name",
        (db,),
        "master",
    )


DTA_OBJECTS = Statement(
    "dta_objects",
    "SELECT OBJECT_SCHEMA_NAME(i.object_id), OBJECT_NAME(i.object_id), i.name, N'index' "
    "FROM sys.indexes AS i WHERE i.name LIKE N'\\_dta\\_index\\_%' ESCAPE N'\\' "
    "UNION ALL "
    "SELECT OBJECT_SCHEMA_NAME(s.object_id), OBJECT_NAME(s.object_id), s.name, N'statistics' "
    "FROM sys.stats AS s WHERE s.name LIKE N'\\_dta\\_stat\\_%' ESCAPE N'\\'",
)

#: The guide's "Enable TCP/IP for SQL Server installations": SQL Server's own registry value
#: (``...\MSSQLServer\SuperSocketNetLib\Tcp`` ``Enabled``) of the instance the agent talks to,
#: read through ``sys.dm_server_registry`` (VIEW SERVER STATE), so a remote SQL Server answers too.
TCP_ENABLED = Statement(
    "tcp_enabled",
    "SELECT CONVERT(int, value_data) FROM sys.dm_server_registry "
    "WHERE registry_key LIKE N'%SuperSocketNetLib\\Tcp' AND value_name = N'Enabled'",
    (),
    "master",
)
#: "The SQL server must have a case insensitive collation": the server's and the CRM database's.
COLLATION = Statement(
    "collation",
    "SELECT CONVERT(nvarchar(128), SERVERPROPERTY('Collation')), "
    "CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation'))",
)
#: The memory of SQL Server's machine and the CRM database's size (the guide's memory rule).
SQL_MEMORY = Statement(
    "sql_memory",
    "SELECT CAST(physical_memory_kb AS bigint) * 1024, "
    "(SELECT SUM(CAST(size AS bigint)) * 8192 FROM sys.database_files) FROM sys.dm_os_sys_info",
)

ENABLED_TRIGGERS = Statement(
    "enabled_triggers",
    "SELECT sc.name, o.name, t.name FROM sys.triggers AS t "
    "JOIN sys.objects AS o ON o.object_id = t.parent_id "
    "JOIN sys.schemas AS sc ON sc.schema_id = o.schema_id "
    "WHERE t.parent_class = 1 AND t.is_disabled = 0 AND o.is_ms_shipped = 0 ORDER BY sc.name, o.name, t.name",
)

VIEWS = Statement(
    "views",
    "SELECT sc.name, v.name, m.[definition] FROM sys.views AS v "
    "JOIN sys.sql_modules AS m ON m.object_id = v.object_id "
    "JOIN sys.schemas AS sc ON sc.schema_id = v.schema_id "
    "WHERE v.is_ms_shipped = 0 ORDER BY sc.name, v.name",
)


def trigger(verb: str, schema: str, table: str, name: str) -> Statement:
    if verb not in ("DISABLE", "ENABLE"):
        raise ValueError(verb)
    on = f"{quote_ident(schema)}.{quote_ident(table)}"
    return Statement(
        f"{verb.lower()}_trigger",
        f"{verb} TRIGGER {quote_ident(schema)}.{quote_ident(name)} ON {on}",
        (),
        None,
        True,
    )


# Running them --------------------------------------------------------------------------------------------
@runtime_checkable
class SqlExecutor(Protocol):
    async def execute(self, statement: Statement) -> list[Row]: ...

    async def session(
        self, statements: Sequence[Statement], *, always: Sequence[Statement] = ()
    ) -> list[list[Row]]:
        """Run ``statements`` in order on one connection; ``always`` run after them on the same
        connection even when one failed (then the failure is raised)."""
        ...


#: The name :class:`~node_agent.drivers.windows.WindowsDriver` tells executors apart by.
StatementExecutor = SqlExecutor


def odbc_connection_string(url: str, *, database: str | None = None) -> str:
    """The ODBC connection string SQLAlchemy's mssql dialect makes of ``url`` (another database
    when ``database`` is given, e.g. ``master`` for RESTORE)."""
    from sqlalchemy.dialects.mssql.pyodbc import MSDialect_pyodbc

    parsed = parse_url(url)
    if database is not None:
        parsed = parsed.set(database=database)
    args, _kwargs = MSDialect_pyodbc().create_connect_args(parsed)  # type: ignore[no-untyped-call]
    return str(args[0])


class OdbcSql:
    """Runs statements on SQL Server through pyodbc (imported only here, only when one runs)."""

    def __init__(self, url: str, *, login_timeout: int = 15) -> None:
        self.url = url
        self.login_timeout = login_timeout

    async def execute(self, statement: Statement) -> list[Row]:
        return (await self.session([statement]))[0]

    async def session(
        self, statements: Sequence[Statement], *, always: Sequence[Statement] = ()
    ) -> list[list[Row]]:
        if not statements:
            return []
        if parse_url(self.url).get_backend_name() != "mssql":
            raise ActionFailed("the windows driver's database actions need an mssql+aioodbc CRM database URL")
        database = statements[0].database
        try:
            return await asyncio.to_thread(self._session, database, list(statements), list(always))
        except ActionFailed:
            raise
        except Exception as exc:  # pyodbc.Error and friends, translated at the boundary
            raise ActionFailed(f"SQL Server: {type(exc).__name__}: {exc}") from exc

    def _session(
        self, database: str | None, statements: list[Statement], always: list[Statement]
    ) -> list[list[Row]]:
        import pyodbc

        dsn = odbc_connection_string(self.url, database=database)
        conn = pyodbc.connect(dsn, autocommit=True, timeout=self.login_timeout)
        try:
            self._run(conn, Statement("lock_timeout", f"SET LOCK_TIMEOUT {LOCK_TIMEOUT_MS}"))
            out: list[list[Row]] = []
            try:
                for st in statements:
                    if cancelled():  # the operation was cancelled: start nothing more
                        raise ActionFailed(f"cancelled before {st.name}")
                    out.append(self._run(conn, st))
            finally:
                for st in always:  # SET MULTI_USER after a RESTORE: even after a cancel
                    self._run(conn, st)
            return out
        finally:
            conn.close()

    @staticmethod
    def _run(conn: Any, st: Statement) -> list[Row]:
        conn.timeout = st.timeout
        cur = conn.cursor()
        try:
            # A cancelled operation interrupts the statement (ODBC's SQLCancel, thread-safe).
            with cancellable(cur.cancel):
                cur.execute(st.text, *st.params)
                rows: list[Row] = []
                while True:
                    if cur.description is not None:
                        rows.extend(tuple(r) for r in cur.fetchall())
                    if not cur.nextset():
                        break
            return rows
        finally:
            cur.close()


Answer = list[Row] | Callable[[Statement], list[Row]]


@dataclass
class RecordingSql:
    """SQL Server for tests: records every statement; answers by statement name (else no rows);
    ``fail_on`` names a statement that raises as SQL Server would."""

    answers: dict[str, Answer] = field(default_factory=dict)
    calls: list[Statement] = field(default_factory=list)
    sessions: list[list[str]] = field(default_factory=list)
    fail_on: dict[str, str] = field(default_factory=dict)

    async def execute(self, statement: Statement) -> list[Row]:
        return (await self.session([statement]))[0]

    async def session(
        self, statements: Sequence[Statement], *, always: Sequence[Statement] = ()
    ) -> list[list[Row]]:
        self.sessions.append([s.name for s in [*statements, *always]])
        out: list[list[Row]] = []
        try:
            for st in statements:
                out.append(self._one(st))
        finally:
            for st in always:
                self._one(st)
        return out

    def _one(self, st: Statement) -> list[Row]:
        self.calls.append(st)
        if st.name in self.fail_on:
            raise ActionFailed(f"SQL Server: {self.fail_on[st.name]}")
        answer = self.answers.get(st.name)
        if answer is None:
            return []
        return answer(st) if callable(answer) else list(answer)
