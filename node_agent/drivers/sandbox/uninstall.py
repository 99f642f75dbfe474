"""The sandbox's "Uninstalling Sage CRM manually" (the guide's steps 1-3 and 5-7; step 4, the
database, is shared by the cluster and never touched; step 8, the reboot, is left to a person).

As strict as the real server: ``regsvr32 /u`` fails when eware.dll is not there to load; the
install folder cannot be deleted while Tomcat still runs from it (its files are in use), and IIS is
stopped around the deletion as the guide's ``net stop iisadmin /y`` does, then started again for
the other sites it may serve. Every action is safe to run again: what is already gone is reported
as such, not as a failure.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from node_agent.drivers.base import ActionFailed, OperationContext, resolve_under
from node_agent.drivers.sandbox.install_tree import SERVICE_EXES
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.drivers.sandbox.registry import config_key, mappings_key
from node_agent.protocol import DllPathParams, NoParams

NOT_INSTALLED, STOPPED, RUNNING = "not_installed", "stopped", "running"


class SandboxUninstall:
    """The uninstall actions of one sandbox node."""

    def __init__(self, host: SandboxNode) -> None:
        self.host = host

    async def remove_crm_services(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """Step 1: every CRM service (Escalation, Integration, Email Manager, Indexer) and the
        install's Tomcat service, each stopped first, then removed."""
        services = dict(self.host.state.get("services", {}))
        removed: list[str] = []
        for name, state in sorted(services.items()):
            if state == NOT_INSTALLED:
                continue
            if state == RUNNING:
                ctx.log(f"sc stop {name}")
            ctx.log(f"Services\\{SERVICE_EXES.get(name, name)} /U")
            services[name] = NOT_INSTALLED
            removed.append(name)
        tomcat = str(self.host.state.get("tomcat", NOT_INSTALLED))
        tomcat_service = f"{self.host.install_name}Tomcat7"
        if tomcat != NOT_INSTALLED:
            if tomcat == RUNNING:
                ctx.log(f"sc stop {tomcat_service}")
            ctx.log(f"{self.host.install_name}\\tomcat\\bin\\service.bat remove {tomcat_service}")
        self.host.update_state(services=services, tomcat=NOT_INSTALLED)
        await self.host.refresh_sessions()
        return {
            "services_removed": removed,
            "tomcat_service": tomcat_service,
            "tomcat_removed": tomcat != NOT_INSTALLED,
        }

    async def unregister_dll(self, params: DllPathParams, ctx: OperationContext) -> dict[str, Any]:
        """Step 2: ``regsvr32 /u eware.dll`` (the module must be there to unregister itself)."""
        registered = self.host.state.get("dll_registered")
        rel = params.path or registered
        if rel is None:
            ctx.log("eware.dll is not registered")
            return {"unregistered": None, "was_registered": False}
        path = resolve_under(self.host.programs_root, str(rel))
        if path.is_dir():
            path = path / "WWWRoot" / "eware.dll" if (path / "WWWRoot").is_dir() else path / "eware.dll"
        if not path.is_file():
            raise ActionFailed(f"regsvr32: the module {rel} failed to load: no such file")
        where = path.relative_to(self.host.programs_root.resolve()).as_posix()
        ctx.log(f"regsvr32 /u /s {where}")
        if registered == where:
            self.host.update_state(dll_registered=None)
        return {"unregistered": where, "was_registered": registered == where}

    async def delete_iis_application(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """Step 3: the install's application under Default Web Site is deleted."""
        app = f"Default Web Site/{self.host.install_name}"
        existed = bool(self.host.state.get("iis_application", True))
        if existed:
            ctx.log(f"appcmd delete app /app.name:{app}/")
            self.host.update_state(iis_application=False)
            await self.host.refresh_sessions()
        else:
            ctx.log(f"no IIS application {app}")
        return {"application": app, "deleted": existed}

    async def delete_registry_keys(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """Steps 5-6 (several installs on a server): the install's ``Config`` and ``Mappings`` keys."""
        deleted: list[str] = []
        absent: list[str] = []
        for key in (config_key(self.host.install_name), mappings_key(self.host.install_name)):
            if self.host.registry.delete(key):
                ctx.log(f"reg delete {key} /f")
                deleted.append(key)
            else:
                absent.append(key)
        return {"deleted": deleted, "absent": absent}

    async def delete_install_folder(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        """Step 7: IIS stopped (``net stop iisadmin /y``), the install folder deleted (the guide's
        ``<install>_backup`` folder of a restore with it), IIS started again for other sites."""
        if self.host.state.get("tomcat") == RUNNING:
            raise ActionFailed(
                "the process cannot access the file because it is being used by another process: "
                f"{self.host.install_name}\\tomcat (remove the Tomcat service first)"
            )
        folders = [self.host.install_name, f"{self.host.install_name}_backup"]
        was_running = self.host.state.get("web") == RUNNING
        ctx.log("net stop iisadmin /y")
        self.host.update_state(web=STOPPED)
        deleted: list[str] = []
        try:
            for name in folders:
                folder = resolve_under(self.host.programs_root, name)
                if folder.exists():
                    ctx.log(f"deleting {name}")
                    await asyncio.to_thread(shutil.rmtree, folder)
                    deleted.append(name)
        finally:
            if was_running:
                ctx.log("net start w3svc")
                self.host.update_state(web=RUNNING)
            await self.host.refresh_sessions()
        return {
            "deleted": deleted,
            "web": self.host.state.get("web"),
            "reboot": "recommended (the guide's step 8)",
        }
