"""``crmcluster backup-state``: a backup of crmcluster's own state database (nodes, upgrade runs,
steps, events, leases, audit), and its outcome for Prometheus.

Not the CRM database — Sage CRM's own, which a site backs up as it always has and an upgrade backs
up itself — but the record of what crmcluster did: an upgrade's checklist, its backups' evidence
and the audit trail live here. Run daily by ``deploy/systemd/crmcluster-state-backup.timer``.

- PostgreSQL: ``pg_dump --format=custom`` (restore with ``pg_restore``), of the URL's
  ``search_path`` schema when it names one. The password goes to ``pg_dump`` in ``PGPASSWORD``,
  never on its command line.
- SQLite (the embedded default): SQLite's online backup API, consistent while services write.
- SQL Server: refused; use SQL Server's own backup jobs.

Files are ``<dir>/crmcluster-state-<UTC time>.{dump,sqlite}``, written under a temporary name and
renamed, so a half-written file never looks like a backup; those older than ``keep_days`` are
deleted after a good one. With a text-file directory (node_exporter's textfile collector) the
outcome is written as ``crmcluster_state_backup.prom``:

    crmcluster_state_backup_last_success_timestamp_seconds   the newest good backup (kept on failure)
    crmcluster_state_backup_last_run_timestamp_seconds       the last attempt
    crmcluster_state_backup_last_run_success                 1 or 0
    crmcluster_state_backup_size_bytes                       size of the newest good backup
    crmcluster_state_backup_duration_seconds                 how long the last good one took
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.database import parse_url, sqlite_path

PROM_FILE = "crmcluster_state_backup.prom"
_PREFIX = "crmcluster_state_backup_"
_NAME = re.compile(r"^crmcluster-state-\d{8}T\d{6}Z\.(dump|sqlite)$")


class BackupFailed(Exception):
    """The backup could not be made; the message says why (one line, no secret)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    seconds: float
    removed: list[Path]


def backup_state(
    url: str,
    *,
    to: Path,
    keep_days: float = 14,
    textfile_dir: Path | None = None,
    now: datetime | None = None,
    pg_dump: str = "pg_dump",
    timeout: float = 3600,
) -> BackupResult:
    """Back up the state database at ``url`` into ``to``; see the module docstring."""
    started = time.monotonic()
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        result = _backup(url, to=to, stamp=stamp, keep_days=keep_days, pg_dump=pg_dump, timeout=timeout)
    except Exception:
        if textfile_dir is not None:
            _write_metrics(textfile_dir, run_at=stamp, ok=False, good=None)
        raise
    result = BackupResult(result.path, result.size, time.monotonic() - started, result.removed)
    if textfile_dir is not None:
        _write_metrics(textfile_dir, run_at=stamp, ok=True, good=result)
    return result


def _backup(
    url: str, *, to: Path, stamp: datetime, keep_days: float, pg_dump: str, timeout: float
) -> BackupResult:
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    to.mkdir(parents=True, exist_ok=True)
    base = f"crmcluster-state-{stamp:%Y%m%dT%H%M%SZ}"
    if backend == "sqlite":
        source = sqlite_path(parsed)
        if source is None or not source.exists():
            raise BackupFailed(f"backup-state: no SQLite state database at {source}")
        final = to / f"{base}.sqlite"
        tmp = to / f".{final.name}.tmp"
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    elif backend == "postgresql":
        if shutil.which(pg_dump) is None:
            raise BackupFailed(f"backup-state: {pg_dump} not found (Debian: postgresql-client)")
        final = to / f"{base}.dump"
        tmp = to / f".{final.name}.tmp"
        argv = [pg_dump, "--format=custom", "--no-owner", f"--file={tmp}"]
        schema = parsed.query.get("search_path")
        if schema:
            argv.append(f"--schema={schema}")
        env = {**os.environ, "PGDATABASE": parsed.database or "", "PGCONNECT_TIMEOUT": "10"}
        for var, value in (("PGHOST", parsed.host), ("PGPORT", parsed.port), ("PGUSER", parsed.username)):
            if value:
                env[var] = str(value)
        if parsed.password:
            env["PGPASSWORD"] = str(parsed.password)
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise BackupFailed(f"backup-state: pg_dump did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            why = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
            raise BackupFailed(f"backup-state: pg_dump failed ({done.returncode}): {why}")
    else:
        raise BackupFailed(f"backup-state: {backend} is not backed up by crmcluster; use its own backup jobs")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return BackupResult(final, final.stat().st_size, 0.0, _prune(to, keep=final, keep_days=keep_days))


def _prune(folder: Path, *, keep: Path, keep_days: float) -> list[Path]:
    cutoff = time.time() - keep_days * 86400
    removed = []
    for p in folder.iterdir():
        if p != keep and _NAME.match(p.name) and p.stat().st_mtime < cutoff:
            p.unlink()
            removed.append(p)
    return removed


def _previous(path: Path, name: str) -> float | None:
    """A sample of the previous metrics file (the last success survives a failed run)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(_PREFIX + name + " "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _write_metrics(folder: Path, *, run_at: datetime, ok: bool, good: BackupResult | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROM_FILE
    values: dict[str, tuple[str, float | None]] = {
        "last_success_timestamp_seconds": (
            "Time of the newest good backup of crmcluster's state database",
            run_at.timestamp() if ok else _previous(path, "last_success_timestamp_seconds"),
        ),
        "last_run_timestamp_seconds": ("Time of the last backup attempt", run_at.timestamp()),
        "last_run_success": ("1 when the last backup attempt succeeded", 1.0 if ok else 0.0),
        "size_bytes": (
            "Size of the newest good backup",
            float(good.size) if good else _previous(path, "size_bytes"),
        ),
        "duration_seconds": (
            "How long the newest good backup took",
            good.seconds if good else _previous(path, "duration_seconds"),
        ),
    }
    lines = []
    for name, (help_text, value) in values.items():
        if value is None:
            continue
        lines += [
            f"# HELP {_PREFIX}{name} {help_text}",
            f"# TYPE {_PREFIX}{name} gauge",
            f"{_PREFIX}{name} {value}",
        ]
    tmp = folder / f".{PROM_FILE}.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, path)
