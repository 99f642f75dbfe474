"""The guide's "Server software requirements" and "Database servers", read on a real server with
commands that change nothing (the read-only mode runs every one of them):

=================== =============================================================================
reading             how
=================== =============================================================================
role_services       ``dism /English /Online /Get-Features /Format:Table``: IIS-ASP,
                    IIS-ISAPIExtensions, IIS-ISAPIFilter ``Enabled`` (Server Manager's role
                    services Web-ASP, Web-ISAPI-Ext, Web-ISAPI-Filter)
parent_paths        ``appcmd list config "<site>/<install>" /section:system.webServer/asp
                    /text:enableParentPaths`` (the guide: "ASP (set Enable Parent Paths to True)")
sites               ``appcmd list site /text:name``: every website on this IIS (``iisreset /stop``
                    takes them all down)
memory              ``powershell -NoProfile -NonInteractive -Command
                    (Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory``
free_disk           the free space of the Sage CRM programs folder's drive (``GetDiskFreeSpaceEx``)
sql_tcp_enabled     ``sys.dm_server_registry``: SQL Server's ``SuperSocketNetLib\\Tcp`` ``Enabled``
                    registry value (the database server only)
collation           ``SERVERPROPERTY('Collation')``, ``DATABASEPROPERTYEX(DB_NAME(), 'Collation')``
sql_memory          ``sys.dm_os_sys_info.physical_memory_kb`` and the CRM database's size
                    (``sys.database_files``)
=================== =============================================================================

A reading that cannot be taken is ``None`` with its reason in ``errors``; the controller judges.
"""

from __future__ import annotations

import re
from pathlib import PureWindowsPath
from typing import Any, Protocol

from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows import tsql
from node_agent.drivers.windows.host import WindowsHost, command_line
from node_agent.protocol import IIS_ROLE_SERVICES, NoParams

#: DISM's names of the role services the guide asks for.
DISM_FEATURES = {
    "Web-ASP": "IIS-ASP",
    "Web-ISAPI-Ext": "IIS-ISAPIExtensions",
    "Web-ISAPI-Filter": "IIS-ISAPIFilter",
}
MEMORY_QUERY = "(Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory"
_DISM_ROW = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*\|\s*(.+?)\s*$")


class PrerequisitesView(Protocol):
    """What the check reads of the windows driver."""

    host: WindowsHost
    programs_root: PureWindowsPath

    @property
    def system_root(self) -> str: ...
    @property
    def appcmd(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def install(self) -> str: ...
    @property
    def database_server(self) -> bool: ...


def parse_dism_features(output: str) -> dict[str, str]:
    """``dism /Get-Features /Format:Table`` rows: feature name -> state."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        m = _DISM_ROW.match(line)
        if m and not set(m.group(1)) <= {"-"} and m.group(1).lower() != "feature":
            out[m.group(1)] = m.group(2)
    return out


class WindowsPrerequisites:
    def __init__(self, view: PrerequisitesView) -> None:
        self.v = view

    def _system32(self, *parts: str) -> str:
        return str(PureWindowsPath(self.v.system_root, "System32", *parts))

    async def _command(
        self,
        ctx: OperationContext,
        name: str,
        argv: list[str],
        sources: dict[str, str],
        errors: dict[str, str],
    ) -> str | None:
        sources[name] = command_line(argv)
        res = await self.v.host.query(ctx, argv)
        if res.returncode != 0:
            last = res.output.strip().splitlines()[-1] if res.output.strip() else ""
            errors[name] = f"{PureWindowsPath(argv[0]).name} exited with {res.returncode}: {last}".rstrip(
                ": "
            )
            return None
        return res.output

    async def _sql(
        self,
        ctx: OperationContext,
        name: str,
        st: tsql.Statement,
        sources: dict[str, str],
        errors: dict[str, str],
    ) -> tsql.Row | None:
        sources[name] = tsql.render_statement(st)
        try:
            rows = await self.v.host.execute(ctx, st)
        except ActionFailed as exc:
            errors[name] = str(exc)
            return None
        if not rows:
            errors[name] = "no row (does the SQL login have VIEW SERVER STATE?)"
            return None
        return rows[0]

    async def check_prerequisites(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        sources: dict[str, str] = {}
        errors: dict[str, str] = {}
        out: dict[str, Any] = {"crm_site": self.v.site, "database_server": self.v.database_server}

        dism = await self._command(
            ctx,
            "role_services",
            [self._system32("dism.exe"), "/English", "/Online", "/Get-Features", "/Format:Table"],
            sources,
            errors,
        )
        if dism is not None:
            states = {k.lower(): v for k, v in parse_dism_features(dism).items()}
            out["role_services"] = {
                f: states.get(DISM_FEATURES[f].lower(), "").lower() == "enabled" for f in IIS_ROLE_SERVICES
            }

        app = f"{self.v.site}/{self.v.install}"
        asp = await self._command(
            ctx,
            "parent_paths",
            [
                self.v.appcmd,
                "list",
                "config",
                app,
                "/section:system.webServer/asp",
                "/text:enableParentPaths",
            ],
            sources,
            errors,
        )
        if asp is not None:
            value = asp.strip().lower()
            if value in ("true", "false"):
                out["parent_paths"] = value == "true"
            else:
                errors["parent_paths"] = f"appcmd answered {asp.strip()[:200]!r}"

        sites = await self._command(
            ctx, "sites", [self.v.appcmd, "list", "site", "/text:name"], sources, errors
        )
        if sites is not None:
            out["sites"] = [s.strip() for s in sites.splitlines() if s.strip()]

        mem = await self._command(
            ctx,
            "memory",
            [
                self._system32("WindowsPowerShell", "v1.0", "powershell.exe"),
                "-NoProfile",
                "-NonInteractive",
                "-Command",
                MEMORY_QUERY,
            ],
            sources,
            errors,
        )
        if mem is not None:
            try:
                out["memory_bytes"] = int(mem.strip().splitlines()[-1])
            except (ValueError, IndexError):
                errors["memory"] = f"powershell answered {mem.strip()[:200]!r}"

        sources["free_disk"] = f"agent: free space on {self.v.programs_root}"
        ctx.record(sources["free_disk"])
        out["free_disk_bytes"] = await self.v.host.files.free_bytes(self.v.programs_root)
        if out["free_disk_bytes"] is None:
            errors["free_disk"] = f"cannot read the free space of {self.v.programs_root}"

        if self.v.database_server:
            row = await self._sql(ctx, "sql_tcp_enabled", tsql.TCP_ENABLED, sources, errors)
            if row is not None:
                out["sql_tcp_enabled"] = bool(row[0])
            row = await self._sql(ctx, "collation", tsql.COLLATION, sources, errors)
            if row is not None:
                out["server_collation"], out["database_collation"] = row[0], row[1]
            row = await self._sql(ctx, "sql_memory", tsql.SQL_MEMORY, sources, errors)
            if row is not None:
                out["sql_memory_bytes"] = int(row[0])
                out["database_bytes"] = int(row[1]) if row[1] is not None else None
        return {**out, "sources": sources, "errors": errors}
