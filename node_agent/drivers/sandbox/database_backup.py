"""Backing up and restoring the CRM database for real (the guide's "Backing up the database
manually" and "Restoring the database backup").

- SQLite: the SQLite online backup API (``sqlite3.Connection.backup``) into ``CRM.sqlite``, and
  back from it into the live file — pages are copied under SQLite's own locks, so readers in other
  processes (balancer, controller) are never handed a torn database.
- PostgreSQL: ``pg_dump --format=custom`` of the CRM schema (the URL's ``search_path``, else
  ``public``) into ``CRM.dump``; restore drops the schema and replays the dump in **one
  transaction** through ``psql --single-transaction`` (so objects created after the backup, such
  as an upgrade's new tables, go too), after a ``lock_timeout``. The password, when the URL holds
  one, goes to the tools through ``PGPASSWORD``, never their argument list.

Every backup folder carries ``manifest.json`` (file, size, sha256, backend, schema version);
restore verifies it before touching the live database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from config.database import parse_url, sqlite_path
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.journal import atomic_write_text

MANIFEST = "manifest.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sqlite_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(str(source), timeout=10)
    try:
        dst = sqlite3.connect(str(target), timeout=10)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _pg_args(url: URL) -> tuple[list[str], dict[str, str], str]:
    args = [
        f"--host={url.host or '127.0.0.1'}",
        f"--port={url.port or 5432}",
        f"--username={url.username or 'postgres'}",
    ]
    env = {"PGCONNECT_TIMEOUT": "10"}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    schema = str(url.query.get("search_path") or "public").split(",")[0].strip()
    return args, env, schema


async def backup_database(crm_url: str, destination: Path, ctx: OperationContext) -> dict[str, Any]:
    url = parse_url(crm_url)
    if not await asyncio.to_thread(destination.is_dir):
        # As SQL Server: it creates no folders (the caller runs xp_create_subdir first).
        raise ActionFailed(
            f"Cannot open backup device '{destination}'. Operating system error 3(The system cannot "
            "find the path specified.). BACKUP DATABASE is terminating abnormally."
        )
    backend = url.get_backend_name()
    if backend == "sqlite":
        live = sqlite_path(url)
        if live is None:
            raise ActionFailed("an in-memory CRM database cannot be backed up")
        target = destination / "CRM.sqlite"
        tmp = destination / "CRM.sqlite.partial"
        tmp.unlink(missing_ok=True)
        ctx.log(f"backing up {live.name} with the SQLite backup API")
        await asyncio.to_thread(_sqlite_copy, live, tmp)
        tmp.replace(target)
        extra: dict[str, Any] = {}
    elif backend == "postgresql":
        args, env, schema = _pg_args(url)
        target = destination / "CRM.dump"
        await ctx.run(
            [
                "pg_dump",
                *args,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--schema={schema}",
                f"--file={target}",
                f"--dbname={url.database}",
            ],
            env=env,
        )
        extra = {"schema": schema}
    else:
        raise ActionFailed(f"the sandbox cannot back up a {backend} database")
    manifest = {
        "backend": backend,
        "file": target.name,
        "bytes": target.stat().st_size,
        "sha256": await asyncio.to_thread(file_sha256, target),
        **extra,
    }
    atomic_write_text(destination / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ActionFailed(f"{source.name} is not a database backup made by backup_database") from exc
    return manifest


async def verify_backup(source: Path) -> dict[str, Any]:
    manifest = read_manifest(source)
    path = source / str(manifest.get("file"))
    if not path.is_file():
        raise ActionFailed(f"backup file {path.name} is missing")
    digest = await asyncio.to_thread(file_sha256, path)
    if digest != manifest.get("sha256") or path.stat().st_size != manifest.get("bytes"):
        raise ActionFailed(f"backup file {path.name} does not match its checksum")
    return manifest


async def restore_database(crm_url: str, source: Path, ctx: OperationContext) -> dict[str, Any]:
    manifest = await verify_backup(source)
    url = parse_url(crm_url)
    backend = url.get_backend_name()
    if manifest.get("backend") != backend:
        raise ActionFailed(
            f"the backup is of a {manifest.get('backend')} database, the CRM database is {backend}"
        )
    path = source / str(manifest["file"])
    if backend == "sqlite":
        live = sqlite_path(url)
        if live is None:
            raise ActionFailed("an in-memory CRM database cannot be restored")
        ctx.log(f"restoring {live.name} from {path.name} with the SQLite backup API")
        await asyncio.to_thread(_sqlite_copy, path, live)
    else:
        args, env, schema = _pg_args(url)
        if manifest.get("schema") != schema:
            raise ActionFailed(f"the backup is of schema {manifest.get('schema')!r}, not {schema!r}")
        script = source / "restore.sql.partial"
        try:
            await ctx.run(["pg_restore", "--no-owner", "--no-privileges", f"--file={script}", str(path)])
            sql = script.read_text(encoding="utf-8")
            q = '"' + schema.replace('"', '""') + '"'
            argv = [
                "psql",
                *args,
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--single-transaction",
                f"--dbname={url.database}",
                "--command=SET lock_timeout = '20s'",
                f"--command=DROP SCHEMA IF EXISTS {q} CASCADE",
            ]
            if f"CREATE SCHEMA {schema};" not in sql and f"CREATE SCHEMA {q};" not in sql:
                argv.append(f"--command=CREATE SCHEMA {q}")
            argv.append(f"--file={script}")
            await ctx.run(argv, env=env)
        finally:
            script.unlink(missing_ok=True)
    return manifest
