"""The sandbox's server as the guide's prerequisites see it: the IIS role services, parent paths
and websites it plays, SQL Server's TCP/IP, collation and memory, this machine's free disk.

By default it has everything the guide asks for (ASP with parent paths, ISAPI Extensions and
Filters, TCP/IP, ``Latin1_General_CI_AS``, 16 GB on the web server and on SQL Server's machine);
``CRMCLUSTER_SANDBOX_LACKS`` takes any of them away (:data:`config.settings.SANDBOX_LACKS`) and
``CRMCLUSTER_SANDBOX_OTHER_SITES`` adds websites to its IIS. The database size is the stand-in
CRM database's real size. Each reading names, in ``sources``, the Windows command the windows
driver runs for it, marked as played.
"""

from __future__ import annotations

import shutil
from typing import Any

from sqlalchemy import text

from node_agent.drivers.base import OperationContext
from node_agent.drivers.sandbox.node import SandboxNode
from node_agent.protocol import IIS_ROLE_SERVICES, NoParams

GB = 1 << 30
MB = 1 << 20
#: What the played server has, and what it has when it lacks it.
MEMORY, SMALL_MEMORY = 16 * GB, 4 * GB
COLLATION, CASE_SENSITIVE = "Latin1_General_CI_AS", "Latin1_General_CS_AS"
SMALL_DISK = 100 * MB
_LACK_FOR_FEATURE = {
    "Web-ASP": "asp",
    "Web-ISAPI-Ext": "isapi_extensions",
    "Web-ISAPI-Filter": "isapi_filters",
}


def _played(what: str) -> str:
    return f"sandbox (played): {what}"


class SandboxPrerequisites:
    def __init__(self, driver: SandboxNode) -> None:
        self.d = driver
        self.lacks = frozenset(x for x in driver.settings.sandbox_lacks.split(",") if x)
        self.other_sites = [s.strip() for s in driver.settings.sandbox_other_sites.split(",") if s.strip()]

    async def _database_bytes(self) -> int:
        async with self.d.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                return int(
                    (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar_one()
                )
            pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
            size = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
            return int(pages) * int(size)

    async def check_prerequisites(self, params: NoParams, ctx: OperationContext) -> dict[str, Any]:
        site = self.d.settings.windows_site
        sources = {
            "role_services": _played("dism /English /Online /Get-Features /Format:Table"),
            "parent_paths": _played(
                f'appcmd list config "{site}/{self.d.install_name}" /section:system.webServer/asp '
                "/text:enableParentPaths"
            ),
            "sites": _played("appcmd list site /text:name"),
            "memory": _played("(Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory"),
            "free_disk": f"agent: free space on {self.d.base}",
        }
        free = shutil.disk_usage(self.d.base if self.d.base.exists() else self.d.settings.data_dir).free
        out: dict[str, Any] = {
            "role_services": {f: _LACK_FOR_FEATURE[f] not in self.lacks for f in IIS_ROLE_SERVICES},
            "parent_paths": "parent_paths" not in self.lacks and "asp" not in self.lacks,
            "crm_site": site,
            "sites": [site, *self.other_sites],
            "memory_bytes": SMALL_MEMORY if "memory" in self.lacks else MEMORY,
            "free_disk_bytes": min(free, SMALL_DISK) if "free_disk" in self.lacks else free,
            "database_server": self.d.holds_database,
        }
        if self.d.holds_database:
            sources.update(
                sql_tcp_enabled=_played(
                    "SELECT value_data FROM sys.dm_server_registry WHERE registry_key LIKE "
                    "N'%SuperSocketNetLib\\Tcp' AND value_name = N'Enabled'"
                ),
                collation=_played(
                    "SELECT SERVERPROPERTY('Collation'), DATABASEPROPERTYEX(DB_NAME(), 'Collation')"
                ),
                sql_memory=_played(
                    "SELECT physical_memory_kb FROM sys.dm_os_sys_info; "
                    "SELECT SUM(CAST(size AS bigint)) * 8192 FROM sys.database_files"
                ),
            )
            collation = CASE_SENSITIVE if "collation" in self.lacks else COLLATION
            out.update(
                sql_tcp_enabled="tcp_ip" not in self.lacks,
                server_collation=collation,
                database_collation=collation,
                sql_memory_bytes=SMALL_MEMORY if "memory" in self.lacks else MEMORY,
                database_bytes=await self._database_bytes(),
            )
        for line in sources.values():
            ctx.record(line)
        return {**out, "sources": sources}
