"""Fixtures of the agent's tests: sandbox agents in-process on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node_agent.testing import SandboxAgent, running_sandbox_agent


@pytest.fixture
async def db_agent(tmp_path: Path, db_url: str, tokens: dict[str, str]) -> AsyncIterator[SandboxAgent]:
    """crm1: the database server, holding the Replication Engine and the Email Manager (7.3)."""
    (tmp_path / "library").mkdir()
    async with running_sandbox_agent(
        name="crm1",
        data_dir=tmp_path / "crm1",
        crm_db_url=db_url,
        token=tokens["agent"],
        roles=["database", "replication_engine", "email_manager"],
        library_root=tmp_path / "library",
    ) as agent:
        yield agent
