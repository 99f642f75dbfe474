"""The windows driver: a real Sage CRM web server, through the commands an administrator would
run — as argument lists, never through a shell, never with a secret on a command line.

Each concern lives in its own module: :mod:`.services` (sc.exe), :mod:`.iis` (iisreset, appcmd),
:mod:`.files` (robocopy, reg.exe, regsvr32), :mod:`.database` (T-SQL, :mod:`.tsql`),
:mod:`.installer` (InstallShield). Everything goes through one :class:`~.host.WindowsHost`, which
records it in ``result.commands`` and, with ``--dry-run``, sends it to a modelled server
(:mod:`.model`) instead of this one; ``--read-only`` runs only what changes nothing.

Paths in params are relative to their root: backups to ``backup_root`` (and, for the database
file SQL Server writes, ``windows_sql_backup_dir``), ``register_dll``/``redirect_website`` to the
Sage CRM programs folder. docs/windows.md lists every action with its commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import PureWindowsPath
from typing import Any

import httpx

from config.secrets import register_secret, secret_hash
from config.settings import AgentSettings
from config.sysparams import ClusterConfig
from config.vocabulary import Role
from node_agent.drivers.base import ActionFailed, ActionHandler, HostDriver, OperationContext
from node_agent.drivers.windows import tsql
from node_agent.drivers.windows.database import SqlServer
from node_agent.drivers.windows.files import ProgramFiles, Registry, register_dll
from node_agent.drivers.windows.host import HostFiles, LocalFiles, WindowsHost
from node_agent.drivers.windows.https import WindowsHttps, tls_handshake
from node_agent.drivers.windows.iis import Iis
from node_agent.drivers.windows.installer import Installer
from node_agent.drivers.windows.license import WindowsLicense
from node_agent.drivers.windows.prerequisites import WindowsPrerequisites
from node_agent.drivers.windows.services import SERVICE_EXES, ServiceControl
from node_agent.drivers.windows_maintenance import WindowsMaintenance
from node_agent.drivers.windows_sql import SqlExecutor as TextSqlExecutor
from node_agent.drivers.windows_uninstall import WindowsUninstall
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
from node_agent.runner import CommandRunner
from node_agent.upgrade_log import SCRIPT_LOG_CHARS, linked_logs, parse_upgrade_log
from node_agent.warmup import warmup_logon

CRM_SERVICES = ("indexer", "escalation", "email_manager", "integration", "quickfind")


class WindowsDriver(HostDriver):
    kind = "windows"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        runner: CommandRunner,
        sql: tsql.SqlExecutor | TextSqlExecutor | None = None,
        files: HostFiles | None = None,
        http: httpx.AsyncBaseTransport | None = None,
        poll: float = 1.0,
        model: Any = None,
    ) -> None:
        self.settings = settings
        self.install = settings.install_name
        self.model = model
        if sql is None:
            sql = tsql.OdbcSql(settings.crm_url) if settings.crm_db_url else _NoSql()
        statements: tsql.SqlExecutor
        if isinstance(sql, tsql.StatementExecutor):
            statements = sql
            self.text_sql: TextSqlExecutor = _TextOverStatements(self)
        else:  # a plain-text executor (the maintenance plan's tests give one)
            statements = _StatementsOverText(sql)
            self.text_sql = sql
        self.host = WindowsHost(
            runner=runner, sql=statements, files=files or LocalFiles(), mode=settings.windows_mode
        )
        self.poll = poll
        self.programs_root = PureWindowsPath(settings.windows_programs_root)
        self.install_dir = self.programs_root / self.install
        self.backup_root = PureWindowsPath(settings.backup_root) if settings.backup_root else None
        data = str(settings.data_dir.resolve())
        if settings.dry_run and sys.platform != "win32":
            data = r"C:\ProgramData\crmcluster"  # the modelled server's own data folder
        self.state_dir = PureWindowsPath(data) / "agent"
        self.services = ServiceControl(self.host, poll=poll)
        self.iis = Iis(
            self.host,
            self.services,
            appcmd=settings.windows_appcmd,
            site=settings.windows_site,
            install=self.install,
            app_pool=settings.windows_app_pool,
        )
        self.program_files = ProgramFiles(self.host, programs_root=self.programs_root, install=self.install)
        self.registry = Registry(self.host, install=self.install, view=settings.windows_registry_view)
        self.installer = Installer(
            self.host,
            self.registry,
            how=settings.windows_installer,
            setup_exe=settings.windows_setup_exe,
            responses=settings.windows_response_files,
            work_dir=self.state_dir / "installer",
            install_dir=self.install_dir,
            install=self.install,
            service_account=settings.windows_service_account,
            backup_root=self.backup_root,
            timeout=settings.windows_installer_timeout,
        )
        self.http = http
        self._last_warmup: datetime | None = None
        self.uninstall = WindowsUninstall(_UninstallView(self), service_exes=SERVICE_EXES)
        self.maintenance = WindowsMaintenance(_MaintenanceView(self))
        self.prerequisites = WindowsPrerequisites(_PrerequisitesView(self))
        self.https = WindowsHttps(
            self.host,
            appcmd=settings.windows_appcmd,
            site=settings.windows_site,
            netsh=str(PureWindowsPath(settings.windows_system_root, "System32", "netsh.exe")),
            handshake=model.tls_handshake if model is not None else tls_handshake,
        )
        self.license = WindowsLicense(self.host, install_dir=self.install_dir, state_dir=self.state_dir)

    def handler(self, action: Action) -> ActionHandler:
        for part in (self.uninstall, self.maintenance, self.prerequisites, self.https, self.license):
            fn = getattr(part, action.value, None)
            if fn is not None:
                handler: ActionHandler = fn
                return handler
        return super().handler(action)

    async def perform(self, action: Action, params: Any, ctx: OperationContext) -> dict[str, Any]:
        # Whatever an action runs through ctx.run goes to this driver's host too: the modelled
        # server in a dry run, refused when it would change something in the read-only mode.
        ctx.runner = self.host.guarded_runner(ctx)
        return await super().perform(action, params, ctx)

    @classmethod
    def for_settings(cls, settings: AgentSettings, *, runner: CommandRunner) -> WindowsDriver:
        """The driver the agent runs: on this server, or (``dry_run``) on a modelled one."""
        if settings.dry_run:
            from node_agent.drivers.windows.model import ModelledServer

            # The dry run needs folders to show; a real server is given its own.
            defaults = {"backup_root": r"D:\CRMBackups", "windows_sql_backup_dir": r"E:\SQLBackups"}
            settings = settings.model_copy(
                update={k: v for k, v in defaults.items() if not getattr(settings, k)}
            )
            model = ModelledServer.from_settings(settings)
            return cls(settings, runner=model, sql=model, files=model, http=model.transport(), model=model)
        return cls(settings, runner=runner)

    # Names ----------------------------------------------------------------------------------------
    @property
    def database(self) -> str:
        return tsql.database_name(self.settings.crm_url)

    @property
    def sql(self) -> SqlServer:
        return SqlServer(
            self.host,
            database=self.database,
            backup_dir=self.settings.windows_sql_backup_dir,
            long_timeout=self.settings.windows_sql_long_timeout,
        )

    @property
    def tomcat_service(self) -> str:
        return self.settings.windows_tomcat_service.replace("{install}", self.install)

    def service_name(self, service: str) -> str:
        return self.settings.windows_services.get(service, service)

    def _backup_root(self) -> PureWindowsPath:
        if self.backup_root is None:
            raise ActionFailed("set CRMCLUSTER_BACKUP_ROOT: the windows driver has no default backup folder")
        return self.backup_root

    def _under(self, root: PureWindowsPath, rel: str) -> PureWindowsPath:
        # RelPath (protocol) already refused absolute, drive, UNC and '..' forms.
        return root.joinpath(*rel.split("/"))

    def _destination(
        self, given: str | None, kind: str, ctx: OperationContext
    ) -> tuple[PureWindowsPath, str]:
        rel = given or f"{kind}/{ctx.op_id.replace(':', '-')}"
        return self._under(self._backup_root(), rel), rel

    async def _source(self, rel: str) -> PureWindowsPath:
        path = self._under(self._backup_root(), rel)
        if not await self.host.files.exists(path):
            raise ActionFailed(f"no backup at {rel}")
        return path

    # Status ---------------------------------------------------------------------------------------
    async def iis_started_at(self) -> datetime | None:
        return await self.iis.started_at()

    def note_warmup(self, when: datetime) -> None:
        self._last_warmup = when

    async def status(self) -> NodeStatus:
        services = {s: await self.services.placed(self.service_name(s)) for s in CRM_SERVICES}
        war = self.install_dir / "tomcat" / "webapps" / f"{self.install}ExchangeSyncEngine.war"
        return NodeStatus(
            name=self.settings.name or "",
            install_name=self.install,
            version=await self.registry.version(),
            roles=self.settings.roles,
            web=await self.services.state("W3SVC"),
            tomcat=await self.services.state(self.tomcat_service),
            services=services,
            replication_engine=await self.host.files.exists(war),
            free_disk_bytes=await self.host.files.free_bytes(self.programs_root),
            last_iis_start=await self.iis_started_at(),
            web_url=self.settings.windows_web_url,
            last_warmup_at=self._last_warmup,
            driver=self.kind + (" (dry run)" if self.settings.dry_run else ""),
        )

    # IIS and Tomcat -----------------------------------------------------------------------------------
    async def stop_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await self.iis.stop(ctx)
        return {"web": ServiceStatus.STOPPED.value}

    async def start_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await self.iis.start(ctx)
        return {"web": ServiceStatus.RUNNING.value}

    async def stop_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        state = await self.services.control(ctx, self.tomcat_service, "stop")
        return {"service": self.tomcat_service, "state": state.value}

    async def start_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        state = await self.services.control(ctx, self.tomcat_service, "start")
        return {"service": self.tomcat_service, "state": state.value}

    # CRM services ---------------------------------------------------------------------------------------
    async def _installed(self, ctx: OperationContext, service: str) -> str:
        name = self.service_name(service)
        found = await self.services.find(name, ctx)
        if found is None:
            raise ActionFailed(
                f"the {service} service ({name}) is not installed on this server: Sage CRM's setup "
                "installs it; set CRMCLUSTER_WINDOWS_SERVICES if it has another name"
            )
        return found.name

    async def install_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        """Place the service on this server: ``sc config … start= auto`` (never ``sc create``)."""
        name = await self._installed(ctx, params.service)
        await self.services.set_start(ctx, name, "auto")
        return {"service": name, "state": (await self.services.state(name, ctx)).value, "installed": False}

    async def uninstall_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        """Take it off this server: stopped, ``start= disabled`` (never ``sc delete``)."""
        name = self.service_name(params.service)
        if await self.services.find(name, ctx) is None:
            return {"service": name, "state": ServiceStatus.NOT_INSTALLED.value}
        await self.services.control(ctx, name, "stop")
        await self.services.set_start(ctx, name, "disabled")
        return {"service": name, "state": ServiceStatus.NOT_INSTALLED.value}

    async def start_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        name = await self._installed(ctx, params.service)
        if await self.services.start_type(name, ctx) == "DISABLED":
            raise ActionFailed(f"{name} is disabled on this server (it is placed on another one)")
        state = await self.services.control(ctx, name, "start")
        return {"service": name, "state": state.value}

    async def stop_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        name = self.service_name(params.service)
        if await self.services.find(name, ctx) is None:
            return {"service": name, "state": ServiceStatus.NOT_INSTALLED.value}
        state = await self.services.control(ctx, name, "stop")
        return {"service": name, "state": state.value}

    # Backups ---------------------------------------------------------------------------------------------
    async def backup_program_files(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "program_files", ctx)
        manifest = await self.program_files.backup(ctx, dest)
        return {"path": rel, "verified": True, "finished_at": datetime.now(UTC).isoformat(), **manifest}

    async def backup_registry(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "registry", ctx)
        exports = await self.registry.backup(ctx, dest)
        manifest = await self.host.manifest(ctx, dest)
        return {
            "path": rel,
            "exports": exports,
            "verified": True,
            "finished_at": datetime.now(UTC).isoformat(),
            **manifest,
        }

    async def backup_database(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        rel = params.destination or f"database/{ctx.op_id.replace(':', '-')}"
        return await self.sql.backup(ctx, rel, label=f"crmcluster {ctx.op_id}")

    async def backup_views(self, params: BackupParams, ctx: OperationContext) -> dict[str, Any]:
        dest, rel = self._destination(params.destination, "views", ctx)
        rows = await self.host.execute(ctx, tsql.VIEWS)
        body = "".join(f"-- [{s}].[{v}]\n{d.strip()}\nGO\n\n" for s, v, d in rows)
        await self.host.write_text(ctx, dest / "views.sql", body, what=f"{len(rows)} view definitions")
        manifest = await self.host.manifest(ctx, dest)
        return {
            "path": rel,
            "views": [f"{s}.{v}" for s, v, _ in rows],
            "verified": True,
            "finished_at": datetime.now(UTC).isoformat(),
            **manifest,
        }

    # Restores --------------------------------------------------------------------------------------------
    async def restore_program_files(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = await self._source(params.source)
        if self.settings.windows_restore_by == "rename":
            return await self.program_files.restore_by_rename(ctx, source)
        folder = await self.program_files.restore_to_backup_folder(ctx, source)
        await self.iis.redirect(ctx, folder / "WWWRoot")
        return {
            "path": folder.name,
            "website_path": f"{folder.name}/WWWRoot",
            "tomcat_webapps": f"{self.install}/tomcat/webapps",
            "services_folder": "Services" if await self.host.files.is_dir(source / "Services") else None,
        }

    async def restore_registry(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        source = await self._source(params.source)
        keys, files = await self.registry.restore(ctx, source)
        return {"imported": files, "keys": keys}

    async def restore_database(self, params: RestoreParams, ctx: OperationContext) -> dict[str, Any]:
        return await self.sql.restore(ctx, params.source)

    # Registration and the website -----------------------------------------------------------------------
    def _programs_path(self, rel: str) -> PureWindowsPath:
        return self._under(self.programs_root, rel)

    async def register_dll(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        path = self._programs_path(params.path or f"{self.install}/WWWRoot/eware.dll")
        if not path.name.lower().endswith(".dll"):
            path = (
                path / "WWWRoot" / "eware.dll"
                if await self.host.files.is_dir(path / "WWWRoot")
                else path / "eware.dll"
            )
        return {
            "registered": await register_dll(
                self.host, ctx, system_root=self.settings.windows_system_root, dll=path
            )
        }

    async def redirect_website(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        path = self._programs_path(params.path or f"{self.install}/WWWRoot")
        if await self.host.files.is_dir(path / "WWWRoot"):
            path = path / "WWWRoot"
        if not await self.host.files.exists(path / "eware.dll"):
            raise ActionFailed(f"{path} is not a Sage CRM website (no eware.dll)")
        await self.iis.redirect(ctx, path)
        return {"website_path": str(path)}

    # The installer ---------------------------------------------------------------------------------------
    @property
    def _installer_state(self) -> PureWindowsPath:
        return self.state_dir / "installer.json"

    async def run_installer(self, params: RunInstallerParams, ctx: OperationContext) -> dict[str, Any]:
        started = datetime.now(UTC)
        await self.host.write_text(
            ctx,
            self._installer_state,
            json.dumps({"started_at": started.isoformat(), "version": params.version}),
            what="when this installer run started",
        )
        return await self.installer.run(ctx, params)

    async def read_upgrade_log(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        since, version = None, None
        if await self.host.files.exists(self._installer_state):
            last = json.loads(await self.host.read_text(ctx, self._installer_state))
            since, version = datetime.fromisoformat(last["started_at"]), last.get("version")
        if since is not None:
            written = await self.installer.fresh_upgrade_log(ctx, since=since, version=version)
        else:
            info = await self.host.files.info(self.installer.upgrade_log)
            if info is None:
                raise ActionFailed(f"no upgrade log at {self.installer.upgrade_log}")
            written = info.modified
        document = await self.host.read_text(ctx, self.installer.upgrade_log)
        parsed = parse_upgrade_log(document).as_result()
        return {
            **parsed,
            "written_at": written.isoformat(),
            "script_logs": await self._script_logs(ctx, document),
        }

    async def _script_logs(self, ctx: OperationContext, document: str) -> dict[str, str]:
        """Each script log the upgrade log links, read from the Setup folder (or its logs folder)."""
        setup = self.installer.upgrade_log.parent
        out: dict[str, str] = {}
        for name in linked_logs(document)[:50]:
            for folder in (setup, setup / "logs"):
                path = folder / PureWindowsPath(name)
                if await self.host.files.exists(path):
                    out[name] = (await self.host.read_text(ctx, path))[:SCRIPT_LOG_CHARS]
                    break
        return out

    # Database switches ---------------------------------------------------------------------------------
    @property
    def _triggers_file(self) -> PureWindowsPath:
        return self.state_dir / "disabled_triggers.json"

    async def disable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        rows = [list(r) for r in await self.host.execute(ctx, tsql.ENABLED_TRIGGERS)]
        known: list[list[str]] = []
        if await self.host.files.exists(self._triggers_file):
            known = json.loads(await self.host.read_text(ctx, self._triggers_file))
        await self.host.write_text(
            ctx,
            self._triggers_file,
            json.dumps(known + [r for r in rows if r not in known]),
            what="the triggers to enable again",
        )
        for schema, table, trigger in rows:
            await self.host.execute(ctx, tsql.trigger("DISABLE", schema, table, trigger))
        return {"triggers": "disabled", "changed": [f"{s}.{t}.{g}" for s, t, g in rows]}

    async def enable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if not await self.host.files.exists(self._triggers_file):
            return {"triggers": "enabled", "changed": []}
        rows = json.loads(await self.host.read_text(ctx, self._triggers_file))
        for schema, table, trigger in rows:
            await self.host.execute(ctx, tsql.trigger("ENABLE", schema, table, trigger))
        await self.host.remove(ctx, self._triggers_file)
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
    def _war(self) -> PureWindowsPath:
        return self.install_dir / "tomcat" / "webapps" / f"{self.install}ExchangeSyncEngine.war"

    @property
    def _kept_war(self) -> PureWindowsPath:
        # Beside webapps (same volume: a rename), where Tomcat deploys nothing from.
        return self.install_dir / "tomcat" / "webapps-removed" / self._war.name

    async def remove_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """The guide: stop <install>Tomcat7, remove the war and its folder, start Tomcat."""
        await self.services.control(ctx, self.tomcat_service, "stop")
        removed = await self.host.files.exists(self._war)
        if removed:
            await self.host.mkdir(ctx, self._kept_war.parent)
            await self.host.remove(ctx, self._kept_war)
            await self.host.rename(ctx, self._war, self._kept_war)
        folder = self._war.with_suffix("")
        if await self.host.files.exists(folder):
            await self.host.remove_tree(ctx, folder)
        await self.services.control(ctx, self.tomcat_service, "start")
        return {"replication_engine": False, "removed": removed}

    async def install_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if await self.host.files.exists(self._war):
            return {"replication_engine": True, "installed": False}
        if not await self.host.files.exists(self._kept_war):
            raise ActionFailed(
                "no Replication Engine war kept on this server: copy it from the install media"
            )
        await self.services.control(ctx, self.tomcat_service, "stop")
        await self.host.rename(ctx, self._kept_war, self._war)
        await self.services.control(ctx, self.tomcat_service, "start")
        return {"replication_engine": True, "installed": True}

    async def reload_metadata(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        pool = await self.iis.recycle(ctx)
        await self.services.control(ctx, self.tomcat_service, "stop")
        await self.services.control(ctx, self.tomcat_service, "start")
        return {"reloaded_at": datetime.now(UTC).isoformat(), "app_pool": pool}

    async def warmup_logon(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        password = self.settings.warmup_password
        if password is None:
            raise ActionFailed("set CRMCLUSTER_WARMUP_PASSWORD: the warm-up logs on as a real CRM user")
        result = await warmup_logon(
            base_url=self.settings.windows_web_url,
            install_name=self.install,
            user=self.settings.warmup_user,
            password=password.get_secret_value(),
            transport=self.http,
            record=ctx.record,
        )
        self._last_warmup = datetime.now(UTC)
        return result

    async def check_license(self, params: LicenseParams, ctx: OperationContext) -> dict[str, Any]:
        """Only the key's form can be checked here: whether Sage accepts it for a version is known
        only to its setup wizard (the guide: start the upgrade, see the key accepted, cancel)."""
        key = params.license_key.get_secret_value()
        register_secret(key)
        shaped = len(key) >= 8 and key.isprintable() and not any(c.isspace() for c in key.strip())
        if not shaped:
            raise ActionFailed("the license key is not even well formed (8 or more printable characters)")
        return {
            "valid": True,
            "checked": "format only",
            "valid_for": None,
            "message": "format only: whether it is valid for a version only Sage's setup wizard can tell",
            "key_hash": secret_hash(key),
        }

    async def probe_library(self, params: LibraryParams, ctx: OperationContext) -> dict[str, Any]:
        config = await self._sysparams()
        unc = library_path(params.path, config=config, extra_shares=self.settings.library_shares)
        probe = PureWindowsPath(unc) / f".crmcluster-probe-{self.settings.name}"
        await self.host.write_text(ctx, probe, "probe", what="a probe file")
        ok = await self.host.read_text(ctx, probe) == "probe"
        await self.host.remove(ctx, probe)
        return {"path": unc, "reachable": ok, "writable": ok}

    async def _sysparams(self) -> ClusterConfig:
        """Custom_SysParams (DocStore, DocTemplates: the library's shares)."""
        if self.model is not None:
            return ClusterConfig.lenient(server_names=[], doc_store=self.model.doc_store)
        from config.crm_schema import crm_tables
        from config.database import make_engine
        from config.sysparams import SysParamsStore

        engine = make_engine(self.settings.crm_url)
        try:
            store = SysParamsStore(crm_tables(self.settings.crm_names), self.settings.sysparam_row_names())
            async with engine.connect() as conn:
                return await store.read(conn)
        finally:
            await engine.dispose()

    async def fingerprint_records(self, params: FingerprintParams, ctx: OperationContext) -> dict[str, Any]:
        if self.model is not None:
            return dict(self.model.fingerprint(params.ids, ctx))
        from config.crm_schema import crm_tables
        from config.database import make_engine
        from node_agent.records import fingerprint_companies, schema_fingerprint

        engine = make_engine(self.settings.crm_url)
        try:
            out = await fingerprint_companies(engine, crm_tables(self.settings.crm_names), params.ids)
            out["schema"] = await schema_fingerprint(engine)
        finally:
            await engine.dispose()
        out["schema_version"] = await self.registry.version(ctx)
        return out

    async def database_sessions(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return await self.sql.sessions(ctx)

    async def check_database_rights(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        return await self.sql.rights(ctx)

    async def list_dta_objects(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        rows = await self.host.execute(ctx, tsql.DTA_OBJECTS)
        objects = [{"schema": s, "table": t, "name": n, "kind": k} for s, t, n, k in rows]
        return {"objects": objects, "count": len(objects)}


class _UninstallView:
    """What :mod:`node_agent.drivers.windows_uninstall` (the guide's manual uninstall) uses of the
    driver: its host, paths, services, IIS and registry keys."""

    def __init__(self, driver: WindowsDriver) -> None:
        self.d = driver
        self.settings = driver.settings
        self.install = driver.install
        self.programs_root = driver.programs_root
        self.install_dir = driver.install_dir
        self.host = driver.host

    @property
    def tomcat_service(self) -> str:
        return self.d.tomcat_service

    @property
    def config_key(self) -> str:
        return self.d.registry.config_key

    @property
    def mappings_key(self) -> str:
        return self.d.registry.mappings_key

    @property
    def reg_view(self) -> str:
        return self.d.registry.view

    def service_name(self, service: str) -> str:
        return self.d.service_name(service)

    def programs_path(self, rel: str) -> PureWindowsPath:
        return self.d._programs_path(rel)

    async def service_state(self, name: str, ctx: OperationContext) -> ServiceStatus:
        return await self.d.services.state(name, ctx)

    async def control(self, ctx: OperationContext, name: str, verb: str) -> ServiceStatus:
        return await self.d.services.control(ctx, name, verb)

    async def stop_iis(self, ctx: OperationContext) -> None:
        await self.d.iis.stop(ctx)

    async def start_iis(self, ctx: OperationContext) -> None:
        await self.d.iis.start(ctx)


class _MaintenanceView:
    """What :mod:`node_agent.drivers.windows_maintenance` reads of the driver."""

    def __init__(self, driver: WindowsDriver) -> None:
        self.d = driver
        self.poll = driver.poll

    @property
    def sql(self) -> TextSqlExecutor:
        return self.d.text_sql

    @property
    def database(self) -> str:
        return self.d.database

    @property
    def sql_backup_dir(self) -> PureWindowsPath:
        if not self.d.settings.windows_sql_backup_dir:
            raise ActionFailed("set CRMCLUSTER_WINDOWS_SQL_BACKUP_DIR: where SQL Server writes backups")
        return PureWindowsPath(self.d.settings.windows_sql_backup_dir)


class _PrerequisitesView:
    """What :mod:`.prerequisites` reads of the driver."""

    def __init__(self, driver: WindowsDriver) -> None:
        self.host = driver.host
        self.programs_root = driver.programs_root
        self.system_root = driver.settings.windows_system_root
        self.appcmd = driver.settings.windows_appcmd
        self.site = driver.settings.windows_site
        self.install = driver.install
        self.database_server = Role.DATABASE.value in driver.settings.roles


class _TextOverStatements:
    """Plain T-SQL text (the maintenance plan's) sent as a :class:`~.tsql.Statement` through the
    host, so the read-only mode refuses what is not a SELECT."""

    def __init__(self, driver: WindowsDriver) -> None:
        self.d = driver

    async def execute(
        self, sql: str, params: Sequence[Any] = (), *, database: str | None = None
    ) -> list[tsql.Row]:
        changes = not sql.lstrip().upper().startswith("SELECT")
        return await self.d.host.execute(None, tsql.Statement("text", sql, tuple(params), database, changes))


class _StatementsOverText:
    """A plain-text executor answering :class:`~.tsql.Statement` (tests that script text)."""

    def __init__(self, sql: TextSqlExecutor) -> None:
        self.sql = sql

    async def execute(self, statement: tsql.Statement) -> list[tsql.Row]:
        return await self.sql.execute(statement.text, statement.params, database=statement.database)

    async def session(
        self, statements: Sequence[tsql.Statement], *, always: Sequence[tsql.Statement] = ()
    ) -> list[list[tsql.Row]]:
        out: list[list[tsql.Row]] = []
        try:
            for st in statements:
                out.append(await self.execute(st))
        finally:
            for st in always:
                await self.execute(st)
        return out


class _NoSql:
    """No CRM database URL: every database action says so."""

    async def execute(self, statement: tsql.Statement) -> list[tsql.Row]:
        raise ActionFailed("set CRMCLUSTER_CRM_DB_URL (mssql+aioodbc://…): the CRM database on SQL Server")

    async def session(self, statements: Any, *, always: Any = ()) -> list[list[tsql.Row]]:
        return [await self.execute(statements[0])]
