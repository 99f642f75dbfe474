"""The state schema: one Alembic chain, migrated under a lock by whichever service starts first."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from filelock import AsyncFileLock
from sqlalchemy import inspect, make_url, text
from sqlalchemy.dialects import mssql
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateTable

from config import state_schema
from config.crm_schema import NotEmbeddedDatabase, create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.errors import MigrationError
from config.migrate import head_revisions, migrate


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrates_to_head_and_matches_the_model(engine: AsyncEngine) -> None:
    revs = await migrate(engine)
    assert revs == head_revisions()
    names = await table_names(engine)
    assert set(state_schema.metadata.tables) <= names
    assert "alembic_version" in names
    # Columns in the database are the ones code queries through.
    async with engine.connect() as conn:
        for table in state_schema.metadata.sorted_tables:

            def columns(c: Any, t: str = table.name) -> set[str]:
                return {col["name"] for col in inspect(c).get_columns(t)}

            cols = await conn.run_sync(columns)
            assert set(table.c.keys()) == cols, table.name


async def test_second_migrate_is_a_verified_no_op(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.begin() as conn:
        await conn.execute(
            state_schema.nodes.insert().values(
                name="crm1", state="up", roles=["database"], updated_at=state_schema.utcnow()
            )
        )
    assert await migrate(migrated_engine) == head_revisions()
    async with migrated_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM nodes"))).scalar_one() == 1


async def test_concurrent_migrations_in_one_process(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(e) for e in engines))
    finally:
        for e in engines:
            await e.dispose()
    assert all(r == head_revisions() for r in results)


async def test_sqlite_waits_for_the_lock_file_without_blocking(sqlite_url: str, tmp_path: Path) -> None:
    """Another process holding the lock file beside the database keeps ``migrate`` waiting; the event
    loop goes on meanwhile (the lock is taken in a worker thread), and the migration runs once it
    is released."""
    engine = make_engine(sqlite_url)
    held = AsyncFileLock(tmp_path / "crmcluster.db.migrate.lock")
    try:
        await held.acquire()
        task = asyncio.create_task(migrate(engine))
        ticks = 0
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.5
        while loop.time() < until:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done(), "migrate did not wait for the lock"
        assert ticks >= 10, f"the event loop stalled while migrate waited ({ticks} ticks)"
        assert "alembic_version" not in await table_names(engine)
        await held.release()
        assert await asyncio.wait_for(task, timeout=30) == head_revisions()
    finally:
        if held.is_locked:
            await held.release()
        await engine.dispose()


def test_the_migrate_command_does_not_need_fcntl() -> None:
    """Windows has no ``fcntl``: the migration module (and so ``crmcluster migrate``) still imports."""
    code = "import sys; sys.modules['fcntl'] = None; import config.migrate; print('imported')"
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


def test_two_processes_migrating_the_same_database_at_once(db_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "config.migrate", db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "state database at" in out

    async def _check() -> None:
        eng = make_engine(db_url)
        try:
            async with eng.connect() as conn:
                rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        finally:
            await eng.dispose()
        assert set(rows) == head_revisions()
        assert len(rows) == len(head_revisions())

    asyncio.run(_check())


async def test_unknown_revision_in_database_is_refused(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
        await conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999_from_the_future')"))
    with pytest.raises(MigrationError):
        await migrate(migrated_engine)


async def test_crm_tables_are_created_for_embedded_databases_only(engine: AsyncEngine) -> None:
    tables = crm_tables()
    await create_embedded_crm_tables(engine, tables)
    assert {"Custom_SysParams", "Activity", "Users", "Company"} <= await table_names(engine)

    class FakeMssql:
        class dialect:
            name = "mssql"

    with pytest.raises(NotEmbeddedDatabase):
        await create_embedded_crm_tables(FakeMssql(), tables)  # type: ignore[arg-type]


def test_state_and_crm_statements_compile_for_sql_server() -> None:
    dialect = mssql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's dialects are untyped
    for table in [*state_schema.metadata.sorted_tables, *crm_tables().metadata.sorted_tables]:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert f"CREATE TABLE [{table.name}]" in ddl or f"CREATE TABLE {table.name}" in ddl
    # The sysparams read used by every service, as SQL Server will run it.
    from sqlalchemy import select

    t = crm_tables()
    stmt = select(t.parm("parm_name"), t.parm("parm_value")).where(t.parm("parm_deleted").is_(None))
    sql = str(stmt.compile(dialect=dialect))
    assert "[Custom_SysParams]" in sql and "[Parm_Deleted] IS NULL" in sql


def test_mssql_engine_url_uses_aioodbc() -> None:
    from config.database import parse_url

    url = parse_url("mssql://crm:pw@sql1:1433/CRM?driver=ODBC+Driver+18+for+SQL+Server")
    assert url.drivername == "mssql+aioodbc"
    assert url.query["driver"] == "ODBC Driver 18 for SQL Server"


def test_one_linear_chain() -> None:
    """One Alembic chain: every revision has one parent, and there is one head."""
    from alembic.script import ScriptDirectory

    from config.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == "0001_initial"
    for rev in revisions:
        assert rev.down_revision is None or isinstance(rev.down_revision, str), rev.revision


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_service_started_with_its_database_waits_for_it(
    pg_schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL accepts connections only some time after the service starts (a reboot): the
    migration tries again with back-off until it does, then migrates."""
    pg = make_url(pg_schema_url)
    port = _free_port()
    engine = make_engine(pg_schema_url.replace(f"{pg.host}:{pg.port}", f"127.0.0.1:{port}"))

    async def to_postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(pg.host, pg.port or 5432)
        await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))

    caplog.set_level(logging.WARNING, logger="crmcluster.migrate")
    task = asyncio.create_task(migrate(engine, wait=60))
    server = None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while "waiting for the state database" not in caplog.text:
            assert loop.time() < deadline and not task.done(), "migrate did not wait for the database"
            await asyncio.sleep(0.05)
        server = await asyncio.start_server(to_postgres, "127.0.0.1", port)  # the database is up
        assert await asyncio.wait_for(task, timeout=60) == head_revisions()
    finally:
        task.cancel()
        if server is not None:
            server.close()
        await engine.dispose()


async def test_a_database_that_never_answers_fails_after_the_wait() -> None:
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/nothing")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(MigrationError, match="state database unavailable"):
            await migrate(engine, wait=1.0)
    finally:
        await engine.dispose()
    assert 1.0 <= loop.time() - started < 15


async def test_no_wait_fails_at_once() -> None:
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/nothing")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(MigrationError, match="state database unavailable"):
            await migrate(engine, wait=0)
    finally:
        await engine.dispose()
    assert loop.time() - started < 5
