"""The windows driver's "Uninstalling Sage CRM manually", as the guide types it, one action per
step (never step 4, the CRM database: a cluster shares it; step 8, the reboot, is left to a person):

=========================== =========================================================================
1 services and Tomcat       ``sc.exe stop`` each running CRM service, ``Services\\crmindexerservice.exe
                            /U`` (and the Escalation, Email Manager, Integration ones); the Tomcat
                            service stopped, then ``tomcat\\bin\\tomcat7.exe //DS//<install>Tomcat7``
                            (what ``service.bat remove`` runs — a batch file would need a shell)
2 eware.dll                 ``%SystemRoot%\\SysWOW64\\regsvr32.exe /u /s <install>\\WWWRoot\\eware.dll``
3 IIS application           ``appcmd list app "<site>/<install>"``, then ``appcmd delete app …``
5-6 registry                ``reg.exe query|delete HKLM\\SOFTWARE\\eWare\\Config\\/<install> /f /reg:32``
                            and ``…\\Mappings\\/<install>``
7 install folder            IIS stopped (``iisreset /stop``, then W3SVC must read STOPPED); the folder
                            (and a restore's ``<install>_backup``) deleted; ``eware.cpl`` deleted
                            when no other install is left under ``eWare\\Config``; ``iisreset
                            /start`` for the other sites when IIS ran
=========================== =========================================================================

Step 7: the guide's ``net stop iisadmin /y`` is IIS 5/6's way to stop the web service (there
W3SVC depended on the IIS Admin Service). From IIS 7 on, W3SVC depends on WAS, not IISADMIN —
which exists only with the "IIS 6 Management Compatibility" role — so ``net stop iisadmin /y``
leaves the worker processes holding eware.dll, or fails ("The service name is invalid", exit 2,
the same code as "not started"). ``iisreset /stop`` stops every IIS service on every version.

Everything goes through the driver's host (:class:`~node_agent.drivers.windows.host.WindowsHost`):
recorded in ``result.commands``, answered by the modelled server in a dry run, refused in the
read-only mode. Each action checks first and is safe to run again: what is already gone is
reported, not failed.
"""

from __future__ import annotations

from pathlib import PureWindowsPath
from typing import Any, Protocol

from config.settings import AgentSettings
from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import WindowsHost
from node_agent.protocol import DllPathParams, NoParams, ServiceStatus

EWARE_CONFIG = "HKLM\\SOFTWARE\\eWare\\Config"


def regsvr32(system_root: str) -> str:
    """The 32-bit regsvr32 (eware.dll is a 32-bit DLL)."""
    return str(PureWindowsPath(system_root) / "SysWOW64" / "regsvr32.exe")


def eware_cpl(system_root: str) -> PureWindowsPath:
    """Where the 32-bit installer's ``system32`` copy of eware.cpl lands on 64-bit Windows."""
    return PureWindowsPath(system_root) / "SysWOW64" / "eware.cpl"


class WindowsServer(Protocol):
    """What the uninstall needs of :class:`~node_agent.drivers.windows.WindowsDriver`."""

    settings: AgentSettings
    install: str
    programs_root: PureWindowsPath
    install_dir: PureWindowsPath
    host: WindowsHost

    @property
    def tomcat_service(self) -> str: ...
    @property
    def config_key(self) -> str: ...
    @property
    def mappings_key(self) -> str: ...
    @property
    def reg_view(self) -> str: ...
    def service_name(self, service: str) -> str: ...
    def programs_path(self, rel: str) -> PureWindowsPath: ...
    async def service_state(self, name: str, ctx: OperationContext) -> ServiceStatus: ...
    async def control(self, ctx: OperationContext, name: str, verb: str) -> ServiceStatus: ...
    async def stop_iis(self, ctx: OperationContext) -> None: ...
    async def start_iis(self, ctx: OperationContext) -> None: ...


class WindowsUninstall:
    def __init__(self, server: WindowsServer, *, service_exes: dict[str, str]) -> None:
        self.s = server
        self.service_exes = service_exes

    @property
    def host(self) -> WindowsHost:
        return self.s.host

    async def _remove_service(self, ctx: OperationContext, name: str, argv: list[str]) -> bool:
        state = await self.s.service_state(name, ctx)
        if state == ServiceStatus.NOT_INSTALLED:
            return False
        if state != ServiceStatus.STOPPED:
            await self.s.control(ctx, name, "stop")
        await self.host.run(ctx, argv)
        if await self.s.service_state(name, ctx) != ServiceStatus.NOT_INSTALLED:
            raise ActionFailed(f"{name} is still installed after {PureWindowsPath(argv[0]).name} removed it")
        return True

    async def remove_crm_services(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        removed = []
        for service, exe in self.service_exes.items():
            name = self.s.service_name(service)
            if await self._remove_service(ctx, name, [str(self.s.programs_root / "Services" / exe), "/U"]):
                removed.append(service)
        tomcat = self.s.tomcat_service
        procrun = self.s.install_dir / "tomcat" / "bin" / "tomcat7.exe"
        tomcat_removed = await self._remove_service(ctx, tomcat, [str(procrun), f"//DS//{tomcat}"])
        return {"services_removed": removed, "tomcat_service": tomcat, "tomcat_removed": tomcat_removed}

    async def unregister_dll(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        path = self.s.programs_path(params.path or f"{self.s.install}/WWWRoot/eware.dll")
        files = self.host.files
        if not path.name.lower().endswith(".dll"):
            path = (
                path / "WWWRoot" / "eware.dll" if await files.is_dir(path / "WWWRoot") else path / "eware.dll"
            )
        if not await files.exists(path):
            if not await files.exists(self.s.install_dir):
                ctx.log(f"{self.s.install_dir} is gone: nothing to unregister")
                return {"unregistered": None, "was_registered": False}
            raise ActionFailed(f"regsvr32: the module {path} failed to load: no such file")
        await self.host.run(ctx, [regsvr32(self.s.settings.windows_system_root), "/u", "/s", str(path)])
        return {"unregistered": str(path), "was_registered": True}

    @property
    def _app(self) -> str:
        return f"{self.s.settings.windows_site}/{self.s.install}"

    async def delete_iis_application(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        appcmd = self.s.settings.windows_appcmd
        found = await self.host.query(ctx, [appcmd, "list", "app", self._app])
        if found.returncode != 0 or self._app.lower() not in found.output.lower():
            ctx.log(f"no IIS application {self._app}")
            return {"application": self._app, "deleted": False}
        await self.host.run(ctx, [appcmd, "delete", "app", self._app])
        return {"application": self._app, "deleted": True}

    async def delete_registry_keys(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        deleted, absent = [], []
        for key in (self.s.config_key, self.s.mappings_key):
            probe = await self.host.query(ctx, ["reg.exe", "query", key, self.s.reg_view])
            if probe.returncode != 0:
                absent.append(key)
                continue
            await self.host.run(ctx, ["reg.exe", "delete", key, "/f", self.s.reg_view])
            deleted.append(key)
        return {"deleted": deleted, "absent": absent}

    async def _other_installs(self, ctx: OperationContext) -> list[str]:
        r = await self.host.query(ctx, ["reg.exe", "query", EWARE_CONFIG, self.s.reg_view])
        if r.returncode != 0:
            return []
        prefix = (
            "HKEY_LOCAL_MACHINE\\SOFTWARE\\EWARE\\CONFIG\\",
            "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432NODE\\EWARE\\CONFIG\\",
        )
        return [ln.strip() for ln in r.output.splitlines() if ln.strip().upper().startswith(prefix)]

    async def delete_install_folder(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if await self.s.service_state(self.s.tomcat_service, ctx) == ServiceStatus.RUNNING:
            raise ActionFailed(
                f"{self.s.tomcat_service} still runs from the install folder: remove the Tomcat service first"
            )
        web_was = await self.s.service_state("W3SVC", ctx)
        if web_was == ServiceStatus.RUNNING:
            await self.s.stop_iis(ctx)
        deleted: list[str] = []
        try:
            for folder in (self.s.install_dir, self.s.programs_root / f"{self.s.install}_backup"):
                if await self.host.files.exists(folder):
                    ctx.log(f"deleting {folder}")
                    await self.host.remove_tree(ctx, folder)
                    deleted.append(folder.name)
            cpl = eware_cpl(self.s.settings.windows_system_root)
            if not await self._other_installs(ctx) and await self.host.files.exists(cpl):
                ctx.log(f"deleting {cpl} (no other Sage CRM install is left)")
                await self.host.remove(ctx, cpl)
                deleted.append(cpl.name)
        except BaseException:
            if web_was == ServiceStatus.RUNNING:
                try:
                    await self.s.start_iis(ctx)
                except ActionFailed as exc:  # the deletion's own error is the one to report
                    ctx.log(f"IIS not started again: {exc}")
            raise
        if web_was == ServiceStatus.RUNNING:
            await self.s.start_iis(ctx)
        return {"deleted": deleted, "reboot": "recommended (the guide's step 8)"}
