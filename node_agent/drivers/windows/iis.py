"""IIS for the CRM website: ``iisreset``, and ``appcmd`` for what IIS Manager does by hand.

===================================== ===============================================================
stop / start                          ``iisreset /stop`` · ``iisreset /start`` (W3SVC then reads
                                      STOPPED / RUNNING)
the CRM application's pool            ``appcmd list app "<site>/<install>" /text:applicationPool``
                                      (read from IIS, not assumed)
metadata reload                       ``appcmd recycle apppool /apppool.name:<pool>``
the guide's "Redirecting the website" ``appcmd set vdir "/vdir.name:<site>/<install>/"
                                      "/physicalPath:<folder>\\WWWRoot"``
ISAPI restriction                     ``appcmd set config /section:system.webServer/security/
                                      isapiCgiRestriction "/+[path='…\\eware.dll',allowed='True',…]"
                                      /commit:apphost`` — IIS refuses to run an ISAPI DLL whose path
                                      is not listed (HTTP 404.2), so a website pointed at
                                      ``CRM_backup`` needs its eware.dll listed; added only when
                                      ``appcmd list config`` does not list it yet
IIS start (reset / recycle)           the W3SVC process id (``sc queryex W3SVC``) and the worker
                                      process ids (``appcmd list wp``)
===================================== ===============================================================
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PureWindowsPath

from node_agent.drivers.base import ActionFailed, OperationContext
from node_agent.drivers.windows.host import WindowsHost
from node_agent.drivers.windows.services import ServiceControl
from node_agent.protocol import ServiceStatus

_WP = re.compile(r'WP\s+"(\d+)"')
ISAPI_SECTION = "/section:system.webServer/security/isapiCgiRestriction"


class Iis:
    def __init__(
        self,
        host: WindowsHost,
        services: ServiceControl,
        *,
        appcmd: str,
        site: str,
        install: str,
        app_pool: str = "",
    ) -> None:
        self.host = host
        self.services = services
        self.appcmd = appcmd
        self.site = site
        self.install = install
        self.configured_pool = app_pool
        self._seen: tuple[str, ...] | None = None
        self._since: datetime | None = None

    @property
    def app_path(self) -> str:
        return f"{self.site}/{self.install}"

    async def stop(self, ctx: OperationContext) -> None:
        await self.host.run(ctx, ["iisreset", "/stop"], timeout=300)
        state = await self.services.state("W3SVC", ctx)
        if state != ServiceStatus.STOPPED:
            raise ActionFailed(f"iisreset /stop finished but W3SVC reads {state.value}")

    async def start(self, ctx: OperationContext) -> None:
        await self.host.run(ctx, ["iisreset", "/start"], timeout=300)
        state = await self.services.state("W3SVC", ctx)
        if state != ServiceStatus.RUNNING:
            raise ActionFailed(f"iisreset /start finished but W3SVC reads {state.value}")

    async def app_pool(self, ctx: OperationContext | None) -> str:
        """The application pool the CRM application runs in, as IIS says."""
        if self.configured_pool:
            return self.configured_pool
        r = await self.host.query(ctx, [self.appcmd, "list", "app", self.app_path, "/text:applicationPool"])
        pool = r.output.strip().splitlines()[0].strip() if r.output.strip() else ""
        if r.returncode != 0 or not pool:
            raise ActionFailed(
                f"IIS has no application {self.app_path} (appcmd list app answered {r.returncode}); "
                "set CRMCLUSTER_WINDOWS_SITE / CRMCLUSTER_WINDOWS_APP_POOL"
            )
        return pool

    async def recycle(self, ctx: OperationContext) -> str:
        pool = await self.app_pool(ctx)
        await self.host.run(ctx, [self.appcmd, "recycle", "apppool", f"/apppool.name:{pool}"])
        return pool

    async def physical_path(self, ctx: OperationContext | None) -> str | None:
        r = await self.host.query(
            ctx, [self.appcmd, "list", "vdir", f"{self.app_path}/", "/text:physicalPath"]
        )
        out = r.output.strip()
        return out.splitlines()[0].strip() if r.returncode == 0 and out else None

    async def redirect(self, ctx: OperationContext, website: PureWindowsPath) -> None:
        """The guide's "Redirecting the website", and the ISAPI restriction its eware.dll needs."""
        await self.allow_isapi(ctx, website / "eware.dll", description=f"Sage CRM {website.parent.name}")
        await self.host.run(
            ctx,
            [self.appcmd, "set", "vdir", f"/vdir.name:{self.app_path}/", f"/physicalPath:{website}"],
        )

    async def allow_isapi(self, ctx: OperationContext, dll: PureWindowsPath, *, description: str) -> bool:
        listed = await self.host.query(ctx, [self.appcmd, "list", "config", ISAPI_SECTION])
        if f'path="{str(dll).lower()}"' in listed.output.lower():
            ctx.log(f"{dll} is already allowed in isapiCgiRestriction")
            return False
        desc = description.replace("'", "")
        await self.host.run(
            ctx,
            [
                self.appcmd,
                "set",
                "config",
                ISAPI_SECTION,
                f"/+[path='{dll}',allowed='True',description='{desc}']",
                "/commit:apphost",
            ],
        )
        return True

    async def started_at(self) -> datetime | None:
        """IIS's start: the first time W3SVC's process and the worker processes were seen with
        their current ids (a reset or a recycle changes them)."""
        if await self.services.state("W3SVC") != ServiceStatus.RUNNING:
            self._seen = None
            return None
        pid = await self.services.pid("W3SVC")
        wp = await self.host.query(None, [self.appcmd, "list", "wp"])
        seen = (pid or "?", *sorted(_WP.findall(wp.output)))
        if seen != self._seen:
            # A worker process appearing after the first request is not a recycle.
            if not (self._seen and len(self._seen) == 1 and seen[0] == self._seen[0]):
                self._since = datetime.now(UTC)
            self._seen = seen
        return self._since
