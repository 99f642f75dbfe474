"""Bring the state database to the head of the one Alembic chain, under a lock.

Whichever service starts first migrates; the others wait on the same lock and then only verify
that the database is at the head this code knows. The lock is the database's own where it has
one — ``pg_advisory_lock`` on PostgreSQL, ``sp_getapplock`` on SQL Server — and, for SQLite, a
lock file beside the database (``filelock``: ``flock`` on POSIX, ``msvcrt.locking`` on Windows, taken
in a worker thread so the event loop keeps running while another process migrates).

A service started together with its database (a reboot, ``docker compose up``) waits up to
``wait`` seconds for the database to accept connections, trying again with back-off and jitter;
any other error fails at once.

Run by hand: ``crmcluster migrate`` (or ``python -m config.migrate URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import AsyncFileLock
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

from config.backoff import backoff
from config.database import make_engine, parse_url, sqlite_path, unavailable_errors
from config.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger("crmcluster.migrate")

_MIGRATIONS = Path(__file__).parent / "migrations"
#: pg_advisory_lock key: "crmcluster migrate" folded into a signed 64-bit integer.
PG_LOCK_KEY = 0x63726D636C7573
MSSQL_LOCK_RESOURCE = "crmcluster_migrate"
#: Seconds a starting service waits for its state database to accept connections.
DATABASE_WAIT = 30.0


def alembic_config(connection: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _current(sync_conn: Any) -> set[str]:
    return set(MigrationContext.configure(sync_conn).get_current_heads())


def _upgrade(sync_conn: Any) -> None:
    command.upgrade(alembic_config(sync_conn), "heads")


@contextlib.asynccontextmanager
async def _sqlite_file_lock(path: Path) -> AsyncIterator[None]:
    lock_path = path.with_name(path.name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncFileLock(lock_path):
        yield


async def _lock(conn: AsyncConnection) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
    elif dialect == "mssql":
        await conn.execute(
            text("EXEC sp_getapplock @Resource = :r, @LockMode = 'Exclusive', @LockOwner = 'Session'"),
            {"r": MSSQL_LOCK_RESOURCE},
        )


async def _unlock(conn: AsyncConnection) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
    elif dialect == "mssql":
        await conn.execute(
            text("EXEC sp_releaseapplock @Resource = :r, @LockOwner = 'Session'"), {"r": MSSQL_LOCK_RESOURCE}
        )


async def _open(engine: AsyncEngine) -> AsyncConnection:
    with unavailable_errors("state database"):
        return await engine.connect()


def _waiting(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    exc = state.outcome.exception() if state.outcome else None
    log.warning("waiting for the state database (%s); trying again in %.1fs", exc, wait)


async def connect_waiting(engine: AsyncEngine, *, wait: float) -> AsyncConnection:
    """A connection to ``engine``, trying again for up to ``wait`` seconds while the database is
    unavailable (refused, timed out); :class:`DatabaseUnavailable` after that."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        stop=stop_after_delay(wait),
        wait=backoff(first=0.25, cap=5.0, jitter=0.25),
        before_sleep=_waiting,
        reraise=True,
    )
    conn: AsyncConnection = await retrying(_open, engine)
    return conn


async def migrate(engine: AsyncEngine, *, wait: float = DATABASE_WAIT) -> set[str]:
    """Migrate to the heads under the lock, then verify; return the revisions now applied.

    ``wait``: seconds to wait for the database to accept connections (0: fail at once).
    """
    heads = head_revisions()
    path = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    file_lock = _sqlite_file_lock(path) if path else contextlib.nullcontext()
    try:
        async with file_lock:
            conn = await connect_waiting(engine, wait=wait)
            try:
                await _lock(conn)
                await conn.commit()
                try:
                    current = await conn.run_sync(_current)
                    if current != heads:
                        await conn.run_sync(_upgrade)
                        await conn.commit()
                    current = await conn.run_sync(_current)
                finally:
                    await _unlock(conn)
                    await conn.commit()
            finally:
                await conn.close()
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"state database migration failed: {type(exc).__name__}: {exc}") from exc
    if current != heads:
        raise MigrationError(
            f"state database is at {sorted(current)} but this crmcluster expects {sorted(heads)}"
        )
    return current


async def _main(url: str) -> None:
    engine = make_engine(str(parse_url(url)))
    try:
        revs = await migrate(engine)
    finally:
        await engine.dispose()
    print("state database at", ", ".join(sorted(revs)))


if __name__ == "__main__":  # pragma: no cover - exercised by the two-process test
    asyncio.run(_main(sys.argv[1]))
