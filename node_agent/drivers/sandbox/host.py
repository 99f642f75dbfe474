"""The sandbox driver: one Sage CRM web server played on this machine, under the agent's data dir.

    <data dir>/sandbox/state.json              service states, IIS start time, website path …
    <data dir>/sandbox/registry.json           HKLM\\SOFTWARE\\eWare\\Config\\/<install>, Mappings
    <data dir>/sandbox/Program Files (x86)/Sage/CRM/<install>/…      the install tree
    <data dir>/sandbox/Program Files (x86)/Sage/CRM/<install>_backup  a restored program files backup
    <backup root> (default <data dir>/backups)  what the backup actions write

A fresh data dir is bootstrapped as an installed node of ``sandbox_version`` with
``sandbox_roles``; an existing one is used as it is, so a restarted agent keeps its server.
The CRM database is shared by every node (``CRMCLUSTER_CRM_DB_URL``); the node with the
``database`` role seeds it. The website's physical path decides which tree is live: the guide's
restore points it at ``<install>_backup``, and from then on that is the install (its version is the
node's version, the installer upgrades it, backups copy it).

The backup/restore actions live in :mod:`.backups`, the installer in :mod:`.installer`, the
stand-in web server in :mod:`.web`, the CRM database side in :mod:`.crm_database`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from config.crm_schema import crm_tables
from config.database import make_engine, unavailable_errors
from config.errors import DatabaseUnavailable, SettingError
from config.secrets import register_secret, secret_hash
from config.settings import AgentSettings
from config.sysparams import SysParamsStore
from config.vocabulary import Role
from node_agent.drivers.base import ActionFailed, ActionHandler, HostDriver, OperationContext, resolve_under
from node_agent.drivers.sandbox.backups import SandboxBackups
from node_agent.drivers.sandbox.crm_database import SandboxCrmDatabase
from node_agent.drivers.sandbox.faults import Faults
from node_agent.drivers.sandbox.https import SandboxHttps
from node_agent.drivers.sandbox.install_tree import InstallTree, ServicesFolder
from node_agent.drivers.sandbox.installer import InstallerFault, SandboxInstaller, new_install
from node_agent.drivers.sandbox.license import SandboxLicense
from node_agent.drivers.sandbox.license import decode as decode_license
from node_agent.drivers.sandbox.prerequisites import SandboxPrerequisites
from node_agent.drivers.sandbox.registry import SandboxRegistry, config_key
from node_agent.drivers.sandbox.setup_replay import SandboxSetup
from node_agent.drivers.sandbox.sql_agent import SandboxSqlAgent
from node_agent.drivers.sandbox.uninstall import SandboxUninstall
from node_agent.drivers.sandbox.web import StandInWebServer, build_web_app
from node_agent.drivers.wizard import wizard_choices
from node_agent.journal import atomic_write_text
from node_agent.library_share import library_path
from node_agent.protocol import (
    Action,
    BackupParams,
    FingerprintParams,
    LibraryParams,
    LicenseParams,
    NodeStatus,
    NoParams,
    RunInstallerParams,
    ServiceParams,
    ServiceStatus,
)
from node_agent.upgrade_log import parse_upgrade_log
from node_agent.warmup import warmup_logon

log = logging.getLogger("crmcluster.agent.sandbox")

RUNNING, STOPPED, NOT_INSTALLED = "running", "stopped", "not_installed"
MAINTENANCE_ACTIONS = frozenset(
    {Action.APPLY_MAINTENANCE_PLAN, Action.MAINTENANCE_STATUS, Action.RUN_MAINTENANCE_TASK}
)
TOMCAT_POOL = 10
MAX_REGISTRATIONS = 5


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Console:
    """A manual installer step waiting for a person at the server's console."""

    params: RunInstallerParams
    ctx: OperationContext
    result: dict[str, Any] | None = None


def _at(destination: str) -> BackupParams:
    return BackupParams(destination=destination)


def _crash() -> None:  # pragma: no cover - ends the process
    os._exit(70)


def _check_port(host: str, port: int) -> None:
    """Stop at start, in one line, when the stand-in web server's port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise SettingError(
                f"CRMCLUSTER_SANDBOX_WEB_PORT: port {port} on {host} is already in use"
            ) from None


class SandboxDriver(HostDriver):
    kind = "sandbox"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        crm_engine: AsyncEngine | None = None,
        crash: Callable[[], None] = _crash,
        web_host: str = "127.0.0.1",
    ) -> None:
        if not settings.name:
            raise ValueError("the sandbox driver needs the node's name")
        self.settings = settings
        self.node = settings.name
        self.install_name = settings.install_name
        self.session_timeout_minutes = settings.session_timeout_minutes
        self.base = settings.data_dir.resolve() / "sandbox"
        self.programs_root = self.base / "Program Files (x86)" / "Sage" / "CRM"
        self.backup_root = (
            Path(settings.backup_root).resolve()
            if settings.backup_root
            else (settings.data_dir.resolve() / "backups")
        )
        self.library_root = (settings.sandbox_library_root or settings.data_dir / "library").resolve()
        self.faults = Faults(settings.sandbox_faults)
        self.registry = SandboxRegistry(self.base / "registry.json")
        self._state_path = self.base / "state.json"
        self.state: dict[str, Any] = {}
        self._own_engine = crm_engine is None
        self.engine = crm_engine or make_engine(settings.crm_url)
        self.tables = crm_tables(settings.crm_names)
        self.db = SandboxCrmDatabase(
            self.engine,
            self.tables,
            node=self.node,
            session_ttl=settings.sandbox_session_ttl,
            tz=settings.crm_timezone,
        )
        self._crash = crash
        if settings.sandbox_web_port:
            _check_port(web_host, settings.sandbox_web_port)
        self._web = StandInWebServer(build_web_app(self), host=web_host, port=settings.sandbox_web_port)
        self._refresher: asyncio.Task[None] | None = None
        self.backups = SandboxBackups(self)
        self.setup = SandboxSetup(self.base)
        self.uninstall = SandboxUninstall(self)
        self.prerequisites = SandboxPrerequisites(self)
        self.https = SandboxHttps(self)
        self.license = SandboxLicense(self, faults=self.faults)
        self.sql_agent = SandboxSqlAgent(
            self,
            path=self.base / "msdb.json",
            failing=frozenset(t for t in settings.sandbox_maintenance_faults.split(",") if t.strip()),
        )
        self._sql_agent_task: asyncio.Task[None] | None = None
        self._schema_ready = False
        self.warmup_transport: Any = None  # tests may route the warm-up through an ASGI transport
        self._console: _Console | None = None

    # State ---------------------------------------------------------------------------------------------
    def _save(self) -> None:
        atomic_write_text(self._state_path, json.dumps(self.state, indent=1, sort_keys=True))

    def update_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self._save()

    @property
    def crm_db(self) -> SandboxCrmDatabase:
        return self.db

    @property
    def roles(self) -> list[str]:
        return list(self.state.get("roles", []))

    @property
    def web_running(self) -> bool:
        return self.state.get("web") == RUNNING

    @property
    def tomcat_running(self) -> bool:
        return self.state.get("tomcat") == RUNNING

    @property
    def tree(self) -> InstallTree:
        """The live install tree: the one the website's physical path points into."""
        website = str(self.state.get("website_path") or f"{self.install_name}/WWWRoot")
        return InstallTree(self.programs_root / website.split("/")[0], self.install_name)

    @property
    def version(self) -> str | None:
        return self.tree.version

    @property
    def tomcat_home(self) -> Path:
        """The Tomcat service's own folder (where Sage's setup registered it)."""
        return self.programs_root / str(self.state.get("tomcat_home") or f"{self.install_name}/tomcat")

    @property
    def tomcat_version(self) -> str | None:
        """The version of the web apps the Tomcat service serves: its own folder's, not the
        website's (the guide's restore redirects the website only)."""
        return InstallTree(self.tomcat_home.parent, self.install_name).tomcat_version

    @property
    def services_folder(self) -> ServicesFolder:
        return ServicesFolder(self.programs_root / "Services")

    def service_versions(self) -> dict[str, str]:
        """Each installed CRM service's program version (the shared Services folder)."""
        out: dict[str, str] = {}
        for name, state in self.state.get("services", {}).items():
            version = self.services_folder.version(name) if state != NOT_INSTALLED else None
            if version is not None:
                out[name] = version
        return out

    @property
    def web_url(self) -> str:
        return self._web.url

    @property
    def crm_application(self) -> bool:
        """The install's IIS application exists and its folder holds eware.dll."""
        return bool(self.state.get("iis_application", True)) and self.tree.exists()

    @property
    def holds_database(self) -> bool:
        return Role.DATABASE.value in self.roles

    # Start and stop --------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._state_path.exists():
            self.state = json.loads(self._state_path.read_text(encoding="utf-8"))
            log.info("sandbox %s: using the existing install under %s", self.node, self.base)
            if not self.services_folder.exists() and self.version:  # a data dir from before
                self.services_folder.write(self.version)
        else:
            self._bootstrap()
        self.faults.already_used(dict(self.state.get("faults_used", {})))
        self.setup.record()
        self.backup_root.mkdir(parents=True, exist_ok=True)
        try:
            await self._ensure_schema()
        except (DBAPIError, DatabaseUnavailable, OSError) as exc:
            # The agent still serves its API and heartbeats; the refresh loop tries again.
            log.warning(
                "sandbox %s: the CRM database is not ready (%s); retrying", self.node, type(exc).__name__
            )
        port = self.settings.sandbox_web_port or int(self.state.get("web_port") or 0)
        self._web.port = port
        await self._web.start(fallback_to_free_port=not self.settings.sandbox_web_port)
        self.update_state(web_port=self._web.port)
        if self._schema_ready:
            with contextlib.suppress(DBAPIError, DatabaseUnavailable, OSError):
                await self.refresh_sessions()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="sandbox-sessions")
        if self.holds_database:
            self._sql_agent_task = asyncio.create_task(self.sql_agent.run_forever(), name="sandbox-sql-agent")

    def _bootstrap(self) -> None:
        roles, version = self.settings.roles, self.settings.sandbox_version
        tree = InstallTree(self.programs_root / self.install_name, self.install_name)
        self.state = new_install(
            tree=tree, registry=self.registry, node=self.node, version=version, roles=roles
        )
        self.state["web_port"] = self.settings.sandbox_web_port
        self._save()
        log.info(
            "sandbox %s: installed Sage CRM %s (%s) under %s", self.node, version, ",".join(roles), self.base
        )

    async def _ensure_schema(self) -> None:
        await self.db.ensure_schema(
            seed_version=self.settings.sandbox_version if self.holds_database else None
        )
        self._schema_ready = True

    async def stop(self) -> None:
        for task in (self._refresher, self._sql_agent_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._web.stop()
        if self._own_engine:
            await self.engine.dispose()

    async def _refresh_loop(self) -> None:
        interval = max(0.5, min(5.0, self.settings.sandbox_session_ttl / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                if not self._schema_ready:
                    await self._ensure_schema()
                await self.refresh_sessions()
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while: keep trying
                log.debug("sandbox %s: cannot refresh sessions: %s", self.node, type(exc).__name__)

    def _programs(self) -> dict[str, int]:
        held: dict[str, int] = {}
        if self.web_running and self.crm_application:
            held["eware.dll"] = 1
        if self.tomcat_running:
            held["tomcat"] = TOMCAT_POOL
        for name, state in self.state.get("services", {}).items():
            if state == RUNNING:
                held[f"service:{name}"] = 1
        return held

    async def refresh_sessions(self) -> None:
        """Record this node's connections now. A database that is away does not stop IIS from
        stopping: the refresh loop records them once it answers again."""
        try:
            await self.db.hold_sessions(self._programs())
        except (DBAPIError, OSError) as exc:
            log.debug("sandbox %s: sessions not recorded (%s)", self.node, type(exc).__name__)

    # Status ------------------------------------------------------------------------------------------
    async def iis_started_at(self) -> datetime | None:
        raw = self.state.get("iis_started_at")
        return datetime.fromisoformat(raw) if raw and self.web_running else None

    def note_warmup(self, when: datetime) -> None:
        self.update_state(last_warmup_at=when.isoformat())

    def simulate_iis_reset(self, *, at: datetime | None = None) -> None:
        """An ``iisreset`` or app-pool recycle done outside the agent (the watcher must notice),
        at ``at`` (default: now)."""
        self.update_state(web=RUNNING, iis_started_at=(at or _now()).isoformat())

    async def status(self) -> NodeStatus:
        logged_on: int | None
        try:
            logged_on = await self.db.logged_on(self.session_timeout_minutes)
        except (DBAPIError, DatabaseUnavailable, OSError):  # the CRM database is away: count unknown
            logged_on = None
        services = {k: ServiceStatus(v) for k, v in self.state.get("services", {}).items()}
        warm = self.state.get("last_warmup_at")
        return NodeStatus(
            name=self.node,
            install_name=self.install_name,
            version=self.version,
            roles=self.roles,
            web=ServiceStatus(self.state.get("web", "unknown")),
            tomcat=ServiceStatus(self.state.get("tomcat", "unknown")),
            services=services,
            replication_engine=self.tree.has_replication_engine,
            exchange_integration=bool(self.state.get("exchange_integration")),
            library_reachable=self.library_root.is_dir(),
            free_disk_bytes=shutil.disk_usage(
                self.base if self.base.exists() else self.settings.data_dir
            ).free,
            last_iis_start=await self.iis_started_at(),
            web_url=self.web_url,
            logged_on=logged_on,
            last_warmup_at=datetime.fromisoformat(warm) if warm else None,
            tomcat_version=self.tomcat_version if self.state.get("tomcat") != NOT_INSTALLED else None,
            service_versions=self.service_versions(),
            driver=self.kind,
        )

    # Faults ------------------------------------------------------------------------------------------
    def handler(self, action: Action) -> ActionHandler:
        if action in MAINTENANCE_ACTIONS:
            if not self.holds_database:
                raise ActionFailed(
                    f"{self.node} is not the database server: SQL Server Agent's jobs are kept there"
                )
            fn = getattr(self.sql_agent, action.value)
            found: ActionHandler = fn
            return found
        for part in (self.backups, self.uninstall, self.prerequisites, self.https, self.license):
            fn = getattr(part, action.value, None)
            if fn is not None:
                handler: ActionHandler = fn
                return handler
        return super().handler(action)

    async def perform(self, action: Action, params: Any, ctx: OperationContext) -> dict[str, Any]:
        ctx.progress(0.05, f"{action.value} on {self.node}")
        kinds = ("hang", "crash") if action == Action.RUN_INSTALLER else ("fail", "hang", "crash")
        fault = self.faults.take(action, *kinds)
        if fault is not None:
            self.update_state(faults_used=dict(self.faults.used))
        if fault == "fail":
            raise ActionFailed(f"injected fault: {action.value} fails on {self.node}")
        if fault == "hang":
            ctx.log(f"injected fault: {action.value} hangs until cancelled")
            await asyncio.Event().wait()
        if fault == "crash":
            ctx.log(f"injected fault: the agent dies during {action.value}")
            await asyncio.sleep(0.3)  # mid-action: the request that started it has been answered
            self._crash()
            raise ActionFailed("injected crash")  # only reached when the crash hook returns (tests)
        try:
            with unavailable_errors("the CRM database"):
                return await super().perform(action, params, ctx)
        except DatabaseUnavailable as exc:
            raise ActionFailed(str(exc)) from exc

    # IIS and Tomcat ------------------------------------------------------------------------------------
    async def stop_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        ctx.log("iisreset /stop")
        self.update_state(web=STOPPED)
        await self.refresh_sessions()
        return {"web": STOPPED}

    async def start_web(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        ctx.log("iisreset /start")
        if not self.tree.exists():
            raise ActionFailed(
                f"the website's physical path has no eware.dll: {self.state.get('website_path')}"
            )
        self.update_state(web=RUNNING, iis_started_at=_now().isoformat())
        await self.refresh_sessions()
        return {"web": RUNNING, "iis_started_at": self.state["iis_started_at"]}

    async def stop_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        ctx.log(f"sc stop {self.install_name}Tomcat7")
        self.update_state(tomcat=STOPPED)
        await self.refresh_sessions()
        return {"service": f"{self.install_name}Tomcat7", "state": STOPPED}

    async def start_tomcat(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        ctx.log(f"sc start {self.install_name}Tomcat7")
        self.update_state(tomcat=RUNNING)
        await self.refresh_sessions()
        return {"service": f"{self.install_name}Tomcat7", "state": RUNNING}

    # CRM services ----------------------------------------------------------------------------------------
    def _service(self, name: str) -> str:
        return str(self.state.get("services", {}).get(name, NOT_INSTALLED))

    async def _set_service(self, name: str, state: str) -> None:
        services = dict(self.state.get("services", {}))
        services[name] = state
        self.update_state(services=services)
        await self.refresh_sessions()

    async def install_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        installed = self._service(params.service) == NOT_INSTALLED
        if not installed:
            ctx.log(f"{params.service} is already installed")
        else:
            await self._set_service(params.service, STOPPED)
        return {"service": params.service, "state": self._service(params.service), "installed": installed}

    async def uninstall_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        removed = self._service(params.service) != NOT_INSTALLED
        await self._set_service(params.service, NOT_INSTALLED)
        return {"service": params.service, "state": NOT_INSTALLED, "removed": removed}

    async def start_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        if self._service(params.service) == NOT_INSTALLED:
            raise ActionFailed(f"the {params.service} service is not installed on {self.node}")
        await self._set_service(params.service, RUNNING)
        return {"service": params.service, "state": RUNNING}

    async def stop_service(self, params: ServiceParams, ctx: OperationContext) -> dict[str, Any]:
        if self._service(params.service) == RUNNING:
            await self._set_service(params.service, STOPPED)
        return {"service": params.service, "state": self._service(params.service)}

    # The installer ---------------------------------------------------------------------------------------
    def _check_key(self, key: str, action: Action) -> str:
        register_secret(key)
        if len(key) < 8 or self.faults.take(action, "invalid"):
            raise ActionFailed("the license key is not valid for Sage CRM 2017 R1")
        return secret_hash(key)

    async def run_installer(self, params: RunInstallerParams, ctx: OperationContext) -> dict[str, Any]:
        if self.settings.sandbox_installer == "manual":
            return await self._manual_installer(params, ctx)
        return await self._setup_exe(params, ctx, by_hand=False)

    async def _manual_installer(self, params: RunInstallerParams, ctx: OperationContext) -> dict[str, Any]:
        """The ``manual`` installer, as on Windows: the step waits for a person to run the wizard
        (here :meth:`run_wizard_by_hand`) and confirm; then it is verified as usual — the install's
        version, and an upgrade log written since the step started that names the target."""
        self._check_key(params.license_key.get_secret_value(), Action.RUN_INSTALLER)
        started = _now()
        self.update_state(installer_started_at=started.isoformat(), installer_version=params.version)
        console = _Console(params, ctx)
        self._console = console
        try:
            note = await ctx.wait_for_operator(
                wizard_choices(
                    params,
                    setup_exe=str(self.base / "CRMSetup" / "Setup.exe"),
                    install=self.install_name,
                    backup_folder=params.backup_location,
                )
            )
        finally:
            self._console = None
        if self.version != params.version:
            raise ActionFailed(
                f"after the wizard {self.install_name} is at {self.version}, not {params.version}: "
                "was the wizard run to its end?"
            )
        if params.mode == "upgrade":
            log_path = self.tree.upgrade_log
            written = datetime.fromtimestamp(log_path.stat().st_mtime, UTC) if log_path.is_file() else None
            if written is None or written < started - timedelta(seconds=2):
                raise ActionFailed("no upgrade log written since this step started: was the wizard run?")
            if params.version not in log_path.read_text(encoding="utf-8"):
                raise ActionFailed(f"Setup/upgradelog.html does not name version {params.version}")
        return {
            **(console.result or {"mode": params.mode}),
            "installer": "manual",
            "started_at": started.isoformat(),
            "operator_note": note[:500],
            "version": self.version,
        }

    async def run_wizard_by_hand(
        self, *, backup: bool | None = None, register: bool | None = None
    ) -> dict[str, Any]:
        """A person at this server's console runs the install wizard for the step that waits
        (the ``manual`` installer), with the choices it lists unless told otherwise; the wizard's
        output goes to that step's log. Raises what the wizard would show (a fault, a key
        registered five times) — the step then fails its verification once confirmed."""
        console = self._console
        if console is None:
            raise ActionFailed(f"no installer step is waiting for an operator on {self.node}")
        params = console.params.model_copy(
            update={
                **({"backup": backup} if backup is not None else {}),
                **({"register_install": register} if register is not None else {}),
            }
        )
        console.ctx.log("the wizard is run by hand at the console")
        console.result = await self._setup_exe(params, console.ctx, by_hand=True)
        return console.result

    async def _setup_exe(
        self, params: RunInstallerParams, ctx: OperationContext, *, by_hand: bool
    ) -> dict[str, Any]:
        """Sage CRM's setup: replayed from the recorded response file, or run by hand."""
        key_hash = self._check_key(params.license_key.get_secret_value(), Action.RUN_INSTALLER)
        if params.database is not None:
            register_secret(params.database.password)
        self.update_state(installer_started_at=_now().isoformat(), installer_version=params.version)
        response_fault = self.faults.take(Action.RUN_INSTALLER, "response") is not None
        code = None if by_hand else self.setup.replay(ctx, params, fault_code=-3 if response_fault else 0)
        no_log = self.faults.take(Action.RUN_INSTALLER, "no_log") is not None
        fail = self.faults.take(Action.RUN_INSTALLER, "fail") is not None
        log_error = self.faults.take(Action.RUN_INSTALLER, "log_error") is not None
        must_fix = self.faults.take(Action.RUN_INSTALLER, "nb") is not None
        if params.register_install:
            count = int(self.state.get("registrations", {}).get(key_hash, 0))
            if count >= MAX_REGISTRATIONS:
                raise ActionFailed(
                    "the license key is registered five times already: contact your business partner"
                )
        if params.mode == "add_node":
            return {**await self._add_node(params, ctx, key_hash), "result_code": code}
        # The database server's upgrade: the node holding the database, or a run given the
        # database login (the wizard's "Confirm your database server name … and password").
        with_database = params.database is not None or self.holds_database
        was_web, was_tomcat = self.web_running, self.tomcat_running
        result: dict[str, Any] = {"mode": "upgrade", "result_code": code}
        ctx.progress(0.1, "stopping IIS")
        self.update_state(web=STOPPED, tomcat=STOPPED)
        await self.refresh_sessions()
        if params.backup:
            result["backup"] = await self._wizard_backup(params, ctx, with_database=with_database)
        installer = SandboxInstaller(
            tree=self.tree, registry=self.registry, db=self.db, install_name=self.install_name
        )
        try:
            upgraded = await installer.upgrade(
                to_version=params.version,
                with_database=with_database,
                ctx=ctx,
                fail=fail,
                log_error=log_error,
                must_fix=must_fix,
                write_log=not no_log,
            )
        except InstallerFault as exc:
            raise ActionFailed(str(exc)) from exc
        result.update(upgraded)
        if params.register_install:
            regs = dict(self.state.get("registrations", {}))
            regs[key_hash] = int(regs.get(key_hash, 0)) + 1
            self.update_state(registrations=regs)
            result["registered"] = True
        # The installer installs its key: the License Key Details show it from now on.
        self.update_state(
            license_hash=key_hash, license=decode_license(params.license_key.get_secret_value())
        )
        if was_web:
            self.update_state(web=RUNNING, iis_started_at=_now().isoformat())
        if was_tomcat:
            self.update_state(tomcat=RUNNING)
        await self.refresh_sessions()
        result["version"] = self.version
        return result

    async def _wizard_backup(
        self, params: RunInstallerParams, ctx: OperationContext, *, with_database: bool
    ) -> dict[str, Any]:
        """The wizard's "Backup existing copy of the database, program files and registry"."""
        base = params.backup_location or f"installer/{ctx.op_id.replace(':', '-')}"
        out: dict[str, Any] = {}
        b = self.backups
        out["program_files"] = (await b.backup_program_files(_at(f"{base}/{self.install_name}_backup"), ctx))[
            "path"
        ]
        out["registry"] = (await b.backup_registry(_at(f"{base}/registry"), ctx))["path"]
        if with_database:
            out["database"] = (await b.backup_database(_at(f"{base}/database"), ctx))["path"]
        ctx.log("the wizard backed up to " + ", ".join(f"{k}: {v}" for k, v in out.items()))
        return out

    async def _add_node(
        self, params: RunInstallerParams, ctx: OperationContext, key_hash: str
    ) -> dict[str, Any]:
        """The wizard's install on another server: the program files of ``version``, which — as
        the guide warns — include a Replication Engine (the join sequence removes it)."""
        tree = self.tree
        if tree.exists() and tree.version != params.version:
            raise ActionFailed(f"Sage CRM {tree.version} is installed here: upgrade it instead")
        reinstall = tree.exists()
        if reinstall:
            ctx.log(f"Sage CRM {params.version} is installed: laying its program files down again")
            await asyncio.to_thread(tree.add_replication_engine, params.version)
        else:
            await asyncio.to_thread(tree.create, version=params.version, replication_engine=True)
        self.registry.set_values(config_key(self.install_name), {"Version": params.version})
        self.update_state(
            web=RUNNING,
            tomcat=RUNNING,
            iis_started_at=_now().isoformat(),
            license_hash=key_hash,
            license=decode_license(params.license_key.get_secret_value()),
        )
        await self.refresh_sessions()
        return {
            "mode": "add_node",
            "version": params.version,
            "installed": True,
            "reinstalled": reinstall,
            "replication_engine": tree.has_replication_engine,
        }

    async def read_upgrade_log(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        path = self.tree.upgrade_log
        if not path.is_file():
            raise ActionFailed("no upgrade log: Setup/upgradelog.html does not exist")
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        started = self.state.get("installer_started_at")
        if started and written < datetime.fromisoformat(started) - timedelta(seconds=2):
            raise ActionFailed(
                f"Setup/upgradelog.html was written {written:%Y-%m-%d %H:%M:%S} UTC, before the last "
                "installer run: it is a stale log of an earlier upgrade"
            )
        logs: dict[str, str] = {}
        folder = self.tree.setup / "logs"
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    logs[f.name] = f.read_text(encoding="utf-8", errors="replace")[:4000]
        parsed = parse_upgrade_log(path.read_text(encoding="utf-8")).as_result()
        return {**parsed, "written_at": written, "script_logs": logs}

    # Database switches ---------------------------------------------------------------------------------
    async def disable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await self.db.set_state("triggers", "disabled")
        return {"triggers": "disabled"}

    async def enable_triggers(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await self.db.set_state("triggers", "enabled")
        return {"triggers": "enabled"}

    async def disable_exchange_integration(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        self.update_state(exchange_integration=False)
        return {"exchange_integration": False}

    async def enable_exchange_integration(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        self.update_state(exchange_integration=True)
        return {"exchange_integration": True}

    async def install_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        await asyncio.to_thread(self.tree.add_replication_engine, self.version or "")
        return {"replication_engine": True}

    async def remove_replication_engine(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """The guide: stop <install>Tomcat7, remove the war and its folder, start Tomcat again."""
        was = self.tomcat_running
        if was:
            self.update_state(tomcat=STOPPED)
        removed = await asyncio.to_thread(self.tree.remove_replication_engine)
        ctx.log(("removed " if removed else "no ") + f"{self.install_name}ExchangeSyncEngine.war")
        if was:
            self.update_state(tomcat=RUNNING)
        return {"replication_engine": False, "removed": removed}

    async def reload_metadata(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        when = _now().isoformat()
        self.update_state(metadata_loaded_at=when)
        return {"reloaded_at": when, "schema": await self.db.schema_hash()}

    async def warmup_logon(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        password = self.settings.warmup_password
        result = await warmup_logon(
            base_url=self.web_url,
            install_name=self.install_name,
            user=self.settings.warmup_user,
            password=password.get_secret_value() if password else "warm-up",
            transport=self.warmup_transport,
            record=ctx.record,
        )
        self.note_warmup(_now())
        return result

    async def check_license(self, params: LicenseParams, ctx: OperationContext) -> dict[str, Any]:
        key_hash = self._check_key(params.license_key.get_secret_value(), Action.CHECK_LICENSE)
        self.update_state(license_hash=key_hash)
        # As on Windows, nothing asks Sage: the key's form is what is checked (DESIGN.md).
        return {"valid": True, "checked": "format only", "key_hash": key_hash}

    async def probe_library(self, params: LibraryParams, ctx: OperationContext) -> dict[str, Any]:
        store = SysParamsStore(self.tables, self.settings.sysparam_row_names())
        async with self.engine.connect() as conn:
            config = await store.read(conn)
        unc = library_path(params.path, config=config, extra_shares=self.settings.library_shares)
        parts = [p for p in unc.split("\\") if p][2:]
        if not self.library_root.is_dir():
            raise ActionFailed(f"the library share {unc} is not reachable")
        folder = resolve_under(self.library_root, "/".join(parts)) if parts else self.library_root
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".crmcluster-probe-{self.node}"
        probe.write_text(self.node, encoding="utf-8")
        ok = probe.read_text(encoding="utf-8") == self.node
        probe.unlink(missing_ok=True)
        if not ok:
            raise ActionFailed(f"the library {unc} did not read back what was written")
        return {"path": unc, "reachable": True, "writable": True}

    async def fingerprint_records(self, params: FingerprintParams, ctx: OperationContext) -> dict[str, Any]:
        return await self.db.fingerprint(params.ids)

    async def database_sessions(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        by_host = await self.db.sessions()
        hosts = {h: sum(p.values()) for h, p in by_host.items()}
        return {"hosts": hosts, "programs": by_host, "total": sum(hosts.values())}

    async def check_database_rights(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """The stand-in database's login owns it: every right the upgrade needs."""
        rights = ("view_server_state", "backup_database", "alter_database", "create_any_database", "sysadmin")
        return {"login": "sandbox", **dict.fromkeys(rights, True), "missing": [], "ok": True}

    async def list_dta_objects(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        objects = await self.db.dta_objects()
        return {"objects": objects, "count": len(objects)}
