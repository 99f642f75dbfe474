"""The windows driver's "Uninstalling Sage CRM manually", as the guide types it, one action per
step (never step 4, the CRM database: a cluster shares it; step 8, the reboot, is left to a person):

=========================== =========================================================================
1 services and Tomcat       ``sc.exe stop`` each running CRM service, ``Services\\crmindexerservice.exe
                            /U`` (and the Escalation, Email Manager, Integration ones); the Tomcat
                            service stopped, then ``tomcat\\bin\\tomcat7.exe //DS//<install>Tomcat7``
                            (what ``service.bat remove`` runs — a batch file would need a shell)
2 eware.dll                 ``C:\\Windows\\SysWOW64\\regsvr32.exe /u /s <install>\\WWWRoot\\eware.dll``
3 IIS application           ``appcmd list app "<site>/<install>"``, then ``appcmd delete app …``
5-6 registry                ``reg.exe query|delete HKLM\\SOFTWARE\\eWare\\Config\\/<install> /f /reg:32``
                            and ``…\\Mappings\\/<install>``
7 install folder            ``net stop iisadmin /y``; the folder (and a restore's ``<install>_backup``)
                            deleted; ``eware.cpl`` deleted when no other install is left under
                            ``eWare\\Config``; ``net start w3svc`` for the other sites
=========================== =========================================================================

Each action checks first and is safe to run again: what is already gone is reported, not failed.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path, PureWindowsPath
from typing import Any, Protocol

from config.settings import AgentSettings
from node_agent.drivers.base import ActionFailed, OperationContext, resolve_under
from node_agent.protocol import DllPathParams, NoParams, ServiceStatus
from node_agent.runner import CommandResult

REGSVR32 = r"C:\Windows\SysWOW64\regsvr32.exe"
#: Where a 32-bit installer's ``system32`` lands on 64-bit Windows.
EWARE_CPL = PureWindowsPath(r"C:\Windows\SysWOW64\eware.cpl")
EWARE_CONFIG = "HKLM\\SOFTWARE\\eWare\\Config"
NET_NOT_STARTED = 2  # net.exe: "The … service is not started."


class WindowsServer(Protocol):
    """What the uninstall needs of :class:`~node_agent.drivers.windows.WindowsDriver`."""

    settings: AgentSettings
    install: str
    programs_root: Path
    install_dir: Path

    @property
    def tomcat_service(self) -> str: ...
    @property
    def config_key(self) -> str: ...
    @property
    def mappings_key(self) -> str: ...
    def service_name(self, service: str) -> str: ...
    def _reg_view(self) -> list[str]: ...
    async def _service_state(self, name: str) -> ServiceStatus: ...
    async def _control(
        self, ctx: OperationContext, name: str, verb: str, *, timeout: float = 120
    ) -> dict[str, Any]: ...
    async def _quiet(self, argv: list[str]) -> CommandResult: ...


class WindowsUninstall:
    def __init__(self, server: WindowsServer, *, service_exes: dict[str, str]) -> None:
        self.s = server
        self.service_exes = service_exes

    async def _remove_service(self, ctx: OperationContext, name: str, argv: list[str]) -> bool:
        state = await self.s._service_state(name)
        if state == ServiceStatus.NOT_INSTALLED:
            return False
        if state != ServiceStatus.STOPPED:
            await self.s._control(ctx, name, "stop")
        await ctx.run(argv)
        if await self.s._service_state(name) != ServiceStatus.NOT_INSTALLED:
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
        rel = params.path or f"{self.s.install}/WWWRoot/eware.dll"
        path = resolve_under(self.s.programs_root, rel)
        if path.is_dir():
            path = path / "WWWRoot" / "eware.dll" if (path / "WWWRoot").is_dir() else path / "eware.dll"
        if not path.is_file():
            if not self.s.install_dir.exists():
                ctx.log(f"{self.s.install_dir} is gone: nothing to unregister")
                return {"unregistered": None, "was_registered": False}
            raise ActionFailed(f"regsvr32: the module {path} failed to load: no such file")
        await ctx.run([REGSVR32, "/u", "/s", str(path)])
        return {"unregistered": str(path), "was_registered": True}

    @property
    def _app(self) -> str:
        return f"{self.s.settings.windows_site}/{self.s.install}"

    async def delete_iis_application(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        appcmd = self.s.settings.windows_appcmd
        found = await ctx.run([appcmd, "list", "app", self._app], check=False)
        if found.returncode != 0 or self._app.lower() not in found.output.lower():
            ctx.log(f"no IIS application {self._app}")
            return {"application": self._app, "deleted": False}
        await ctx.run([appcmd, "delete", "app", self._app])
        return {"application": self._app, "deleted": True}

    async def delete_registry_keys(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        deleted, absent = [], []
        for key in (self.s.config_key, self.s.mappings_key):
            probe = await ctx.run(["reg.exe", "query", key, *self.s._reg_view()], check=False)
            if probe.returncode != 0:
                absent.append(key)
                continue
            await ctx.run(["reg.exe", "delete", key, "/f", *self.s._reg_view()])
            deleted.append(key)
        return {"deleted": deleted, "absent": absent}

    async def _other_installs(self, ctx: OperationContext) -> list[str]:
        r = await ctx.run(["reg.exe", "query", EWARE_CONFIG, *self.s._reg_view()], check=False)
        if r.returncode != 0:
            return []
        prefix = (
            "HKEY_LOCAL_MACHINE\\SOFTWARE\\EWARE\\CONFIG\\",
            "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432NODE\\",
        )
        return [ln.strip() for ln in r.output.splitlines() if ln.strip().upper().startswith(prefix)]

    async def delete_install_folder(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        if await self.s._service_state(self.s.tomcat_service) == ServiceStatus.RUNNING:
            raise ActionFailed(
                f"{self.s.tomcat_service} still runs from the install folder: remove the Tomcat service first"
            )
        web_was = await self.s._service_state("W3SVC")
        stop = await ctx.run(["net", "stop", "iisadmin", "/y"], check=False)
        if stop.returncode not in (0, NET_NOT_STARTED):
            raise ActionFailed(f"net stop iisadmin failed ({stop.returncode}): {stop.output.strip()[-200:]}")
        deleted: list[str] = []
        try:
            for folder in (self.s.install_dir, self.s.programs_root / f"{self.s.install}_backup"):
                if folder.exists():
                    ctx.log(f"deleting {folder}")
                    try:
                        await asyncio.to_thread(shutil.rmtree, folder)
                    except OSError as exc:
                        raise ActionFailed(f"cannot delete {folder}: {exc.strerror or exc}") from exc
                    deleted.append(folder.name)
            cpl = Path(str(EWARE_CPL))
            others = await self._other_installs(ctx)
            if not others and await asyncio.to_thread(cpl.exists):
                ctx.log(f"deleting {EWARE_CPL} (no other Sage CRM install is left)")
                await asyncio.to_thread(cpl.unlink)
                deleted.append(EWARE_CPL.name)
        finally:
            if web_was == ServiceStatus.RUNNING:
                await ctx.run(["net", "start", "w3svc"], check=False)
        return {"deleted": deleted, "reboot": "recommended (the guide's step 8)"}
