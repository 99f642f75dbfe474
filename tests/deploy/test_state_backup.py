"""``crmcluster backup-state`` (run daily by deploy/systemd/crmcluster-state-backup.timer): a
backup of the state database on the real PostgreSQL server and on SQLite, its outcome for
node_exporter checked by ``promtool check metrics``, old backups pruned, failures reported."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import insert

from config.database import make_engine
from config.migrate import migrate
from config.state_schema import nodes, utcnow
from tests.deploy.tools import run, tool

CRMCLUSTER = str(Path(sys.executable).with_name("crmcluster"))


async def seeded(url: str, name: str) -> None:
    engine = make_engine(url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                insert(nodes).values(
                    name=name,
                    state="up",
                    weight=1.0,
                    roles=[],
                    logged_on=0,
                    fenced=False,
                    updated_at=utcnow(),
                )
            )
    finally:
        await engine.dispose()


def backup(url: str, to: Path, textfile: Path, *extra: str) -> tuple[int, str]:
    """The command as the timer's service runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMCLUSTER_")}
    done = subprocess.run(
        [CRMCLUSTER, "backup-state", "--to", str(to), "--textfile-dir", str(textfile), "--url", url, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def metric(textfile: Path, name: str) -> float:
    for line in (textfile / "crmcluster_state_backup.prom").read_text().splitlines():
        if line.startswith(f"crmcluster_state_backup_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics file")


def check_metrics_file(textfile: Path) -> None:
    promtool = tool("promtool", "prometheus")
    result = run(
        [promtool, "check", "metrics"], stdin=(textfile / "crmcluster_state_backup.prom").read_text()
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_postgresql_backup_holds_the_state(pg_schema_url: str, tmp_path: Path) -> None:
    tool("pg_dump", "postgresql-client")
    pg_restore = tool("pg_restore", "postgresql-client")
    await seeded(pg_schema_url, "crm-backup-probe")
    rc, out = backup(pg_schema_url, tmp_path / "backups", tmp_path / "textfile")
    assert rc == 0, out
    dumps = list((tmp_path / "backups").glob("crmcluster-state-*.dump"))
    assert len(dumps) == 1, out
    sql = run([pg_restore, "--file=-", str(dumps[0])])
    assert sql.returncode == 0, sql.stderr
    assert "crm-backup-probe" in sql.stdout and "upgrade_runs" in sql.stdout
    check_metrics_file(tmp_path / "textfile")
    assert metric(tmp_path / "textfile", "last_run_success") == 1
    assert abs(metric(tmp_path / "textfile", "last_success_timestamp_seconds") - time.time()) < 120
    assert metric(tmp_path / "textfile", "size_bytes") == dumps[0].stat().st_size


async def test_sqlite_backup_is_a_consistent_copy_and_old_ones_are_pruned(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await seeded(url, "crm-sqlite-probe")
    to = tmp_path / "backups"
    to.mkdir()
    old = to / "crmcluster-state-20200101T000000Z.sqlite"
    old.write_bytes(b"old")
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    unrelated = to / "notes.txt"
    unrelated.write_text("kept")
    os.utime(unrelated, (month_ago, month_ago))
    rc, out = backup(url, to, tmp_path / "textfile", "--keep-days", "14")
    assert rc == 0, out
    assert "1 older backup(s) removed" in out
    copies = list(to.glob("crmcluster-state-*.sqlite"))
    assert len(copies) == 1 and copies[0] != old and unrelated.exists()
    with sqlite3.connect(copies[0]) as conn:
        assert conn.execute("SELECT name FROM nodes").fetchall() == [("crm-sqlite-probe",)]
    check_metrics_file(tmp_path / "textfile")


async def test_a_failed_backup_is_reported_and_keeps_the_last_success(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await seeded(url, "crm1")
    textfile = tmp_path / "textfile"
    assert backup(url, tmp_path / "backups", textfile)[0] == 0
    good = metric(textfile, "last_success_timestamp_seconds")
    password = "s3cret-password-for-backup"
    rc, out = backup(
        f"postgresql+asyncpg://crmcluster:{password}@127.0.0.1:9/nothing", tmp_path / "backups", textfile
    )
    assert rc == 1, out
    assert len(out.strip().splitlines()) == 1 and "pg_dump failed" in out, out
    assert password not in out
    assert metric(textfile, "last_run_success") == 0
    assert metric(textfile, "last_success_timestamp_seconds") == good
    check_metrics_file(textfile)


def test_sql_server_is_refused_with_one_line(tmp_path: Path) -> None:
    rc, out = backup("mssql+aioodbc://u:p@sql01/crmstate?driver=x", tmp_path / "b", tmp_path / "t")
    assert rc == 1 and "use its own backup jobs" in out and len(out.strip().splitlines()) == 1
