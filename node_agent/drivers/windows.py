"""The windows driver: a real Sage CRM web server, through the commands an administrator would
type — as argument lists, never through a shell.

=============================== =================================================================
IIS                             ``iisreset /stop`` · ``iisreset /start``
Tomcat, CRM services            ``sc.exe stop|start|query <install>Tomcat7`` and the services;
                                ``sc.exe create … binPath= … start= auto`` / ``sc.exe delete``
registry                        ``reg.exe export|import HKLM\\SOFTWARE\\eWare\\Config\\/<install>``
                                and ``…\\Mappings\\/<install>`` (``/reg:32``: Sage CRM is 32-bit)
eware.dll                       ``regsvr32 /s <path>\\eware.dll``
website physical path           ``appcmd set vdir /vdir.name:<site>/<install>/ /physicalPath:…``
metadata reload                 ``appcmd recycle apppool /apppool.name:<pool>`` + Tomcat restart
database                        T-SQL of :mod:`.windows_sql` (BACKUP … WITH CHECKSUM;
                                SINGLE_USER WITH ROLLBACK IMMEDIATE, RESTORE … WITH REPLACE,
                                MULTI_USER; sys.dm_exec_sessions; sys.indexes/sys.stats; triggers)
installer                       ``windows_installer_command`` with the run's params filled in
=============================== =================================================================

Paths in params are relative to their root: backups to ``backup_root`` (and, for the database
file SQL Server writes, ``windows_sql_backup_dir``), ``register_dll``/``redirect_website`` to the
Sage CRM programs folder. Each filled-in value is one argument, so no value can add another.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path, PureWindowsPath
from typing import Any

from config.secrets import register_secret, secret_hash
from config.settings import AgentSettings
from node_agent.backup_files import copy_folder, tree_manifest, verify_folder
from node_agent.drivers import windows_sql as tsql
from node_agent.drivers.base import ActionFailed, ActionHandler, HostDriver, OperationContext, resolve_under
from node_agent.drivers.windows_maintenance import WindowsMaintenance
from node_agent.drivers.windows_uninstall import WindowsUninstall
from node_agent.journal import atomic_write_text
from node_agent.library_share import library_path
from node_agent.protocol import (
    Action,
    BackupParams,
    DllPathParams,
    FingerprintParams,
    LibraryParams,
    LicenseParams,
    NodeStatus,
    NoParams,
    RestoreParams,
    RunInstallerParams,
    ServiceParams,
    ServiceStatus,
)
from node_agent.runner import CommandResult, CommandRunner
from node_agent.upgrade_log import parse_upgrade_log
from node_agent.warmup import warmup_logon

SERVICE_EXES = {
    "indexer": "crmindexerservice.exe",
    "escalation": "crmescalationservice.exe",
    "email_manager": "crmemailmanagerservice.exe",
    "integration": "crmintegrationservice.exe",
}
_STATE = re.compile(r"STATE\s*:\s*\d+\s+(\w+)")
_PID = re.compile(r"PID\s*:\s*(\d+)")
_WP = re.compile(r'WP\s+"(\d+)"')
SC_NOT_STARTED = 1062
SC_ALREADY_RUNNING = 1056
SC_NOT_INSTALLED = 1060


class WindowsDriver(HostDriver):
    kind = "windows"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        runner: CommandRunner,
        sql: tsql.SqlExecutor | None = None,
        poll: float = 1.0,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.install = settings.install_name
        self.programs_root = Path(settings.windows_programs_root)
        self.install_dir = self.programs_root / self.install
        self.backup_root = Path(settings.backup_root) if settings.backup_root else None
        self.sql_backup_dir = PureWindowsPath(settings.windows_sql_backup_dir or settings.backup_root or "")
        self._sql = sql
        self.poll = poll
        self.state_dir = settings.data_dir / "agent"
        self._iis_seen: tuple[str, ...] | None = None
        self._iis_since: datetime | None = None
        self._last_warmup: datetime | None = None
        self.warmup_transport: Any = None
        self.uninstall = WindowsUninstall(self, service_exes=SERVICE_EXES)
        self.maintenance = WindowsMaintenance(self)

    def handler(self, action: Action) -> ActionHandler:
        for part in (self.uninstall, self.maintenance):
            fn = getattr(part, action.value, None)
            if fn is not None:
                handler: ActionHandler = fn
                return handler
        return super().handler(action)

    # Helpers ------------------------------------------------------------------------------------------
    @property
    def sql(self) -> tsql.SqlExecutor:
        if self._sql is None:
            self._sql = tsql.OdbcSql(self.settings.crm_url)
        return self._sql

    @property
    def database(self) -> str:
        return tsql.database_name(self.settings.crm_url)

    @property
    def tomcat_service(self) -> str:
        return f"{self.install}Tomcat7"

    def service_name(self, service: str) -> str:
        return self.settings.windows_services.get(service, service)

    def _reg_view(self) -> list[str]:
        return [f"/reg:{self.settings.windows_registry_view}"]

    @property
    def config_key(self) -> str:
        return f"HKLM\\SOFTWARE\\eWare\\Config\\/{self.install}"

    @property
    def mappings_key(self) -> str:
        return f"HKLM\\SOFTWARE\\eWare\\Mappings\\/{self.install}"

    def _backup_root(self) -> Path:
        if self.backup_root is None:
            raise ActionFailed("set CRMCLUSTER_BACKUP_ROOT: the windows driver has no default backup folder")
        return self.backup_root

    def _destination(self, given: str | None, kind: str, ctx: OperationContext) -> tuple[Path, str]:
        root = self._backup_root()
        rel = given or f"{kind}/{ctx.op_id.replace(':', '-')}"
        path = resolve_under(root, rel)
        return path, path.relative_to(root.resolve()).as_posix()

    def _source(self, rel: str) -> Path:
        path = resolve_under(self._backup_root(), rel)
        if not path.exists():
            raise ActionFailed(f"no backup at {rel}")
        return path

    def _sql_disk(self, rel: str) -> str:
        """Where SQL Server writes/reads the ``.bak`` of backup folder ``rel`` (a Windows path)."""
        if not str(self.sql_backup_dir) or str(self.sql_backup_dir) == ".":
            raise ActionFailed("set CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR (or CRMCLUSTER_BACKUP_ROOT)")
        return str(self.sql_backup_dir.joinpath(*rel.split("/"), f"{self.database}.bak"))

    async def _sc(self, ctx: OperationContext | None, *args: str) -> tuple[int, str]:
        argv = ["sc.exe", *args]
        if ctx is not None:
            r = await ctx.run(argv, check=False)
        else:
            r = await self._quiet(argv)
        return r.returncode, r.output

    async def _quiet(self, argv: list[str]) -> CommandResult:
        """Run a query command for status; a missing program reads as an unknown answer."""
        try:
            return await self.runner.run(argv)
        except OSError as exc:
            return CommandResult(127, str(exc))

    async def _service_state(self, name: str) -> ServiceStatus:
        code, out = await self._sc(None, "query", name)
        if code == SC_NOT_INSTALLED:
            return ServiceStatus.NOT_INSTALLED
        m = _STATE.search(out)
        if code != 0 or m is None:
            return ServiceStatus.UNKNOWN
        word = m.group(1).upper()
        if word == "RUNNING":
            return ServiceStatus.RUNNING
        if word == "STOPPED":
            return ServiceStatus.STOPPED
        return ServiceStatus.UNKNOWN

    async def _control(
        self, ctx: OperationContext, name: str, verb: str, *, timeout: float = 120
    ) -> dict[str, Any]:
        """``sc.exe start|stop NAME`` and wait until it reads RUNNING|STOPPED."""
        code, out = await self._sc(ctx, verb, name)
        ok_codes = {0, SC_ALREADY_RUNNING} if verb == "start" else {0, SC_NOT_STARTED}
        if code not in ok_codes:
            raise ActionFailed(f"sc.exe {verb} {name} failed ({code}): {out.strip()[-200:]}")
        want = ServiceStatus.RUNNING if verb == "start" else ServiceStatus.STOPPED
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self._service_state(name)
            if state == want:
                return {"service": name, "state": state.value}
            if loop.time() >= deadline:
                raise ActionFailed(f"{name} is still {state.value} after {timeout:.0f}s")
            await asyncio.sleep(self.poll)

    # Status --------------------------------------------------------------------------------------------
    async def iis_started_at(self) -> datetime | None:
        """IIS's start, as the first time the W3SVC process and the worker processes were seen
        with their current ids (a reset or a recycle changes them)."""
        state = await self._service_state("W3SVC")
        if state != ServiceStatus.RUNNING:
            self._iis_seen = None
            return None
        _, out = await self._sc(None, "queryex", "W3SVC")
        pid = _PID.search(out)
        wp = await self._quiet([self.settings.windows_appcmd, "list", "wp"])
        seen = (pid.group(1) if pid else "?", *sorted(_WP.findall(wp.output)))
        if seen != self._iis_seen:
            # A new worker process appearing after the first request is not a recycle.
            if not (self._iis_seen and len(self._iis_seen) == 1 and seen[0] == self._iis_seen[0]):
                self._iis_since = datetime.now(UTC)
            self._iis_seen = seen
        return self._iis_since

    def note_warmup(self, when: datetime) -> None:
        self._last_warmup = when

    async def _registry_version(self) -> str | None:
        r = await self._quiet(["reg.exe", "query", self.config_key, "/v", "Version", *self._reg_view()])
        m = re.search(r"Version\s+REG_SZ\s+(.+)", r.output)
        return m.group(1).strip() if r.returncode == 0 and m else None

    async def status(self) -> NodeStatus:
        services = {s: await self._service_state(self.service_name(s)) for s in SERVICE_EXES}
        try:
            free = shutil.disk_usage(self.programs_root).free
        except OSError:
            free = None
        war = self.install_dir / "tomcat" / "webapps" / f"{self.install}ExchangeSyncEngine.war"
        return NodeStatus(
            name=self.settings.name or "",
            install_name=self.install,
            version=await self._registry_version(),
            roles=self.settings.roles,
            web=await self._service_state("W3SVC"),
            tomcat=await self._service_state(self.tomcat_service),
            services=services,
            replication_engine=war.exists(),
            free_disk_bytes=free,
            last_iis_start=await self.iis_started_at(),
            web_url=self.settings.windows_web_url,
            last_warmup_at=self._last_warmup,
            driver=self.kind,
        )

    # IIS and Tomcat ------------------------------------------------------------------------------------
    async def stop_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await ctx.run(["iisreset", "/stop"])
        return {"web": "stopped"}

    async def start_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await ctx.run(["iisreset", "/start"])
        return {"web": "running"}

    async def stop_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return await self._control(ctx, self.tomcat_service, "stop")

    async def start_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return await self._control(ctx, self.tomcat_service, "start")

    # CRM services ------------------------------------------------------------------------------------
    async def install_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        name = self.service_name(params.service)
        if await self._service_state(name) != ServiceStatus.NOT_INSTALLED:
            ctx.log(f"{name} is already installed")
            return {"service": name, "state": await self._service_state(name), "installed": False}
        exe = self.programs_root / "Services" / SERVICE_EXES[params.service]
        await ctx.run(["sc.exe", "create", name, "binPath=", str(exe), "start=", "auto"])
        return {"service": name, "state": await self._service_state(name), "installed": True}

    async def uninstall_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        name = self.service_name(params.service)
        if await self._service_state(name) == ServiceStatus.NOT_INSTALLED:
            return {"service": name, "state": ServiceStatus.NOT_INSTALLED, "removed": False}
        await self._control(ctx, name, "stop")
        await ctx.run(["sc.exe", "delete", name])
        return {"service": name, "state": ServiceStatus.NOT_INSTALLED, "removed": True}

    async def start_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        return await self._control(ctx, self.service_name(params.service), "start")

    async def stop_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        return await self._control(ctx, self.service_name(params.service), "stop")

    # Backups -------------------------------------------------------------------------------------------
    async def backup_program_files(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "program_files", ctx)
        ctx.log(f"copying {self.install_dir} to {dest}")
        manifest = await asyncio.to_thread(copy_folder, self.install_dir, dest)
        return {"path": rel, **manifest, "verified": True, "finished_at": datetime.now(UTC)}

    async def backup_registry(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "registry", ctx)
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        exports = []
        for key, fname in (
            (self.config_key, f"Config_{self.install}.reg"),
            (self.mappings_key, f"Mappings_{self.install}.reg"),
        ):
            await ctx.run(["reg.exe", "export", key, str(dest / fname), "/y", *self._reg_view()])
            exports.append(fname)
        manifest = await asyncio.to_thread(tree_manifest, dest)
        return {
            "path": rel,
            **manifest,
            "exports": exports,
            "verified": True,
            "finished_at": datetime.now(UTC),
        }

    async def backup_database(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        _dest, rel = self._destination(params.destination, "database", ctx)
        disk = self._sql_disk(rel)
        db = self.database
        ctx.log(f"BACKUP DATABASE {db} TO DISK = {disk} WITH CHECKSUM")
        await self.sql.execute(
            tsql.backup_database_sql(db), (disk, f"crmcluster {ctx.op_id}"), database="master"
        )
        await self.sql.execute(tsql.VERIFY_BACKUP_SQL, (disk,), database="master")
        # SQL Server wrote the file where the agent may not read it: its size and checksums are
        # read back from msdb's record of this backup (VERIFYONLY has just checked the pages).
        rows = await self.sql.execute(tsql.BACKUP_RECORD_SQL, (db, disk), database="msdb")
        if not rows:
            raise ActionFailed(f"msdb has no record of the backup of {db} to {disk}")
        size, has_checksums, finished = rows[0]
        if not has_checksums:
            raise ActionFailed(f"the backup of {db} to {disk} carries no page checksums")
        return {
            "path": rel,
            "disk": disk,
            "database": db,
            "bytes": int(size),
            "backend": "mssql",
            "verified": True,
            "finished_at": finished if isinstance(finished, datetime) else datetime.now(UTC),
        }

    async def backup_views(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "views", ctx)
        rows = await self.sql.execute(tsql.VIEWS_SQL)
        body = "".join(f"-- [{s}].[{v}]\n{d.strip()}\nGO\n\n" for s, v, d in rows)
        await asyncio.to_thread(atomic_write_text, dest / "views.sql", body)
        manifest = await asyncio.to_thread(tree_manifest, dest)
        return {
            "path": rel,
            "views": [f"{s}.{v}" for s, v, _ in rows],
            **manifest,
            "verified": True,
            "finished_at": datetime.now(UTC),
        }

    # Restores --------------------------------------------------------------------------------------------
    async def restore_program_files(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = self._source(params.source)
        if not (source / "WWWRoot" / "eware.dll").is_file():
            raise ActionFailed(f"{params.source} is not a program files backup (no WWWRoot\\eware.dll)")
        try:
            await asyncio.to_thread(verify_folder, source)
        except ValueError as exc:
            raise ActionFailed(f"{params.source}: the backup is damaged ({exc})") from exc
        folder = f"{self.install}_backup"
        await asyncio.to_thread(copy_folder, source, self.programs_root / folder)
        website = self.programs_root / folder / "WWWRoot"
        await self._redirect(ctx, website)
        return {"path": folder, "website_path": f"{folder}/WWWRoot"}

    async def restore_registry(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = self._source(params.source)
        files = sorted(source.glob("*.reg"))
        if not files:
            raise ActionFailed(f"{params.source} holds no .reg file")
        for f in files:
            await ctx.run(["reg.exe", "import", str(f), *self._reg_view()])
        return {"imported": [f.name for f in files], "keys": [self.config_key, self.mappings_key]}

    async def restore_database(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        self._source(params.source)
        disk = self._sql_disk(params.source)
        db = self.database
        await self.sql.execute(tsql.VERIFY_BACKUP_SQL, (disk,), database="master")
        ctx.log(f"ALTER DATABASE {db} SET SINGLE_USER WITH ROLLBACK IMMEDIATE")
        await self.sql.execute(tsql.single_user_sql(db), database="master")
        try:
            ctx.log(f"RESTORE DATABASE {db} FROM DISK = {disk} WITH REPLACE")
            await self.sql.execute(tsql.restore_database_sql(db), (disk,), database="master")
        finally:
            await self.sql.execute(tsql.multi_user_sql(db), database="master")
        return {"restored_from": params.source, "disk": disk, "database": db}

    # Registration and the website -----------------------------------------------------------------------
    async def register_dll(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        rel = params.path or f"{self.install}/WWWRoot/eware.dll"
        path = resolve_under(self.programs_root, rel)
        if not path.name.lower().endswith(".dll"):
            path = path / "WWWRoot" / "eware.dll" if (path / "WWWRoot").is_dir() else path / "eware.dll"
        await ctx.run(["regsvr32", "/s", str(path)])
        return {"registered": str(path)}

    async def _redirect(self, ctx: OperationContext, website: Path) -> None:
        await ctx.run(
            [
                self.settings.windows_appcmd,
                "set",
                "vdir",
                f"/vdir.name:{self.settings.windows_site}/{self.install}/",
                f"/physicalPath:{website}",
            ]
        )

    async def redirect_website(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        rel = params.path or f"{self.install}/WWWRoot"
        path = resolve_under(self.programs_root, rel)
        if (path / "WWWRoot").is_dir():
            path = path / "WWWRoot"
        await self._redirect(ctx, path)
        return {"website_path": str(path)}

    # The installer ---------------------------------------------------------------------------------------
    def installer_argv(self, params: RunInstallerParams) -> list[str]:
        """``windows_installer_command`` with this run's values, each one argument."""
        key = params.license_key.get_secret_value()
        register_secret(key)
        db = params.database
        if db is not None:
            register_secret(db.password)
        location = ""
        if params.backup_location:
            location = str(resolve_under(self._backup_root(), params.backup_location))
        values = {
            "mode": params.mode,
            "version": params.version,
            "install": self.install,
            "license_key": key,
            "db_server": db.server if db else "",
            "db_port": str(db.port) if db else "",
            "db_user": db.user if db else "",
            "db_password": db.password.get_secret_value() if db else "",
            "backup": "Y" if params.backup else "N",
            "backup_location": location,
            "register": "Y" if params.register_install else "N",
        }
        try:
            return [part.format_map(values) for part in self.settings.windows_installer_command]
        except (KeyError, ValueError, IndexError) as exc:
            raise ActionFailed(f"CRMCLUSTER_WINDOWS_INSTALLER_COMMAND: bad placeholder {exc}") from None

    async def run_installer(self, params: RunInstallerParams, ctx: OperationContext) -> dict[str, Any]:
        argv = self.installer_argv(params)
        await ctx.run(argv, timeout=4 * 3600)
        return {
            "mode": params.mode,
            "version": await self._registry_version(),
            "license_hash": secret_hash(params.license_key.get_secret_value()),
        }

    async def read_upgrade_log(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        path = self.install_dir / "Setup" / "upgradelog.html"
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ActionFailed(f"no upgrade log at {path}") from exc
        return parse_upgrade_log(text).as_result()

    # Database switches ---------------------------------------------------------------------------------
    @property
    def _triggers_file(self) -> Path:
        return self.state_dir / "disabled_triggers.json"

    async def disable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        rows = await self.sql.execute(tsql.ENABLED_TRIGGERS_SQL)
        done = [list(r) for r in rows]
        known: list[list[str]] = []
        if self._triggers_file.exists():
            known = json.loads(self._triggers_file.read_text(encoding="utf-8"))
        atomic_write_text(self._triggers_file, json.dumps(known + [r for r in done if r not in known]))
        for schema, table, trigger in rows:
            await self.sql.execute(tsql.trigger_sql("DISABLE", schema, table, trigger))
        return {"triggers": "disabled", "changed": [f"{s}.{t}.{g}" for s, t, g in rows]}

    async def enable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if not self._triggers_file.exists():
            return {"triggers": "enabled", "changed": []}
        rows = json.loads(self._triggers_file.read_text(encoding="utf-8"))
        for schema, table, trigger in rows:
            await self.sql.execute(tsql.trigger_sql("ENABLE", schema, table, trigger))
        self._triggers_file.unlink()
        return {"triggers": "enabled", "changed": [f"{s}.{t}.{g}" for s, t, g in rows]}

    async def disable_exchange_integration(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        raise ActionFailed(
            "not automated on windows: disable the Exchange integration in the CRM user interface "
            "(<My Profile> | Administration | E-mail and Documents | Exchange Integration)"
        )

    async def enable_exchange_integration(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        raise ActionFailed(
            "not automated on windows: enable the Exchange integration in the CRM user interface "
            "(<My Profile> | Administration | E-mail and Documents | Exchange Integration)"
        )

    @property
    def _war(self) -> Path:
        return self.install_dir / "tomcat" / "webapps" / f"{self.install}ExchangeSyncEngine.war"

    @property
    def _kept_war(self) -> Path:
        return self.state_dir / "replication_engine" / self._war.name

    async def remove_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """The guide: stop <install>Tomcat7, remove the war and its folder, start Tomcat (the war
        is kept under the agent's data dir so ``install_replication_engine`` can put it back)."""
        await self._control(ctx, self.tomcat_service, "stop")
        removed = await asyncio.to_thread(self._keep_war)
        await self._control(ctx, self.tomcat_service, "start")
        return {"replication_engine": False, "removed": removed}

    def _keep_war(self) -> bool:
        """Move the war aside (under the agent's data dir) and remove its unpacked folder."""
        removed = self._war.exists()
        if removed:
            self._kept_war.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self._war), str(self._kept_war))
        folder = self._war.with_suffix("")
        if folder.exists():
            shutil.rmtree(folder)
        return removed

    async def install_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if self._war.exists():
            return {"replication_engine": True, "installed": False}
        if not self._kept_war.exists():
            raise ActionFailed(
                "no Replication Engine war kept on this server: copy it from the install media"
            )
        await self._control(ctx, self.tomcat_service, "stop")
        await asyncio.to_thread(shutil.copy2, self._kept_war, self._war)
        await self._control(ctx, self.tomcat_service, "start")
        return {"replication_engine": True, "installed": True}

    async def reload_metadata(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await ctx.run(
            [
                self.settings.windows_appcmd,
                "recycle",
                "apppool",
                f"/apppool.name:{self.settings.windows_app_pool}",
            ]
        )
        await self._control(ctx, self.tomcat_service, "stop")
        await self._control(ctx, self.tomcat_service, "start")
        return {"reloaded_at": datetime.now(UTC).isoformat()}

    async def warmup_logon(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        password = self.settings.warmup_password
        result = await warmup_logon(
            base_url=self.settings.windows_web_url,
            install_name=self.install,
            user=self.settings.warmup_user,
            password=password.get_secret_value() if password else None,
            transport=self.warmup_transport,
        )
        self._last_warmup = datetime.now(UTC)
        return result

    async def check_license(self, params: LicenseParams, ctx: OperationContext) -> dict[str, Any]:
        key = params.license_key.get_secret_value()
        register_secret(key)
        if len(key) < 8:
            raise ActionFailed("the license key is not valid for Sage CRM 2017 R1")
        return {"valid": True, "checked": "format only", "key_hash": secret_hash(key)}

    async def probe_library(self, params: LibraryParams, ctx: OperationContext) -> dict[str, Any]:
        from config.crm_schema import crm_tables
        from config.database import make_engine
        from config.sysparams import SysParamsStore

        engine = make_engine(self.settings.crm_url)
        try:
            store = SysParamsStore(crm_tables(self.settings.crm_names), self.settings.sysparam_row_names())
            async with engine.connect() as conn:
                config = await store.read(conn)
        finally:
            await engine.dispose()
        unc = library_path(params.path, config=config, extra_shares=self.settings.library_shares)
        probe = Path(unc) / f".crmcluster-probe-{self.settings.name}"
        try:
            await asyncio.to_thread(probe.write_text, "probe", encoding="utf-8")
            ok = await asyncio.to_thread(probe.read_text, encoding="utf-8") == "probe"
            await asyncio.to_thread(probe.unlink)
        except OSError as exc:
            raise ActionFailed(f"the library {unc} is not reachable: {exc.strerror or exc}") from exc
        message = None if ok else f"the probe file written to {unc} did not read back"
        return {"path": unc, "reachable": True, "writable": ok, "message": message}

    async def fingerprint_records(self, params: FingerprintParams, ctx: OperationContext) -> dict[str, Any]:
        from config.crm_schema import crm_tables
        from config.database import make_engine
        from node_agent.records import fingerprint_companies, schema_fingerprint

        engine = make_engine(self.settings.crm_url)
        try:
            out = await fingerprint_companies(engine, crm_tables(self.settings.crm_names), params.ids)
            out["schema"] = await schema_fingerprint(engine)
        finally:
            await engine.dispose()
        out["schema_version"] = await self._registry_version()
        return out

    async def database_sessions(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        rows = await self.sql.execute(tsql.SESSIONS_SQL, (self.database,))
        programs: dict[str, dict[str, int]] = {}
        for host, program, count in rows:
            programs.setdefault(str(host), {})[str(program)] = int(count)
        hosts = {h: sum(p.values()) for h, p in programs.items()}
        return {"hosts": hosts, "programs": programs, "total": sum(hosts.values())}

    async def list_dta_objects(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        rows = await self.sql.execute(tsql.DTA_OBJECTS_SQL)
        objects = [{"schema": s, "table": t, "name": n, "kind": k} for s, t, n, k in rows]
        return {"objects": objects, "count": len(objects)}
