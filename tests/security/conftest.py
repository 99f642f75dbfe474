"""Fixtures of the attack tests: a controller (SQLite and PostgreSQL) and a sandbox agent, both
reached through their real ASGI apps, with the brute-force limiter at its shipped defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from node_agent.testing import SandboxAgent, running_sandbox_agent
from tests.controller.conftest import (  # noqa: F401  (fixtures shared with the controller tests)
    FakeClock,
    Harness,
    clock,
    cluster,
    make_settings,
    refused,
    start_controller,
)


@pytest.fixture
async def controller(
    crm_engine: AsyncEngine, db_url: str, tokens: dict[str, str], secret_key: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = make_settings(db_url, tokens, secret_key, tmp_path, auth_max_failures=10)
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    refuse = httpx.MockTransport(refused)

    def transport_for(url: str) -> httpx.AsyncBaseTransport:
        return transports.get(url.rstrip("/"), refuse)

    async with AsyncExitStack() as stack:
        h = await start_controller(
            stack, settings, clock=FakeClock(), tokens=tokens, transport_for=transport_for
        )
        h.transports = transports
        yield h


@pytest.fixture
async def agent(tmp_path: Path, sqlite_url: str, tokens: dict[str, str]) -> AsyncIterator[SandboxAgent]:
    (tmp_path / "library").mkdir(exist_ok=True)
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=sqlite_url,
        token=tokens["agent"],
        roles=["database", "replication_engine", "email_manager"],
        library_root=tmp_path / "library",
    ) as a:
        yield a
