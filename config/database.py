"""Database engines from a SQLAlchemy URL: SQLite (embedded default), PostgreSQL, SQL Server.

- SQLite (``sqlite+aiosqlite:///path``): WAL mode and a busy timeout on every connection so the
  controller, balancer and agents can share one file; the parent folder is created.
- PostgreSQL (``postgresql+asyncpg://…``): a ``search_path`` query parameter is honoured (taken out
  of the URL and set as a server setting), which lets tests and tenants use one schema each.
- SQL Server (``mssql+aioodbc://…?driver=ODBC+Driver+18+for+SQL+Server``): pyodbc and an ODBC
  driver are needed only here, and are imported by SQLAlchemy only when such a URL is used.

Driver errors that mean "the database did not answer" are translated to
:class:`~config.errors.DatabaseUnavailable` by :func:`unavailable_errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from config.errors import DatabaseUnavailable, SettingError

SQLITE_BUSY_TIMEOUT_MS = 10_000
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "mssql": "aioodbc"}


def parse_url(url: str) -> URL:
    """Parse and normalise a database URL to its async driver; raise SettingError when unusable."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as e:
        raise SettingError(f"database URL is not a SQLAlchemy URL: {e}") from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise SettingError(f"database URL: unsupported backend {backend!r} (sqlite, postgresql, mssql)")
    driver = _ASYNC_DRIVERS[backend]
    if parsed.get_driver_name() != driver:
        parsed = parsed.set(drivername=f"{backend}+{driver}")
    return parsed


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url`` configured for how crmcluster shares databases."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": backend != "sqlite"}
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per use: SQLite's own locking (WAL + busy timeout) arbitrates writers
        # across processes; a pool would only hold file handles open.
        kwargs["poolclass"] = NullPool
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        query = dict(parsed.query)
        search_path = query.pop("search_path", None)
        parsed = parsed.set(query=query)
        connect_args: dict[str, Any] = {"timeout": 5, "command_timeout": 30}
        if search_path:
            connect_args["server_settings"] = {"search_path": str(search_path)}
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_async_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@contextlib.contextmanager
def unavailable_errors(what: str = "database") -> Iterator[None]:
    """Translate "could not reach the database" driver errors into DatabaseUnavailable."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as e:
        raise DatabaseUnavailable(f"{what} unavailable: {type(e.orig or e).__name__}") from e
    except exc.TimeoutError as e:
        raise DatabaseUnavailable(f"{what} unavailable: connection pool timed out") from e
    except exc.DBAPIError as e:
        if e.connection_invalidated:
            raise DatabaseUnavailable(f"{what} unavailable: connection lost") from e
        raise
    except (OSError, TimeoutError, ConnectionError) as e:
        raise DatabaseUnavailable(f"{what} unavailable: {type(e).__name__}") from e
