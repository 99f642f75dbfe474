"""The CRM database on SQL Server: backup, restore, sessions, the login's rights (the T-SQL is in
:mod:`.tsql`; how each is verified is said where it is done)."""

from __future__ import annotations

from datetime import datetime
from pathlib import PureWindowsPath
from typing import Any

from config.sysparams import is_unc
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows import tsql
from node_agent.drivers.windows.host import WindowsHost


def _bool(v: Any) -> bool:
    return v is not None and int(v) == 1


class SqlServer:
    def __init__(
        self, host: WindowsHost, *, database: str, backup_dir: str | None, long_timeout: int
    ) -> None:
        self.host = host
        self.db = database
        self.backup_dir = backup_dir
        self.long_timeout = long_timeout

    def folder(self, rel: str) -> PureWindowsPath:
        if not self.backup_dir:
            raise ActionFailed(
                "set CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR: where SQL Server writes the database backup"
            )
        return PureWindowsPath(self.backup_dir).joinpath(*rel.split("/"))

    def disk(self, rel: str) -> str:
        return str(self.folder(rel) / f"{self.db}.bak")

    async def _record(self, ctx: OperationContext, disk: str) -> dict[str, Any]:
        rows = await self.host.execute(ctx, tsql.backup_record(self.db, disk))
        if not rows:
            raise ActionFailed(f"msdb has no record of a full backup of {self.db} to {disk}")
        size, checksums, copy_only, finished, uuid, _name = rows[0]
        if not _bool(checksums):
            raise ActionFailed(f"the backup {disk} carries no page checksums (made without WITH CHECKSUM)")
        return {
            "bytes": int(size),
            "checksum": f"backup_set_uuid:{uuid}",
            "has_backup_checksums": True,
            "copy_only": _bool(copy_only),
            "finished_at": finished.isoformat() if isinstance(finished, datetime) else str(finished),
        }

    async def backup(self, ctx: OperationContext, rel: str, *, label: str) -> dict[str, Any]:
        folder, disk = self.folder(rel), self.disk(rel)
        if is_unc(str(folder)):
            await self.host.mkdir(ctx, folder)  # a share both the agent and SQL Server reach
        else:
            await self.host.execute(ctx, tsql.create_subdir(str(folder)))
        ctx.progress(0.2, f"BACKUP DATABASE {self.db} to {disk}")
        await self.host.execute(ctx, tsql.backup_database(self.db, disk, label, timeout=self.long_timeout))
        ctx.progress(0.7, "RESTORE VERIFYONLY")
        await self.host.execute(ctx, tsql.verify_backup(disk, timeout=self.long_timeout))
        record = await self._record(ctx, disk)
        if not record["copy_only"]:
            raise ActionFailed(f"msdb records the backup {disk} as not COPY_ONLY")
        return {
            "path": rel,
            "disk": disk,
            "database": self.db,
            "backend": "mssql",
            "verified": True,
            **record,
        }

    async def restore(self, ctx: OperationContext, rel: str) -> dict[str, Any]:
        disk = self.disk(rel)
        record = await self._record(ctx, disk)
        await self.host.execute(ctx, tsql.verify_backup(disk, timeout=self.long_timeout))
        ctx.progress(0.3, f"RESTORE DATABASE {self.db} (exclusive access on one connection)")
        await self.host.batch(
            ctx,
            [tsql.single_user(self.db), tsql.restore_database(self.db, disk, timeout=self.long_timeout)],
            always=[tsql.multi_user(self.db)],
        )
        return {
            "restored_from": rel,
            "disk": disk,
            "database": self.db,
            "backup_finished_at": record["finished_at"],
        }

    async def require_view_server_state(self, ctx: OperationContext) -> None:
        rows = await self.host.execute(ctx, tsql.view_server_state())
        if not rows or not _bool(rows[0][0]):
            raise ActionFailed(
                "the SQL login lacks VIEW SERVER STATE: sys.dm_exec_sessions would show only its own "
                "session, so no disconnect can be verified (GRANT VIEW SERVER STATE TO the login)"
            )

    async def sessions(self, ctx: OperationContext) -> dict[str, Any]:
        await self.require_view_server_state(ctx)
        programs: dict[str, dict[str, int]] = {}
        for host, prog, count in await self.host.execute(ctx, tsql.sessions(self.db)):
            programs.setdefault(str(host), {})[str(prog)] = int(count)
        locks = {str(h): int(n) for h, n in await self.host.execute(ctx, tsql.locks(self.db))}
        hosts = {h: sum(p.values()) for h, p in programs.items()}
        return {"hosts": hosts, "programs": programs, "locks": locks, "total": sum(hosts.values())}

    async def rights(self, ctx: OperationContext) -> dict[str, Any]:
        rows = await self.host.execute(ctx, tsql.login_rights(self.db))
        login, vss, backup, alter, create_db, sysadmin = rows[0] if rows else (None, 0, 0, 0, 0, 0)
        have = {
            "view_server_state": _bool(vss),
            "backup_database": _bool(backup),
            "alter_database": _bool(alter),
            "create_any_database": _bool(create_db),
            "sysadmin": _bool(sysadmin),
        }
        needed = (
            ("VIEW SERVER STATE (the disconnect check)", have["view_server_state"]),
            ("BACKUP DATABASE", have["backup_database"]),
            ("ALTER on the database (exclusive access for the restore)", have["alter_database"]),
            ("CREATE ANY DATABASE (RESTORE WITH REPLACE)", have["create_any_database"] or have["sysadmin"]),
        )
        missing = [what for what, ok in needed if not ok]
        if self.backup_dir and not is_unc(self.backup_dir) and not have["sysadmin"]:
            missing.append("sysadmin (xp_create_subdir), or a UNC CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR")
        return {"login": login, **have, "missing": missing, "ok": not missing}
