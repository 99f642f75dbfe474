"""deploy/postgres: the script makes a role and a database on the real PostgreSQL server, and the
state database's migrations then run as that role (which can do nothing else)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from config.database import make_engine
from config.migrate import migrate
from tests.conftest import PG_BASE, pg_admin
from tests.deploy.tools import DEPLOY, run, tool

SCRIPT = DEPLOY / "postgres" / "create-state-db.sql"


@pytest.fixture
def names() -> Iterator[str]:
    name = "crmc_" + uuid.uuid4().hex[:10]
    try:
        yield name
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        pg_admin(f'DROP ROLE IF EXISTS "{name}"')


def psql_args() -> list[str]:
    u = urlsplit(PG_BASE)
    return ["-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]


async def test_script_makes_a_database_the_migrations_run_in(names: str) -> None:
    psql = tool("psql", "postgresql-client")
    password = "pw-" + uuid.uuid4().hex
    result = run(
        [
            psql,
            *psql_args(),
            "-d",
            urlsplit(PG_BASE).path.lstrip("/") or "postgres",
            "-v",
            f"role={names}",
            "-v",
            f"db={names}",
            "-v",
            f"password={password}",
            "-f",
            str(SCRIPT),
        ],
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    u = urlsplit(PG_BASE)
    url = f"postgresql+asyncpg://{names}:{password}@{u.hostname}:{u.port or 5432}/{names}"
    engine = make_engine(url)
    try:
        revisions = await migrate(engine)
        assert revisions
        async with engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                ).scalars()
            )
            assert {"nodes", "upgrade_runs", "alembic_version"} <= tables
            owner = (
                await conn.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'nodes'"))
            ).scalar()
            assert owner == names
            rights = (
                await conn.execute(
                    text(
                        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles"
                        " WHERE rolname = current_user"
                    )
                )
            ).one()
            assert tuple(rights) == (False, False, False)
    finally:
        await engine.dispose()
    # Nobody else may connect to it.
    public = run(
        [
            psql,
            *psql_args(),
            "-d",
            names,
            "-tAc",
            f"SELECT has_database_privilege('public', '{names}', 'CONNECT')",
        ],
        timeout=30,
    )
    assert public.stdout.strip() == "f", public.stdout + public.stderr
