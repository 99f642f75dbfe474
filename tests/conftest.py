"""Shared fixtures: every database test runs on SQLite and on the real PostgreSQL server.

``db_url`` is parametrised over both backends. PostgreSQL tests get a schema of their own
(``search_path`` in the URL, honoured by :func:`config.database.make_engine`), dropped afterwards,
so runs never collide. ``CRMCLUSTER_TEST_PG_URL`` overrides the server (default: the local one).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import CrmTables, create_embedded_crm_tables, crm_tables
from config.database import make_engine
from config.migrate import migrate

PG_BASE = os.environ.get("CRMCLUSTER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def pg_admin(sql: str) -> None:
    """Run one admin statement on the test server (schema create/drop) with asyncpg."""
    import asyncpg

    async def _run() -> None:
        conn = await asyncpg.connect(PG_BASE.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(_run())


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    schema = "t_" + uuid.uuid4().hex[:12]
    pg_admin(f'CREATE SCHEMA "{schema}"')
    base = PG_BASE.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}?search_path={schema}"
    finally:
        pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'crmcluster.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: SQLite file or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'crmcluster.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def migrated_engine(engine: AsyncEngine) -> AsyncEngine:
    await migrate(engine)
    return engine


@pytest.fixture
def tables() -> CrmTables:
    return crm_tables()


@pytest.fixture
async def crm_engine(engine: AsyncEngine, tables: CrmTables) -> AsyncEngine:
    """The same database with the embedded CRM tables (Custom_SysParams, Activity, Users, Company)."""
    await create_embedded_crm_tables(engine, tables)
    return engine


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def tokens() -> dict[str, str]:
    return {"admin": "admin-" + uuid.uuid4().hex, "agent": "agent-" + uuid.uuid4().hex}


__all__ = ["BACKENDS", "PG_BASE", "pg_admin", "text"]
