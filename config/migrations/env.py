"""Alembic environment: crmcluster runs migrations programmatically on a connection it passes in
(see :mod:`config.migrate`), under a cross-process lock."""

from __future__ import annotations

from alembic import context

from config.state_schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by a bare `alembic` command line
    raise RuntimeError("run migrations through `crmcluster migrate` (config.migrate), not bare alembic")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
